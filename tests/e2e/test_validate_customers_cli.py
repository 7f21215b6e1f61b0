"""`reconcile validate` on contract customers (`desired/customers/*.yaml`): every error of
every customer file at file:line:col, nothing written; `schema --write` writes their schema."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from billing_reconciler.cli import app

REPO = Path(__file__).resolve().parents[2]

BROKEN = """\
# yaml-language-server: $schema=../../schemas/customers.schema.json
customers:
  - org_id: acme
    name: Acme Again
  - org_id: globex
    name: Globex
    plan: team_montly
    currency: usd
  - org_id: initech
    name: Initech
    colour: red
    plan: no_such_plan
  - org_id: umbrella
    name: Umbrella
    currency: zzz
"""


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def shipped_copy(tmp_path: Path) -> Path:
    desired = tmp_path / "desired"
    shutil.copytree(REPO / "desired", desired)
    return desired


def test_shipped_contract_customer_validates(tmp_path: Path) -> None:
    code, output = run_cli("validate", "--desired", str(shipped_copy(tmp_path)), "--format", "json")
    assert code == 0, output
    assert json.loads(output)["valid"] is True


def test_customer_errors_are_reported_at_file_line_col(tmp_path: Path) -> None:
    desired = shipped_copy(tmp_path)
    (desired / "customers" / "more.yaml").write_text(BROKEN, encoding="utf-8")
    before = {str(p): p.stat().st_mtime for p in tmp_path.rglob("*")}

    code, output = run_cli("validate", "--desired", str(desired))

    assert code == 1
    lines = [line.split("/desired/", 1)[-1] for line in output.splitlines()]
    assert (
        "customers/more.yaml:3:13: error: customers[0].org_id: 'acme' is already declared at "
        in (
            lines[0][
                : len(
                    "customers/more.yaml:3:13: error: customers[0].org_id: 'acme' is already "
                    "declared at "
                )
            ]
        )
    )
    assert lines[0].endswith("customers/acme.yaml:12:13")
    assert lines[1:5] == [
        "customers/more.yaml:7:11: error: customers[1].plan: unknown plan 'team_montly'; "
        "did you mean 'team_monthly'?",
        "customers/more.yaml:11:5: error: unknown key 'colour'; expected one of: address, "
        "credit_min, currency, due_in_days, email, name, offline, org_id, phone, plan, seats, "
        "tax_ids",
        # The same entry's unknown plan is its own mistake (before, the unknown key hid it).
        "customers/more.yaml:12:11: error: customers[2].plan: unknown plan 'no_such_plan'; "
        "expected one of: "
        "enterprise_yearly, free_monthly, team_monthly, team_yearly",
        "customers/more.yaml:15:15: error: customers[3].currency: unknown currency 'zzz': "
        "not an active ISO 4217 code",
    ]
    assert "invalid: 5 error(s)" in lines[-1]
    assert {str(p): p.stat().st_mtime for p in tmp_path.rglob("*")} == before


def test_schema_write_writes_the_customers_schema(tmp_path: Path) -> None:
    code, _ = run_cli("schema", "--write", "--out", str(tmp_path / "s"))
    assert code == 0
    assert (tmp_path / "s" / "customers.schema.json").read_text(encoding="utf-8") == (
        REPO / "schemas" / "customers.schema.json"
    ).read_text(encoding="utf-8")


# Each line of a value the API refuses too (`customer_validation`), with the error expected at
# it: every one of the file is reported, each named by its path from the file's root.
FIELD_RULES = """\
customers:
  - org_id: bad_contact
    name: Bad Contact
    email: not-an-email
    phone: +1 780-459-5656 ext. 725
  - org_id: bad_tax
    name: Bad Tax
    tax_ids:
      - type: eu_vat
        value: DE123456789
      - type: eu_vta
        value: DE123456789
      - type: us_ein
        value: '  '
    address:
      country: Germany
  - org_id: bad_terms
    name: Bad Terms
    credit_min: 500
    due_in_days: 400
"""


def test_customer_fields_are_checked_as_the_api_checks_them(tmp_path: Path) -> None:
    desired = shipped_copy(tmp_path)
    (desired / "customers" / "rules.yaml").write_text(FIELD_RULES, encoding="utf-8")
    before = {str(p): p.stat().st_mtime for p in tmp_path.rglob("*")}

    code, output = run_cli("validate", "--desired", str(desired))

    assert code == 1, output
    lines = [line.split("/desired/", 1)[-1] for line in output.splitlines()]
    assert lines[:7] == [
        "customers/rules.yaml:4:12: error: customers[0].email: not an email address "
        "(expected name@example.com)",
        "customers/rules.yaml:5:12: error: customers[0].phone: String should have at most 20 "
        "characters",
        "customers/rules.yaml:11:15: error: customers[1].tax_ids[1].type: unknown tax id type "
        "'eu_vta'; did you mean 'eu_vat'?",
        "customers/rules.yaml:14:16: error: customers[1].tax_ids[2].value: a tax id value must "
        "not be blank",
        "customers/rules.yaml:16:16: error: customers[1].address.country: unknown country "
        "'Germany': expected a two-letter ISO 3166-1 alpha-2 code (DE, US, GB, ...)",
        "customers/rules.yaml:19:17: error: customers[2].credit_min: Input should be less than "
        "or equal to 0 (got 500)",
        "customers/rules.yaml:20:18: error: customers[2].due_in_days: Input should be less than "
        "or equal to 365 (got 400)",
    ]
    assert "invalid: 7 error(s)" in lines[-1]
    assert {str(p): p.stat().st_mtime for p in tmp_path.rglob("*")} == before


def test_customer_field_errors_in_json(tmp_path: Path) -> None:
    desired = shipped_copy(tmp_path)
    (desired / "customers" / "rules.yaml").write_text(FIELD_RULES, encoding="utf-8")

    code, output = run_cli("validate", "--desired", str(desired), "--format", "json")

    assert code == 1
    report = json.loads(output)
    assert report["valid"] is False
    found = [
        (d["line"], d["column"], d["message"].split(":", 1)[0])
        for d in report["diagnostics"]
        if d["path"].endswith("rules.yaml")
    ]
    assert found == [
        (4, 12, "customers[0].email"),
        (5, 12, "customers[0].phone"),
        (11, 15, "customers[1].tax_ids[1].type"),
        (14, 16, "customers[1].tax_ids[2].value"),
        (16, 16, "customers[1].address.country"),
        (19, 17, "customers[2].credit_min"),
        (20, 18, "customers[2].due_in_days"),
    ]


DUPLICATES = """\
customers:
  - org_id: dup
    name: Dup
    tax_ids:
      - {type: us_ein, value: 12-3456789}
      - {type: eu_vat, value: DE123456789}
      - {type: us_ein, value: 12-3456789}
  - org_id: ".."
    name: "   "
    phone: "  "
"""


def test_duplicate_tax_ids_dot_org_ids_and_blank_fields_are_errors(tmp_path: Path) -> None:
    desired = shipped_copy(tmp_path)
    (desired / "customers" / "dup.yaml").write_text(DUPLICATES, encoding="utf-8")
    before = {str(p): p.stat().st_mtime for p in tmp_path.rglob("*")}

    code, output = run_cli("validate", "--desired", str(desired))

    assert code == 1, output
    lines = [line.split("/desired/", 1)[-1] for line in output.splitlines()]
    assert lines[:4] == [
        "customers/dup.yaml:7:9: error: customers[0].tax_ids[2]: the same tax id as "
        "tax_ids[0] (us_ein 12-3456789): list each tax id once",
        "customers/dup.yaml:8:13: error: customers[1].org_id: must not be only dots ('.' and "
        "'..' are path segments clients remove)",
        "customers/dup.yaml:9:11: error: customers[1].name: must not be blank (only whitespace)",
        "customers/dup.yaml:10:12: error: customers[1].phone: must not be blank (only whitespace)",
    ]
    assert {str(p): p.stat().st_mtime for p in tmp_path.rglob("*")} == before

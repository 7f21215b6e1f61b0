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
        "customers/more.yaml:3:13: error: org_id: 'acme' is already declared at "
        in (
            lines[0][
                : len("customers/more.yaml:3:13: error: org_id: 'acme' is already declared at ")
            ]
        )
    )
    assert lines[0].endswith("customers/acme.yaml:12:13")
    assert lines[1:5] == [
        "customers/more.yaml:7:11: error: plan: unknown plan 'team_montly'; "
        "did you mean 'team_monthly'?",
        "customers/more.yaml:11:5: error: unknown key 'colour'; expected one of: address, "
        "credit_min, currency, due_in_days, email, name, offline, org_id, phone, plan, seats, "
        "tax_ids",
        # The same entry's unknown plan is its own mistake (before, the unknown key hid it).
        "customers/more.yaml:12:11: error: plan: unknown plan 'no_such_plan'; expected one of: "
        "enterprise_yearly, free_monthly, team_monthly, team_yearly",
        "customers/more.yaml:15:15: error: currency: unknown currency 'zzz': not an active "
        "ISO 4217 code",
    ]
    assert "invalid: 5 error(s)" in lines[-1]
    assert {str(p): p.stat().st_mtime for p in tmp_path.rglob("*")} == before


def test_schema_write_writes_the_customers_schema(tmp_path: Path) -> None:
    code, _ = run_cli("schema", "--write", "--out", str(tmp_path / "s"))
    assert code == 0
    assert (tmp_path / "s" / "customers.schema.json").read_text(encoding="utf-8") == (
        REPO / "schemas" / "customers.schema.json"
    ).read_text(encoding="utf-8")

"""`reconcile validate` as a user runs it: broken inputs, valid catalogs, output formats.

Most cases use Typer's CliRunner (in-process, fast); a few run the installed `reconcile`
console script in a subprocess, exactly as a user or a pre-commit hook does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from billing_reconciler.cli import app
from tests import compat_files

REPO = Path(__file__).resolve().parents[2]
COMPAT = compat_files.FRONTIER
RECONCILE = Path(sys.executable).with_name("reconcile")

BILLING = """\
billing:
  default_currency: usd
"""

PLANS = """\
products:
  - name: basic
    title: Basic
    prices:
      - name: monthly
        interval: month
        amount: 1000
        currency: usd
plans:
  - name: basic_monthly
    title: Basic monthly
    interval: month
    products:
      - name: basic
"""

# Overdraft invoices are in the default currency: the overdraft product needs a price in it.
OVERDRAFT_EUR = """\
billing:
  default_currency: eur
  customer:
    credit_overdraft_product: credits
"""

CREDITS_USD = """\
  - name: credits
    title: Credits
    behavior: credits
    config:
      credit_amount: 100
    prices:
      - name: pack
        amount: 1000
        currency: usd
"""

SECRET_KEY = "sk_live_51AbCdEfGhIjKlMnOpQrStUvWx9876"


@dataclass(frozen=True)
class Case:
    """A broken desired/ directory and where the error must be reported."""

    id: str
    file: str
    line: int
    fragment: str
    billing: str = BILLING
    plans: dict[str, str | bytes] = field(default_factory=lambda: {"catalog.yaml": PLANS})


def _plans(text: str) -> dict[str, str | bytes]:
    return {"catalog.yaml": text}


def _product(extra_price: str = "", *, name: str = "basic", title: str = "Basic") -> str:
    return f"""\
  - name: {name}
    title: {title}
    prices:
      - name: monthly
        interval: month
        amount: 1000
        currency: usd
{extra_price}"""


CASES = [
    Case(
        "yaml-syntax",
        "catalog.yaml",
        2,
        "YAML syntax error",
        plans=_plans("products:\n  - name: [basic\n"),
    ),
    Case(
        "tab-indentation",
        "catalog.yaml",
        2,
        "tab character",
        plans=_plans("products:\n\t- name: basic\n"),
    ),
    Case(
        "duplicate-key",
        "catalog.yaml",
        3,
        "duplicate key 'name' (first written at line 2)",
        plans=_plans("products:\n  - name: basic\n    name: other\n    title: B\n"),
    ),
    Case(
        "wrong-type",
        "catalog.yaml",
        13,
        "trial_days",
        plans=_plans(
            PLANS.replace(
                "interval: month\n    products",
                "interval: month\n    trial_days: seven\n    products",
            )
        ),
    ),
    Case(
        "unknown-key",
        "catalog.yaml",
        3,
        "did you mean 'title'",
        plans=_plans(PLANS.replace("    title: Basic\n", "    titel: Basic\n")),
    ),
    Case(
        "negative-amount",
        "catalog.yaml",
        7,
        "must not be negative",
        plans=_plans(PLANS.replace("amount: 1000", "amount: -5")),
    ),
    Case(
        "float-amount",
        "catalog.yaml",
        7,
        "whole numbers of minor units (e.g. 999 for 9.99 USD)",
        plans=_plans(PLANS.replace("amount: 1000", "amount: 9.99")),
    ),
    Case(
        "unknown-currency",
        "catalog.yaml",
        8,
        "unknown currency 'usx'",
        plans=_plans(PLANS.replace("currency: usd", "currency: usx")),
    ),
    Case(
        "amount-above-stripe-max",
        "catalog.yaml",
        7,
        "maximum unit_amount of 99999999",
        plans=_plans(PLANS.replace("amount: 1000", "amount: 100000000")),
    ),
    Case(
        "bad-interval",
        "catalog.yaml",
        6,
        "did you mean 'month'",
        plans=_plans(PLANS.replace("        interval: month", "        interval: monthly")),
    ),
    Case(
        "missing-title",
        "catalog.yaml",
        2,
        "missing required key 'title'",
        plans=_plans(PLANS.replace("    title: Basic\n", "")),
    ),
    Case(
        "plan-unknown-product",
        "catalog.yaml",
        14,
        "references unknown product 'premium'",
        plans=_plans(PLANS.replace("      - name: basic\n", "      - name: premium\n")),
    ),
    Case(
        "two-per-seat-products",
        "catalog.yaml",
        24,
        "more than one per_seat product",
        plans=_plans(
            "products:\n"
            + _product(name="seat_a", title="A").replace(
                "    prices:", "    behavior: per_seat\n    prices:"
            )
            + _product(name="seat_b", title="B").replace(
                "    prices:", "    behavior: per_seat\n    prices:"
            )
            + "plans:\n  - name: seats\n    title: Seats\n    interval: month\n    products:\n"
            "      - name: seat_a\n      - name: seat_b\n"
        ),
    ),
    Case(
        "default-plan-not-free",
        "billing.yaml",
        3,
        "default_plan 'basic_monthly' is not free",
        billing="billing:\n  customer:\n    default_plan: basic_monthly\n",
    ),
    Case(
        "overdraft-not-credits",
        "billing.yaml",
        3,
        "must be a behavior: credits product",
        billing="billing:\n  customer:\n    credit_overdraft_product: basic\n",
    ),
    Case(
        "overdraft-no-price-in-default-currency",
        "billing.yaml",
        4,
        "credit_overdraft_product 'credits' has no active price in the default currency EUR",
        billing=OVERDRAFT_EUR,
        plans=_plans(PLANS.replace("plans:\n", CREDITS_USD + "plans:\n")),
    ),
    Case(
        "overdraft-no-credit-amount",
        "billing.yaml",
        4,
        "credit_overdraft_product 'credits' needs config.credit_amount",
        billing=OVERDRAFT_EUR.replace("eur", "usd"),
        plans=_plans(
            PLANS.replace(
                "plans:\n",
                CREDITS_USD.replace("    config:\n      credit_amount: 100\n", "") + "plans:\n",
            )
        ),
    ),
    Case(
        "invoice-day-0",
        "billing.yaml",
        3,
        "greater than or equal to 1",
        billing="billing:\n  customer:\n    credit_overdraft_invoice_day: 0\n",
    ),
    Case(
        "invoice-day-32",
        "billing.yaml",
        3,
        "less than or equal to 31",
        billing="billing:\n  customer:\n    credit_overdraft_invoice_day: 32\n",
    ),
    Case(
        "unknown-proration",
        "billing.yaml",
        3,
        "did you mean 'create_prorations'",
        billing="billing:\n  plan_change:\n    proration_behavior: create_proration\n",
    ),
    Case(
        "duplicate-product-name-case-insensitive",
        "catalog.yaml",
        9,
        "product name 'basic' is already used",
        plans=_plans(
            PLANS.replace("plans:\n", _product(name="BASIC", title="Basic 2") + "plans:\n")
        ),
    ),
    Case(
        "no-price-at-plan-interval",
        "catalog.yaml",
        14,
        "no active price with interval 'year'",
        plans=_plans(
            PLANS.replace("    interval: month\n    products", "    interval: year\n    products")
        ),
    ),
    Case(
        "identical-plans",
        "catalog.yaml",
        15,
        "same products and interval as plan 'basic_monthly'",
        plans=_plans(
            PLANS
            + "  - name: basic_again\n    title: Again\n    interval: month\n"
            + "    products:\n      - name: basic\n"
        ),
    ),
    Case(
        "empty-file",
        "empty.yaml",
        1,
        "file is empty",
        plans={"catalog.yaml": PLANS, "empty.yaml": "# nothing yet\n"},
    ),
    Case(
        "root-is-a-list",
        "list.yaml",
        1,
        "must be a mapping",
        plans={"catalog.yaml": PLANS, "list.yaml": "- name: basic\n"},
    ),
    Case(
        "not-utf8",
        "latin1.yaml",
        2,
        "not valid UTF-8",
        plans={
            "catalog.yaml": PLANS,
            "latin1.yaml": "features:\n  - name: caf\xe9\n".encode("latin-1"),
        },
    ),
    Case(
        "five-megabytes",
        "big.yaml",
        1,
        "larger than the 2 MiB limit",
        plans={"catalog.yaml": PLANS, "big.yaml": "#" + "x" * (5 * 1024 * 1024) + "\n"},
    ),
    Case(
        "secret-key-in-yaml",
        "billing.yaml",
        2,
        "set STRIPE_API_KEY",
        billing=f"billing:\n  stripe_key: {SECRET_KEY}\n",
    ),
    Case(
        "webhook-secret-in-yaml",
        "billing.yaml",
        2,
        "BILLING_WEBHOOK_SECRETS",
        billing="billing:\n  stripe_webhook_secrets: [whsec_abcdefghijklmnopqrstuvwxyz]\n",
    ),
    Case(
        "bad-duration",
        "billing.yaml",
        3,
        "a duration looks like",
        billing="billing:\n  refresh_interval:\n    customer: 5x\n",
    ),
    Case(
        "unknown-top-level-key",
        "catalog.yaml",
        1,
        "did you mean 'products'",
        plans=_plans(PLANS.replace("products:\n  - name: basic", "product:\n  - name: basic", 1)),
    ),
    Case(
        "document-kind-typo",
        "doc.yaml",
        2,
        "did you mean 'BillingPlan'",
        plans={"catalog.yaml": PLANS, "doc.yaml": "apiVersion: v1\nkind: BillingPlans\nspec: []\n"},
    ),
    Case(
        "currency-option-repeats-own-currency",
        "catalog.yaml",
        10,
        "repeats the price's own currency 'usd'",
        plans=_plans(
            PLANS.replace(
                "        currency: usd\n",
                "        currency: usd\n        currency_options:\n          usd: {amount: 5}\n",
            )
        ),
    ),
    Case(
        "metered-without-interval",
        "catalog.yaml",
        9,
        "metered price must be recurring",
        plans=_plans(
            PLANS.replace(
                "plans:\n",
                "      - name: usage\n        usage_type: metered\n        amount: 1\n"
                "        currency: usd\nplans:\n",
            )
        ),
    ),
    Case("empty-billing-yaml", "billing.yaml", 1, "file is empty", billing=""),
    Case(
        "plans-dir-missing",
        "billing.yaml",
        2,
        "does not exist",
        billing="billing:\n  plans_path: nowhere\n",
    ),
    Case(
        "metadata-key-too-long",
        "catalog.yaml",
        10,
        "longer than 40 chars",
        plans=_plans(
            PLANS.replace(
                "        currency: usd\n",
                "        currency: usd\n        metadata:\n          " + "k" * 41 + ": v\n",
            )
        ),
    ),
    Case(
        "alias-bomb",
        "bomb.yaml",
        7,
        "alias bomb",
        plans={
            "catalog.yaml": PLANS,
            "bomb.yaml": "".join(
                f"{name}: &{name} [{', '.join([prev] * 9)}]\n"
                for name, prev in zip(
                    "abcdefghi", ["lol", *("*" + c for c in "abcdefgh")], strict=True
                )
            ),
        },
    ),
]


def make_desired(root: Path, *, billing: str | None, plans: dict[str, str | bytes]) -> Path:
    """Write a desired/ directory under `root` and return it."""
    desired = root / "desired"
    (desired / "plans").mkdir(parents=True)
    if billing is not None:
        (desired / "billing.yaml").write_text(billing, encoding="utf-8")
    for name, content in plans.items():
        target = desired / "plans" / name
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
    return desired


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def snapshot(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in root.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_broken_input_is_reported_at_its_position(case: Case, tmp_path: Path) -> None:
    desired = make_desired(tmp_path, billing=case.billing, plans=case.plans)
    before = snapshot(tmp_path)

    code, output = run_cli("validate", "--desired", str(desired), "--format", "json")

    assert code == 1
    report = json.loads(output)
    assert report["valid"] is False
    errors = [d for d in report["diagnostics"] if d["severity"] == "error"]
    matching = [
        d for d in errors if d["path"].endswith("/" + case.file) and case.fragment in d["message"]
    ]
    assert matching, f"no error in {case.file} containing {case.fragment!r}: {errors}"
    assert matching[0]["line"] == case.line, matching[0]
    assert snapshot(tmp_path) == before, "validate must not write anything"


def test_at_least_25_broken_inputs() -> None:
    assert len(CASES) >= 25


def test_pasted_secret_key_is_never_echoed(tmp_path: Path) -> None:
    desired = make_desired(
        tmp_path, billing=f"billing:\n  stripe_key: {SECRET_KEY}\n", plans=_plans(PLANS)
    )
    for output_format in ("text", "json", "github"):
        code, output = run_cli("validate", "--desired", str(desired), "--format", output_format)
        assert code == 1
        assert SECRET_KEY not in output
        assert SECRET_KEY[8:] not in output


def test_every_error_of_every_file_in_one_run(tmp_path: Path) -> None:
    plans = {
        "a.yaml": PLANS.replace("amount: 1000", "amount: -1"),
        "b.yaml": "features:\n  - name: x\n    titl: X\n",
    }
    billing = "billing:\n  plan_change:\n    collection_method: by_mail\n"
    desired = make_desired(tmp_path, billing=billing, plans=plans)

    code, output = run_cli("validate", "--desired", str(desired))

    assert code == 1
    lines = output.splitlines()
    assert any("billing.yaml:3:24: error: collection_method" in line for line in lines)
    assert any("a.yaml:7:17: error: amount must not be negative" in line for line in lines)
    assert any("b.yaml:3:5: error: unknown key 'titl'" in line for line in lines)
    assert "invalid: 3 error(s)" in lines[-1]


def test_missing_desired_directory(tmp_path: Path) -> None:
    code, output = run_cli("validate", "--desired", str(tmp_path / "nope"))
    assert code == 1
    assert "does not exist" in output


def _frontier_layout(tmp_path: Path) -> Path:
    desired = tmp_path / "desired"
    (desired / "plans").mkdir(parents=True)
    shutil.copyfile(COMPAT / "billing-config-sample.yaml", desired / "billing.yaml")
    shutil.copyfile(COMPAT / "plans-sample.yaml", desired / "plans" / "sample.yaml")
    return desired


def test_frontier_samples_validate_unmodified_with_british_warning(tmp_path: Path) -> None:
    desired = _frontier_layout(tmp_path)
    assert (desired / "plans" / "sample.yaml").read_bytes() == (
        COMPAT / "plans-sample.yaml"
    ).read_bytes()

    code, output = run_cli("validate", "--desired", str(desired))

    assert code == 0, output
    assert "billing.yaml:51:5: warning: 'behaviour_after_trial' (British spelling)" in output
    assert "valid (3 features, 5 products, 7 prices, 4 plans" in output


def test_github_format_prints_annotations(tmp_path: Path) -> None:
    desired = make_desired(tmp_path, billing=BILLING, plans=_plans(PLANS.replace("1000", "-1")))
    code, output = run_cli("validate", "--desired", str(desired), "--format", "github")
    assert code == 1
    first = output.splitlines()[0]
    assert first.startswith("::error file=")
    assert first.endswith(",line=7,col=17::amount must not be negative, got -1")


# --------------------------------------------------------------------------------------------
# Real subprocess runs of the installed console script
# --------------------------------------------------------------------------------------------


def run_reconcile(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RECONCILE), *args], cwd=cwd, capture_output=True, text=True, check=False
    )


def test_shipped_desired_directory_is_valid() -> None:
    result = run_reconcile("validate")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "desired: valid (4 features, 7 products, 9 prices, 4 plans" in result.stdout


def test_subprocess_frontier_samples_warn_but_pass(tmp_path: Path) -> None:
    desired = _frontier_layout(tmp_path)
    result = run_reconcile("validate", "--desired", str(desired), "--format", "github")
    assert result.returncode == 0, result.stdout
    assert "::warning file=" in result.stdout
    assert "behaviour_after_trial" in result.stdout


def test_subprocess_secret_key_refused_and_redacted(tmp_path: Path) -> None:
    desired = make_desired(
        tmp_path, billing=f"billing:\n  stripe_key: {SECRET_KEY}\n", plans=_plans(PLANS)
    )
    result = run_reconcile("validate", "--desired", str(desired))
    assert result.returncode == 1
    assert "billing.yaml:2:15: error:" in result.stdout
    assert "STRIPE_API_KEY" in result.stdout
    assert SECRET_KEY not in result.stdout + result.stderr


def test_subprocess_alias_bomb_fails_fast(tmp_path: Path) -> None:
    bomb = next(c for c in CASES if c.id == "alias-bomb")
    desired = make_desired(tmp_path, billing=BILLING, plans=bomb.plans)
    result = run_reconcile("validate", "--desired", str(desired), "--format", "json")
    assert result.returncode == 1
    messages = [d["message"] for d in json.loads(result.stdout)["diagnostics"]]
    assert any("alias bomb" in m for m in messages)


def test_subprocess_schema_prints_every_schema() -> None:
    result = run_reconcile("schema")
    assert result.returncode == 0
    schemas = json.loads(result.stdout)
    assert set(schemas) == {"billing.schema.json", "plans.schema.json", "customers.schema.json"}
    assert schemas["plans.schema.json"]["$schema"].endswith("2020-12/schema")


def test_schema_write_creates_files(tmp_path: Path) -> None:
    code, output = run_cli("schema", "--write", "--out", str(tmp_path / "s"))
    assert code == 0
    assert (tmp_path / "s" / "billing.schema.json").read_text(encoding="utf-8") == (
        REPO / "schemas" / "billing.schema.json"
    ).read_text(encoding="utf-8")
    assert "wrote" in output


def test_an_overdraft_product_without_a_default_currency_price_is_refused_at_its_key(
    tmp_path: Path,
) -> None:
    """DESIGN §17: overdraft invoices are in the default currency; validation names the key
    as path:line:column."""
    desired = make_desired(
        tmp_path,
        billing=OVERDRAFT_EUR,
        plans=_plans(PLANS.replace("plans:\n", CREDITS_USD + "plans:\n")),
    )
    code, output = run_cli("validate", "--desired", str(desired))
    assert code == 1
    assert (
        f"{desired / 'billing.yaml'}:4:31: error: credit_overdraft_product 'credits' has no active "
        "price in the default currency EUR"
    ) in output

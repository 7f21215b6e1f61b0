"""load_desired: normalized specs, implicit features, both Frontier forms, the revision."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from billing_reconciler.desired import DesiredState, LoadResult, load_desired
from tests import compat_files

REPO = Path(__file__).resolve().parents[3]
COMPAT = compat_files.FRONTIER

BILLING = "billing:\n  default_currency: eur\n"


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return root


def loaded(result: LoadResult) -> DesiredState:
    assert result.state is not None, [str(d) for d in result.diagnostics]
    return result.state


@pytest.fixture
def frontier(tmp_path: Path) -> Path:
    (tmp_path / "plans").mkdir()
    shutil.copyfile(COMPAT / "billing-config-sample.yaml", tmp_path / "billing.yaml")
    shutil.copyfile(COMPAT / "plans-sample.yaml", tmp_path / "plans" / "sample.yaml")
    return tmp_path


def test_frontier_sample_creates_implicit_features(frontier: Path) -> None:
    state = loaded(load_desired(frontier))
    features = {f.name: f.title for f in state.features}
    assert features == {
        "basic_access_feature_1": "Basic Access Feature 1",
        "starter_feature_1": "starter_feature_1",
        "starter_feature_2": "starter_feature_2",
    }
    starter = next(p for p in state.products if p.name == "starter_access")
    assert starter.features == ("starter_feature_1", "starter_feature_2")
    credits = next(p for p in state.products if p.name == "support_credits")
    assert credits.behavior == "credits"
    assert credits.config.credit_amount == 100
    assert credits.prices[0].interval is None  # one-time price
    assert all(p.billing_scheme == "per_unit" for pr in state.products for p in pr.prices)
    plan = next(p for p in state.plans if p.name == "starter_monthly")
    assert (plan.trial_days, plan.on_start_credits) == (7, 50)
    assert plan.products == ("starter_access", "starter_per_seat")


def test_shipped_example_is_valid_and_complete() -> None:
    state = loaded(load_desired(REPO / "desired"))
    assert {p.name for p in state.plans} == {
        "free_monthly",
        "team_monthly",
        "team_yearly",
        "enterprise_yearly",
    }
    behaviors = {p.behavior for p in state.products}
    assert behaviors == {"basic", "per_seat", "credits"}
    prices = [price for product in state.products for price in product.prices]
    assert any(p.meter is not None for p in prices)
    assert {"eur", "inr", "jpy"} <= {c for p in prices for c in p.currency_options}
    assert state.config.billing.customer.credit_overdraft_product == "credits"
    assert any(plan.trial_days for plan in state.plans)


def test_defaults_names_and_normalization(tmp_path: Path) -> None:
    plans = """\
products:
  - name: API_Usage
    title: API
    prices:
      - amount: 5
        interval: month
        usage_type: metered
        metered_aggregate: last_during_period
      - name: Tiered
        interval: month
        billing_scheme: tiered
        tiers:
          - {upto: 10, unit_amount: 0}
          - {up_to: inf, flatamount: 100}
    features:
      - name: Reports
        title: Reporting
"""
    state = loaded(load_desired(write(tmp_path, {"billing.yaml": BILLING, "plans/a.yml": plans})))
    [product] = state.products
    assert product.name == "api_usage"
    metered, tiered = product.prices
    assert metered.name == "default_0"
    assert metered.currency == "eur"  # billing.default_currency
    assert metered.meter is not None
    assert metered.meter.event_name == "api_usage_default_0"
    assert metered.meter.display_name == "API"
    assert metered.meter.aggregation == "last"
    assert (metered.meter.value_key, metered.meter.customer_key) == ("value", "stripe_customer_id")
    assert tiered.name == "tiered"
    assert tiered.tier_mode == "graduated"
    assert [(t.up_to, t.unit_amount, t.flat_amount) for t in tiered.tiers] == [
        (10, 0, None),
        (None, None, 100),
    ]
    assert [(f.name, f.title) for f in state.features] == [("reports", "Reporting")]


def test_document_form_with_several_documents(tmp_path: Path) -> None:
    documents = """\
apiVersion: v1
kind: BillingProduct
spec:
  - name: base
    title: Base
    prices:
      - {name: monthly, interval: month, amount: 100, currency: usd}
---
kind: BillingPlan
spec:
  - name: base_monthly
    title: Base
    interval: month
    state: inactive
    products: [{name: base}]
"""
    state = loaded(
        load_desired(write(tmp_path, {"billing.yaml": BILLING, "plans/d.yaml": documents}))
    )
    assert [p.name for p in state.products] == ["base"]
    assert state.plans[0].active is False


def test_revision_ignores_layout_and_comments(tmp_path: Path) -> None:
    product = "  - name: basic\n    title: Basic\n"
    one = write(
        tmp_path / "one", {"billing.yaml": BILLING, "plans/a.yaml": "products:\n" + product}
    )
    two = write(
        tmp_path / "two",
        {
            "billing.yaml": "# comment\n" + BILLING,
            "plans/x/b.yaml": "# other file\nproducts:\n" + product,
            "plans/c.yaml": "features: []\n",
        },
    )
    first, second = loaded(load_desired(one)), loaded(load_desired(two))
    assert first.revision == second.revision
    assert len(first.revision) == 12
    changed = write(
        tmp_path / "three",
        {
            "billing.yaml": BILLING,
            "plans/a.yaml": "products:\n" + product.replace("Basic\n", "Basic!\n"),
        },
    )
    assert loaded(load_desired(changed)).revision != first.revision


def test_plans_path_file_url_and_hidden_dirs(tmp_path: Path) -> None:
    catalog = tmp_path / "elsewhere"
    write(catalog, {"p.yaml": "features: [{name: f1}]\n", ".git/x.yaml": "not: [valid\n"})
    billing = f"billing:\n  plans_path: file://{catalog}\n"
    state = loaded(load_desired(write(tmp_path / "d", {"billing.yaml": billing})))
    assert [f.name for f in state.features] == ["f1"]


def test_unsupported_plans_url(tmp_path: Path) -> None:
    result = load_desired(
        write(tmp_path, {"billing.yaml": "billing:\n  plans_path: gs://bucket/plans\n"})
    )
    [error] = result.errors
    assert (error.line, error.column) == (2, 15)
    assert "only local directories and file:// URLs" in error.message


def test_references_to_invalid_products_are_not_reported_twice(tmp_path: Path) -> None:
    plans = """\
products:
  - name: broken
    prices: []
plans:
  - name: uses_broken
    title: X
    interval: month
    products: [{name: broken}]
"""
    result = load_desired(write(tmp_path, {"billing.yaml": BILLING, "plans/a.yaml": plans}))
    assert [e.message for e in result.errors] == ["missing required key 'title'"]


def test_diagnostics_are_sorted_and_formatted(tmp_path: Path) -> None:
    plans = "products:\n  - name: b2\n  - name: a1\n"
    result = load_desired(write(tmp_path, {"billing.yaml": BILLING, "plans/a.yaml": plans}))
    lines = [d.line for d in result.diagnostics]
    assert lines == sorted(lines)
    first = result.diagnostics[0]
    assert str(first) == f"{first.path}:{first.line}:{first.column}: {first.message}"


def test_read_only_frontier_ids_are_warnings(tmp_path: Path) -> None:
    plans = "features:\n  - name: f1\n    id: 7b0c\n"
    result = load_desired(write(tmp_path, {"billing.yaml": BILLING, "plans/a.yaml": plans}))
    [warning] = result.warnings
    assert result.state is not None
    assert (warning.line, warning.column) == (3, 5)
    assert "read-only id" in warning.message


def test_credit_amount_needs_credits_behavior(tmp_path: Path) -> None:
    plans = "products:\n  - name: pack\n    title: P\n    config: {credit_amount: 5}\n"
    result = load_desired(write(tmp_path, {"billing.yaml": BILLING, "plans/a.yaml": plans}))
    [error] = result.errors
    assert "credits are only granted by behavior: credits" in error.message


def test_plan_products_must_share_a_currency(tmp_path: Path) -> None:
    plans = """\
products:
  - name: aaa
    title: A
    prices: [{name: m, interval: month, amount: 1, currency: usd}]
  - name: bbb
    title: B
    prices: [{name: m, interval: month, amount: 1, currency: inr}]
plans:
  - name: both
    title: Both
    interval: month
    products: [{name: aaa}, {name: bbb}]
"""
    result = load_desired(write(tmp_path, {"billing.yaml": BILLING, "plans/a.yaml": plans}))
    [error] = result.errors
    assert "share no currency" in error.message
    assert error.line == 12

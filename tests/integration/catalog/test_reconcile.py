"""Plan and apply the catalog against the emulator: the behaviours issue 4 lists, end to end."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import stripe

from billing_reconciler.model import Kind
from billing_reconciler.planning.plan import Action, Reason

from .conftest import CATALOG_YAML, MakeController, converge, write_desired

# The SDK is used here only to play "someone else" editing Stripe, and to check results.


def sdk(emulator: Any) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_human", base_addresses={"api": emulator.url})


def posts(emulator: Any) -> list[Any]:
    return [r for r in emulator.control.requests(method="POST") if r.path.startswith("/v1/")]


def prices_by_lookup(client: stripe.StripeClient, lookup_key: str) -> list[stripe.Price]:
    return list(client.v1.prices.list({"lookup_keys": [lookup_key], "limit": 100}).data)


def test_fresh_apply_then_second_run_is_a_no_op(
    tmp_path: Path, emulator: Any, make_controller: MakeController
) -> None:
    controller = make_controller(write_desired(tmp_path))
    planned = controller.plan()
    counts = planned.plan.counts()
    assert counts["create"] == 1 + 3 + 5 + 1 + 2  # feature, products, prices, attachment, plans
    converge(controller)

    emulator.control.clear_requests()
    again = controller.plan().plan
    assert again.steps == ()
    assert not again.has_changes
    assert posts(emulator) == []
    # A no-op plan reads with list calls only: no per-object GETs.
    gets = emulator.control.requests(method="GET")
    assert all(not r.path.startswith("/v1/prices/") for r in gets)

    client = sdk(emulator)
    [monthly] = prices_by_lookup(client, "base_monthly")
    assert monthly.unit_amount == 1000
    assert monthly.metadata["managed_by"] == "billing-reconciler"
    assert monthly.metadata["br_key"] == "price/base/monthly"
    product = client.v1.products.retrieve(
        monthly.product if isinstance(monthly.product, str) else monthly.product.id
    )
    assert product.default_price == monthly.id


def test_title_and_description_update_in_place(
    tmp_path: Path, emulator: Any, make_controller: MakeController
) -> None:
    converge(make_controller(write_desired(tmp_path)))
    edited = CATALOG_YAML.replace("title: Base platform", "title: Base platform v2").replace(
        "Access to the platform", "Everything you need"
    )
    controller = make_controller(write_desired(tmp_path, edited))
    plan = controller.plan().plan
    [step] = plan.steps
    assert (step.action, step.key) == (Action.UPDATE, "product/base")
    assert {c.path for c in step.changes} == {"title", "description"}
    converge(controller)


def test_amount_change_supersedes_in_order(
    tmp_path: Path, emulator: Any, make_controller: MakeController
) -> None:
    converge(make_controller(write_desired(tmp_path)))
    client = sdk(emulator)
    [old] = prices_by_lookup(client, "base_monthly")

    cheaper = CATALOG_YAML.replace("amount: 1000", "amount: 1200", 1)
    controller = make_controller(write_desired(tmp_path, cheaper))
    plan = controller.plan().plan
    assert [(s.action, s.reason) for s in plan.steps] == [
        (Action.SUPERSEDE, Reason.REPLACE_BECAUSE_IMMUTABLE),
        (Action.UPDATE, Reason.DEFAULT_PRICE_REPOINT),
        (Action.ARCHIVE, Reason.SUPERSEDED),
    ]
    emulator.control.clear_requests()
    converge(controller)

    writes = [r.path for r in posts(emulator)]
    assert writes[:3] == ["/v1/prices", f"/v1/products/{old.product}", f"/v1/prices/{old.id}"]
    [new] = prices_by_lookup(client, "base_monthly")
    assert new.id != old.id
    assert new.unit_amount == 1200
    assert new.active
    assert client.v1.prices.retrieve(old.id).active is False
    assert client.v1.products.retrieve(str(old.product)).default_price == new.id


def test_price_readded_is_reactivated_not_duplicated(
    tmp_path: Path, emulator: Any, make_controller: MakeController
) -> None:
    converge(make_controller(write_desired(tmp_path)))
    client = sdk(emulator)
    [original] = prices_by_lookup(client, "base_monthly")
    converge(
        make_controller(
            write_desired(tmp_path, CATALOG_YAML.replace("amount: 1000", "amount: 1200", 1))
        )
    )

    controller = make_controller(write_desired(tmp_path))
    plan = controller.plan().plan
    assert (Action.REACTIVATE, original.id) in [(s.action, s.stripe_id) for s in plan.steps]
    assert not any(s.action is Action.CREATE for s in plan.steps)
    converge(controller)
    [current] = prices_by_lookup(client, "base_monthly")
    assert current.id == original.id
    all_prices = client.v1.prices.list({"product": str(original.product), "limit": 100}).data
    assert len(all_prices) == 3  # monthly, its superseded twin, yearly: nothing duplicated


def test_removal_is_an_orphan_without_prune_and_archived_with_it(
    tmp_path: Path, emulator: Any, make_controller: MakeController
) -> None:
    converge(make_controller(write_desired(tmp_path)))
    start = CATALOG_YAML.index("  - name: credits")
    without_credits = CATALOG_YAML[:start] + CATALOG_YAML[CATALOG_YAML.index("plans:") :]
    plan = make_controller(write_desired(tmp_path, without_credits)).plan().plan
    assert plan.steps == ()
    assert [n.key for n in plan.orphans] == ["price/credits/pack", "product/credits"]

    pruning = make_controller(write_desired(tmp_path, without_credits, prune=True))
    plan = pruning.plan().plan
    assert [(s.action, s.key) for s in plan.steps] == [
        (Action.UPDATE, "product/credits"),  # unset the default price: Stripe refuses otherwise
        (Action.ARCHIVE, "price/credits/pack"),
        (Action.ARCHIVE, "product/credits"),
    ]
    converge(pruning)
    [archived] = prices_by_lookup(sdk(emulator), "credits_pack")
    assert archived.active is False
    assert sdk(emulator).v1.products.retrieve(str(archived.product)).active is False


def test_mass_archive_is_refused(
    tmp_path: Path, emulator: Any, make_controller: MakeController
) -> None:
    converge(make_controller(write_desired(tmp_path)))
    nearly_empty = "features: []\nproducts: []\nplans: []\n"
    plan = make_controller(write_desired(tmp_path, nearly_empty, prune=True)).plan().plan
    assert plan.refused
    assert "every managed object" in plan.refusals[0]


def test_drift_is_reported_and_reverted_or_only_reported(
    tmp_path: Path, emulator: Any, make_controller: MakeController
) -> None:
    converge(make_controller(write_desired(tmp_path)))
    client = sdk(emulator)
    [price] = prices_by_lookup(client, "base_monthly")
    client.v1.products.update(str(price.product), {"name": "Edited by hand"})

    warn = make_controller(write_desired(tmp_path, drift="warn")).plan().plan
    assert warn.steps == ()
    assert [(d.key, d.path, d.live, d.corrected) for d in warn.drift] == [
        ("product/base", "title", "Edited by hand", False)
    ]

    controller = make_controller(write_desired(tmp_path))
    plan = controller.plan().plan
    assert [(s.action, s.reason) for s in plan.steps] == [(Action.UPDATE, Reason.DRIFT)]
    converge(controller)
    assert client.v1.products.retrieve(str(price.product)).name == "Base platform"


def test_unmarked_lookalike_is_adoptable_then_adopted(
    tmp_path: Path, emulator: Any, make_controller: MakeController
) -> None:
    client = sdk(emulator)
    human = client.v1.products.create({"name": "Credits"})
    controller = make_controller(write_desired(tmp_path))
    plan = controller.plan().plan
    assert "product/credits" in [n.key for n in plan.adoptable]
    assert "product/credits" not in [s.key for s in plan.steps if s.action is Action.CREATE]
    # Its price needs the product's id: the plan is refused before any write (issue 8).
    assert any("depends on product/credits" in r and "--adopt" in r for r in plan.refusals)

    from billing_reconciler.controller import PlanOptions

    planned = controller.plan(PlanOptions(adopt_all=True))
    adopt = [s for s in planned.plan.steps if s.action is Action.ADOPT]
    assert [s.stripe_id for s in adopt] == [human.id]
    _, _, residual = controller.apply(planned)
    assert residual.steps == (), [(s.action.value, s.key) for s in residual.steps]  # one apply
    assert client.v1.products.retrieve(human.id).metadata["br_key"] == "product/credits"


def test_two_installations_never_touch_each_other(
    tmp_path: Path, emulator: Any, make_controller: MakeController
) -> None:
    converge(make_controller(write_desired(tmp_path / "a", installation="alpha")))
    other = make_controller(
        write_desired(tmp_path / "b", CATALOG_YAML, installation="beta", prune=True)
    )
    plan = other.plan().plan
    assert all(s.action in (Action.CREATE, Action.UPDATE) for s in plan.steps)
    assert plan.orphans == ()
    converge(other)
    # alpha still converged: beta archived nothing of alpha's.
    again = make_controller(write_desired(tmp_path / "a", installation="alpha")).plan().plan
    assert again.steps == ()


def test_protected_price_is_never_superseded(
    tmp_path: Path, emulator: Any, make_controller: MakeController
) -> None:
    protected = CATALOG_YAML.replace(
        "      - name: pack\n        amount: 2000\n",
        "      - name: pack\n        protect: true\n        amount: 2000\n",
    )
    converge(make_controller(write_desired(tmp_path, protected)))
    changed = protected.replace("amount: 2000", "amount: 2500")
    plan = make_controller(write_desired(tmp_path, changed)).plan().plan
    assert plan.refused
    assert "protected" in plan.refusals[0]
    assert not [s for s in plan.steps if s.kind is Kind.PRICE and s.action is Action.SUPERSEDE]


def test_dataclass_replace_keeps_plan_immutable() -> None:
    # Guard for the apply contract: a Plan is a frozen value (mutating it must fail).
    from billing_reconciler.planning.plan import Plan

    plan = Plan(steps=(), installation_id="x", desired_revision="r", fingerprint="f", created_at=0)
    try:
        plan.steps = ()  # type: ignore[misc]
    except dataclasses.FrozenInstanceError:
        return
    raise AssertionError("Plan is mutable")


def test_fresh_apply_and_no_op_on_postgresql(
    tmp_path: Path, emulator: Any, make_controller: MakeController, postgres_database_url: str
) -> None:
    from billing_reconciler.store import JournalRepository, LastAppliedRepository, Store

    store = Store.open(postgres_database_url)
    try:
        controller = make_controller(write_desired(tmp_path), store=store)
        converge(controller)
        assert controller.plan().plan.steps == ()
        with store.session() as session:
            applied = LastAppliedRepository(session).for_installation("default")
            assert "price/base/monthly" in applied
            assert JournalRepository(session).pending("default") == []
    finally:
        store.close()


TIERED_YAML = """\
products:
  - name: usage
    title: API usage
    prices:
      - name: monthly
        interval: month
        usage_type: metered
        billing_scheme: tiered
        tier_mode: graduated
        currency: usd
        tiers:
          - { up_to: 100, unit_amount: 0 }
          - { up_to: inf, unit_amount: 50 }
        currency_options:
          eur: { tiers: [{ up_to: 100, unit_amount: 0 }, { up_to: inf, unit_amount: 45 }] }
        meter:
          event_name: api_requests
          display_name: API requests
"""


def test_currency_option_change_updates_in_place_and_tier_change_supersedes(
    tmp_path: Path, emulator: Any, make_controller: MakeController
) -> None:
    converge(make_controller(write_desired(tmp_path, TIERED_YAML)))
    client = sdk(emulator)
    [original] = prices_by_lookup(client, "usage_monthly")

    euro_change = TIERED_YAML.replace("unit_amount: 45 }", "unit_amount: 40 }")
    controller = make_controller(write_desired(tmp_path, euro_change))
    [step] = controller.plan().plan.steps
    assert (step.action, step.stripe_id) == (Action.UPDATE, original.id)
    assert [c.path for c in step.changes] == ["currency_options"]
    converge(controller)
    expanded = client.v1.prices.retrieve(original.id, {"expand": ["currency_options"]})
    assert expanded.currency_options is not None
    assert expanded.currency_options["eur"].tiers[1].unit_amount == 40

    tier_change = euro_change.replace("up_to: inf, unit_amount: 50", "up_to: inf, unit_amount: 60")
    controller = make_controller(write_desired(tmp_path, tier_change))
    plan = controller.plan().plan
    supersede = next(s for s in plan.steps if s.action is Action.SUPERSEDE)
    assert [c.path for c in supersede.changes if c.forces_supersede] == ["tiers"]
    converge(controller)
    [current] = prices_by_lookup(client, "usage_monthly")
    assert current.id != original.id
    assert current.recurring is not None
    assert current.recurring.meter == original.recurring.meter  # same meter, not a new one


def test_a_lookalike_with_its_features_already_attached_is_adopted_in_one_apply(
    tmp_path: Path, emulator: Any, make_controller: MakeController
) -> None:
    """The look-alike's existing attachments are listed (it is an adoption candidate), so
    adopting it attaches only what is missing and records the product's attachments."""
    client = sdk(emulator)
    feature = client.v1.entitlements.features.create(
        {"name": "API access", "lookup_key": "api_access"}
    )
    human = client.v1.products.create({"name": "Base platform"})
    client.v1.products.features.create(human.id, {"entitlement_feature": feature.id})
    controller = make_controller(write_desired(tmp_path))
    from billing_reconciler.controller import PlanOptions

    planned = controller.plan(PlanOptions(adopt_all=True))
    assert not planned.plan.refused, planned.plan.refusals
    assert "product_feature/base/api_access" not in [s.key for s in planned.plan.steps]
    _, _, residual = controller.apply(planned)
    assert residual.steps == (), [(s.action.value, s.key) for s in residual.steps]
    [attachment] = client.v1.products.features.list(human.id).data
    assert attachment.entitlement_feature.id == feature.id


def test_another_installations_lookup_key_and_meter_are_never_taken(
    tmp_path: Path, emulator: Any, make_controller: MakeController
) -> None:
    """Found by a fresh-user test of issue 8: a second installation with the same explicit
    lookup key took it with transfer_lookup_key, and could adopt the first one's meter."""
    catalog = """\
products:
  - name: api
    title: API
    prices:
      - name: monthly
        interval: month
        amount: 100
        currency: usd
        lookup_key: api_monthly
      - name: usage
        interval: month
        usage_type: metered
        amount: 5
        currency: usd
        meter:
          event_name: api_calls
          display_name: API calls
"""
    converge(make_controller(write_desired(tmp_path / "a", catalog, installation="alpha")))
    beta = make_controller(write_desired(tmp_path / "b", catalog, installation="beta"))
    from billing_reconciler.controller import PlanOptions

    plan = beta.plan(PlanOptions(adopt_all=True)).plan
    assert plan.refused
    assert any("'api_monthly' is held by" in r and "'alpha'" in r for r in plan.refusals)
    assert any("belongs to installation 'alpha'" in r for r in plan.refusals)
    again = make_controller(write_desired(tmp_path / "a", catalog, installation="alpha"))
    assert again.plan().plan.steps == ()

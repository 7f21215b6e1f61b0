"""A new or lost store meeting a Stripe that already matches desired/ (issue 10, fresh user).

The catalog plan is "No changes." and nothing is sent to Stripe, but the store must still learn
what was applied: otherwise the host API's catalog reads stay empty and drift detection (the
third side of the diff) stays off for every in-sync object, for good.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import stripe
from fastapi.testclient import TestClient

from billing_reconciler.desired import load_desired
from billing_reconciler.domains.catalog_domain import RECORD_KIND
from billing_reconciler.planning.plan import Reason
from billing_reconciler.planning.render import render_markdown, render_text
from billing_reconciler.planning.serialize import plan_from_json, plan_to_json
from billing_reconciler.store import LastAppliedRepository, Store
from tests.integration.api.conftest import APP, V1, Settings, build_app

from .conftest import MakeController, converge, write_desired

# The shipped conftest catalog: 1 feature, 3 products, 5 prices, 1 attachment, 2 plans.
OBJECTS = 1 + 3 + 5 + 1


def writes(emulator: Any) -> list[Any]:
    return [r for r in emulator.control.requests(method="POST") if r.path.startswith("/v1/")]


def last_applied(store: Store) -> dict[str, Any]:
    with store.session() as session:
        return dict(LastAppliedRepository(session).for_installation("default"))


def records_by_key(steps: Any) -> dict[str, str | None]:
    return {step.key: step.stripe_id for step in steps}


def lose_the_store(tmp_path: Path, store: Store) -> Store:
    """Close the store and delete its SQLite file: the next one starts empty."""
    path = tmp_path / "state.db"
    store.close()
    path.unlink()
    return Store.open(f"sqlite:///{path}")


def test_an_in_sync_catalog_is_recorded_in_a_lost_store_without_a_stripe_write(
    tmp_path: Path, emulator: Any, store: Store, make_controller: MakeController
) -> None:
    state = write_desired(tmp_path)
    converge(make_controller(state))
    applied_before = last_applied(store)
    assert len(applied_before) == OBJECTS

    fresh = lose_the_store(tmp_path, store)
    try:
        controller = make_controller(state, store=fresh)
        planned = controller.plan()
        plan = planned.plan
        # A dry run: no change to Stripe, but it says what the store will record.
        assert plan.steps == ()
        assert not plan.has_changes
        records = [r for r in plan.restores if r.kind == RECORD_KIND]
        assert sorted(r.key for r in records) == sorted(applied_before)
        assert all(r.reason is Reason.STORE_LOST for r in records)
        # Every Stripe id is known but an attachment's: it is taken from its product's
        # `br_features` record, not listed (no list call per product; a detach lists it).
        assert [r.key for r in records if not r.stripe_id] == ["product_feature/base/api_access"]
        text = render_text(plan)
        assert text.endswith("No changes.\n")
        # The last-applied records and the two plan records (`reconcile` names them all).
        assert "Store records to write (12; " in text
        base_line = f"  + product/base {records_by_key(records)['product/base']}  (last_applied)"
        assert base_line in text.splitlines()
        assert "`product/base`" in render_markdown(plan)
        assert last_applied(fresh) == {}  # planning wrote nothing
        # A saved plan (`--out`) carries the same records.
        assert plan_from_json(plan_to_json(plan)).restores == plan.restores

        emulator.control.clear_requests()
        _, outcomes, residual = controller.apply(planned)
        assert writes(emulator) == []  # recorded without a Stripe write
        assert residual.converged, residual
        assert residual.restores == ()
        assert len(outcomes) == len(plan.restores)
        recorded = last_applied(fresh)
        assert {k: (e.kind, dict(e.fields)) for k, e in recorded.items()} == {
            k: (e.kind, dict(e.fields)) for k, e in applied_before.items()
        }
        assert {k: e.stripe_id for k, e in recorded.items() if e.kind != "product_feature"} == {
            k: e.stripe_id for k, e in applied_before.items() if e.kind != "product_feature"
        }

        # Idempotent: the next pass has nothing to record, and writes nothing.
        again = make_controller(state, store=fresh).plan().plan
        assert again.steps == ()
        assert again.restores == ()

        # The host API's catalog reads answer from what is now recorded.
        with TestClient(build_app(fresh, Settings())) as api:
            products = api.get(f"{V1}/billing/products", headers=APP).json()["data"]
            features = api.get(f"{V1}/billing/features", headers=APP).json()["data"]
            plans = api.get(f"{V1}/billing/plans", headers=APP).json()["data"]
        assert sorted((p["name"], p["title"]) for p in products) == [
            ("base", "Base platform"),
            ("credits", "Credits"),
            ("seats", "Seats"),
        ]
        assert {len(p["prices"]) for p in products if p["name"] == "base"} == {2}
        assert [(f["name"], f["title"]) for f in features] == [("api_access", "API access")]
        assert sorted(p["name"] for p in plans) == ["team_monthly", "team_yearly"]

        # Drift detection is on again: an edit in the dashboard is drift, not a desired change.
        base = recorded["product/base"].stripe_id
        human = stripe.StripeClient("sk_test_human", base_addresses={"api": emulator.url})
        human.v1.products.update(base, {"name": "Renamed by hand"})
        drifted = make_controller(state, store=fresh).plan().plan
        assert [(d.key, d.path, d.live) for d in drifted.drift] == [
            ("product/base", "title", "Renamed by hand")
        ]
        [step] = drifted.steps
        assert (step.key, step.reason) == ("product/base", Reason.DRIFT)
    finally:
        fresh.close()


def test_an_object_that_differs_is_planned_not_recorded(
    tmp_path: Path, emulator: Any, store: Store, make_controller: MakeController
) -> None:
    """Only objects equal to desired are recorded; one edited while the store was lost is a
    planned change (drift cannot be told apart then), recorded by its own step."""
    state = write_desired(tmp_path)
    converge(make_controller(state))
    base = last_applied(store)["product/base"].stripe_id
    fresh = lose_the_store(tmp_path, store)
    try:
        human = stripe.StripeClient("sk_test_human", base_addresses={"api": emulator.url})
        human.v1.products.update(base, {"name": "Renamed by hand"})
        plan = make_controller(state, store=fresh).plan().plan
        assert [s.key for s in plan.steps] == ["product/base"]
        records = {r.key for r in plan.restores if r.kind == RECORD_KIND}
        assert "product/base" not in records
        assert len(records) == OBJECTS - 1
    finally:
        fresh.close()


def test_an_attachment_removed_in_the_dashboard_meanwhile_still_converges(
    tmp_path: Path, emulator: Any, store: Store, make_controller: MakeController
) -> None:
    """The product's `br_features` record stands for its attachments (no list call per
    product), so the apply that records them converges; `verify_attachments` finds it."""
    state = write_desired(tmp_path)
    converge(make_controller(state))
    before = last_applied(store)
    fresh = lose_the_store(tmp_path, store)
    try:
        human = stripe.StripeClient("sk_test_human", base_addresses={"api": emulator.url})
        product = before["product/base"].stripe_id
        human.v1.products.features.delete(
            product, before["product_feature/base/api_access"].stripe_id
        )
        controller = make_controller(state, store=fresh)
        planned = controller.plan()
        assert planned.plan.steps == ()
        _, _, residual = controller.apply(planned)
        assert residual.converged, residual
        billing = tmp_path / "billing.yaml"
        billing.write_text(billing.read_text() + "  verify_attachments: true\n")
        verifying = load_desired(tmp_path).state
        assert verifying is not None
        steps = make_controller(verifying, store=fresh).plan().plan.steps
        assert [(s.action.value, s.key) for s in steps] == [
            ("create", "product_feature/base/api_access")
        ]
    finally:
        fresh.close()

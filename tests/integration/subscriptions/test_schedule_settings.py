"""A schedule of ours stays right after the fact (DESIGN §16, tester T1 findings 3, 4, 14g;
helper H3): `billing.stripe_auto_tax` flipped rewrites the schedule's later phases too (the
next phase would turn tax back off); a period-end change whose boundary passed while nothing
reconciled is mirrored, not rewritten into a phase ending before it starts; an immediate
change to a yearly plan settles in one pass (its monthly billing of added seats included) and
leaves the schedule's marker on the new plan. The host API on a `World`'s store, the domains
against the emulator over HTTP, on SQLite and PostgreSQL, time moved by the test clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from billing_reconciler.api import ApiContext, ApiTokens, api_router, install_error_handlers
from billing_reconciler.config import BillingConfig, Secret
from billing_reconciler.desired import load_desired
from billing_reconciler.domains.subscription_rules import SCHEDULE_STEP, SETTING_AUTO_TAX
from billing_reconciler.store import IntentRepository, PlanHistoryRepository

from .conftest import DAY, FEB_15, World

APP_TOKEN = "app-token-0123456789"
APP = {"Authorization": f"Bearer {APP_TOKEN}"}
SUBS = "/v1beta1/organizations/acme/billing/subscriptions"
YEAR = 365 * DAY


@pytest.fixture
def api(world: World) -> Iterator[TestClient]:
    def config() -> BillingConfig:
        result = load_desired(world.directory)
        assert result.state is not None, [str(d) for d in result.diagnostics]
        return result.state.config

    context = ApiContext(
        store=world.store,
        tokens=ApiTokens(app=(Secret(APP_TOKEN),)),
        config=config,
        installation_id=lambda: "test",
        clock=lambda: datetime.fromtimestamp(world.now(), UTC),
    )
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(api_router(context))
    with TestClient(app, raise_server_exceptions=True) as client:
        yield client


def _subscribed(world: World) -> tuple[str, str]:
    """acme on team_monthly (2 members, a card), mirrored: (the intent id, the Stripe id)."""
    world.configure(default_plan="")
    world.open("acme", members=2)
    world.reconcile()
    world.add_card("acme")
    intent_id = world.subscribe("acme", "team_monthly")
    world.reconcile()
    world.reconcile()  # mirrored
    (sub,) = world.subscriptions("acme")
    return intent_id, str(sub.id)


def _change(api: TestClient, intent_id: str, **body: Any) -> dict[str, Any]:
    answer = api.post(f"{SUBS}/{intent_id}/change", json=body, headers=APP)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _schedule(world: World, sub_id: str) -> Any:
    sub = world.stripe.v1.subscriptions.retrieve(sub_id)
    assert sub.schedule is not None
    return world.stripe.v1.subscription_schedules.retrieve(str(sub.schedule))


def _taxes(schedule: Any) -> list[bool | None]:
    data = schedule.to_dict()
    return [(p.get("automatic_tax") or {}).get("enabled") for p in data["phases"]]


def test_auto_tax_flipped_rewrites_the_schedule_phases_and_the_next_phase_keeps_it(
    world: World, api: TestClient
) -> None:
    intent_id, sub_id = _subscribed(world)
    _change(api, intent_id, plan="team_yearly")
    world.reconcile()
    schedule = _schedule(world, sub_id)
    assert world.plan().steps == ()

    world.configure(default_plan="", auto_tax=True)
    planned = world.plan(allow_mass_change=True)
    by_kind = {s.kind: s for s in planned.steps}
    written = by_kind[SCHEDULE_STEP]
    assert written.causes == (SETTING_AUTO_TAX,)
    assert written.mass_change  # guarded as the subscription's own rewrite is
    assert [(c.path, c.before, c.after) for c in written.changes] == [
        ("automatic_tax", False, True)
    ]
    world.reconcile(allow_mass_change=True)
    assert world.plan().steps == ()
    rewritten = _schedule(world, sub_id)
    assert rewritten.id == schedule.id
    assert _taxes(rewritten)[-1] is True
    assert world.stripe.v1.subscriptions.retrieve(sub_id).automatic_tax.enabled is True

    world.advance(FEB_15 + 2 * 3600)
    moved = world.stripe.v1.subscriptions.retrieve(sub_id)
    assert moved.metadata["plan"] == "team_yearly"
    assert moved.automatic_tax.enabled is True  # the yearly phase did not turn it off
    world.reconcile()
    assert world.plan().steps == ()


def test_a_change_that_took_effect_unseen_is_mirrored_without_a_schedule_write(
    world: World, api: TestClient
) -> None:
    intent_id, sub_id = _subscribed(world)
    _change(api, intent_id, plan="team_yearly")
    world.reconcile()
    schedule = _schedule(world, sub_id)

    # Nothing reconciles while the test clock passes the phase boundary: Stripe enters the
    # yearly phase on its own. The controller's clock stays behind it (as `serve`'s wall
    # clock is behind a test clock advanced into the future): Stripe's `current_phase` says
    # which phase is in force, not the controller's now.
    world.stripe.v1.test_helpers.test_clocks.advance(
        world.test_clock, {"frozen_time": FEB_15 + 3 * DAY}
    )
    world.clock[0] = float(FEB_15 - DAY)
    moved = world.stripe.v1.subscriptions.retrieve(sub_id)
    assert moved.metadata["plan"] == "team_yearly"
    planned = world.plan()
    assert [s for s in planned.steps if s.kind == SCHEDULE_STEP] == []
    world.reconcile()
    assert world.plan().steps == ()
    with world.store.session() as session:
        intent = IntentRepository(session).current(world.account("acme").id)
        assert intent is not None
        assert (intent.plan, intent.pending_change) == ("team_yearly", None)
        plans = [h.plan for h in PlanHistoryRepository(session).history(intent.account_id)]
    assert plans[:2] == ["team_monthly", "team_yearly"]
    answer = api.get(f"{SUBS}/{intent_id}", headers=APP).json()
    assert (answer["plan"], answer["pending_change"]) == ("team_yearly", None)
    assert _schedule(world, sub_id).id == schedule.id  # kept, on its yearly phase


def test_an_immediate_change_to_a_yearly_plan_settles_in_one_pass(
    world: World, api: TestClient
) -> None:
    intent_id, sub_id = _subscribed(world)
    _change(api, intent_id, plan="team_yearly", immediate=True)
    world.reconcile()
    assert world.plan().steps == ()
    moved = world.stripe.v1.subscriptions.retrieve(sub_id)
    assert [i.price.recurring.interval for i in moved["items"].data] == ["year", "year"]
    pending = moved.to_dict()["pending_invoice_item_interval"]
    assert (pending["interval"], pending["interval_count"]) == ("month", 1)
    # The schedule's marker names the plan it holds the subscription on (not the old one).
    assert _schedule(world, sub_id).metadata["plan"] == "team_yearly"
    assert world.reconcile().steps == ()  # the mirror moves the intent on
    answer = api.get(f"{SUBS}/{intent_id}", headers=APP).json()
    assert (answer["plan"], answer["pending_change"]) == ("team_yearly", None)

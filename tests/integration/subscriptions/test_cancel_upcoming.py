"""Cancel upcoming changes through the API, against Stripe (issue 11, Tests: "cancel upcoming
-> schedule back to one phase"; DESIGN §16, §19).

The host API on a `World`'s store and billing.yaml (the reconciles it asks for are run by the
test, one pass of every domain each, as `serve` runs them). A change to the yearly plan at the
period end puts a two-phase schedule on the subscription; `{cancel_upcoming_changes: true}`
answers `pending_change: null`, and its reconcile leaves the subscription with no upcoming
phase in Stripe (the schedule released, or back to the one phase in force); past the period
end the subscription renews on the plan it had, and the store says so.
"""

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
from billing_reconciler.store import (
    IntentRepository,
    PlanHistoryRepository,
    SubscriptionMirrorRepository,
)

from .conftest import FEB_15, T0, World

APP_TOKEN = "app-token-0123456789"
APP = {"Authorization": f"Bearer {APP_TOKEN}"}
SUBS = "/v1beta1/organizations/acme/billing/subscriptions"


def rfc(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


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


def _schedule_of(world: World, sub_id: str) -> Any:
    sub = world.stripe.v1.subscriptions.retrieve(sub_id)
    if sub.schedule is None:
        return None
    return world.stripe.v1.subscription_schedules.retrieve(str(sub.schedule))


def _phase_plans(schedule: Any) -> list[str | None]:
    return [p.metadata.to_dict().get("plan") if p.metadata else None for p in schedule.phases]


def test_cancel_upcoming_leaves_one_phase_and_the_renewal_keeps_the_plan(
    world: World, api: TestClient
) -> None:
    world.configure(default_plan="")
    world.open("acme", members=2)
    world.reconcile()
    world.add_card("acme")
    intent_id = world.subscribe("acme", "team_monthly")
    world.reconcile()
    world.reconcile()  # mirrored
    (sub,) = world.subscriptions("acme")

    changed = api.post(f"{SUBS}/{intent_id}/change", json={"plan": "team_yearly"}, headers=APP)
    assert changed.status_code == 200, changed.text
    assert changed.json()["pending_change"] == {
        "plan": "team_yearly",
        "effective_at": rfc(FEB_15),
        "reason": "change",
    }
    world.reconcile()
    schedule = _schedule_of(world, sub.id)
    assert schedule is not None
    assert _phase_plans(schedule) == ["team_monthly", "team_yearly"]
    assert next((p.start_date, p.end_date) for p in schedule.phases) == (T0, FEB_15)

    dropped = api.post(
        f"{SUBS}/{intent_id}/change", json={"cancel_upcoming_changes": True}, headers=APP
    )
    assert dropped.status_code == 200, dropped.text
    answer = dropped.json()
    assert answer["pending_change"] is None
    assert answer["plan"] == "team_monthly"
    world.reconcile()

    # In Stripe: no upcoming phase (released, or the one phase in force, on the same plan).
    left = _schedule_of(world, sub.id)
    if left is not None:
        assert left.id == schedule.id  # the same schedule, never a second one
        assert _phase_plans(left) == ["team_monthly"]
        assert [(p.start_date, p.end_date) for p in left.phases] == [(T0, FEB_15)]
        assert left.end_behavior == "release"
    schedules = world.stripe.v1.subscription_schedules.list({"customer": sub.customer}).data
    assert len(schedules) == 1
    assert world.reconcile().steps == ()
    got = api.get(f"{SUBS}/{intent_id}", headers=APP)
    assert got.status_code == 200, got.text
    assert (got.json()["plan"], got.json()["pending_change"]) == ("team_monthly", None)

    # Past the period end: renewed on the monthly plan, nothing yearly, the store agreeing.
    world.advance(FEB_15 + 3600)
    world.reconcile()
    world.reconcile()
    (renewed,) = world.subscriptions("acme")
    assert renewed.id == sub.id
    assert renewed.status == "active"
    assert renewed.metadata["plan"] == "team_monthly"
    assert {i.price.recurring.interval for i in renewed["items"].data} == {"month"}
    assert sorted(i.quantity for i in renewed["items"].data) == [1, 2]
    assert {i.current_period_start for i in renewed["items"].data} == {FEB_15}
    customer = str(sub.customer)
    cycles = [
        i.total
        for i in world.stripe.v1.invoices.list({"customer": customer, "limit": 100}).data
        if i.billing_reason == "subscription_cycle"
    ]
    assert cycles == [4900 + 2 * 900]
    account = world.account("acme")
    with world.store.session() as session:
        intent = IntentRepository(session).current(account.id)
        mirror = SubscriptionMirrorRepository(session).get(sub.id)
        history = PlanHistoryRepository(session).history(account.id)
    assert intent is not None
    assert (intent.id, intent.plan, intent.pending_change) == (intent_id, "team_monthly", None)
    assert mirror is not None
    assert (mirror.plan, mirror.status, mirror.record.current_period_start) == (
        "team_monthly",
        "active",
        FEB_15,
    )
    assert [(p.plan, p.ended_at is None) for p in history] == [("team_monthly", True)]
    got = api.get(f"{SUBS}/{intent_id}", headers=APP)
    assert (got.json()["plan"], got.json()["pending_change"]) == ("team_monthly", None)

"""Subscription webhooks out of order and duplicated: the mirror ends equal to Stripe's final
state (issue 11, Tests; DESIGN §11, §16).

A subscription lives through several changes (seats 2 -> 3, a change to the yearly plan at the
period end through a two-phase schedule, that change dropped, a cancel at the period end),
each made by one pass of the domains as `serve` makes them; the store's mirror lags one pass
behind, as it does between a write and the pass that reads it back. The `customer.subscription.*`
and `subscription_schedule.*` events Stripe emitted for them (read from `/v1/events`) are then
delivered to the webhook endpoint (the real receiver: signature, inbox, routing) shuffled and
each two or three times; every reconcile a delivery asks for runs, in delivery order, as the
worker runs it (the request's domain, scoped to the request's keys). Afterwards the mirror
equals the subscription in Stripe (status, items and quantities, periods, cancel times,
schedule id; `mirrors.assert_mirror_is_stripe`), nothing is left to do, and every duplicate
was acknowledged and dropped.

Beside it, the ordering rule of the mirror (`observed_at`, store.subscriptions): a pass that
read the subscription before a newer state was mirrored, applied after it (two passes racing,
the older one last), must not roll the mirror back.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from typing import Any

import httpx
from fastapi.testclient import TestClient

from billing_reconciler.config import Secret
from billing_reconciler.controller import PlanOptions
from billing_reconciler.domains.subscriptions import MIRROR_STEP
from billing_reconciler.model_subscriptions import PendingChange
from billing_reconciler.registry import by_name
from billing_reconciler.runtime.app import create_app
from billing_reconciler.runtime.events import ReconcileRequest
from billing_reconciler.runtime.health import Readiness
from billing_reconciler.runtime.metrics import Metrics
from billing_reconciler.runtime.webhooks import WEBHOOK_PATH
from billing_reconciler.store import (
    InboxRepository,
    IntentRepository,
    MemberRepository,
    SubscriptionMirrorRepository,
)
from billing_reconciler.stripe_gateway import sign_webhook_payload
from tests.fixtures.emulator import TEST_API_KEY

from .conftest import FEB_15, World
from .mirrors import assert_mirror_is_stripe

SECRET = Secret("whsec_SubscriptionOrderTests0001")
PREFIXES = ("customer.subscription.", "subscription_schedule.")
SEED = 20261203
ACME = frozenset({"customer/acme"})


def _events(world: World, customer: str) -> list[dict[str, Any]]:
    """The subscription and schedule events of `customer`, oldest first, as Stripe sent
    them (the raw JSON of `/v1/events`)."""
    events: list[dict[str, Any]] = []
    after: str | None = None
    with httpx.Client(base_url=world.emulator.url, auth=(TEST_API_KEY, "")) as http:
        while True:
            params: dict[str, Any] = {"limit": 100}
            if after is not None:
                params["starting_after"] = after
            page = http.get("/v1/events", params=params).raise_for_status().json()
            events.extend(page["data"])
            if not page["has_more"]:
                break
            after = page["data"][-1]["id"]
    ours = [
        e
        for e in events
        if str(e["type"]).startswith(PREFIXES) and e["data"]["object"].get("customer") == customer
    ]
    return list(reversed(ours))


def _live_subscription(world: World) -> Any:
    (sub,) = world.subscriptions("acme")
    return sub


def _one_pass(world: World) -> None:
    """One pass of every domain (a write, and the read-back of the pass before)."""
    world.reconcile(ACME)


class Worker:
    """The webhook endpoint and the worker behind it: deliveries are accepted by the real
    receiver, the reconciles they ask for run in order, each as `serve`'s worker runs it."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.requests: list[ReconcileRequest] = []
        app = create_app(
            store=world.store,
            webhook_secrets=(SECRET,),
            enqueue=self.requests.append,
            readiness=lambda: Readiness(ready=True, checks={"store": "ok"}),
            metrics=Metrics(),
            clock=time.time,
        )
        self.client = TestClient(app)

    def deliver(self, event: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(event)
        header = sign_webhook_payload(payload=body, secret=SECRET, timestamp=int(time.time()))
        response = self.client.post(
            WEBHOOK_PATH,
            content=body,
            headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def run(self) -> None:
        registrations = by_name()
        while self.requests:
            request = self.requests.pop(0)
            controller = self.world.controller(registrations[request.domain])
            planned = controller.plan(PlanOptions(scope=request.scope))
            if planned.plan.has_work:
                _, _, residual = controller.apply(planned)
                assert residual.converged, (request, residual)


def _a_subscription_through_several_changes(world: World) -> tuple[str, str]:
    """acme on team_monthly with 2 seats, then a change to team_yearly at the period end (a
    two-phase schedule), that change dropped (the schedule back to one phase), a cancel at the
    period end (the schedule ends by cancelling), then a third seat; one pass each.
    (customer id, subscription id)."""
    world.configure(default_plan="")
    world.open("acme", members=2)
    world.reconcile()
    world.add_card("acme")
    world.subscribe("acme", "team_monthly")
    _one_pass(world)
    _one_pass(world)  # mirrored
    account = world.account("acme")
    assert account.stripe_customer_id is not None
    sub = _live_subscription(world)

    with world.store.session() as session:
        IntentRepository(session).set_pending_change(
            account.id, PendingChange("team_yearly", effective_at=FEB_15)
        )
    _one_pass(world)
    scheduled = _live_subscription(world)
    assert scheduled.schedule is not None
    schedule = world.stripe.v1.subscription_schedules.retrieve(str(scheduled.schedule))
    plans = [p.metadata.to_dict().get("plan") if p.metadata else None for p in schedule.phases]
    assert plans == ["team_monthly", "team_yearly"]

    with world.store.session() as session:
        IntentRepository(session).clear_pending_change(account.id)
    _one_pass(world)
    schedule = world.stripe.v1.subscription_schedules.retrieve(str(scheduled.schedule))
    assert len(schedule.phases) == 1

    with world.store.session() as session:
        IntentRepository(session).request_cancel(account.id, immediate=False, effective_at=FEB_15)
    _one_pass(world)
    schedule = world.stripe.v1.subscription_schedules.retrieve(str(scheduled.schedule))
    assert schedule.end_behavior == "cancel"

    with world.store.session() as session:
        MemberRepository(session).upsert("acme", "user-2")
    _one_pass(world)
    assert sorted(i.quantity for i in _live_subscription(world)["items"].data) == [1, 3]
    return account.stripe_customer_id, sub.id


def test_shuffled_and_duplicated_subscription_webhooks_leave_the_mirror_equal_to_stripe(
    world: World,
) -> None:
    customer, sub_id = _a_subscription_through_several_changes(world)
    final = _live_subscription(world)
    assert final.id == sub_id
    # The last pass's write (the third seat) is not mirrored yet: the mirror is behind.
    with world.store.session() as session:
        behind = SubscriptionMirrorRepository(session).get(sub_id)
    assert behind is not None
    assert sorted(i.quantity or 0 for i in behind.record.items) == [1, 2]

    events = _events(world, customer)
    types = Counter(e["type"] for e in events)
    assert types["customer.subscription.created"] == 1
    assert types["customer.subscription.updated"] >= 2, types
    assert types["subscription_schedule.created"] == 1, types
    assert types["subscription_schedule.updated"] >= 3, types
    chooser = random.Random(SEED)
    deliveries = [e for e in events for _ in range(chooser.choice((2, 3)))]
    chooser.shuffle(deliveries)
    print(f"seed {SEED}: {[(e['type'], e['id']) for e in deliveries]}")

    worker = Worker(world)
    seen: set[str] = set()
    for event in deliveries:
        answer = worker.deliver(event)
        assert answer["duplicate"] is (event["id"] in seen), event["id"]
        seen.add(event["id"])
        worker.run()  # what the delivery asked for, before the next one arrives

    with world.store.session() as session:
        inbox = InboxRepository(session)
        assert inbox.count() == len(events)
    assert_mirror_is_stripe(world, world.subscriptions("acme"))
    assert len(world.subscriptions()) == 1
    assert world.plan().steps == ()


def test_a_stale_observation_applied_after_a_newer_one_does_not_roll_the_mirror_back(
    world: World,
) -> None:
    world.configure(default_plan="")
    world.open("acme", members=2)
    world.reconcile()
    world.add_card("acme")
    world.subscribe("acme", "team_monthly")
    _one_pass(world)
    _one_pass(world)
    sub_id = _live_subscription(world).id

    # A third seat, written and read back by a pass at t+10 (the mirror then has 3 seats).
    with world.store.session() as session:
        MemberRepository(session).upsert("acme", "user-2")
    _one_pass(world)
    world.clock[0] += 10
    subscriptions = world.controller(by_name()["subscriptions"])
    older = subscriptions.plan(PlanOptions(scope=ACME))  # reads 3 seats at t+10
    assert [r.kind for r in older.plan.restores].count(MIRROR_STEP) == 1

    # A fourth seat, written, then read back at t+20: the mirror has 4 seats.
    with world.store.session() as session:
        MemberRepository(session).upsert("acme", "user-3")
    world.clock[0] += 5
    _one_pass(world)
    world.clock[0] += 5
    _one_pass(world)
    newest = _live_subscription(world)
    assert sorted(i.quantity for i in newest["items"].data) == [1, 4]
    assert_mirror_is_stripe(world, [newest])

    # The pass that read 3 seats at t+10 lands last: its mirror restore is stale.
    _, _, residual = subscriptions.apply(older)
    del residual  # whatever it re-plans, the mirror must keep the newer observation
    with world.store.session() as session:
        kept = SubscriptionMirrorRepository(session).get(sub_id)
    assert kept is not None
    assert sorted(i.quantity or 0 for i in kept.record.items) == [1, 4]
    assert_mirror_is_stripe(world, [_live_subscription(world)])

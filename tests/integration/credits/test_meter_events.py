"""The usage outbox sent to Stripe as meter events (issue 12 item 2, DESIGN §17, §19).

Over HTTP to the emulator, on SQLite and PostgreSQL: one step per customer, each event with
the usage id as identifier, the usage's time as timestamp and the catalog meter's payload
keys; an account without a Stripe customer waits; an event Stripe already holds counts as
sent; one Stripe refuses is kept and reported; the plan and the store state the depth.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from billing_reconciler.desired import load_desired
from billing_reconciler.domains.credit_meters import (
    METER_EVENTS_STEP,
    METER_KEY_PREFIX,
)
from billing_reconciler.domains.credits import CreditsDomain
from billing_reconciler.planning.fleet import render_fleet_markdown, render_fleet_text
from billing_reconciler.planning.serialize import plan_from_dict, plan_to_dict
from billing_reconciler.registry import CREDITS, DOMAINS, by_name
from billing_reconciler.runtime.events import ReconcileRequest
from billing_reconciler.runtime.service import api_request
from billing_reconciler.store.accounts import ACTIVE, DISABLED, AccountRepository
from tests.integration.credits.conftest import COUNT, SUM, MeterWorld, make_client


def test_the_credits_domain_is_registered_after_subscriptions() -> None:
    names = [registration.name for registration in DOMAINS]
    assert names.index("credits") == names.index("subscriptions") + 1
    assert METER_EVENTS_STEP in CREDITS.domain.kinds
    assert isinstance(CREDITS.domain, CreditsDomain)


def test_the_apis_request_for_a_customer_reconciles_its_meter_events_too() -> None:
    """DESIGN §19: the outbox is flushed at once after each write (the API's targeted
    `customer/<org>` request reaches the credits domain) and at least every 10 s."""
    queued: list[ReconcileRequest] = []

    def put(request: ReconcileRequest, **_: object) -> bool:
        queued.append(request)
        return True

    api_request(
        "customer",
        frozenset({"acme"}),
        "usage",
        registrations=by_name(),
        put=put,
        writing=lambda: False,
        stopping=lambda: False,
    )
    assert ReconcileRequest("credits", frozenset({"customer/acme"}), "usage") in queued
    state = load_desired(Path(__file__).parents[3] / "desired").state
    assert state is not None
    assert CREDITS.domain.refresh_seconds(state) <= 10


def test_each_usage_is_one_meter_event_with_its_id_time_and_the_meters_keys(
    meters: MeterWorld,
) -> None:
    meters.open(["acme", "globex", "offline-co"], offline=["offline-co"])
    at = int(time.time()) - 120
    sums = meters.usages("acme", 5, value=7, at=at)
    logins = meters.usages("acme", 2, event_name=COUNT, at=at, prefix="l")
    other = meters.usages("globex", 3, value=2, at=at)
    waiting = meters.usages("offline-co", 4, at=at)
    plan = meters.plan()
    steps = {s.key: s for s in plan.steps}
    assert set(steps) == {f"{METER_KEY_PREFIX}/acme", f"{METER_KEY_PREFIX}/globex"}
    assert steps[f"{METER_KEY_PREFIX}/acme"].params["events"] == 7
    assert CREDITS.domain.scope_of(f"{METER_KEY_PREFIX}/acme") == "customer/acme"
    messages = {n.key: n.message for n in plan.notices}
    assert "offline account" in messages[f"{METER_KEY_PREFIX}/offline-co"]
    # Tester T1 F8: the depth is a plain line of the plan, not "refused or waiting".
    (depth,) = plan.info
    assert depth.startswith("meter outbox: 14 meter event(s) unsent, the oldest")
    assert not any("unsent" in n.message for n in plan.notices)
    text = render_fleet_text(plan)
    assert "Refused or waiting (1;" in text
    assert f"Info:\n  i {depth}\n" in text
    assert f"- {depth}" in render_fleet_markdown(plan)
    assert plan_from_dict(plan_to_dict(plan)).info == plan.info

    meters.send()
    events = {e["identifier"]: e for e in meters.events()}
    assert set(events) == {*sums, *logins, *other}
    acme, globex = meters.customer("acme"), meters.customer("globex")
    assert events[sums[0]]["payload"] == {"customer": acme, "requests": "7"}
    assert events[sums[0]]["timestamp"] == at
    assert events[sums[0]]["event_name"] == SUM
    assert events[logins[0]]["payload"] == {"stripe_customer_id": acme, "value": "1"}
    assert events[other[0]]["payload"] == {"customer": globex, "requests": "2"}
    assert not set(waiting) & set(events)
    # Each sent once, under a key derived from the event (a retry replays it).
    keys = [r.idempotency_key for r in meters.sends()]
    assert len(keys) == len(set(keys)) == 10
    assert meters.depth() == (4, 0)
    again = meters.plan()
    assert again.steps == ()
    assert {n.key for n in again.notices} == {f"{METER_KEY_PREFIX}/offline-co"}
    assert again.info[0].startswith("meter outbox: 4 meter event(s) unsent")


def test_an_event_stripe_already_holds_counts_as_sent(meters: MeterWorld) -> None:
    """A send whose answer was lost, then the key forgotten (past 24 h, another store): the
    identifier is refused as a duplicate, which proves the event is in Stripe."""
    meters.open(["acme"])
    at = int(time.time()) - 60
    ids = meters.usages("acme", 3, at=at)
    make_client(meters.emulator.url).v1.billing.meter_events.create(
        {
            "event_name": SUM,
            "identifier": ids[1],
            "timestamp": at,
            "payload": {"customer": meters.customer("acme"), "requests": "1"},
        }
    )
    meters.send()
    assert sorted(e["identifier"] for e in meters.events()) == sorted(ids)
    assert [r.status for r in meters.sends()] == [200, 200, 400, 200]
    assert meters.depth() == (0, 0)
    assert meters.plan().steps == ()


def test_an_event_stripe_refuses_is_kept_and_reported_not_dropped(meters: MeterWorld) -> None:
    meters.open(["acme"])
    old = meters.usages("acme", 1, at=time.time() - 40 * 86400, prefix="old")
    fresh = meters.usages("acme", 2, at=time.time() - 60)
    plan = meters.send()
    assert [s.key for s in plan.steps] == [f"{METER_KEY_PREFIX}/acme"]
    assert sorted(e["identifier"] for e in meters.events()) == sorted(fresh)
    assert meters.depth() == (0, 1)
    after = meters.plan()
    assert after.steps == ()  # not sent again by itself
    (warning,) = after.warnings
    assert "1 meter event(s) of org acme were refused by Stripe" in warning
    assert "timestamp" in warning
    assert old[0] not in {e["identifier"] for e in meters.events()}


def test_a_failed_send_keeps_the_event_and_the_next_pass_sends_it(meters: MeterWorld) -> None:
    from billing_reconciler.apply import ApplyError
    from billing_reconciler.stripe_gateway import NO_RETRY

    meters.configure(concurrency=1)
    meters.open(["acme"])
    ids = meters.usages("acme", 4, at=time.time() - 60)
    meters.emulator.control.add_fault(
        method="POST", path_prefix="/v1/billing/meter_events", nth=3, kind="500"
    )
    controller = meters.controller(CREDITS, retry=NO_RETRY)
    with pytest.raises(ApplyError):
        controller.apply(controller.plan())
    assert len(meters.events()) == 2
    assert meters.depth() == (2, 0)
    meters.send()
    assert sorted(e["identifier"] for e in meters.events()) == sorted(ids)
    assert meters.depth() == (0, 0)


def test_a_targeted_request_sends_only_that_customers_events(meters: MeterWorld) -> None:
    meters.open(["acme", "globex"])
    meters.usages("acme", 2, at=time.time() - 60)
    meters.usages("globex", 2, at=time.time() - 60)
    plan = meters.plan(frozenset({"customer/acme"}))
    assert [s.key for s in plan.steps] == [f"{METER_KEY_PREFIX}/acme"]


def test_events_of_a_disabled_account_without_a_customer_are_undeliverable(
    meters: MeterWorld,
) -> None:
    """Tester T1 F14: an offline account disabled with unsent events can never get a Stripe
    customer as it stands; its events were counted in the depth and the oldest age forever
    (a permanent false alert) under "waits until it has one". They are now undeliverable:
    kept, warned about, counted apart, and sent once the account is enabled and registered."""
    meters.open(["acme", "off3"], offline=["off3"])
    meters.usages("off3", 3, at=time.time() - 60)
    meters.usages("acme", 2, at=time.time() - 60, prefix="a")
    off3 = meters.account_id("off3")
    with meters.store.session() as session:
        AccountRepository(session).set_state(off3, DISABLED)
    plan = meters.plan()
    assert [s.key for s in plan.steps] == [f"{METER_KEY_PREFIX}/acme"]
    assert plan.notices == ()
    (warning,) = plan.warnings
    assert warning.startswith("3 meter event(s) of org off3 cannot be sent: its billing")
    assert plan.info[0].startswith("meter outbox: 2 meter event(s) unsent")
    assert CREDITS.facts is not None
    facts = {f.name: f.value for f in CREDITS.facts(meters.store)}
    assert facts["meter_outbox_depth"] == 2
    assert facts["meter_events_undeliverable"] == 3

    meters.send()
    facts = {f.name: f.value for f in CREDITS.facts(meters.store)}
    assert facts["meter_outbox_depth"] == 0
    assert facts["meter_outbox_oldest_age_seconds"] == 0.0  # the 3 kept ones are not "late"
    assert facts["meter_events_undeliverable"] == 3
    assert meters.plan().info == ()

    with meters.store.session() as session:  # enabled and registered: they are sent
        accounts = AccountRepository(session)
        accounts.set_state(off3, ACTIVE)
        accounts.update(off3, offline=False)
    controller = meters.controller(by_name()["customers"])
    _, _, residual = controller.apply(controller.plan())
    assert residual.converged
    meters.send()
    assert len(meters.events()) == 5
    facts = {f.name: f.value for f in CREDITS.facts(meters.store)}
    assert facts["meter_outbox_depth"] == facts["meter_events_undeliverable"] == 0

"""Subscription schedules through the real SDK over HTTP with test clocks: a schedule moves a
monthly subscription to another price at period end, release leaves the subscription as it
is, `end_behavior: cancel` cancels at the end, a `duration` phase; every served schedule (and
each event's object) matches the SDK classes (tests/sdk_shapes.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import stripe

from tests.fixtures.emulator import EmulatorHandle
from tests.sdk_shapes import event_problems, shape_problems

Client = stripe.StripeClient

T0 = 1768435200  # 2026-01-15T00:00:00Z
DAY = 86400
FEB_15 = T0 + 31 * DAY
MAR_15 = FEB_15 + 28 * DAY
APR_15 = MAR_15 + 31 * DAY

CLASSES: dict[str, type[Any]] = {
    "subscription_schedule": stripe.SubscriptionSchedule,
    "subscription": stripe.Subscription,
    "invoice": stripe.Invoice,
}


def _served(obj: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(obj.last_response.body)
    return body


def _price(client: Client, amount: int, name: str = "Gold") -> str:
    product = client.v1.products.create({"name": name})
    price = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": amount,
            "recurring": {"interval": "month"},
        }
    )
    return price.id


def _setup(client: Client) -> tuple[str, str]:
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": T0}).id
    customer = client.v1.customers.create({"test_clock": clock, "email": "s@example.com"}).id
    pm = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer})
    client.v1.customers.update(customer, {"invoice_settings": {"default_payment_method": pm.id}})
    return clock, customer


def _advance(client: Client, clock: str, to: int) -> None:
    advanced = client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": to})
    assert (advanced.status, advanced.frozen_time) == ("ready", to)


def _events(client: Client, prefix: str) -> list[stripe.Event]:
    events = reversed(client.v1.events.list({"limit": 100}).data)
    return [e for e in events if e.type.startswith(prefix)]


def _event_shapes(client: Client) -> list[str]:
    problems: list[str] = []
    body = _served(client.v1.events.list({"limit": 100}))
    for event in body["data"]:
        # `invoice.upcoming` carries a preview without `id` (tests/sdk_shapes.py allows it).
        problems += event_problems(event, CLASSES)
    return problems


def _prices_of(sub: stripe.Subscription) -> list[str]:
    return [item.price.id for item in sub["items"].data]


def test_schedule_moves_subscription_to_new_price_at_period_end(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    clock, customer = _setup(stripe_client)
    old, new = _price(stripe_client, 1000), _price(stripe_client, 2500, "Platinum")
    sub = stripe_client.v1.subscriptions.create({"customer": customer, "items": [{"price": old}]})
    assert sub.status == "active"
    schedule = stripe_client.v1.subscription_schedules.create({"from_subscription": sub.id})
    assert shape_problems(_served(schedule), stripe.SubscriptionSchedule) == []
    assert schedule.status == "active"
    assert schedule.subscription == sub.id
    assert (schedule.phases[0].start_date, schedule.phases[0].end_date) == (T0, FEB_15)
    assert schedule.current_phase is not None
    assert (schedule.current_phase.start_date, schedule.current_phase.end_date) == (T0, FEB_15)
    assert stripe_client.v1.subscriptions.retrieve(sub.id).schedule == schedule.id
    # A scheduled subscription's cancellation belongs to the schedule.
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.subscriptions.update(sub.id, {"cancel_at_period_end": True})
    assert refused.value.param == "cancel_at_period_end"

    updated = stripe_client.v1.subscription_schedules.update(
        schedule.id,
        {
            "phases": [
                {"items": [{"price": old}], "end_date": FEB_15},
                {"items": [{"price": new}], "proration_behavior": "none"},
            ],
            "metadata": {"plan": "platinum"},
        },
    )
    assert shape_problems(_served(updated), stripe.SubscriptionSchedule) == []
    assert [p.start_date for p in updated.phases] == [T0, FEB_15]
    assert updated.phases[1].end_date == MAR_15  # one interval of its price
    assert _prices_of(stripe_client.v1.subscriptions.retrieve(sub.id)) == [old]
    # The schedule's upcoming invoice is the renewal on the next phase's price (the
    # subscription's own preview still shows its current items).
    upcoming = stripe_client.v1.invoices.create_preview({"schedule": schedule.id})
    assert (upcoming.created, upcoming.total) == (FEB_15, 2500)
    lines = [li.to_dict() for li in upcoming.lines.data]
    assert [(li["pricing"]["price_details"]["price"], li["amount"]) for li in lines] == [
        (new, 2500)
    ]
    with pytest.raises(stripe.InvalidRequestError) as missing:
        stripe_client.v1.invoices.create_preview({"schedule": "sub_sched_missing"})
    assert (missing.value.http_status, missing.value.param) == (400, "schedule")
    assert missing.value.code == "resource_missing"

    _advance(stripe_client, clock, FEB_15 + 2 * 3600)
    moved = stripe_client.v1.subscriptions.retrieve(sub.id)
    assert _prices_of(moved) == [new]
    assert moved.status == "active"
    renewal = stripe_client.v1.invoices.retrieve(str(moved.latest_invoice))
    assert renewal.billing_reason == "subscription_cycle"
    assert (renewal.status, renewal.amount_paid) == ("paid", 2500)  # the new price, no proration
    assert renewal.total == upcoming.total
    current = stripe_client.v1.subscription_schedules.retrieve(schedule.id)
    assert current.current_phase is not None
    assert current.current_phase.start_date == FEB_15
    phase_updates = [
        e
        for e in _events(stripe_client, "customer.subscription.updated")
        if "items" in (e.data.previous_attributes or {})
        and e.data.previous_attributes["items"]["data"][0]["price"]["id"] == old
    ]
    assert [e.created for e in phase_updates] == [FEB_15]
    sched_events = [e.type for e in _events(stripe_client, "subscription_schedule.")]
    assert sched_events == [
        "subscription_schedule.created",
        "subscription_schedule.updated",
        "subscription_schedule.updated",
    ]

    # At the last phase's end the default end_behavior (release) lets the subscription go on.
    _advance(stripe_client, clock, MAR_15 + 2 * 3600)
    done = stripe_client.v1.subscription_schedules.retrieve(schedule.id)
    assert (done.status, done.subscription, done.released_subscription) == (
        "released",
        None,
        sub.id,
    )
    assert (done.released_at, done.current_phase) == (MAR_15, None)
    after = stripe_client.v1.subscriptions.retrieve(sub.id)
    assert (after.status, after.schedule, _prices_of(after)) == ("active", None, [new])
    assert shape_problems(_served(done), stripe.SubscriptionSchedule) == []
    assert _event_shapes(stripe_client) == []


def test_release_keeps_subscription_on_its_current_price(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    clock, customer = _setup(stripe_client)
    old, new = _price(stripe_client, 1000), _price(stripe_client, 2500, "Platinum")
    sub = stripe_client.v1.subscriptions.create({"customer": customer, "items": [{"price": old}]})
    schedule = stripe_client.v1.subscription_schedules.create({"from_subscription": sub.id})
    stripe_client.v1.subscription_schedules.update(
        schedule.id,
        {"phases": [{"items": [{"price": old}], "end_date": FEB_15}, {"items": [{"price": new}]}]},
    )
    released = stripe_client.v1.subscription_schedules.release(schedule.id)
    assert (released.status, released.released_subscription) == ("released", sub.id)
    assert released.released_at == T0  # the clock's time
    assert shape_problems(_served(released), stripe.SubscriptionSchedule) == []
    _advance(stripe_client, clock, FEB_15 + 2 * 3600)
    after = stripe_client.v1.subscriptions.retrieve(sub.id)
    assert (after.schedule, _prices_of(after), after.status) == (None, [old], "active")
    events = _events(stripe_client, "subscription_schedule.released")
    assert [e.created for e in events] == [T0]
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.subscription_schedules.release(schedule.id)
    listed = stripe_client.v1.subscription_schedules.list({"customer": customer})
    assert [s.id for s in listed.data] == [schedule.id]
    assert stripe_client.v1.subscription_schedules.list({"released_at": {"gte": T0}}).data
    assert not stripe_client.v1.subscription_schedules.list({"scheduled": True}).data


def test_end_behavior_cancel_with_a_duration_phase(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    clock, customer = _setup(stripe_client)
    basic, gold = _price(stripe_client, 1000, "Basic"), _price(stripe_client, 3000)
    schedule = stripe_client.v1.subscription_schedules.create(
        {
            "customer": customer,
            "end_behavior": "cancel",
            "phases": [
                {
                    "items": [{"price": basic, "quantity": 2}],
                    "duration": {"interval": "month", "interval_count": 1},
                    "metadata": {"phase": "intro"},
                },
                {"items": [{"price": gold}], "duration": {"interval": "month"}},
            ],
        }
    )
    assert shape_problems(_served(schedule), stripe.SubscriptionSchedule) == []
    assert [(p.start_date, p.end_date) for p in schedule.phases] == [
        (T0, FEB_15),
        (FEB_15, MAR_15),
    ]
    sub = stripe_client.v1.subscriptions.retrieve(str(schedule.subscription))
    assert (sub.status, sub.schedule, sub.metadata.to_dict()) == (
        "active",
        schedule.id,
        {"phase": "intro"},
    )
    assert [(i.price.id, i.quantity) for i in sub["items"].data] == [(basic, 2)]
    assert shape_problems(_served(sub), stripe.Subscription) == []

    _advance(stripe_client, clock, FEB_15 + 2 * 3600)
    sub = stripe_client.v1.subscriptions.retrieve(sub.id)
    assert [(i.price.id, i.quantity) for i in sub["items"].data] == [(gold, 1)]

    _advance(stripe_client, clock, MAR_15 + 2 * 3600)
    sub = stripe_client.v1.subscriptions.retrieve(sub.id)
    assert (sub.status, sub.canceled_at) == ("canceled", MAR_15)
    done = stripe_client.v1.subscription_schedules.retrieve(schedule.id)
    assert (done.status, done.completed_at, done.subscription) == ("completed", MAR_15, sub.id)
    completed = _events(stripe_client, "subscription_schedule.completed")
    assert [e.created for e in completed] == [MAR_15]
    assert [e.created for e in _events(stripe_client, "customer.subscription.deleted")] == [MAR_15]
    assert _event_shapes(stripe_client) == []


def test_cancel_cancels_the_subscription(stripe_client: Client, emulator: EmulatorHandle) -> None:
    _, customer = _setup(stripe_client)
    price = _price(stripe_client, 1000)
    schedule = stripe_client.v1.subscription_schedules.create(
        {"customer": customer, "phases": [{"items": [{"price": price}]}]}
    )
    canceled = stripe_client.v1.subscription_schedules.cancel(schedule.id)
    assert (canceled.status, canceled.canceled_at) == ("canceled", T0)
    sub = stripe_client.v1.subscriptions.retrieve(str(schedule.subscription))
    assert sub.status == "canceled"
    assert [e.type for e in _events(stripe_client, "subscription_schedule.")] == [
        "subscription_schedule.created",
        "subscription_schedule.canceled",
    ]
    assert shape_problems(_served(canceled), stripe.SubscriptionSchedule) == []


def test_canceling_the_subscription_cancels_its_schedule(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    _, customer = _setup(stripe_client)
    price = _price(stripe_client, 1000)
    sub = stripe_client.v1.subscriptions.create({"customer": customer, "items": [{"price": price}]})
    schedule = stripe_client.v1.subscription_schedules.create({"from_subscription": sub.id})
    stripe_client.v1.subscriptions.cancel(sub.id)
    after = stripe_client.v1.subscription_schedules.retrieve(schedule.id)
    assert (after.status, after.canceled_at, after.current_phase) == ("canceled", T0, None)
    assert [e.type for e in _events(stripe_client, "subscription_schedule.")] == [
        "subscription_schedule.created",
        "subscription_schedule.canceled",
    ]
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.subscription_schedules.update(schedule.id, {"end_behavior": "cancel"})


def test_refusals(stripe_client: Client, emulator: EmulatorHandle) -> None:
    _, customer = _setup(stripe_client)
    price = _price(stripe_client, 1000)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"customer": customer}, "phases"),
        (
            {
                "customer": customer,
                "phases": [{"items": [{"price": price}]}],
                "end_behavior": "renew",
            },
            "end_behavior",
        ),
        (
            {
                "customer": customer,
                "phases": [{"items": [{"price": price}]}, {"items": [{"price": price}]}],
            },
            "phases[0][end_date]",
        ),
        (
            {
                "customer": customer,
                "phases": [{"items": [{"price": price}], "add_invoice_items": [{"price": price}]}],
            },
            "phases[0][add_invoice_items]",
        ),
        (
            {
                "customer": customer,
                "phases": [{"items": [{"price": price}]}],
                "start_date": T0 - DAY,
            },
            "start_date",
        ),
        (
            {
                "customer": customer,
                "phases": [
                    {"items": [{"price": price}], "trial": True, "trial_end": T0 + DAY},
                ],
            },
            "phases[0][trial_end]",
        ),
        (
            {
                "customer": customer,
                "phases": [
                    {"items": [{"price": price}], "end_date": T0 + DAY, "trial_end": T0 + DAY},
                    {"items": [{"price": price}]},
                ],
            },
            "phases[0][trial_end]",
        ),
        ({"from_subscription": "sub_missing"}, "from_subscription"),
    ]
    for params, param in cases:
        with pytest.raises(stripe.InvalidRequestError) as refused:
            stripe_client.v1.subscription_schedules.create(params)  # type: ignore[arg-type]
        assert refused.value.param == param, params


def test_from_subscription_takes_no_other_parameter(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    """The SDK's `from_subscription` docstring: "other parameters (such as phase values)
    cannot be set"; Stripe refuses metadata too, with "You cannot set `metadata` if
    `from_subscription` is set." (the error other integrations record, e.g. tierrun/tier's
    schedule client), and creates nothing."""
    _, customer = _setup(stripe_client)
    price = _price(stripe_client, 1000)
    sub = stripe_client.v1.subscriptions.create({"customer": customer, "items": [{"price": price}]})
    others: dict[str, Any] = {
        "metadata": {"plan": "team"},
        "phases": [{"items": [{"price": price}]}],
        "end_behavior": "cancel",
        "customer": customer,
    }
    for name, value in others.items():
        params: dict[str, Any] = {"from_subscription": sub.id, name: value}
        with pytest.raises(stripe.InvalidRequestError) as refused:
            stripe_client.v1.subscription_schedules.create(params)  # type: ignore[arg-type]
        error = refused.value
        assert (error.http_status, error.param) == (400, name)
        assert error.error is not None
        assert error.error.type == "invalid_request_error"
        assert error.user_message == f"You cannot set `{name}` if `from_subscription` is set."
    assert stripe_client.v1.subscription_schedules.list({"customer": customer}).data == []
    assert stripe_client.v1.subscriptions.retrieve(sub.id).schedule is None
    # Alone it is taken.
    schedule = stripe_client.v1.subscription_schedules.create({"from_subscription": sub.id})
    assert schedule.subscription == sub.id


# --- schedules starting in the future -------------------------------------------------------


def test_future_start_on_a_test_clock_creates_the_subscription_in_time_order(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    clock, customer = _setup(stripe_client)
    gold, silver = _price(stripe_client, 1000), _price(stripe_client, 700, "Silver")
    existing = stripe_client.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": silver}]}
    )
    start = T0 + 10 * DAY
    schedule = stripe_client.v1.subscription_schedules.create(
        {
            "customer": customer,
            "start_date": start,
            "phases": [
                {"items": [{"price": gold}], "duration": {"interval": "month"}},
                {"items": [{"price": silver, "quantity": 2}]},
            ],
        }
    )
    assert (schedule.status, schedule.subscription, schedule.current_phase) == (
        "not_started",
        None,
        None,
    )
    assert schedule.phases[0].start_date == start
    assert [
        s.id for s in stripe_client.v1.subscription_schedules.list({"scheduled": True}).data
    ] == [schedule.id]
    _advance(stripe_client, clock, T0 + 5 * DAY)
    assert stripe_client.v1.subscription_schedules.retrieve(schedule.id).status == "not_started"
    _advance(stripe_client, clock, T0 + 45 * DAY)
    started = stripe_client.v1.subscription_schedules.retrieve(schedule.id)
    assert started.status == "active"
    assert started.subscription is not None
    sub = stripe_client.v1.subscriptions.retrieve(started.subscription)
    assert sub.start_date == start
    assert sub.schedule == schedule.id
    assert [(i.price.id, i.quantity) for i in sub["items"].data] == [(silver, 2)]
    types = [e.type for e in _events(stripe_client, "subscription_schedule.")]
    assert types == [
        "subscription_schedule.created",
        "subscription_schedule.updated",
        "subscription_schedule.updated",
    ]
    events = list(reversed(stripe_client.v1.events.list({"limit": 100}).data))
    # Events come in time order: the start (day 10) before the existing subscription's
    # renewal (Feb 15), before the scheduled one's phase change (a month after its start).
    # (objects on the clock are dated in its time; the rest in the emulator clock's)
    times = [e.created for e in events if T0 <= e.created <= T0 + 45 * DAY]
    created = [
        e
        for e in events
        if e.type == "customer.subscription.created" and e.data.object["id"] == sub.id
    ]
    assert [e.created for e in created] == [start]
    renewals = [
        e
        for e in events
        if e.type == "invoice.created"
        and e.data.object["parent"]["subscription_details"]["subscription"] == existing.id
        and e.data.object["billing_reason"] == "subscription_cycle"
    ]
    assert [e.created for e in renewals] == [FEB_15]
    assert events.index(created[0]) < events.index(renewals[0])
    start_event = _events(stripe_client, "subscription_schedule.updated")[0]
    assert start_event.created == start
    assert start_event.data.previous_attributes["status"] == "not_started"
    assert times == sorted(times)
    assert _event_shapes(stripe_client) == []
    assert shape_problems(_served(started), stripe.SubscriptionSchedule, "schedule") == []


def test_future_start_without_a_test_clock_follows_the_emulator_clock(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    customer = stripe_client.v1.customers.create({"email": "e@example.com"}).id
    pm = stripe_client.v1.payment_methods.attach("pm_card_visa", {"customer": customer})
    gold = _price(stripe_client, 1000)
    start = int(emulator.control.now()) + 3600
    schedule = stripe_client.v1.subscription_schedules.create(
        {
            "customer": customer,
            "start_date": start,
            "default_settings": {"default_payment_method": pm.id},
            "phases": [{"items": [{"price": gold}], "trial": True, "end_date": start + 7 * DAY}],
        }
    )
    assert schedule.status == "not_started"
    emulator.control.advance(2 * 3600)
    started = stripe_client.v1.subscription_schedules.retrieve(schedule.id)
    assert started.status == "active"
    assert started.current_phase is not None
    assert started.current_phase.start_date == start
    sub = stripe_client.v1.subscriptions.retrieve(started.subscription)  # type: ignore[arg-type]
    assert (sub.status, sub.trial_end, sub.default_payment_method) == (
        "trialing",
        start + 7 * DAY,
        pm.id,
    )
    assert sub.created == start
    types = [e.type for e in _events(stripe_client, "subscription_schedule.")]
    assert types == ["subscription_schedule.created", "subscription_schedule.updated"]
    emulator.control.advance(60)  # started once
    assert len(_events(stripe_client, "subscription_schedule.")) == 2
    assert len(_events(stripe_client, "customer.subscription.created")) == 1


def test_a_released_not_started_schedule_never_starts(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    clock, customer = _setup(stripe_client)
    gold = _price(stripe_client, 1000)
    schedule = stripe_client.v1.subscription_schedules.create(
        {"customer": customer, "start_date": T0 + DAY, "phases": [{"items": [{"price": gold}]}]}
    )
    released = stripe_client.v1.subscription_schedules.release(schedule.id)
    assert (released.status, released.released_subscription) == ("released", None)
    _advance(stripe_client, clock, T0 + 2 * DAY)
    assert stripe_client.v1.subscriptions.list({"customer": customer}).data == []

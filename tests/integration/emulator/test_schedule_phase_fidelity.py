"""Subscription schedule phases as the SDK's params describe them, through the real SDK over
HTTP: a metered price's phase item has no quantity (from a subscription, in phases, and at
the phase change), and the current phase may end `now` (an immediate change: the next phase
starts at once, prorated; alone it ends the schedule by its `end_behavior`)."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from tests.fixtures.emulator import EmulatorHandle

Client = stripe.StripeClient

T0 = 1768435200  # 2026-01-15T00:00:00Z
DAY = 86400
FEB_15 = T0 + 31 * DAY


def _price(client: Client, amount: int, name: str) -> str:
    product = client.v1.products.create({"name": name})
    return client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": amount,
            "recurring": {"interval": "month"},
        }
    ).id


def _metered(client: Client) -> str:
    meter = client.v1.billing.meters.create(
        {
            "display_name": "calls",
            "event_name": "calls",
            "default_aggregation": {"formula": "sum"},
        }
    ).id
    product = client.v1.products.create({"name": "Calls"})
    params: dict[str, Any] = {
        "product": product.id,
        "currency": "usd",
        "unit_amount": 1,
        "recurring": {"interval": "month", "usage_type": "metered", "meter": meter},
    }
    return client.v1.prices.create(params).id  # type: ignore[arg-type]


def _subscribed(client: Client, *prices: str) -> tuple[str, str, str]:
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": T0}).id
    customer = client.v1.customers.create({"test_clock": clock}).id
    pm = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer})
    client.v1.customers.update(customer, {"invoice_settings": {"default_payment_method": pm.id}})
    items: list[Any] = [{"price": p} for p in prices]
    sub = client.v1.subscriptions.create({"customer": customer, "items": items}).id
    return clock, customer, sub


def _items(client: Client, sub: str) -> list[tuple[str, int | None]]:
    live = client.v1.subscriptions.retrieve(sub)
    return [(i.price.id, i.quantity) for i in live["items"].data]


def test_metered_phase_items_have_no_quantity(stripe_client: Client) -> None:
    basic, pro, calls = (
        _price(stripe_client, 1000, "Basic"),
        _price(stripe_client, 3000, "Pro"),
        _metered(stripe_client),
    )
    clock, _, sub = _subscribed(stripe_client, basic, calls)
    schedule = stripe_client.v1.subscription_schedules.create({"from_subscription": sub})
    assert [(i.price, i.quantity) for i in schedule.phases[0]["items"]] == [
        (basic, 1),
        (calls, None),
    ]

    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.subscription_schedules.update(
            schedule.id,
            {
                "phases": [
                    {"items": [{"price": basic}, {"price": calls, "quantity": 1}]},
                ]
            },
        )
    assert refused.value.param == "phases[0][items][1][quantity]"

    updated = stripe_client.v1.subscription_schedules.update(
        schedule.id,
        {
            "phases": [
                {"items": [{"price": basic}, {"price": calls}], "end_date": FEB_15},
                {"items": [{"price": pro}, {"price": calls}]},
            ]
        },
    )
    assert [(i.price, i.quantity) for i in updated.phases[1]["items"]] == [
        (pro, 1),
        (calls, None),
    ]
    stripe_client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": FEB_15 + 3600})
    assert sorted(_items(stripe_client, sub)) == sorted([(pro, 1), (calls, None)])


def test_current_phase_ending_now_starts_the_next_phase_at_once(stripe_client: Client) -> None:
    basic, pro = _price(stripe_client, 3100, "Basic"), _price(stripe_client, 6200, "Pro")
    clock, customer, sub = _subscribed(stripe_client, basic)
    schedule = stripe_client.v1.subscription_schedules.create({"from_subscription": sub}).id
    now = T0 + 10 * DAY
    stripe_client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": now})

    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.subscription_schedules.update(
            schedule,
            {
                "phases": [
                    {"items": [{"price": basic}], "end_date": FEB_15},
                    {"items": [{"price": pro}], "end_date": "now"},
                ]
            },
        )
    assert refused.value.param == "phases[1][end_date]"

    updated = stripe_client.v1.subscription_schedules.update(
        schedule,
        {
            "phases": [
                {"items": [{"price": basic}], "end_date": "now"},
                {"items": [{"price": pro}], "proration_behavior": "create_prorations"},
            ],
            "proration_behavior": "create_prorations",
        },
    )

    assert [(p.start_date, p.end_date) for p in updated.phases] == [
        (T0, now),
        (now, now + 31 * DAY),
    ]
    assert updated.current_phase is not None
    assert (updated.current_phase.start_date, updated.status) == (now, "active")
    assert _items(stripe_client, sub) == [(pro, 1)]
    pending = stripe_client.v1.invoice_items.list({"customer": customer, "pending": True}).data
    # 21 of 31 days left: -2100 unused Basic, +4200 remaining Pro.
    assert sorted(ii.amount for ii in pending) == [-2100, 4200]


def test_a_lone_current_phase_ending_now_ends_the_schedule(stripe_client: Client) -> None:
    basic = _price(stripe_client, 1000, "Basic")
    clock, _, sub = _subscribed(stripe_client, basic)
    schedule = stripe_client.v1.subscription_schedules.create({"from_subscription": sub}).id
    stripe_client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": T0 + DAY})

    ended = stripe_client.v1.subscription_schedules.update(
        schedule,
        {"phases": [{"items": [{"price": basic}], "end_date": "now"}], "end_behavior": "cancel"},
    )

    assert (ended.status, ended.completed_at) == ("completed", T0 + DAY)
    assert stripe_client.v1.subscriptions.retrieve(sub).status == "canceled"


def test_end_now_on_a_released_schedule_is_refused(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    basic = _price(stripe_client, 1000, "Basic")
    _, _, sub = _subscribed(stripe_client, basic)
    schedule = stripe_client.v1.subscription_schedules.create({"from_subscription": sub}).id
    stripe_client.v1.subscription_schedules.release(schedule)
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.subscription_schedules.update(
            schedule, {"phases": [{"items": [{"price": basic}], "end_date": "now"}]}
        )


def test_a_phase_automatic_tax_applies_to_the_subscription_when_it_starts(
    stripe_client: Client,
) -> None:
    basic, free = _price(stripe_client, 1000, "Basic"), _price(stripe_client, 0, "Free")
    clock = stripe_client.v1.test_helpers.test_clocks.create({"frozen_time": T0}).id
    customer = stripe_client.v1.customers.create(
        {
            "test_clock": clock,
            "address": {"line1": "1 Main St", "postal_code": "10115", "country": "DE"},
        }
    ).id
    pm = stripe_client.v1.payment_methods.attach("pm_card_visa", {"customer": customer})
    stripe_client.v1.customers.update(
        customer, {"invoice_settings": {"default_payment_method": pm.id}}
    )
    sub = stripe_client.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": basic}], "automatic_tax": {"enabled": True}}
    ).id
    schedule = stripe_client.v1.subscription_schedules.create({"from_subscription": sub}).id
    stripe_client.v1.subscription_schedules.update(
        schedule,
        {
            "phases": [
                {"items": [{"price": basic}], "end_date": FEB_15},
                {"items": [{"price": free}], "automatic_tax": {"enabled": False}},
            ]
        },
    )
    assert stripe_client.v1.subscriptions.retrieve(sub).automatic_tax.enabled is True

    stripe_client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": FEB_15 + 3600})

    moved = stripe_client.v1.subscriptions.retrieve(sub)
    assert ([i.price.id for i in moved["items"].data], moved.automatic_tax.enabled) == (
        [free],
        False,
    )

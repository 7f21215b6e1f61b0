"""Changing a subscription's billing interval, as Stripe allows: schedule phases may use
prices of different intervals (all recurring prices of ONE phase share an interval), and
entering a phase at another interval restarts the billing cycle at the phase start with an
invoice for the new period; a direct update to a price of another interval resets the cycle
at once, as `billing_cycle_anchor=now` does. Through the real SDK over HTTP, test clocks."""

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
FEB_15_2027 = FEB_15 + 365 * DAY
HOUR = 3600

CLASSES: dict[str, type[Any]] = {
    "subscription_schedule": stripe.SubscriptionSchedule,
    "subscription": stripe.Subscription,
    "invoice": stripe.Invoice,
}


def _price(client: Client, amount: int, interval: str, name: str = "Team") -> str:
    product = client.v1.products.create({"name": name})
    price = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": amount,
            "recurring": {"interval": interval},
        }
    )
    return price.id


def _setup(client: Client) -> tuple[str, str]:
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": T0}).id
    customer = client.v1.customers.create({"test_clock": clock, "email": "i@example.com"}).id
    pm = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer})
    client.v1.customers.update(customer, {"invoice_settings": {"default_payment_method": pm.id}})
    return clock, customer


def _advance(client: Client, clock: str, to: int) -> None:
    advanced = client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": to})
    assert (advanced.status, advanced.frozen_time) == ("ready", to)


def _invoices(client: Client, sub_id: str) -> list[stripe.Invoice]:
    return list(reversed(client.v1.invoices.list({"subscription": sub_id, "limit": 100}).data))


def _periods(sub: stripe.Subscription) -> set[tuple[int, int]]:
    return {(i.current_period_start, i.current_period_end) for i in sub["items"].data}


def _served(obj: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(obj.last_response.body)
    return body


def _event_shapes(client: Client) -> list[str]:
    problems: list[str] = []
    for event in _served(client.v1.events.list({"limit": 100}))["data"]:
        problems += event_problems(event, CLASSES)
    return problems


def test_a_monthly_to_yearly_phase_at_the_period_end_starts_a_yearly_cycle(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    clock, customer = _setup(stripe_client)
    monthly, yearly = _price(stripe_client, 1000, "month"), _price(stripe_client, 10000, "year")
    sub = stripe_client.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": monthly, "quantity": 2}]}
    )
    schedule = stripe_client.v1.subscription_schedules.create({"from_subscription": sub.id})
    updated = stripe_client.v1.subscription_schedules.update(
        schedule.id,
        {
            "phases": [
                {"items": [{"price": monthly, "quantity": 2}], "end_date": FEB_15},
                {
                    "items": [{"price": yearly, "quantity": 2}],
                    "metadata": {"plan": "yearly"},
                },
            ]
        },
    )
    # A last phase without an end lasts one interval of its price: a year.
    assert [(p.start_date, p.end_date) for p in updated.phases] == [
        (T0, FEB_15),
        (FEB_15, FEB_15_2027),
    ]
    assert shape_problems(_served(updated), stripe.SubscriptionSchedule) == []
    # The schedule's upcoming invoice: the one the yearly phase makes as it starts.
    emulator.control.clear_requests()
    upcoming = stripe_client.v1.invoices.create_preview({"schedule": schedule.id})
    assert (upcoming.billing_reason, upcoming.created, upcoming.total) == (
        "upcoming",
        FEB_15,
        20000,
    )
    assert [(li.amount, li.period.start, li.period.end) for li in upcoming.lines.data] == [
        (20000, FEB_15, FEB_15_2027)
    ]
    assert [r.path for r in emulator.control.requests(method="POST")] == [
        "/v1/invoices/create_preview"
    ]
    # `schedule` goes alone: not with the subscription's fields.
    with pytest.raises(stripe.InvalidRequestError) as both:
        stripe_client.v1.invoices.create_preview({"schedule": schedule.id, "subscription": sub.id})
    assert both.value.param == "subscription"

    _advance(stripe_client, clock, FEB_15 + 2 * HOUR)
    moved = stripe_client.v1.subscriptions.retrieve(sub.id)
    assert [(i.price.id, i.quantity) for i in moved["items"].data] == [(yearly, 2)]
    assert moved.billing_cycle_anchor == FEB_15  # reset to the phase start
    assert _periods(moved) == {(FEB_15, FEB_15_2027)}
    assert (moved.status, moved.metadata["plan"]) == ("active", "yearly")
    invoices = _invoices(stripe_client, sub.id)
    # The first month, then the year: no monthly renewal at FEB_15 besides it.
    assert [i.billing_reason for i in invoices] == ["subscription_create", "subscription_cycle"]
    year = invoices[-1]
    assert year.id == moved.latest_invoice
    assert (year.status, year.amount_paid, year.created) == ("paid", 20000, FEB_15)
    assert [(li.amount, li.period.start, li.period.end) for li in year.lines.data] == [
        (20000, FEB_15, FEB_15_2027)
    ]
    assert (year.period_start, year.period_end) == (T0, FEB_15)
    assert [(li.amount, li.period.start, li.period.end) for li in year.lines.data] == [
        (li.amount, li.period.start, li.period.end) for li in upcoming.lines.data
    ]
    current = stripe_client.v1.subscription_schedules.retrieve(schedule.id)
    assert current.current_phase is not None
    assert (current.current_phase.start_date, current.current_phase.end_date) == (
        FEB_15,
        FEB_15_2027,
    )

    # A month later nothing renews; a year later the schedule is released and it renews yearly.
    _advance(stripe_client, clock, FEB_15 + 40 * DAY)
    assert len(_invoices(stripe_client, sub.id)) == 2
    _advance(stripe_client, clock, FEB_15_2027 + 2 * HOUR)
    done = stripe_client.v1.subscription_schedules.retrieve(schedule.id)
    assert (done.status, done.released_subscription) == ("released", sub.id)
    renewed = stripe_client.v1.subscriptions.retrieve(sub.id)
    assert _periods(renewed) == {(FEB_15_2027, FEB_15_2027 + 365 * DAY)}
    last = _invoices(stripe_client, sub.id)[-1]
    assert (last.billing_reason, last.created, last.amount_paid) == (
        "subscription_cycle",
        FEB_15_2027,
        20000,
    )
    assert _event_shapes(stripe_client) == []


def test_a_yearly_phase_starting_now_credits_the_unused_month_and_charges_the_year(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    clock, customer = _setup(stripe_client)
    monthly, yearly = _price(stripe_client, 3100, "month"), _price(stripe_client, 36500, "year")
    sub = stripe_client.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": monthly}]}
    )
    schedule = stripe_client.v1.subscription_schedules.create({"from_subscription": sub.id})
    jan_25 = T0 + 10 * DAY
    _advance(stripe_client, clock, jan_25)
    stripe_client.v1.subscription_schedules.update(
        schedule.id,
        {
            "phases": [
                {"items": [{"price": monthly}], "end_date": "now"},
                {"items": [{"price": yearly}]},
            ]
        },
    )
    moved = stripe_client.v1.subscriptions.retrieve(sub.id)
    assert [i.price.id for i in moved["items"].data] == [yearly]
    assert moved.billing_cycle_anchor == jan_25
    assert _periods(moved) == {(jan_25, jan_25 + 365 * DAY)}
    invoice = stripe_client.v1.invoices.retrieve(str(moved.latest_invoice))
    assert (invoice.billing_reason, invoice.status) == ("subscription_update", "paid")
    # The unused 21 of 31 days of the month are credited; the year is billed in full.
    assert [line.amount for line in invoice.lines.data] == [-2100, 36500]
    assert invoice.amount_paid == 34400


def test_a_phase_mixing_intervals_is_refused(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    _, customer = _setup(stripe_client)
    monthly, yearly = _price(stripe_client, 1000, "month"), _price(stripe_client, 9000, "year")
    seat = _price(stripe_client, 500, "month", "Seat")
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.subscription_schedules.create(
            {
                "customer": customer,
                "phases": [
                    {"items": [{"price": monthly}, {"price": seat}], "end_date": FEB_15},
                    {"items": [{"price": yearly}, {"price": seat}]},
                ],
            }
        )
    assert refused.value.param == "phases[1][items][1][price]"
    assert stripe_client.v1.subscription_schedules.list({"customer": customer}).data == []


def test_updating_a_subscription_to_a_yearly_price_resets_its_cycle_at_once(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    clock, customer = _setup(stripe_client)
    monthly, yearly = _price(stripe_client, 3100, "month"), _price(stripe_client, 36500, "year")
    sub = stripe_client.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": monthly}]}
    )
    item = sub["items"].data[0].id
    jan_25 = T0 + 10 * DAY
    _advance(stripe_client, clock, jan_25)
    # The preview of the change is the invoice the update then makes (below), created now.
    preview = stripe_client.v1.invoices.create_preview(
        {
            "subscription": sub.id,
            "subscription_details": {"items": [{"id": item, "price": yearly}]},
        }
    )
    assert (preview.billing_reason, preview.created) == ("upcoming", jan_25)
    assert [line.amount for line in preview.lines.data] == [-2100, 36500]
    assert [(li.period.start, li.period.end) for li in preview.lines.data] == [
        (jan_25, FEB_15),
        (jan_25, jan_25 + 365 * DAY),
    ]
    assert (preview.total, preview.amount_due) == (34400, 34400)
    # Every item must share one interval: adding a yearly item to a monthly one is refused.
    with pytest.raises(stripe.InvalidRequestError) as mixed:
        stripe_client.v1.subscriptions.update(sub.id, {"items": [{"price": yearly}]})
    assert mixed.value.param == "items[0][price]"

    moved = stripe_client.v1.subscriptions.update(
        sub.id, {"items": [{"id": item, "price": yearly}]}
    )
    assert moved.billing_cycle_anchor == jan_25
    assert _periods(moved) == {(jan_25, jan_25 + 365 * DAY)}
    invoice = stripe_client.v1.invoices.retrieve(str(moved.latest_invoice))
    assert (invoice.billing_reason, invoice.status) == ("subscription_update", "paid")
    assert [line.amount for line in invoice.lines.data] == [-2100, 36500]
    assert [
        (li.description, li.amount, li.period.start, li.period.end) for li in invoice.lines.data
    ] == [(li.description, li.amount, li.period.start, li.period.end) for li in preview.lines.data]
    assert invoice.total == preview.total
    assert stripe_client.v1.invoice_items.list({"customer": customer, "pending": True}).data == []


@pytest.mark.parametrize(
    ("behavior", "amounts"),
    [("none", [36500]), ("create_prorations", [-2100, 36500]), ("always_invoice", [-2100, 36500])],
)
def test_a_preview_of_an_interval_change_is_the_invoice_made_at_once_and_writes_nothing(
    stripe_client: Client, emulator: EmulatorHandle, behavior: str, amounts: list[int]
) -> None:
    """Stripe invoices an interval change at once (the anchor reset to the change) whatever
    the proration behavior; `none` only leaves out the credit for the unused month. The
    preview names that invoice and changes nothing: no invoice item, no invoice, the
    subscription still monthly, only the one POST."""
    clock, customer = _setup(stripe_client)
    monthly, yearly = _price(stripe_client, 3100, "month"), _price(stripe_client, 36500, "year")
    sub = stripe_client.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": monthly}]}
    )
    item = sub["items"].data[0].id
    jan_25 = T0 + 10 * DAY
    _advance(stripe_client, clock, jan_25)
    emulator.control.clear_requests()
    change: dict[str, Any] = {
        "items": [{"id": item, "price": yearly}],
        "proration_behavior": behavior,
    }

    preview = stripe_client.v1.invoices.create_preview(
        {"subscription": sub.id, "subscription_details": change}  # type: ignore[arg-type]
    )

    assert (preview.billing_reason, preview.created) == ("upcoming", jan_25)
    assert [line.amount for line in preview.lines.data] == amounts
    assert preview.amount_due == sum(amounts)
    (full,) = [li for li in preview.lines.data if li.amount > 0]
    assert (full.period.start, full.period.end) == (jan_25, jan_25 + 365 * DAY)
    assert [r.path for r in emulator.control.requests(method="POST")] == [
        "/v1/invoices/create_preview"
    ]
    assert stripe_client.v1.invoice_items.list({"customer": customer}).data == []
    assert len(_invoices(stripe_client, sub.id)) == 1  # the first one only
    unchanged = stripe_client.v1.subscriptions.retrieve(sub.id)
    assert _periods(unchanged) == {(T0, FEB_15)}
    assert unchanged.billing_cycle_anchor == T0

    moved = stripe_client.v1.subscriptions.update(sub.id, change)  # type: ignore[arg-type]
    invoice = stripe_client.v1.invoices.retrieve(str(moved.latest_invoice))
    assert [li.amount for li in invoice.lines.data] == amounts
    assert invoice.amount_paid == preview.amount_due


def test_a_trialing_subscription_previews_its_interval_change_as_the_trial_end_invoice(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    """In a trial an interval change restarts nothing (the trial runs on): its preview is
    the invoice the trial's end makes, the new interval's first period in full."""
    _, customer = _setup(stripe_client)
    monthly, yearly = _price(stripe_client, 1000, "month"), _price(stripe_client, 9000, "year")
    sub = stripe_client.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": monthly}], "trial_period_days": 7}
    )
    trial_end = T0 + 7 * DAY
    preview = stripe_client.v1.invoices.create_preview(
        {
            "subscription": sub.id,
            "subscription_details": {"items": [{"id": sub["items"].data[0].id, "price": yearly}]},
        }
    )
    assert (preview.created, preview.amount_due) == (trial_end, 9000)
    assert [(li.amount, li.period.start, li.period.end) for li in preview.lines.data] == [
        (9000, trial_end, trial_end + 365 * DAY)
    ]

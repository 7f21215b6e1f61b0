"""How a trial ends when the subscription is set to cancel (Stripe's behaviour the emulator
keeps): a trialing subscription with `cancel_at_period_end` (or `cancel_at` at the trial's
end) is canceled when the trial ends, payment method or not, and no invoice asks for money;
without it, the trial ends into a paid period. Through the real SDK over HTTP, test clocks."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

Client = stripe.StripeClient

T0 = 1768435200  # 2026-01-15T00:00:00Z
DAY = 86400
TRIAL_END = T0 + 14 * DAY


def _setup(client: Client) -> tuple[str, str, str]:
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": T0}).id
    customer = client.v1.customers.create({"test_clock": clock, "email": "t@example.com"}).id
    pm = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer})
    client.v1.customers.update(customer, {"invoice_settings": {"default_payment_method": pm.id}})
    product = client.v1.products.create({"name": "Team"})
    price = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 4900,
            "recurring": {"interval": "month"},
        }
    )
    return clock, customer, price.id


def _charged(client: Client, sub_id: str) -> list[int]:
    invoices = client.v1.invoices.list({"subscription": sub_id, "limit": 100}).data
    return [i.amount_due for i in invoices if i.amount_due or i.total]


@pytest.mark.parametrize("how", ["create", "update", "cancel_at"])
def test_a_trial_set_to_cancel_ends_canceled_without_an_invoice(
    stripe_client: Client, how: str
) -> None:
    clock, customer, price = _setup(stripe_client)
    params: dict[str, Any] = {
        "customer": customer,
        "items": [{"price": price}],
        "trial_period_days": 14,
    }
    if how == "create":
        params["cancel_at_period_end"] = True
    sub = stripe_client.v1.subscriptions.create(params)  # type: ignore[arg-type]
    if how == "update":
        sub = stripe_client.v1.subscriptions.update(sub.id, {"cancel_at_period_end": True})
    elif how == "cancel_at":
        sub = stripe_client.v1.subscriptions.update(sub.id, {"cancel_at": TRIAL_END})
    assert (sub.status, sub.cancel_at) == ("trialing", TRIAL_END)

    stripe_client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": TRIAL_END + 3600})
    ended = stripe_client.v1.subscriptions.retrieve(sub.id)
    assert ended.status == "canceled"
    assert ended.ended_at == TRIAL_END
    assert _charged(stripe_client, sub.id) == []


def test_a_trial_not_set_to_cancel_ends_into_a_paid_period(stripe_client: Client) -> None:
    clock, customer, price = _setup(stripe_client)
    sub = stripe_client.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": price}], "trial_period_days": 14}
    )
    stripe_client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": TRIAL_END + 7200})
    assert stripe_client.v1.subscriptions.retrieve(sub.id).status == "active"
    assert _charged(stripe_client, sub.id) == [4900]


def test_a_schedule_keeps_a_running_trial_only_when_its_current_phase_says_so(
    stripe_client: Client,
) -> None:
    """Phases are declarative: rewriting a trialing subscription's current phase without
    `trial` / `trial_end` would end the trial now in Stripe (refused here: not modelled);
    with `trial: true` the trial runs to the phase's end, where `end_behavior: cancel`
    cancels the subscription without an invoice."""
    clock, customer, price = _setup(stripe_client)
    sub = stripe_client.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": price}], "trial_period_days": 14}
    )
    schedule = stripe_client.v1.subscription_schedules.create({"from_subscription": sub.id})
    [phase] = schedule.phases
    assert (phase.start_date, phase.end_date, phase.trial_end) == (T0, TRIAL_END, TRIAL_END)
    current: dict[str, Any] = {
        "items": [{"price": price, "quantity": 1}],
        "start_date": T0,
        "end_date": TRIAL_END,
    }
    with pytest.raises(stripe.InvalidRequestError, match="must keep its trial"):
        stripe_client.v1.subscription_schedules.update(
            schedule.id,
            {"phases": [current], "end_behavior": "cancel"},  # type: ignore[arg-type]
        )
    stripe_client.v1.subscription_schedules.update(
        schedule.id,
        {"phases": [{**current, "trial": True}], "end_behavior": "cancel"},  # type: ignore[arg-type]
    )
    assert stripe_client.v1.subscriptions.retrieve(sub.id).status == "trialing"
    stripe_client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": TRIAL_END + 3600})
    assert stripe_client.v1.subscriptions.retrieve(sub.id).status == "canceled"
    assert stripe_client.v1.subscription_schedules.retrieve(schedule.id).status == "completed"
    assert _charged(stripe_client, sub.id) == []


def _yearly(client: Client, product_of: str, amount: int) -> str:
    product = client.v1.prices.retrieve(product_of).product
    return client.v1.prices.create(
        {
            "product": str(product),
            "currency": "usd",
            "unit_amount": amount,
            "recurring": {"interval": "year"},
        }
    ).id


def test_a_yearly_phase_after_a_trial_phase_starts_at_the_trial_end(
    stripe_client: Client,
) -> None:
    """A schedule whose current phase is the trial (ending at the trial end) and whose next
    phase bills yearly prices: as in Stripe, the next phase starts at the phase boundary, the
    trial ends into a yearly period anchored there and the yearly price is invoiced (not a
    month on the old price, and the schedule is not released)."""
    clock, customer, monthly = _setup(stripe_client)
    yearly = _yearly(stripe_client, monthly, 49000)
    sub = stripe_client.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": monthly}], "trial_period_days": 14}
    )
    schedule = stripe_client.v1.subscription_schedules.create({"from_subscription": sub.id})
    stripe_client.v1.subscription_schedules.update(
        schedule.id,
        {
            "phases": [
                {
                    "items": [{"price": monthly, "quantity": 1}],
                    "start_date": T0,
                    "end_date": TRIAL_END,
                    "trial": True,
                },
                {"items": [{"price": yearly, "quantity": 1}], "metadata": {"plan": "yearly"}},
            ],
            "end_behavior": "release",
        },
    )
    stripe_client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": TRIAL_END + 7200})
    moved = stripe_client.v1.subscriptions.retrieve(sub.id)
    assert moved.status == "active"
    assert [i.price.id for i in moved["items"].data] == [yearly]
    assert moved.billing_cycle_anchor == TRIAL_END
    year_end = TRIAL_END + 365 * DAY
    assert {(i.current_period_start, i.current_period_end) for i in moved["items"].data} == {
        (TRIAL_END, year_end)
    }
    assert moved.metadata["plan"] == "yearly"
    assert _charged(stripe_client, sub.id) == [49000]
    current = stripe_client.v1.subscription_schedules.retrieve(schedule.id)
    assert current.status == "active"
    assert moved.schedule == schedule.id
    assert current.current_phase is not None
    assert (current.current_phase.start_date, current.current_phase.end_date) == (
        TRIAL_END,
        year_end,
    )


def test_a_trialing_subscription_may_move_to_another_interval_and_keeps_its_trial(
    stripe_client: Client,
) -> None:
    """Stripe lets a trialing subscription change its prices, at any interval: the trial
    runs on (nothing is invoiced, no proration), and it ends into a period of the new
    interval anchored at the trial end."""
    clock, customer, monthly = _setup(stripe_client)
    yearly = _yearly(stripe_client, monthly, 49000)
    sub = stripe_client.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": monthly}], "trial_period_days": 14}
    )
    moved = stripe_client.v1.subscriptions.update(
        sub.id, {"items": [{"id": sub["items"].data[0].id, "price": yearly}]}
    )
    assert (moved.status, moved.trial_end, moved.billing_cycle_anchor) == (
        "trialing",
        TRIAL_END,
        TRIAL_END,
    )
    assert {(i.current_period_start, i.current_period_end) for i in moved["items"].data} == {
        (T0, TRIAL_END)
    }
    assert _charged(stripe_client, sub.id) == []
    assert stripe_client.v1.invoice_items.list({"customer": customer}).data == []
    stripe_client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": TRIAL_END + 7200})
    ended = stripe_client.v1.subscriptions.retrieve(sub.id)
    assert ended.status == "active"
    assert {(i.current_period_start, i.current_period_end) for i in ended["items"].data} == {
        (TRIAL_END, TRIAL_END + 365 * DAY)
    }
    assert _charged(stripe_client, sub.id) == [49000]

"""Automatic payment retries (dunning) of subscription invoices through the real SDK over
HTTP, with test clocks: the retry schedule (`next_payment_attempt`), a retry that succeeds
after the customer's card changed, and what happens once every retry failed (the operator
control `POST /_emulator/billing/retries`)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import stripe

from tests.fixtures.emulator import TEST_API_KEY, EmulatorHandle
from tests.sdk_shapes import shape_problems

Client = stripe.StripeClient

T0 = 1768435200  # 2026-01-15T00:00:00Z
DAY = 86400
HOUR = 3600
FEB_15 = T0 + 31 * DAY
FIRST_ATTEMPT = FEB_15 + HOUR  # the renewal draft is finalized and charged an hour later


def _setup(client: Client) -> tuple[str, str, str]:
    """A clock, a customer paying a monthly subscription by card, then a failing card as the
    customer's default: (clock, customer, subscription)."""
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": T0}).id
    customer = client.v1.customers.create({"email": "dun@example.com", "test_clock": clock}).id
    _default_card(client, customer, "pm_card_visa")
    product = client.v1.products.create({"name": "Gold"})
    price = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 1000,
            "recurring": {"interval": "month"},
        }
    )
    sub = client.v1.subscriptions.create({"customer": customer, "items": [{"price": price.id}]})
    assert sub.status == "active"
    _default_card(client, customer, "pm_card_chargeCustomerFail")
    return clock, customer, sub.id


def _default_card(client: Client, customer: str, token: str) -> str:
    pm = client.v1.payment_methods.attach(token, {"customer": customer})
    client.v1.customers.update(customer, {"invoice_settings": {"default_payment_method": pm.id}})
    return pm.id


def _advance(client: Client, clock: str, to: int) -> None:
    advanced = client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": to})
    assert (advanced.status, advanced.frozen_time) == ("ready", to)


def _renewal(client: Client, sub: str) -> stripe.Invoice:
    invoices = client.v1.invoices.list({"subscription": sub, "limit": 100}).data
    return invoices[0]


def _events(client: Client, *types: str) -> list[stripe.Event]:
    events = reversed(client.v1.events.list({"limit": 100}).data)
    return [e for e in events if e.type in types]


def test_the_default_schedule_retries_and_a_new_card_pays(stripe_client: Client) -> None:
    clock, customer, sub = _setup(stripe_client)
    _advance(stripe_client, clock, FIRST_ATTEMPT)
    invoice = _renewal(stripe_client, sub)
    assert (invoice.status, invoice.attempt_count) == ("open", 1)
    assert invoice.next_payment_attempt == FIRST_ATTEMPT + 3 * DAY
    assert stripe_client.v1.subscriptions.retrieve(sub).status == "past_due"
    failed = _events(stripe_client, "invoice.payment_failed")
    assert len(failed) == 1
    assert failed[0].data.object["next_payment_attempt"] == FIRST_ATTEMPT + 3 * DAY
    assert failed[0].created == FIRST_ATTEMPT

    # One second early: nothing; at the time: the second attempt, then 5 days more.
    _advance(stripe_client, clock, FIRST_ATTEMPT + 3 * DAY - 1)
    assert _renewal(stripe_client, sub).attempt_count == 1
    _advance(stripe_client, clock, FIRST_ATTEMPT + 3 * DAY)
    second = _renewal(stripe_client, sub)
    assert (second.attempt_count, second.next_payment_attempt) == (2, FIRST_ATTEMPT + 8 * DAY)
    assert [e.created for e in _events(stripe_client, "invoice.payment_failed")] == [
        FIRST_ATTEMPT,
        FIRST_ATTEMPT + 3 * DAY,
    ]

    # A manual attempt that fails keeps the schedule.
    with pytest.raises(stripe.CardError):
        stripe_client.v1.invoices.pay(second.id)
    manual = _renewal(stripe_client, sub)
    assert (manual.attempt_count, manual.next_payment_attempt) == (3, FIRST_ATTEMPT + 8 * DAY)

    # The customer fixes the card; the next retry uses it.
    _default_card(stripe_client, customer, "pm_card_visa")
    _advance(stripe_client, clock, FIRST_ATTEMPT + 8 * DAY)
    paid = stripe_client.v1.invoices.retrieve(second.id, {"expand": ["payments"]})
    assert (paid.status, paid.attempt_count, paid.next_payment_attempt) == ("paid", 4, None)
    assert paid.status_transitions.paid_at == FIRST_ATTEMPT + 8 * DAY
    assert paid.payments is not None
    assert [p.status for p in paid.payments.data] == ["paid", "open", "open", "open"]
    assert stripe_client.v1.subscriptions.retrieve(sub).status == "active"
    succeeded = _events(
        stripe_client, "invoice.paid", "invoice.payment_succeeded", "payment_intent.succeeded"
    )
    assert [(e.type, e.created) for e in succeeded][-3:] == [
        ("payment_intent.succeeded", FIRST_ATTEMPT + 8 * DAY),
        ("invoice.paid", FIRST_ATTEMPT + 8 * DAY),
        ("invoice.payment_succeeded", FIRST_ATTEMPT + 8 * DAY),
    ]
    declined = _events(stripe_client, "payment_intent.payment_failed")
    assert len(declined) == 3  # two automatic attempts and the manual one


def test_all_retries_failing_cancels_by_default(stripe_client: Client) -> None:
    clock, _, sub = _setup(stripe_client)
    _advance(stripe_client, clock, FIRST_ATTEMPT + 15 * DAY - 1)
    assert stripe_client.v1.subscriptions.retrieve(sub).status == "past_due"
    assert _renewal(stripe_client, sub).attempt_count == 3
    _advance(stripe_client, clock, FIRST_ATTEMPT + 15 * DAY)
    canceled = stripe_client.v1.subscriptions.retrieve(sub)
    assert (canceled.status, canceled.ended_at) == ("canceled", FIRST_ATTEMPT + 15 * DAY)
    assert canceled.cancellation_details is not None
    assert canceled.cancellation_details.reason == "payment_failed"
    invoice = _renewal(stripe_client, sub)
    assert (invoice.status, invoice.attempt_count, invoice.next_payment_attempt) == (
        "open",
        4,
        None,
    )
    assert len(_events(stripe_client, "invoice.payment_failed")) == 4
    assert [e.type for e in _events(stripe_client, "customer.subscription.deleted")] == [
        "customer.subscription.deleted"
    ]
    # Nothing more happens later.
    _advance(stripe_client, clock, FIRST_ATTEMPT + 60 * DAY)
    assert _renewal(stripe_client, sub).attempt_count == 4


def test_unpaid_and_uncollectible_then_paying_reactivates(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    settings = emulator.control.set_billing_retries(
        days=[1, 2], subscription_status="unpaid", invoice_status="uncollectible"
    )
    assert settings == {
        "days": [1, 2],
        "subscription_status": "unpaid",
        "invoice_status": "uncollectible",
        "enabled": True,
    }
    clock, customer, sub = _setup(stripe_client)
    _advance(stripe_client, clock, FIRST_ATTEMPT + DAY)
    assert _renewal(stripe_client, sub).next_payment_attempt == FIRST_ATTEMPT + 3 * DAY
    _advance(stripe_client, clock, FIRST_ATTEMPT + 3 * DAY)
    assert stripe_client.v1.subscriptions.retrieve(sub).status == "unpaid"
    invoice = _renewal(stripe_client, sub)
    assert (invoice.status, invoice.attempt_count, invoice.next_payment_attempt) == (
        "uncollectible",
        3,
        None,
    )
    assert invoice.status_details is not None
    assert invoice.status_details.uncollectible is not None
    assert invoice.status_details.uncollectible.reason == "max_payment_attempts"
    assert invoice.status_transitions.marked_uncollectible_at == FIRST_ATTEMPT + 3 * DAY
    raw = httpx.get(f"{emulator.url}/v1/invoices/{invoice.id}", auth=(TEST_API_KEY, ""))
    assert shape_problems(raw.json(), stripe.Invoice) == []
    types = [e.type for e in _events(stripe_client, "invoice.marked_uncollectible")]
    assert types == ["invoice.marked_uncollectible"]
    # An uncollectible invoice can still be paid; the subscription is active again.
    good = _default_card(stripe_client, customer, "pm_card_visa")
    paid = stripe_client.v1.invoices.pay(invoice.id, {"payment_method": good})
    assert (paid.status, paid.amount_paid) == ("paid", 1000)
    assert "status_details" not in paid  # served only while uncollectible
    assert stripe_client.v1.subscriptions.retrieve(sub).status == "active"


def test_an_unpaid_subscription_renews_without_attempts_and_paying_reactivates(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    emulator.control.set_billing_retries(days=[1, 2], subscription_status="unpaid")
    clock, customer, sub = _setup(stripe_client)
    _advance(stripe_client, clock, FIRST_ATTEMPT + 3 * DAY)
    assert stripe_client.v1.subscriptions.retrieve(sub).status == "unpaid"
    failed = _renewal(stripe_client, sub)
    assert (failed.status, failed.attempt_count, failed.next_payment_attempt) == ("open", 3, None)
    intents_before = len(stripe_client.v1.payment_intents.list({"limit": 100}).data)
    upcoming_before = len(_events(stripe_client, "invoice.upcoming"))

    # The SDK's `Subscription.status`: an unpaid subscription's invoices "will be created",
    # but "no subsequent invoices will be attempted".
    mar_15 = FEB_15 + 28 * DAY
    _advance(stripe_client, clock, mar_15 + 2 * HOUR)
    renewed = stripe_client.v1.subscriptions.retrieve(sub)
    assert renewed.status == "unpaid"
    assert renewed["items"].data[0].current_period_start == mar_15
    invoice = stripe_client.v1.invoices.retrieve(
        renewed.latest_invoice or "", {"expand": ["payments"]}
    )
    assert invoice.id != failed.id
    assert (invoice.billing_reason, invoice.status, invoice.attempt_count) == (
        "subscription_cycle",
        "open",
        0,
    )
    assert (invoice.status_transitions.finalized_at, invoice.next_payment_attempt) == (
        mar_15 + HOUR,
        None,
    )
    assert invoice.payments is not None
    assert invoice.payments.data == []
    assert len(stripe_client.v1.payment_intents.list({"limit": 100}).data) == intents_before
    assert len(_events(stripe_client, "invoice.upcoming")) == upcoming_before
    assert [e.data.object["id"] for e in _events(stripe_client, "invoice.finalized")][-1] == (
        invoice.id
    )

    # Paying it with a good card makes the subscription active again.
    good = _default_card(stripe_client, customer, "pm_card_visa")
    paid = stripe_client.v1.invoices.pay(invoice.id, {"payment_method": good})
    assert (paid.status, paid.attempt_count, paid.amount_paid) == ("paid", 1, 1000)
    assert stripe_client.v1.subscriptions.retrieve(sub).status == "active"


def test_left_past_due_and_open(stripe_client: Client, emulator: EmulatorHandle) -> None:
    emulator.control.set_billing_retries(days=[2], subscription_status="past_due")
    clock, _, sub = _setup(stripe_client)
    _advance(stripe_client, clock, FIRST_ATTEMPT + 30 * DAY)
    assert stripe_client.v1.subscriptions.retrieve(sub).status == "past_due"
    first = stripe_client.v1.invoices.list({"subscription": sub, "limit": 100}).data[-2]
    assert (first.billing_reason, first.status, first.attempt_count) == (
        "subscription_cycle",
        "open",
        2,
    )
    assert first.next_payment_attempt is None


def test_retries_can_be_turned_off(stripe_client: Client, emulator: EmulatorHandle) -> None:
    emulator.control.set_billing_retries(enabled=False)
    clock, _, sub = _setup(stripe_client)
    _advance(stripe_client, clock, FIRST_ATTEMPT + 20 * DAY)
    invoice = _renewal(stripe_client, sub)
    assert (invoice.attempt_count, invoice.next_payment_attempt) == (1, None)
    assert stripe_client.v1.subscriptions.retrieve(sub).status == "past_due"


def test_no_retry_without_a_payment_method(stripe_client: Client) -> None:
    clock, customer, sub = _setup(stripe_client)
    stripe_client.v1.customers.update(
        customer,
        {"invoice_settings": {"default_payment_method": ""}},  # type: ignore[typeddict-item]
    )
    _advance(stripe_client, clock, FIRST_ATTEMPT + 20 * DAY)
    invoice = _renewal(stripe_client, sub)
    assert (invoice.status, invoice.attempt_count, invoice.next_payment_attempt) == (
        "open",
        1,
        None,
    )
    assert stripe_client.v1.subscriptions.retrieve(sub).status == "past_due"


def test_the_operator_control_validates_and_resets(emulator: EmulatorHandle) -> None:
    control = emulator.control
    defaults = {
        "days": [3, 5, 7],
        "subscription_status": "canceled",
        "invoice_status": "open",
        "enabled": True,
    }
    assert control.billing_retries() == defaults
    bad: list[dict[str, Any]] = [
        {"days": [0]},
        {"days": "3"},
        {"days": [1] * 9},
        {"subscription_status": "paused"},
        {"invoice_status": "void"},
        {"enabled": "yes"},
    ]
    for body in bad:
        response = httpx.post(f"{emulator.url}/_emulator/billing/retries", json=body)
        assert response.status_code == 400, body
    assert control.set_billing_retries(days=[1])["days"] == [1]
    control.reset()
    assert control.billing_retries() == defaults

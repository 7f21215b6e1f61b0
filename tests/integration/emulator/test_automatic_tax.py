"""Automatic tax through the real SDK over HTTP: subscriptions (first and renewal invoices,
test clocks), manual invoices, `create_preview` and checkout sessions, with a US address
(ZIP code) and an EU one, exclusive and inclusive prices, totals checked to the minor unit;
without a usable location, `requires_location_inputs` and finalization refused with
`customer_tax_location_invalid`; the served shapes (tests/sdk_shapes.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import stripe

from tests.fixtures.emulator import TEST_API_KEY, EmulatorHandle
from tests.sdk_shapes import shape_problems

Client = stripe.StripeClient

T0 = 1768435200  # 2026-01-15T00:00:00Z
FEB_15 = T0 + 31 * 86400
SF = {"country": "US", "postal_code": "94103", "line1": "1 Market St"}  # California, 7.25%
BERLIN = {"country": "DE", "postal_code": "10115", "city": "Berlin"}  # Germany, 19%


def _customer(client: Client, address: dict[str, str] | None, *, clock: str | None = None) -> str:
    params: dict[str, Any] = {"email": "tax@example.com"}
    if address is not None:
        params["address"] = address
    if clock is not None:
        params["test_clock"] = clock
    customer = client.v1.customers.create(params).id  # type: ignore[arg-type]
    pm = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer})
    client.v1.customers.update(customer, {"invoice_settings": {"default_payment_method": pm.id}})
    return customer


def _price(client: Client, amount: int, behavior: str, *, recurring: bool = True) -> str:
    product = client.v1.products.create({"name": f"Plan {amount}"})
    params: dict[str, Any] = {
        "product": product.id,
        "currency": "usd",
        "unit_amount": amount,
        "tax_behavior": behavior,
    }
    if recurring:
        params["recurring"] = {"interval": "month"}
    return client.v1.prices.create(params).id  # type: ignore[arg-type]


def _raw(emulator: EmulatorHandle, path: str) -> dict[str, Any]:
    response = httpx.get(emulator.url + path, auth=(TEST_API_KEY, ""))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _taxes(line: Any) -> list[tuple[int, str, str, int | None, str]]:
    return [
        (
            t.amount,
            t.tax_behavior,
            t.taxability_reason,
            t.taxable_amount,
            t.tax_rate_details.tax_rate if t.tax_rate_details else "",
        )
        for t in line.taxes or []
    ]


def test_us_exclusive_tax_on_a_subscription_and_its_renewal(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    clock = stripe_client.v1.test_helpers.test_clocks.create({"frozen_time": T0})
    customer = _customer(stripe_client, SF, clock=clock.id)
    price = _price(stripe_client, 1999, "exclusive")
    sub = stripe_client.v1.subscriptions.create(
        {
            "customer": customer,
            "items": [{"price": price, "quantity": 3}],
            "automatic_tax": {"enabled": True},
        }
    )
    assert sub.status == "active"
    assert sub.automatic_tax.enabled is True
    assert sub.automatic_tax.liability
    assert sub.automatic_tax.liability.type == "self"
    first = stripe_client.v1.invoices.retrieve(str(sub.latest_invoice))
    # 3 × 19.99 = 59.97; 7.25% of 5997 = 434.78 -> 435.
    assert (first.automatic_tax.enabled, first.automatic_tax.status) == (True, "complete")
    assert first.automatic_tax.liability
    assert first.automatic_tax.liability.type == "self"
    assert _taxes(first.lines.data[0]) == [
        (435, "exclusive", "standard_rated", 5997, "txr_emulator_us_ca")
    ]
    assert (first.subtotal, first.subtotal_excluding_tax) == (5997, 5997)
    assert (first.total, first.total_excluding_tax) == (6432, 5997)
    assert (first.amount_due, first.amount_paid, first.status) == (6432, 6432, "paid")
    assert [(t.amount, t.taxable_amount) for t in first.total_taxes or []] == [(435, 5997)]
    stripe_client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": FEB_15 + 7200})
    renewal = stripe_client.v1.invoices.retrieve(
        str(stripe_client.v1.subscriptions.retrieve(sub.id).latest_invoice)
    )
    assert renewal.id != first.id
    assert (renewal.billing_reason, renewal.status) == ("subscription_cycle", "paid")
    assert (renewal.total, renewal.amount_paid) == (6432, 6432)
    assert renewal.automatic_tax.status == "complete"


def test_eu_inclusive_and_exclusive_prices_on_one_subscription(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    customer = _customer(stripe_client, BERLIN)
    inclusive = _price(stripe_client, 11900, "inclusive")
    exclusive = _price(stripe_client, 1005, "exclusive")
    sub = stripe_client.v1.subscriptions.create(
        {
            "customer": customer,
            "items": [{"price": inclusive}, {"price": exclusive}],
            "automatic_tax": {"enabled": True},
        }
    )
    invoice = stripe_client.v1.invoices.retrieve(str(sub.latest_invoice))
    by_amount = {line.amount: _taxes(line) for line in invoice.lines.data}
    # Inclusive: 11900 = 10000 + 19% (1900). Exclusive: 19% of 1005 = 190.95 -> 191.
    assert by_amount == {
        11900: [(1900, "inclusive", "standard_rated", 10000, "txr_emulator_de")],
        1005: [(191, "exclusive", "standard_rated", 1005, "txr_emulator_de")],
    }
    assert invoice.subtotal == 12905
    assert invoice.subtotal_excluding_tax == 11005
    assert invoice.total == 13096
    assert invoice.total_excluding_tax == 11005
    assert invoice.total - sum(t.amount for t in invoice.total_taxes or []) == 11005
    assert (invoice.amount_due, invoice.amount_paid) == (13096, 13096)
    assert sorted((t.tax_behavior, t.amount) for t in invoice.total_taxes or []) == [
        ("exclusive", 191),
        ("inclusive", 1900),
    ]
    # Turning automatic tax off on the subscription: its next invoice is untaxed.
    updated = stripe_client.v1.subscriptions.update(sub.id, {"automatic_tax": {"enabled": False}})
    assert updated.automatic_tax.enabled is False
    preview = stripe_client.v1.invoices.create_preview({"subscription": sub.id})
    assert (preview.total, preview.total_taxes, preview.automatic_tax.enabled) == (
        12905,
        [],
        False,
    )
    again = stripe_client.v1.subscriptions.update(sub.id, {"automatic_tax": {"enabled": True}})
    assert again.automatic_tax.enabled is True
    preview = stripe_client.v1.invoices.create_preview({"subscription": sub.id})
    assert (preview.total, preview.automatic_tax.status) == (13096, "complete")


def test_without_a_location_finalization_is_refused(stripe_client: Client) -> None:
    customer = _customer(stripe_client, {"country": "US", "postal_code": "not-a-zip"})
    price = _price(stripe_client, 2500, "exclusive")
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.subscriptions.create(
            {"customer": customer, "items": [{"price": price}], "automatic_tax": {"enabled": True}}
        )
    assert refused.value.code == "customer_tax_location_invalid"
    assert refused.value.http_status == 400
    assert stripe_client.v1.subscriptions.list({"customer": customer}).data == []
    one_off = _price(stripe_client, 2500, "exclusive", recurring=False)
    stripe_client.v1.invoice_items.create({"customer": customer, "pricing": {"price": one_off}})
    invoice = stripe_client.v1.invoices.create(
        {
            "customer": customer,
            "automatic_tax": {"enabled": True},
            "pending_invoice_items_behavior": "include",
        }
    )
    assert (invoice.automatic_tax.enabled, invoice.automatic_tax.status) == (
        True,
        "requires_location_inputs",
    )
    assert (invoice.total, invoice.total_taxes, invoice.lines.data[0].taxes) == (2500, [], [])
    preview = stripe_client.v1.invoices.create_preview(
        {"customer": customer, "automatic_tax": {"enabled": True}}
    )
    assert preview.automatic_tax.status == "requires_location_inputs"
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.invoices.finalize_invoice(str(invoice.id))
    assert refused.value.code == "customer_tax_location_invalid"
    assert stripe_client.v1.invoices.retrieve(str(invoice.id)).status == "draft"
    # A usable address (New York by its ZIP code) lets it finalize, taxed at 4%.
    stripe_client.v1.customers.update(
        customer, {"address": {"country": "US", "postal_code": "10001"}}
    )
    finalized = stripe_client.v1.invoices.finalize_invoice(str(invoice.id))
    assert (finalized.status, finalized.automatic_tax.status) == ("open", "complete")
    assert (finalized.total, finalized.amount_due) == (2600, 2600)
    assert _taxes(finalized.lines.data[0]) == [
        (100, "exclusive", "standard_rated", 2500, "txr_emulator_us_ny")
    ]


def test_a_renewal_without_a_location_fails_to_finalize_and_stays_a_draft(
    stripe_client: Client,
) -> None:
    clock = stripe_client.v1.test_helpers.test_clocks.create({"frozen_time": T0})
    customer = _customer(stripe_client, SF, clock=clock.id)
    price = _price(stripe_client, 1000, "exclusive")
    sub = stripe_client.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": price}], "automatic_tax": {"enabled": True}}
    )
    stripe_client.v1.customers.update(customer, {"address": ""})  # type: ignore[typeddict-item]
    stripe_client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": FEB_15 + 7200})
    renewal = stripe_client.v1.invoices.retrieve(
        str(stripe_client.v1.subscriptions.retrieve(sub.id).latest_invoice)
    )
    assert renewal.status == "draft"
    assert renewal.automatic_tax.status == "requires_location_inputs"
    error = renewal.last_finalization_error
    assert error is not None
    assert error.code == "customer_tax_location_invalid"
    types = [e.type for e in stripe_client.v1.events.list({"limit": 100}).data]
    assert "invoice.finalization_failed" in types


def test_customer_tax_exempt_pays_no_tax(stripe_client: Client) -> None:
    customer = _customer(stripe_client, BERLIN)
    stripe_client.v1.customers.update(customer, {"tax_exempt": "reverse"})
    sub = stripe_client.v1.subscriptions.create(
        {
            "customer": customer,
            "items": [{"price": _price(stripe_client, 5000, "exclusive")}],
            "automatic_tax": {"enabled": True},
        }
    )
    invoice = stripe_client.v1.invoices.retrieve(str(sub.latest_invoice))
    assert _taxes(invoice.lines.data[0]) == [
        (0, "exclusive", "reverse_charge", 5000, "txr_emulator_de")
    ]
    assert invoice.total == 5000


def test_checkout_passes_automatic_tax_to_its_subscription_and_invoice(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    customer = _customer(stripe_client, SF)
    session = stripe_client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "customer": customer,
            "success_url": "https://example.com/ok",
            "automatic_tax": {"enabled": True},
            "line_items": [{"price": _price(stripe_client, 1000, "exclusive"), "quantity": 2}],
        }
    )
    response = emulator.control.complete_checkout_session(session.id, card="4242424242424242")
    body: dict[str, Any] = response.json()
    assert response.status_code == 200, body
    sub = stripe_client.v1.subscriptions.retrieve(body["subscription"])
    assert sub.automatic_tax.enabled is True
    invoice = stripe_client.v1.invoices.retrieve(body["invoice"])
    assert (invoice.total, invoice.amount_paid) == (2145, 2145)  # 2000 + 7.25% = 145
    assert (body["amount_subtotal"], body["amount_total"]) == (2000, 2145)
    assert body["total_details"]["amount_tax"] == 145
    payment = stripe_client.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "customer": customer,
            "success_url": "https://example.com/ok",
            "automatic_tax": {"enabled": True},
            "invoice_creation": {"enabled": True},
            "line_items": [
                {"price": _price(stripe_client, 10725, "inclusive", recurring=False), "quantity": 1}
            ],
        }
    )
    response = emulator.control.complete_checkout_session(payment.id, card="4242424242424242")
    body = response.json()
    assert response.status_code == 200, body
    invoice = stripe_client.v1.invoices.retrieve(body["invoice"])
    assert (invoice.total, invoice.total_excluding_tax, invoice.amount_paid) == (
        10725,
        10000,
        10725,
    )
    assert invoice.automatic_tax.status == "complete"
    assert (body["amount_total"], body["total_details"]["amount_tax"]) == (10725, 725)
    # Payment mode without an invoice: the PaymentIntent charges the taxed total.
    plain = stripe_client.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "customer": customer,
            "success_url": "https://example.com/ok",
            "automatic_tax": {"enabled": True},
            "line_items": [
                {"price": _price(stripe_client, 1000, "exclusive", recurring=False), "quantity": 1}
            ],
        }
    )
    assert (plain.amount_total, plain.total_details and plain.total_details.amount_tax) == (
        1073,
        73,
    )
    items = stripe_client.v1.checkout.sessions.line_items.list(plain.id).data
    assert [(i.amount_subtotal, i.amount_tax, i.amount_total) for i in items] == [(1000, 73, 1073)]
    response = emulator.control.complete_checkout_session(plain.id, card="4242424242424242")
    body = response.json()
    assert response.status_code == 200, body
    intent = stripe_client.v1.payment_intents.retrieve(body["payment_intent"])
    assert (intent.amount, intent.status) == (1073, "succeeded")


def test_shapes(stripe_client: Client, emulator: EmulatorHandle) -> None:
    customer = _customer(stripe_client, BERLIN)
    sub = stripe_client.v1.subscriptions.create(
        {
            "customer": customer,
            "items": [{"price": _price(stripe_client, 11900, "inclusive")}],
            "automatic_tax": {"enabled": True},
        }
    )
    invoice = str(sub.latest_invoice)
    preview = httpx.post(
        emulator.url + "/v1/invoices/create_preview",
        data={"subscription": sub.id},
        auth=(TEST_API_KEY, ""),
    ).json()
    problems = (
        shape_problems(_raw(emulator, f"/v1/subscriptions/{sub.id}"), stripe.Subscription)
        + shape_problems(_raw(emulator, f"/v1/invoices/{invoice}"), stripe.Invoice)
        + shape_problems(
            _raw(emulator, f"/v1/invoices/{invoice}/lines"), stripe.InvoiceLineItem, listed=True
        )
        + shape_problems(preview, stripe.Invoice)
    )
    assert problems == []
    assert preview["total_taxes"][0]["amount"] == 1900


def test_prorations_and_metered_usage_are_taxed_by_their_prices_behavior(
    stripe_client: Client,
) -> None:
    clock = stripe_client.v1.test_helpers.test_clocks.create({"frozen_time": T0})
    customer = _customer(stripe_client, BERLIN, clock=clock.id)
    meter = stripe_client.v1.billing.meters.create(
        {
            "display_name": "calls",
            "event_name": "taxed_calls",
            "default_aggregation": {"formula": "sum"},
        }
    ).id
    product = stripe_client.v1.products.create({"name": "Calls"})
    metered = stripe_client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 10,
            "tax_behavior": "exclusive",
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter},
        }
    ).id
    seat = _price(stripe_client, 11900, "inclusive")
    sub = stripe_client.v1.subscriptions.create(
        {
            "customer": customer,
            "items": [{"price": seat}, {"price": metered}],
            "automatic_tax": {"enabled": True},
        }
    )
    stripe_client.v1.billing.meter_events.create(
        {
            "event_name": "taxed_calls",
            "payload": {"stripe_customer_id": customer, "value": "105"},
            "timestamp": T0 + 86400,
        }
    )
    seat_item = next(i for i in sub["items"].data if i.price.id == seat)
    # Half-way through the period, a second seat, invoiced at once: -5950 unused (one seat)
    # and +11900 remaining (two seats), inclusive of 19%: 5950 = 5000 + 950 tax.
    stripe_client.v1.test_helpers.test_clocks.advance(
        clock.id, {"frozen_time": T0 + 31 * 86400 // 2}
    )
    stripe_client.v1.subscriptions.update(
        sub.id,
        {
            "items": [{"id": seat_item.id, "quantity": 2}],
            "proration_behavior": "always_invoice",
        },
    )
    proration = stripe_client.v1.invoices.retrieve(
        str(stripe_client.v1.subscriptions.retrieve(sub.id).latest_invoice)
    )
    assert sorted((line.amount, _taxes(line)[0][:2]) for line in proration.lines.data) == [
        (-5950, (-950, "inclusive")),
        (11900, (1900, "inclusive")),
    ]
    assert (proration.total, proration.total_excluding_tax) == (5950, 5000)
    stripe_client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": FEB_15 + 7200})
    renewal = stripe_client.v1.invoices.retrieve(
        str(stripe_client.v1.subscriptions.retrieve(sub.id).latest_invoice)
    )
    usage = next(line for line in renewal.lines.data if line.quantity == 105)
    # 105 calls × 10 = 1050, 19% exclusive = 199.5 -> 200.
    assert (usage.amount, _taxes(usage)[0][:2]) == (1050, (200, "exclusive"))
    # Two seats: 23800 inclusive (20000 + 3800 tax), plus 1050 + 200.
    assert renewal.total == 23800 + 1050 + 200
    assert renewal.total_excluding_tax == 20000 + 1050

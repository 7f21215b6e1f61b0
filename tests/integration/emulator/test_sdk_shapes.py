"""Every object the emulator serves has exactly the fields of the SDK's resource class.

`tests/sdk_shapes.py` walks the class annotations of the pinned SDK (`stripe.Customer`,
`stripe.TaxId`, ...): no served field the class lacks, every non-Optional field present,
JSON types that fit, nested objects too. `CASES` is the table: a name, a call through the real
SDK that returns the served JSON (`served(...)` reads the response body, before the SDK
converts anything), and the class it must match. Add a row per new resource or variant (an
expanded includable field is a variant: it is absent otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import stripe
from stripe._stripe_object import StripeObject

from tests.fixtures.emulator import EmulatorHandle
from tests.sdk_shapes import event_problems, shape_problems

Served = dict[str, Any]


def served(obj: StripeObject) -> Served:
    """The JSON body the emulator answered for this SDK call."""
    response = obj.last_response
    assert response is not None
    body: Served = json.loads(response.body)
    return body


@dataclass(frozen=True, slots=True)
class ShapeCase:
    """One served object: how to get it, and the SDK class it must match."""

    name: str
    make: Callable[[stripe.StripeClient], Served]
    cls: type[StripeObject]
    listed: bool = False  # `make` returns a list envelope of `cls` objects


def _product(client: stripe.StripeClient) -> Served:
    return served(
        client.v1.products.create(
            {
                "name": "T-shirt",
                "description": "Gray",
                "package_dimensions": {"height": 1, "length": 1, "weight": 1, "width": 1},
                "default_price_data": {"currency": "usd", "unit_amount": 2000},
                "marketing_features": [{"name": "Soft"}],
                "metadata": {"k": "v"},
            }
        )
    )


def _price(client: stripe.StripeClient, **extra: Any) -> Any:
    product = client.v1.products.create({"name": "Plan"})
    params: dict[str, Any] = {
        "product": product.id,
        "currency": "usd",
        "unit_amount": 2000,
        "recurring": {"interval": "month"},
        "lookup_key": "plan",
        "transform_quantity": {"divide_by": 10, "round": "down"},
        "tax_behavior": "exclusive",
    }
    params.update(extra)
    return client.v1.prices.create(params)


def _tiered_price(client: stripe.StripeClient) -> Served:
    product = client.v1.products.create({"name": "Tiered"})
    price = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "recurring": {"interval": "month"},
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": [{"up_to": 10, "unit_amount": 100}, {"up_to": "inf", "flat_amount": 5}],
            "currency_options": {
                "eur": {
                    "tiers": [
                        {"up_to": 10, "unit_amount": 90},
                        {"up_to": "inf", "flat_amount": 4},
                    ]
                }
            },
        }
    )
    return served(
        client.v1.prices.retrieve(price.id, {"expand": ["tiers", "currency_options", "product"]})
    )


def _custom_amount_price(client: stripe.StripeClient) -> Served:
    product = client.v1.products.create({"name": "Donation"})
    return served(
        client.v1.prices.create(
            {
                "product": product.id,
                "currency": "usd",
                "custom_unit_amount": {"enabled": True, "minimum": 100, "maximum": 10000},
            }
        )
    )


def _meter(client: stripe.StripeClient) -> stripe.billing.Meter:
    return client.v1.billing.meters.create(
        {
            "display_name": "API calls",
            "event_name": "api_call",
            "default_aggregation": {"formula": "sum"},
        }
    )


def _metered_price(client: stripe.StripeClient) -> Served:
    meter = _meter(client)
    product = client.v1.products.create({"name": "Metered"})
    return served(
        client.v1.prices.create(
            {
                "product": product.id,
                "currency": "usd",
                "unit_amount_decimal": "0.5",
                "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            }
        )
    )


def _meter_event(client: stripe.StripeClient) -> Served:
    _meter(client)
    return served(
        client.v1.billing.meter_events.create(
            {"event_name": "api_call", "payload": {"stripe_customer_id": "cus_1", "value": "3"}}
        )
    )


def _meter_event_summary(client: stripe.StripeClient) -> Served:
    meter = _meter(client)
    client.v1.billing.meter_events.create(
        {
            "event_name": "api_call",
            "payload": {"stripe_customer_id": "cus_1", "value": "3"},
            "timestamp": meter.created,
        }
    )
    summaries = client.v1.billing.meters.event_summaries.list(
        meter.id,
        {"customer": "cus_1", "start_time": meter.created - 60, "end_time": meter.created + 3600},
    )
    return served(summaries)["data"][0]  # type: ignore[no-any-return]


def _feature(client: stripe.StripeClient) -> Served:
    return served(
        client.v1.entitlements.features.create(
            {"name": "SSO", "lookup_key": "sso", "metadata": {"a": "b"}}
        )
    )


def _product_feature(client: stripe.StripeClient) -> Served:
    product = client.v1.products.create({"name": "Pro"})
    feature = client.v1.entitlements.features.create({"name": "SSO", "lookup_key": "sso"})
    return served(
        client.v1.products.features.create(product.id, {"entitlement_feature": feature.id})
    )


def _customer(client: stripe.StripeClient) -> Served:
    return served(
        client.v1.customers.create(
            {
                "email": "a@example.com",
                "name": "A",
                "address": {"country": "DE", "city": "Berlin"},
                "shipping": {"name": "A", "address": {"country": "DE", "postal_code": "10115"}},
                "invoice_settings": {
                    "custom_fields": [{"name": "PO", "value": "42"}],
                    "footer": "Thanks",
                    "rendering_options": {"amount_tax_display": "exclude_tax"},
                },
                "metadata": {"k": "v"},
                "preferred_locales": ["de"],
            }
        )
    )


def _customer_expanded(client: stripe.StripeClient) -> Served:
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": 1_700_000_000})
    customer = client.v1.customers.create(
        {
            "address": {"country": "US", "postal_code": "94103", "state": "CA"},
            "test_clock": clock.id,
            "tax_id_data": [{"type": "us_ein", "value": "12-3456789"}],
        }
    )
    return served(
        client.v1.customers.retrieve(
            customer.id,
            {"expand": ["tax", "tax_ids", "test_clock", "cash_balance"]},
        )
    )


def _balance_transaction(client: stripe.StripeClient) -> Served:
    customer = client.v1.customers.create({})
    return served(
        client.v1.customers.balance_transactions.create(
            customer.id, {"amount": -500, "currency": "usd", "description": "gift"}
        )
    )


def _tax_id(client: stripe.StripeClient) -> Served:
    customer = client.v1.customers.create({})
    return served(
        client.v1.customers.tax_ids.create(customer.id, {"type": "eu_vat", "value": "DE123456789"})
    )


def _account_tax_id(client: stripe.StripeClient) -> Served:
    return served(client.v1.tax_ids.create({"type": "gb_vat", "value": "GB123456789"}))


def _deleted_tax_id(client: stripe.StripeClient) -> Served:
    customer = client.v1.customers.create({})
    tax_id = client.v1.customers.tax_ids.create(
        customer.id, {"type": "au_abn", "value": "12345678912"}
    )
    return served(client.v1.customers.tax_ids.delete(customer.id, tax_id.id))


def _cash_balance(client: stripe.StripeClient) -> Served:
    customer = client.v1.customers.create(
        {"cash_balance": {"settings": {"reconciliation_mode": "manual"}}}
    )
    return served(client.v1.customers.cash_balance.retrieve(customer.id))


def _webhook_endpoint(client: stripe.StripeClient) -> Served:
    endpoint = client.v1.webhook_endpoints.create(
        {"url": "https://example.com/hook", "enabled_events": ["*"], "description": "d"}
    )
    return served(client.v1.webhook_endpoints.retrieve(endpoint.id))


def _webhook_endpoint_created(client: stripe.StripeClient) -> Served:
    return served(
        client.v1.webhook_endpoints.create(
            {"url": "https://example.com/hook", "enabled_events": ["customer.created"]}
        )
    )


def _event(client: stripe.StripeClient) -> Served:
    product = client.v1.products.create({"name": "Pro"})
    client.v1.products.update(product.id, {"name": "Pro 2"})
    return served(client.v1.events.list({"type": "product.updated"}))["data"][0]  # type: ignore[no-any-return]


def _test_clock(client: stripe.StripeClient) -> Served:
    return served(
        client.v1.test_helpers.test_clocks.create({"frozen_time": 1_700_000_000, "name": "c"})
    )


def _advanced_test_clock(client: stripe.StripeClient) -> Served:
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": 1_700_000_000})
    return served(
        client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": 1_700_086_400})
    )


def _customer_list(client: stripe.StripeClient) -> Served:
    _customer(client)
    _customer_expanded(client)
    expand = ["data.tax", "data.tax_ids", "data.subscriptions", "data.sources", "data.test_clock"]
    return served(client.v1.customers.list({"expand": expand}))


def _customer_tax_id_list(client: stripe.StripeClient) -> Served:
    customer = client.v1.customers.create(
        {"tax_id_data": [{"type": "eu_vat", "value": "DE000000000"}]}
    )
    return served(client.v1.customers.tax_ids.list(customer.id))


def _account_tax_id_list(client: stripe.StripeClient) -> Served:
    client.v1.tax_ids.create({"type": "in_gst", "value": "12ABCDE3456FGZH"})
    return served(client.v1.tax_ids.list())


def _customer_updated_with_payment_method(client: stripe.StripeClient) -> Served:
    customer = client.v1.customers.create({"invoice_settings": {"footer": "f"}})
    return served(
        client.v1.customers.update(
            customer.id,
            {
                "address": {"country": "GB"},
                "tax": {"ip_address": "203.0.113.1"},
                "tax_exempt": "reverse",
                "invoice_settings": {"default_payment_method": "", "custom_fields": ""},
                "expand": ["tax", "invoice_settings.default_payment_method", "subscriptions"],
            },
        )
    )


def _card(client: stripe.StripeClient) -> stripe.PaymentMethod:
    return client.v1.payment_methods.create(
        {
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 8, "exp_year": 2040, "cvc": "1"},
            "billing_details": {"email": "j@example.com", "address": {"country": "US"}},
            "metadata": {"order": "1"},
        }
    )


def _attached_card(client: stripe.StripeClient) -> Served:
    customer = client.v1.customers.create({})
    return served(client.v1.payment_methods.attach(_card(client).id, {"customer": customer.id}))


def _customer_balance_method(client: stripe.StripeClient) -> Served:
    return served(client.v1.payment_methods.create({"type": "customer_balance"}))


def _intent(client: stripe.StripeClient, **params: Any) -> Served:
    base: dict[str, Any] = {"amount": 1099, "currency": "usd", "confirm": True}
    return served(client.v1.payment_intents.create({**base, **params}))


def _succeeded_intent(client: stripe.StripeClient) -> Served:
    customer = client.v1.customers.create({})
    pm = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    return _intent(
        client, customer=customer.id, payment_method=pm.id, expand=["latest_charge", "customer"]
    )


def _declined_intent(client: stripe.StripeClient) -> Served:
    with pytest.raises(stripe.CardError) as excinfo:
        client.v1.payment_intents.create(
            {
                "amount": 1099,
                "currency": "usd",
                "payment_method": "pm_card_chargeDeclined",
                "confirm": True,
            }
        )
    intent = excinfo.value.error.payment_intent  # type: ignore[union-attr]
    assert intent is not None
    return served(client.v1.payment_intents.retrieve(intent.id))


def _bank_transfer_intent(client: stripe.StripeClient) -> Served:
    customer = client.v1.customers.create({})
    return _intent(
        client,
        currency="eur",
        customer=customer.id,
        payment_method_data={"type": "customer_balance"},
        payment_method_options={
            "customer_balance": {
                "funding_type": "bank_transfer",
                "bank_transfer": {"type": "eu_bank_transfer"},
            }
        },
    )


def _manual_capture_intent(client: stripe.StripeClient) -> Served:
    intent = client.v1.payment_intents.create(
        {
            "amount": 1099,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
            "capture_method": "manual",
        }
    )
    return served(client.v1.payment_intents.capture(intent.id, {"amount_to_capture": 500}))


def _canceled_intent(client: stripe.StripeClient) -> Served:
    intent = client.v1.payment_intents.create({"amount": 1099, "currency": "usd"})
    return served(client.v1.payment_intents.cancel(intent.id, {"cancellation_reason": "abandoned"}))


def _charge(client: stripe.StripeClient) -> Served:
    intent = _intent(client, payment_method="pm_card_visa")
    return served(client.v1.charges.retrieve(intent["latest_charge"]))


def _setup_intent(client: stripe.StripeClient) -> Served:
    customer = client.v1.customers.create({})
    return served(
        client.v1.setup_intents.create(
            {"customer": customer.id, "payment_method": "pm_card_visa", "confirm": True}
        )
    )


def _setup_intent_requires_action(client: stripe.StripeClient) -> Served:
    return served(
        client.v1.setup_intents.create(
            {"payment_method": "pm_card_authenticationRequiredOnSetup", "confirm": True}
        )
    )


def _funded(client: stripe.StripeClient) -> stripe.Customer:
    customer = client.v1.customers.create({})
    client.v1.test_helpers.customers.fund_cash_balance(
        customer.id, {"amount": 500, "currency": "eur", "reference": "R1"}
    )
    return customer


def _cash_balance_transaction(client: stripe.StripeClient) -> Served:
    customer = _funded(client)
    return served(client.v1.customers.cash_balance_transactions.list(customer.id))


def _funded_cash_balance(client: stripe.StripeClient) -> Served:
    return served(client.v1.customers.cash_balance.retrieve(_funded(client).id))


def _deleted(kind: str) -> Callable[[stripe.StripeClient], Served]:
    def make(client: stripe.StripeClient) -> Served:
        if kind == "product":
            return served(client.v1.products.delete(client.v1.products.create({"name": "x"}).id))
        if kind == "customer":
            return served(client.v1.customers.delete(client.v1.customers.create({}).id))
        clock = client.v1.test_helpers.test_clocks.create({"frozen_time": 1_700_000_000})
        return served(client.v1.test_helpers.test_clocks.delete(clock.id))

    return make


# --- billing: subscriptions, schedules, invoices, checkout -------------------------------------


def _monthly(client: stripe.StripeClient, amount: int = 1000) -> str:
    price = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": amount,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Plan"},
        }
    )
    return price.id


def _payer(client: stripe.StripeClient) -> str:
    customer = client.v1.customers.create({"email": "payer@example.com"}).id
    pm = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer})
    client.v1.customers.update(customer, {"invoice_settings": {"default_payment_method": pm.id}})
    return customer


def _subscription(client: stripe.StripeClient, **extra: Any) -> stripe.Subscription:
    params: dict[str, Any] = {
        "customer": _payer(client),
        "items": [{"price": _monthly(client), "quantity": 2}],
        "metadata": {"k": "v"},
        **extra,
    }
    return client.v1.subscriptions.create(params)  # type: ignore[arg-type]


def _subscription_expanded(client: stripe.StripeClient) -> Served:
    sub = _subscription(client)
    return served(
        client.v1.subscriptions.retrieve(
            sub.id, {"expand": ["latest_invoice", "customer", "items.data.price.product"]}
        )
    )


def _subscription_prorated(client: stripe.StripeClient) -> Served:
    sub = _subscription(client)
    return served(
        client.v1.subscriptions.update(
            sub.id,
            {
                "items": [{"id": sub["items"].data[0].id, "quantity": 3}],
                "proration_behavior": "create_prorations",
                "cancel_at_period_end": True,
            },
        )
    )


def _subscription_canceled(client: stripe.StripeClient) -> Served:
    sub = _subscription(client)
    return served(client.v1.subscriptions.cancel(sub.id, {"invoice_now": True, "prorate": True}))


def _subscription_list(client: stripe.StripeClient) -> Served:
    _subscription(client)
    return served(client.v1.subscriptions.list({"status": "all"}))


def _subscription_item(client: stripe.StripeClient) -> Served:
    sub = _subscription(client)
    return served(client.v1.subscription_items.retrieve(sub["items"].data[0].id))


def _subscription_item_list(client: stripe.StripeClient) -> Served:
    sub = _subscription(client)
    return served(client.v1.subscription_items.list({"subscription": sub.id}))


def _subscription_item_created(client: stripe.StripeClient) -> Served:
    sub = _subscription(client)
    return served(
        client.v1.subscription_items.create(
            {"subscription": sub.id, "price": _monthly(client, 500), "quantity": 1}
        )
    )


def _deleted_subscription_item(client: stripe.StripeClient) -> Served:
    sub = _subscription(client)
    extra = client.v1.subscription_items.create(
        {"subscription": sub.id, "price": _monthly(client, 500)}
    )
    return served(client.v1.subscription_items.delete(extra.id))


def _schedule_from_subscription(client: stripe.StripeClient) -> Served:
    sub = _subscription(client)
    return served(client.v1.subscription_schedules.create({"from_subscription": sub.id}))


def _schedule_with_phases(client: stripe.StripeClient) -> Served:
    return served(
        client.v1.subscription_schedules.create(
            {
                "customer": _payer(client),
                "start_date": "now",
                "end_behavior": "release",
                "phases": [
                    {"items": [{"price": _monthly(client)}], "duration": {"interval": "month"}},
                    {
                        "items": [{"price": _monthly(client, 2000), "quantity": 2}],
                        "duration": {"interval": "month", "interval_count": 2},
                        "metadata": {"phase": "2"},
                    },
                ],
            }
        )
    )


def _schedule_released(client: stripe.StripeClient) -> Served:
    sub = _subscription(client)
    schedule = client.v1.subscription_schedules.create({"from_subscription": sub.id})
    return served(client.v1.subscription_schedules.release(schedule.id))


def _schedule_canceled(client: stripe.StripeClient) -> Served:
    sub = _subscription(client)
    schedule = client.v1.subscription_schedules.create({"from_subscription": sub.id})
    return served(client.v1.subscription_schedules.cancel(schedule.id))


def _schedule_list(client: stripe.StripeClient) -> Served:
    _schedule_from_subscription(client)
    return served(client.v1.subscription_schedules.list())


def _subscription_invoice(client: stripe.StripeClient) -> Served:
    sub = _subscription(client)
    return served(client.v1.invoices.retrieve(str(sub.latest_invoice)))


def _manual_invoice(client: stripe.StripeClient) -> stripe.Invoice:
    customer = _payer(client)
    client.v1.invoice_items.create({"customer": customer, "amount": 700, "currency": "usd"})
    return client.v1.invoices.create(
        {"customer": customer, "pending_invoice_items_behavior": "include"}
    )


def _draft_invoice(client: stripe.StripeClient) -> Served:
    return served(_manual_invoice(client))


def _sent_invoice(client: stripe.StripeClient) -> Served:
    customer = _payer(client)
    client.v1.invoice_items.create({"customer": customer, "amount": 700, "currency": "usd"})
    invoice = client.v1.invoices.create(
        {
            "customer": customer,
            "collection_method": "send_invoice",
            "days_until_due": 30,
            "pending_invoice_items_behavior": "include",
        }
    )
    return served(client.v1.invoices.finalize_invoice(invoice.id))


def _paid_invoice(client: stripe.StripeClient) -> Served:
    invoice = _manual_invoice(client)
    return served(client.v1.invoices.pay(invoice.id))


def _voided_invoice(client: stripe.StripeClient) -> Served:
    invoice = _manual_invoice(client)
    client.v1.invoices.finalize_invoice(invoice.id)
    return served(client.v1.invoices.void_invoice(invoice.id))


def _deleted_invoice(client: stripe.StripeClient) -> Served:
    return served(client.v1.invoices.delete(_manual_invoice(client).id))


def _invoice_preview(client: stripe.StripeClient) -> Served:
    sub = _subscription(client)
    return served(client.v1.invoices.create_preview({"subscription": sub.id}))


def _invoice_list(client: stripe.StripeClient) -> Served:
    _subscription(client)
    return served(client.v1.invoices.list({"expand": ["data.customer"]}))


def _invoice_item(client: stripe.StripeClient) -> Served:
    customer = _payer(client)
    return served(
        client.v1.invoice_items.create(
            {
                "customer": customer,
                "price_data": {
                    "currency": "usd",
                    "product": _product(client)["id"],
                    "unit_amount": 300,
                },
                "quantity": 2,
                "metadata": {"k": "v"},
            }
        )
    )


def _proration_invoice_items(client: stripe.StripeClient) -> Served:
    sub = _subscription(client)
    client.v1.subscriptions.update(
        sub.id,
        {
            "items": [{"id": sub["items"].data[0].id, "quantity": 3}],
            "proration_behavior": "create_prorations",
        },
    )
    return served(client.v1.invoice_items.list({"customer": str(sub.customer), "pending": True}))


def _deleted_invoice_item(client: stripe.StripeClient) -> Served:
    customer = _payer(client)
    item = client.v1.invoice_items.create({"customer": customer, "amount": 100, "currency": "usd"})
    return served(client.v1.invoice_items.delete(item.id))


def _invoice_lines(client: stripe.StripeClient) -> Served:
    sub = _subscription(client)
    return served(client.v1.invoices.line_items.list(str(sub.latest_invoice)))


def _proration_invoice_lines(client: stripe.StripeClient) -> Served:
    sub = _subscription(client)
    client.v1.subscriptions.update(
        sub.id,
        {
            "items": [{"id": sub["items"].data[0].id, "quantity": 3}],
            "proration_behavior": "always_invoice",
        },
    )
    latest = client.v1.subscriptions.retrieve(sub.id).latest_invoice
    return served(client.v1.invoices.line_items.list(str(latest)))


def _checkout(client: stripe.StripeClient, mode: str, **extra: Any) -> stripe.checkout.Session:
    params: dict[str, Any] = {
        "mode": mode,
        "success_url": "https://example.com/ok",
        "cancel_url": "https://example.com/cancel",
        **extra,
    }
    if mode == "subscription":
        params["line_items"] = [{"price": _monthly(client), "quantity": 1}]
        params["subscription_data"] = {"trial_period_days": 7, "metadata": {"k": "v"}}
    if mode == "payment":
        one_time = client.v1.prices.create(
            {"currency": "usd", "unit_amount": 500, "product_data": {"name": "Mug"}}
        )
        params["line_items"] = [
            {
                "price": one_time.id,
                "quantity": 2,
                "adjustable_quantity": {"enabled": True, "minimum": 1, "maximum": 5},
            }
        ]
    if mode == "setup":
        params["currency"] = "usd"
    return client.v1.checkout.sessions.create(params)  # type: ignore[arg-type]


def _checkout_expired(client: stripe.StripeClient) -> Served:
    session = _checkout(client, "payment")
    return served(client.v1.checkout.sessions.expire(session.id))


def _checkout_line_items(client: stripe.StripeClient) -> Served:
    session = _checkout(client, "payment")
    return served(client.v1.checkout.sessions.line_items.list(session.id))


def _checkout_list(client: stripe.StripeClient) -> Served:
    _checkout(client, "setup")
    return served(client.v1.checkout.sessions.list())


def _portal_session(client: stripe.StripeClient) -> Served:
    customer = client.v1.customers.create({})
    return served(
        client.v1.billing_portal.sessions.create(
            {"customer": customer.id, "return_url": "https://example.com/account"}
        )
    )


CASES: list[ShapeCase] = [
    ShapeCase("product", _product, stripe.Product),
    ShapeCase("price", lambda c: served(_price(c)), stripe.Price),
    ShapeCase("price tiered, expanded", _tiered_price, stripe.Price),
    ShapeCase("price custom amount", _custom_amount_price, stripe.Price),
    ShapeCase("price metered", _metered_price, stripe.Price),
    ShapeCase("billing meter", lambda c: served(_meter(c)), stripe.billing.Meter),
    ShapeCase("billing meter event", _meter_event, stripe.billing.MeterEvent),
    ShapeCase(
        "billing meter event summary", _meter_event_summary, stripe.billing.MeterEventSummary
    ),
    ShapeCase("entitlements feature", _feature, stripe.entitlements.Feature),
    ShapeCase("product feature", _product_feature, stripe.ProductFeature),
    ShapeCase("customer", _customer, stripe.Customer),
    ShapeCase("customer expanded", _customer_expanded, stripe.Customer),
    ShapeCase("customer list, expanded", _customer_list, stripe.Customer, listed=True),
    ShapeCase("customer updated", _customer_updated_with_payment_method, stripe.Customer),
    ShapeCase(
        "customer balance transaction", _balance_transaction, stripe.CustomerBalanceTransaction
    ),
    ShapeCase("tax id", _tax_id, stripe.TaxId),
    ShapeCase("account tax id", _account_tax_id, stripe.TaxId),
    ShapeCase("deleted tax id", _deleted_tax_id, stripe.TaxId),
    ShapeCase("customer tax id list", _customer_tax_id_list, stripe.TaxId, listed=True),
    ShapeCase("account tax id list", _account_tax_id_list, stripe.TaxId, listed=True),
    ShapeCase("cash balance", _cash_balance, stripe.CashBalance),
    ShapeCase("cash balance funded", _funded_cash_balance, stripe.CashBalance),
    ShapeCase(
        "cash balance transactions",
        _cash_balance_transaction,
        stripe.CustomerCashBalanceTransaction,
        listed=True,
    ),
    ShapeCase("payment method card", _attached_card, stripe.PaymentMethod),
    ShapeCase("payment method customer_balance", _customer_balance_method, stripe.PaymentMethod),
    ShapeCase("payment intent succeeded", _succeeded_intent, stripe.PaymentIntent),
    ShapeCase("payment intent declined", _declined_intent, stripe.PaymentIntent),
    ShapeCase(
        "payment intent requires_action",
        lambda c: _intent(c, payment_method="pm_card_authenticationRequired"),
        stripe.PaymentIntent,
    ),
    ShapeCase("payment intent bank transfer", _bank_transfer_intent, stripe.PaymentIntent),
    ShapeCase("payment intent captured", _manual_capture_intent, stripe.PaymentIntent),
    ShapeCase("payment intent canceled", _canceled_intent, stripe.PaymentIntent),
    ShapeCase("charge", _charge, stripe.Charge),
    ShapeCase("setup intent", _setup_intent, stripe.SetupIntent),
    ShapeCase("setup intent requires_action", _setup_intent_requires_action, stripe.SetupIntent),
    ShapeCase("webhook endpoint", _webhook_endpoint, stripe.WebhookEndpoint),
    ShapeCase("webhook endpoint (create)", _webhook_endpoint_created, stripe.WebhookEndpoint),
    ShapeCase("event", _event, stripe.Event),
    ShapeCase("test clock", _test_clock, stripe.test_helpers.TestClock),
    ShapeCase("test clock advanced", _advanced_test_clock, stripe.test_helpers.TestClock),
    ShapeCase("deleted product", _deleted("product"), stripe.Product),
    ShapeCase("deleted customer", _deleted("customer"), stripe.Customer),
    ShapeCase("deleted test clock", _deleted("test_clock"), stripe.test_helpers.TestClock),
    ShapeCase("subscription", lambda c: served(_subscription(c)), stripe.Subscription),
    ShapeCase(
        "subscription trialing",
        lambda c: served(_subscription(c, trial_period_days=14)),
        stripe.Subscription,
    ),
    ShapeCase(
        "subscription send_invoice",
        lambda c: served(_subscription(c, collection_method="send_invoice", days_until_due=30)),
        stripe.Subscription,
    ),
    ShapeCase("subscription expanded", _subscription_expanded, stripe.Subscription),
    ShapeCase("subscription prorated update", _subscription_prorated, stripe.Subscription),
    ShapeCase("subscription canceled", _subscription_canceled, stripe.Subscription),
    ShapeCase("subscription list", _subscription_list, stripe.Subscription, listed=True),
    ShapeCase("subscription item", _subscription_item, stripe.SubscriptionItem),
    ShapeCase("subscription item (create)", _subscription_item_created, stripe.SubscriptionItem),
    ShapeCase(
        "subscription item list", _subscription_item_list, stripe.SubscriptionItem, listed=True
    ),
    ShapeCase("deleted subscription item", _deleted_subscription_item, stripe.SubscriptionItem),
    ShapeCase(
        "subscription schedule from subscription",
        _schedule_from_subscription,
        stripe.SubscriptionSchedule,
    ),
    ShapeCase(
        "subscription schedule with phases", _schedule_with_phases, stripe.SubscriptionSchedule
    ),
    ShapeCase("subscription schedule released", _schedule_released, stripe.SubscriptionSchedule),
    ShapeCase("subscription schedule canceled", _schedule_canceled, stripe.SubscriptionSchedule),
    ShapeCase(
        "subscription schedule list", _schedule_list, stripe.SubscriptionSchedule, listed=True
    ),
    ShapeCase("invoice of a subscription", _subscription_invoice, stripe.Invoice),
    ShapeCase("invoice draft", _draft_invoice, stripe.Invoice),
    ShapeCase("invoice send_invoice finalized", _sent_invoice, stripe.Invoice),
    ShapeCase("invoice paid", _paid_invoice, stripe.Invoice),
    ShapeCase("invoice voided", _voided_invoice, stripe.Invoice),
    ShapeCase("deleted invoice", _deleted_invoice, stripe.Invoice),
    ShapeCase("invoice preview", _invoice_preview, stripe.Invoice),
    ShapeCase("invoice list, expanded", _invoice_list, stripe.Invoice, listed=True),
    ShapeCase("invoice item", _invoice_item, stripe.InvoiceItem),
    ShapeCase(
        "invoice items, prorations", _proration_invoice_items, stripe.InvoiceItem, listed=True
    ),
    ShapeCase("deleted invoice item", _deleted_invoice_item, stripe.InvoiceItem),
    ShapeCase("invoice line items", _invoice_lines, stripe.InvoiceLineItem, listed=True),
    ShapeCase(
        "invoice line items, prorations",
        _proration_invoice_lines,
        stripe.InvoiceLineItem,
        listed=True,
    ),
    ShapeCase(
        "checkout session payment",
        lambda c: served(_checkout(c, "payment", metadata={"k": "v"})),
        stripe.checkout.Session,
    ),
    ShapeCase(
        "checkout session subscription",
        lambda c: served(_checkout(c, "subscription", client_reference_id="ref-1")),
        stripe.checkout.Session,
    ),
    ShapeCase(
        "checkout session setup", lambda c: served(_checkout(c, "setup")), stripe.checkout.Session
    ),
    ShapeCase("checkout session expired", _checkout_expired, stripe.checkout.Session),
    ShapeCase("checkout session list", _checkout_list, stripe.checkout.Session, listed=True),
    ShapeCase("checkout session line items", _checkout_line_items, stripe.LineItem, listed=True),
    ShapeCase("billing portal session", _portal_session, stripe.billing_portal.Session),
]


# The `object` of an event's `data.object` -> the class it must match.
EVENT_OBJECT_CLASSES: dict[str, type[StripeObject]] = {
    "product": stripe.Product,
    "price": stripe.Price,
    "customer": stripe.Customer,
    "tax_id": stripe.TaxId,
    "billing.meter": stripe.billing.Meter,
    "test_helpers.test_clock": stripe.test_helpers.TestClock,
    "payment_method": stripe.PaymentMethod,
    "payment_intent": stripe.PaymentIntent,
    "setup_intent": stripe.SetupIntent,
    "charge": stripe.Charge,
    "customer_cash_balance_transaction": stripe.CustomerCashBalanceTransaction,
    "cash_balance": stripe.CashBalance,
    "subscription": stripe.Subscription,
    "subscription_schedule": stripe.SubscriptionSchedule,
    "invoice": stripe.Invoice,
    "invoiceitem": stripe.InvoiceItem,
    "checkout.session": stripe.checkout.Session,
    "billing_portal.session": stripe.billing_portal.Session,
}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_served_object_matches_sdk_class(
    case: ShapeCase, stripe_client: stripe.StripeClient, emulator: EmulatorHandle
) -> None:
    data = case.make(stripe_client)
    assert data["object"] == ("list" if case.listed else data["object"])
    assert shape_problems(data, case.cls, listed=case.listed) == []
    # `data.object` of every event the case emitted is a served object too (`plan.*` events
    # carry the legacy plan object, which the SDK no longer types as an event payload here).
    problems: list[str] = []
    events = served(stripe_client.v1.events.list({"limit": 100}))
    assert not events["has_more"]
    for event in events["data"]:
        problems += event_problems(event, EVENT_OBJECT_CLASSES)
    assert problems == []


def test_checker_reports_unknown_missing_and_type_differences() -> None:
    good = {
        "id": "txi_1",
        "object": "tax_id",
        "country": "DE",
        "created": 1,
        "customer": None,
        "customer_account": None,
        "livemode": False,
        "owner": {"type": "self", "customer": None, "customer_account": None},
        "type": "eu_vat",
        "value": "DE1",
        "verification": None,
    }
    assert shape_problems(good, stripe.TaxId) == []
    bad = dict(good, surprise=1, created="yesterday")
    del bad["value"]
    bad["owner"] = {"type": "self", "customr": None}
    problems = shape_problems(bad, stripe.TaxId)
    assert any("TaxId.surprise: unknown" in p for p in problems)
    assert any("TaxId.value: missing" in p for p in problems)
    assert any("TaxId.created: type" in p for p in problems)
    assert any("TaxId.owner.customr: unknown" in p for p in problems)

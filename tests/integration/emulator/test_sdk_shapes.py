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
from tests.sdk_shapes import shape_problems

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
        problems += shape_problems(event, stripe.Event, event["type"])
        obj = event["data"]["object"]
        cls = EVENT_OBJECT_CLASSES.get(obj["object"])
        if cls is not None:
            problems += shape_problems(obj, cls, f"{event['type']}.data.object")
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

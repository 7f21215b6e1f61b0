"""Response shapes vs Stripe's published example objects (`tests/compat/stripe/fixtures3.json`).

For every resource the emulator serves, each field of Stripe's example must be present in the
emulator's response with the same JSON type (null is compatible with anything: both sides
use it for unset nullable fields), recursively; and every field the emulator returns must be
an attribute the SDK's resource class declares. Deliberate differences are listed in
`OMISSIONS`, each with its reason (docs/emulator.md repeats the table).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import stripe

from tests import compat_files
from tests.fixtures.emulator import TEST_API_KEY, EmulatorHandle

FIXTURES = compat_files.STRIPE_FIXTURES

# (resource, dotted field) -> why the emulator does not return it.
OMISSIONS: dict[tuple[str, str], str] = {
    ("customer", "discount.*"): "no coupons/discounts yet: `discount` is always null",
    ("customer", "shipping.*"): "Stripe's example has `{}`; the emulator returns null when unset",
}

# SDK classes to check extra fields against (the response may not invent fields).
SDK_CLASSES: dict[str, type[Any]] = {
    "product": stripe.Product,
    "price": stripe.Price,
    "customer": stripe.Customer,
    "customer_balance_transaction": stripe.CustomerBalanceTransaction,
    "billing.meter": stripe.billing.Meter,
    "billing.meter_event": stripe.billing.MeterEvent,
    "billing.meter_event_summary": stripe.billing.MeterEventSummary,
    "entitlements.feature": stripe.entitlements.Feature,
    "product_feature": stripe.ProductFeature,
    "webhook_endpoint": stripe.WebhookEndpoint,
    "event": stripe.Event,
    "test_helpers.test_clock": stripe.test_helpers.TestClock,
}


def _fixtures() -> dict[str, Any]:
    resources: dict[str, Any] = json.loads(FIXTURES.read_text())["resources"]
    return resources


class Raw:
    """Raw JSON calls, so types are compared before the SDK converts anything."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, auth=(TEST_API_KEY, ""))

    def post(self, path: str, data: dict[str, str] | None = None) -> dict[str, Any]:
        response = self.http.post(path, data=data or {})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        response = self.http.get(path, params=params or {})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def delete(self, path: str) -> dict[str, Any]:
        response = self.http.delete(path)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def _served_objects(raw: Raw) -> dict[str, dict[str, Any]]:
    """One fully populated object per resource type, as the emulator answers it."""
    objects: dict[str, dict[str, Any]] = {}
    meter = raw.post(
        "/v1/billing/meters",
        {
            "display_name": "API calls",
            "event_name": "api_call",
            "default_aggregation[formula]": "sum",
        },
    )
    objects["billing.meter"] = meter
    product = raw.post(
        "/v1/products",
        {
            "name": "T-shirt",
            "description": "Gray",
            "package_dimensions[height]": "1",
            "package_dimensions[length]": "1",
            "package_dimensions[weight]": "1",
            "package_dimensions[width]": "1",
            "default_price_data[currency]": "usd",
            "default_price_data[unit_amount]": "2000",
            "type": "good",
        },
    )
    objects["product"] = product
    objects["price"] = raw.post(
        "/v1/prices",
        {
            "product": product["id"],
            "currency": "usd",
            "unit_amount": "2000",
            "recurring[interval]": "month",
            "custom_unit_amount[enabled]": "false",
            "transform_quantity[divide_by]": "10",
            "transform_quantity[round]": "down",
            "lookup_key": "shirt",
        },
    )
    customer = raw.post("/v1/customers", {"email": "a@example.com", "address[city]": "Paris"})
    objects["customer_balance_transaction"] = raw.post(
        f"/v1/customers/{customer['id']}/balance_transactions",
        {"amount": "-500", "currency": "usd"},
    )
    objects["customer"] = raw.get(f"/v1/customers/{customer['id']}")
    raw.post(
        "/v1/billing/meter_events",
        {
            "event_name": "api_call",
            "payload[stripe_customer_id]": customer["id"],
            "payload[value]": "25",
            "timestamp": str(meter["created"]),
        },
    )
    objects["billing.meter_event"] = raw.post(
        "/v1/billing/meter_events",
        {
            "event_name": "api_call",
            "payload[stripe_customer_id]": customer["id"],
            "payload[value]": "5",
        },
    )
    objects["billing.meter_event_summary"] = raw.get(
        f"/v1/billing/meters/{meter['id']}/event_summaries",
        {
            "customer": customer["id"],
            "start_time": str(meter["created"] - 60),
            "end_time": str(meter["created"] + 3600),
        },
    )["data"][0]
    feature = raw.post("/v1/entitlements/features", {"name": "SSO", "lookup_key": "sso"})
    objects["entitlements.feature"] = feature
    objects["product_feature"] = raw.post(
        f"/v1/products/{product['id']}/features", {"entitlement_feature": feature["id"]}
    )
    endpoint = raw.post(
        "/v1/webhook_endpoints",
        {
            "url": "https://example.com/hook",
            "enabled_events[0]": "charge.failed",
            "description": "d",
        },
    )
    objects["webhook_endpoint"] = raw.get(f"/v1/webhook_endpoints/{endpoint['id']}")
    objects["event"] = raw.get("/v1/events", {"type": "price.created"})["data"][0]
    objects["test_helpers.test_clock"] = raw.post(
        "/v1/test_helpers/test_clocks", {"frozen_time": "1700000000"}
    )
    other = raw.post("/v1/products", {"name": "gone"})
    objects["deleted_product"] = raw.delete(f"/v1/products/{other['id']}")
    objects["deleted_customer"] = raw.delete(f"/v1/customers/{customer['id']}")
    objects["deleted_webhook_endpoint"] = raw.delete(f"/v1/webhook_endpoints/{endpoint['id']}")
    return objects


def _json_type(value: Any) -> str:
    return {
        bool: "boolean",
        int: "number",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), "null")


def _compare(resource: str, expected: Any, actual: Any, path: str, problems: list[str]) -> None:
    if expected is None or actual is None:
        return
    if any((resource, f"{prefix}.*") in OMISSIONS for prefix in _prefixes(path)):
        return
    if _json_type(expected) != _json_type(actual):
        problems.append(f"{resource}.{path}: {_json_type(actual)} != {_json_type(expected)}")
        return
    if isinstance(expected, dict) and path not in ("metadata", "payload", "data.object"):
        for key, value in expected.items():
            where = f"{path}.{key}" if path else key
            if key not in actual:
                if (resource, where) not in OMISSIONS:
                    problems.append(f"{resource}.{where}: missing")
                continue
            _compare(resource, value, actual[key], where, problems)
    if isinstance(expected, list) and expected and actual:
        _compare(resource, expected[0], actual[0], f"{path}[0]", problems)


def _prefixes(path: str) -> list[str]:
    parts = path.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@pytest.fixture
def served(emulator: EmulatorHandle) -> dict[str, dict[str, Any]]:
    return _served_objects(Raw(emulator.url))


@pytest.mark.parametrize(
    "resource",
    [
        "product",
        "price",
        "customer",
        "customer_balance_transaction",
        "billing.meter",
        "billing.meter_event",
        "billing.meter_event_summary",
        "entitlements.feature",
        "product_feature",
        "webhook_endpoint",
        "event",
        "test_helpers.test_clock",
        "deleted_product",
        "deleted_customer",
        "deleted_webhook_endpoint",
    ],
)
def test_shape_matches_stripe_example(resource: str, served: dict[str, dict[str, Any]]) -> None:
    problems: list[str] = []
    _compare(resource, _fixtures()[resource], served[resource], "", problems)
    assert problems == []


@pytest.mark.parametrize("resource", sorted(SDK_CLASSES))
def test_no_invented_fields(resource: str, served: dict[str, dict[str, Any]]) -> None:
    declared = set()
    for cls in SDK_CLASSES[resource].__mro__:
        declared |= set(getattr(cls, "__annotations__", {}))
    invented = set(served[resource]) - declared - {"object"}
    assert invented == set()


def test_ids_have_stripe_prefixes(served: dict[str, dict[str, Any]]) -> None:
    prefixes = {
        "product": "prod_",
        "price": "price_",
        "customer_balance_transaction": "cbtxn_",
        "billing.meter": "mtr_",
        "entitlements.feature": "feat_",
        "webhook_endpoint": "we_",
        "event": "evt_",
        "test_helpers.test_clock": "clock_",
        "deleted_customer": "cus_",
    }
    for resource, prefix in prefixes.items():
        assert served[resource]["id"].startswith(prefix), resource
    assert all(o.get("livemode") in (False, None) for o in served.values())

"""Subscription listing read as raw JSON pages (`observe.list_all_raw`) against the emulator
over HTTP: the same objects as the SDK's list, the same requests (`limit=100`, one call per
hundred), each page a paced, retried, reported call, and errors translated as every call's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import stripe

from billing_reconciler.model import MANAGED_BY, META_INSTALLATION, META_KEY, META_MANAGED_BY
from billing_reconciler.model_subscriptions import SubscriptionOwner
from billing_reconciler.stripe_gateway import (
    PermanentStripeError,
    RequestOutcome,
    StripeGateway,
    observe_subscriptions,
)
from billing_reconciler.stripe_gateway.errors import StripeAuthenticationError
from billing_reconciler.stripe_gateway.observe import list_all_raw
from billing_reconciler.stripe_gateway.subscription_mapping import map_subscription
from billing_reconciler.stripe_gateway.subscriptions import _all_items
from tests.fixtures.emulator import EmulatorHandle, make_client
from tests.integration.gateway.conftest import API_KEY, fast_retry

if TYPE_CHECKING:
    from stripe.params import SubscriptionListParams

INSTALLATION = "inst-raw"


def _gateway(emu: EmulatorHandle, outcomes: list[RequestOutcome], **kw: Any) -> StripeGateway:
    options: dict[str, Any] = {"api_key": API_KEY, "retry": fast_retry(), **kw}
    return StripeGateway(
        api_base=emu.url, rate_limit_per_second=1000, on_request=outcomes.append, **options
    )


def _fleet(sdk: stripe.StripeClient, count: int) -> str:
    """`count` subscriptions of ours (two items each: a seat price and a flat one) on one
    customer, plus a foreign one; the customer's id."""
    product = sdk.v1.products.create({"name": "Team"})
    prices = [
        sdk.v1.prices.create(
            {
                "product": product.id,
                "currency": "usd",
                "unit_amount": amount,
                "recurring": {"interval": "month"},
                "metadata": {
                    META_MANAGED_BY: MANAGED_BY,
                    META_INSTALLATION: INSTALLATION,
                    META_KEY: f"price/p{amount}",
                },
            }
        ).id
        for amount in (0, 1200)
    ]
    customer = sdk.v1.customers.create({"email": "billing@example.com"}).id
    for index in range(count):
        owner = SubscriptionOwner(installation_id=INSTALLATION, org_id=f"org-{index}", plan="t")
        sdk.v1.subscriptions.create(
            {
                "customer": customer,
                "items": [{"price": prices[0], "quantity": 1 + index % 3}, {"price": prices[1]}],
                "collection_method": "send_invoice",
                "days_until_due": 14,
                "metadata": owner.as_metadata(),
            }
        )
    sdk.v1.subscriptions.create(
        {
            "customer": customer,
            "items": [{"price": prices[0]}],
            "collection_method": "send_invoice",
            "days_until_due": 14,
        }
    )
    return customer


def _sdk_objects(sdk: stripe.StripeClient, *, every_status: bool = False) -> list[dict[str, Any]]:
    params: SubscriptionListParams = {"limit": 100}
    if every_status:
        params["status"] = "all"
    listed = sdk.v1.subscriptions.list(params)
    return [obj.to_dict(for_json=True) for obj in listed.auto_paging_iter()]


def _gets(emu: EmulatorHandle, path: str) -> list[int]:
    return [r.status for r in emu.control.requests(method="GET") if r.path == path]


def test_raw_pages_are_the_sdks_objects_in_one_call_per_hundred(emu: EmulatorHandle) -> None:
    sdk = make_client(emu.url)
    _fleet(sdk, 204)
    expected = _sdk_objects(sdk, every_status=True)
    outcomes: list[RequestOutcome] = []
    gateway = _gateway(emu, outcomes)
    emu.control.clear_requests()

    listed = list(list_all_raw(gateway, endpoint="/v1/subscriptions", params={"status": "all"}))

    assert len(listed) == 205
    assert [dict(obj) for obj in listed] == expected
    assert _gets(emu, "/v1/subscriptions") == [200, 200, 200]
    assert [(o.method, o.endpoint, o.status, o.retries, o.error) for o in outcomes] == [
        ("GET", "/v1/subscriptions", 200, 0, None)
    ] * 3


def test_observed_records_are_the_mappings_of_the_sdks_objects(emu: EmulatorHandle) -> None:
    sdk = make_client(emu.url)
    customer = _fleet(sdk, 3)
    expected = [map_subscription(o, installation_id=INSTALLATION) for o in _sdk_objects(sdk)]
    outcomes: list[RequestOutcome] = []

    observed = observe_subscriptions(_gateway(emu, outcomes), installation_id=INSTALLATION)

    assert list(observed.subscriptions) == expected
    ours = [s for s in observed.subscriptions if s.owner is not None]
    assert len(ours) == 3
    assert all(s.customer_id == customer for s in ours)
    assert {len(s.items) for s in ours} == {2}
    assert all(s.items[1].price_key == "price/p1200" for s in ours)
    assert [o.endpoint for o in outcomes] == ["/v1/subscriptions", "/v1/subscription_schedules"]


def test_a_page_that_fails_with_a_500_is_retried_with_the_same_cursor(
    emu: EmulatorHandle,
) -> None:
    sdk = make_client(emu.url)
    _fleet(sdk, 150)
    expected = _sdk_objects(sdk, every_status=True)
    outcomes: list[RequestOutcome] = []
    gateway = _gateway(emu, outcomes)
    emu.control.clear_requests()
    emu.control.add_fault(method="GET", path_prefix="/v1/subscriptions", nth=2, kind="500")

    listed = list(list_all_raw(gateway, endpoint="/v1/subscriptions", params={"status": "all"}))

    assert [dict(obj) for obj in listed] == expected  # no page lost nor repeated
    assert _gets(emu, "/v1/subscriptions") == [200, 500, 200]
    assert [(o.status, o.retries) for o in outcomes] == [(200, 0), (200, 1)]


def test_errors_are_translated_as_every_calls(emu: EmulatorHandle) -> None:
    outcomes: list[RequestOutcome] = []
    bad_key = _gateway(emu, outcomes, api_key="sk_live_not_for_the_emulator_0000")
    with pytest.raises(StripeAuthenticationError) as refused:
        list(list_all_raw(bad_key, endpoint="/v1/subscriptions"))
    assert refused.value.http_status == 401
    assert "check STRIPE_API_KEY" in str(refused.value)

    gateway = _gateway(emu, outcomes)
    with pytest.raises(PermanentStripeError) as invalid:
        list(list_all_raw(gateway, endpoint="/v1/subscriptions", params={"status": "bogus"}))
    assert invalid.value.http_status == 400
    assert invalid.value.request_id
    assert [(o.status, o.error) for o in outcomes] == [
        (401, "PermanentStripeError"),
        (400, "PermanentStripeError"),
    ]
    # A parameter `raw_request` would take as a request option is refused, nothing sent.
    emu.control.clear_requests()
    with pytest.raises(ValueError, match="idempotency_key"):
        list(list_all_raw(gateway, endpoint="/v1/subscriptions", params={"idempotency_key": "k"}))
    assert emu.control.requests() == []


def test_the_items_of_a_subscription_page_raw_as_the_sdk_lists_them(emu: EmulatorHandle) -> None:
    # The call a subscription whose embedded items say `has_more` costs (Stripe embeds 10).
    sdk = make_client(emu.url)
    product = sdk.v1.products.create({"name": "Many"})
    prices = [
        sdk.v1.prices.create(
            {
                "product": product.id,
                "currency": "usd",
                "unit_amount": 100 + i,
                "recurring": {"interval": "month"},
            }
        ).id
        for i in range(12)
    ]
    customer = sdk.v1.customers.create({"email": "billing@example.com"}).id
    created = sdk.v1.subscriptions.create(
        {
            "customer": customer,
            "items": [{"price": p} for p in prices],
            "collection_method": "send_invoice",
            "days_until_due": 14,
        }
    ).id
    listed = sdk.v1.subscription_items.list({"subscription": created, "limit": 100})
    expected = [obj.to_dict(for_json=True) for obj in listed.auto_paging_iter()]
    outcomes: list[RequestOutcome] = []

    items = list(_all_items(_gateway(emu, outcomes), created))

    assert [dict(item) for item in items] == expected
    assert sorted(item["price"]["id"] for item in items) == sorted(prices)
    assert [(o.endpoint, o.status) for o in outcomes] == [("/v1/subscription_items", 200)]

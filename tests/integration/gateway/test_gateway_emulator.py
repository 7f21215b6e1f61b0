"""The gateway against the Stripe emulator over real HTTP, driven by the real SDK."""

from __future__ import annotations

import math
from typing import Any

import pytest

from billing_reconciler.model import Kind, Ownership, Recurring, Tier
from billing_reconciler.stripe_gateway import (
    Operation,
    PermanentStripeError,
    RequestOutcome,
    StripeGateway,
    observe_catalog,
    write,
)
from tests.fixtures.emulator import EmulatorHandle

from .conftest import API_KEY, fast_retry


def marker(key: str) -> dict[str, str]:
    return Ownership("inst-it", key, "rev-1").as_metadata()


def create(gateway: StripeGateway, kind: Kind, params: dict[str, Any], key: str, **ids: str) -> str:
    result = write(
        gateway,
        kind=kind,
        operation=Operation.CREATE,
        params=params,
        idempotency_key=key,
        **ids,
    )
    assert not result.replayed
    assert result.request_id
    return result.stripe_id


def create_product(gateway: StripeGateway, name: str = "team") -> str:
    params = {"name": name.title(), "metadata": marker(f"product/{name}")}
    return create(gateway, Kind.PRODUCT, params, f"it-product-{name}")


def test_empty_account_observes_an_empty_catalog(gateway: StripeGateway) -> None:
    catalog = observe_catalog(gateway, products_with_features=[])
    assert catalog.size() == 0


def test_each_kind_created_through_write_is_observed_back(gateway: StripeGateway) -> None:
    meter_id = create(
        gateway,
        Kind.METER,
        {
            "display_name": "API tokens",
            "event_name": "api_tokens",
            "default_aggregation": {"formula": "sum"},
        },
        "it-meter",
    )
    feature_id = create(
        gateway,
        Kind.FEATURE,
        {"lookup_key": "sso", "name": "Single sign-on", "metadata": marker("feature/sso")},
        "it-feature",
    )
    product_id = create_product(gateway)
    tiered_id = create(
        gateway,
        Kind.PRICE,
        {
            "product": product_id,
            "currency": "usd",
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": [{"up_to": 10, "unit_amount": 500}, {"up_to": "inf", "unit_amount": 400}],
            "recurring": {"interval": "month"},
            "lookup_key": "team_seats",
            "metadata": marker("price/team/seats"),
        },
        "it-price-tiered",
    )
    create(
        gateway,
        Kind.PRICE,
        {
            "product": product_id,
            "currency": "usd",
            "unit_amount": 2,
            "currency_options": {"eur": {"unit_amount": 3}},
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter_id},
            "lookup_key": "team_tokens",
            "metadata": marker("price/team/tokens"),
        },
        "it-price-metered",
    )
    create(
        gateway,
        Kind.PRODUCT_FEATURE,
        {"entitlement_feature": feature_id},
        "it-product-feature",
        parent_id=product_id,
    )
    write(
        gateway,
        kind=Kind.PRODUCT,
        operation=Operation.UPDATE,
        params={"default_price": tiered_id, "description": "For teams"},
        idempotency_key="it-product-default-price",
        target_id=product_id,
    )

    catalog = observe_catalog(gateway, products_with_features=[product_id])

    [meter] = catalog.meters
    assert (meter.key, meter.display_name, meter.active) == ("meter/api_tokens", "API tokens", True)
    [feature] = catalog.features
    assert (feature.key, feature.title, feature.owner is not None) == (
        "feature/sso",
        "Single sign-on",
        True,
    )
    [product] = catalog.products
    assert (product.key, product.title, product.description) == (
        "product/team",
        "Team",
        "For teams",
    )
    assert product.default_price_key == "price/team/seats"
    prices = {p.key: p for p in catalog.prices}
    seats, tokens = prices["price/team/seats"], prices["price/team/tokens"]
    assert seats.product_key == "product/team"
    assert seats.tiers == (Tier(up_to=10, unit_amount=500), Tier(up_to=None, unit_amount=400))
    assert tokens.currency_options["eur"].unit_amount == 3
    assert "usd" not in tokens.currency_options
    assert tokens.recurring == Recurring(
        interval="month", usage_type="metered", meter_key="meter/api_tokens"
    )
    [link] = catalog.product_features
    assert (link.key, link.product_key, link.feature_key) == (
        "product_feature/team/sso",
        "product/team",
        "feature/sso",
    )


def test_deactivate_reactivate_and_delete(gateway: StripeGateway) -> None:
    product_id = create_product(gateway)
    price_params = {"product": product_id, "currency": "usd", "unit_amount": 100}
    price_id = create(gateway, Kind.PRICE, price_params, "it-price")
    meter_params = {
        "display_name": "Calls",
        "event_name": "calls",
        "default_aggregation": {"formula": "count"},
    }
    meter_id = create(gateway, Kind.METER, meter_params, "it-meter")
    feature_id = create(gateway, Kind.FEATURE, {"lookup_key": "x", "name": "X"}, "it-feature")
    link_id = create(
        gateway,
        Kind.PRODUCT_FEATURE,
        {"entitlement_feature": feature_id},
        "it-link",
        parent_id=product_id,
    )

    def change(kind: Kind, op: Operation, target: str, key: str, parent: str | None = None) -> None:
        write(
            gateway,
            kind=kind,
            operation=op,
            params={},
            idempotency_key=key,
            target_id=target,
            parent_id=parent,
        )

    change(Kind.PRICE, Operation.DEACTIVATE, price_id, "k1")
    change(Kind.METER, Operation.DEACTIVATE, meter_id, "k2")
    change(Kind.FEATURE, Operation.DEACTIVATE, feature_id, "k3")
    change(Kind.PRODUCT_FEATURE, Operation.DELETE, link_id, "k4", product_id)
    catalog = observe_catalog(gateway, products_with_features=[product_id])
    assert [p.active for p in catalog.prices] == [False]
    assert [m.active for m in catalog.meters] == [False]
    assert [f.active for f in catalog.features] == [False]
    assert catalog.product_features == ()

    change(Kind.PRICE, Operation.REACTIVATE, price_id, "k5")
    change(Kind.METER, Operation.REACTIVATE, meter_id, "k6")
    # Deleting again is a no-op: the attachment is gone, which is what was asked.
    change(Kind.PRODUCT_FEATURE, Operation.DELETE, link_id, "k7", product_id)
    catalog = observe_catalog(gateway, products_with_features=[product_id])
    assert [p.active for p in catalog.prices] == [True]
    assert [m.active for m in catalog.meters] == [True]


def test_pagination_lists_every_price_in_ceil_n_over_100_calls(
    emu: EmulatorHandle, gateway: StripeGateway
) -> None:
    product_id = create_product(gateway)
    count = 205
    for i in range(count):
        params = {"product": product_id, "currency": "usd", "unit_amount": i}
        create(gateway, Kind.PRICE, params, f"it-page-{i}")
    emu.control.clear_requests()

    catalog = observe_catalog(gateway)

    assert len(catalog.prices) == count
    assert len({p.stripe_id for p in catalog.prices}) == count
    price_lists = emu.control.requests(method="GET", path_prefix="/v1/prices")
    assert len(price_lists) == math.ceil(count / 100)
    assert all(r.status == 200 for r in price_lists)


def test_a_500_is_retried_with_the_same_idempotency_key(
    emu: EmulatorHandle, gateway: StripeGateway
) -> None:
    emu.control.add_fault(method="POST", path_prefix="/v1/products", nth=1, kind="500")

    product_id = create_product(gateway)

    posts = emu.control.requests(method="POST", path_prefix="/v1/products")
    assert [r.status for r in posts] == [500, 200]
    assert {r.idempotency_key for r in posts} == {"it-product-team"}
    assert [p.stripe_id for p in observe_catalog(gateway).products] == [product_id]


def test_a_response_lost_after_commit_is_retried_without_duplicating(
    emu: EmulatorHandle, gateway: StripeGateway
) -> None:
    emu.control.add_fault(
        method="POST", path_prefix="/v1/products", nth=1, kind="drop_after_commit"
    )

    result = write(
        gateway,
        kind=Kind.PRODUCT,
        operation=Operation.CREATE,
        params={"name": "Team", "metadata": marker("product/team")},
        idempotency_key="it-dropped",
    )

    assert result.replayed  # Stripe answered the retry from its idempotency store
    posts = emu.control.requests(method="POST", path_prefix="/v1/products")
    assert len(posts) == 2
    assert {r.idempotency_key for r in posts} == {"it-dropped"}
    assert [p.stripe_id for p in observe_catalog(gateway).products] == [result.stripe_id]


def test_429s_are_retried_until_the_calls_succeed(emu: EmulatorHandle) -> None:
    outcomes: list[RequestOutcome] = []
    gateway = StripeGateway(
        api_key=API_KEY,
        api_base=emu.url,
        rate_limit_per_second=1000,
        retry=fast_retry(max_attempts=30),
        on_request=outcomes.append,
    )
    emu.control.set_rate_limit(5)

    for i in range(12):
        create(gateway, Kind.FEATURE, {"lookup_key": f"f{i}", "name": f"F{i}"}, f"it-429-{i}")

    statuses = [r.status for r in emu.control.requests(method="POST")]
    assert 429 in statuses
    assert statuses.count(200) == 12
    assert len(outcomes) == 12
    assert sum(o.retries for o in outcomes) == statuses.count(429)
    emu.control.set_rate_limit(None)
    assert len(observe_catalog(gateway).features) == 12


def test_pacing_keeps_under_the_server_budget(emu: EmulatorHandle) -> None:
    # At 2 req/s with a 2-token burst, no wall-clock second ever sees more than 4 requests.
    gateway = StripeGateway(
        api_key=API_KEY, api_base=emu.url, rate_limit_per_second=2, retry=fast_retry(1)
    )
    emu.control.set_rate_limit(5)

    for _ in range(6):
        observe_catalog_meters_only(gateway)

    assert {r.status for r in emu.control.requests()} == {200}


def observe_catalog_meters_only(gateway: StripeGateway) -> None:
    gateway.request(
        method="GET",
        endpoint="/v1/billing/meters",
        send=lambda: gateway.sdk.v1.billing.meters.list({"limit": 1}),
    )


def test_a_400_surfaces_as_permanent_with_param_and_request_id(
    emu: EmulatorHandle, gateway: StripeGateway
) -> None:
    product_id = create_product(gateway)
    with pytest.raises(PermanentStripeError) as raised:
        write(
            gateway,
            kind=Kind.PRICE,
            operation=Operation.CREATE,
            params={"product": product_id, "currency": "usd", "unit_amount": 1, "colour": "red"},
            idempotency_key="it-bad",
        )
    error = raised.value
    assert (error.http_status, error.param) == (400, "colour")
    assert error.request_id
    assert error.request_id.startswith("req_")
    assert len(emu.control.requests(method="POST", path_prefix="/v1/prices")) == 1  # no retry
    assert API_KEY not in str(error)


def test_features_of_a_product_deleted_since_last_apply_are_empty(
    emu: EmulatorHandle, gateway: StripeGateway
) -> None:
    kept = create_product(gateway, "kept")
    deleted = create_product(gateway, "gone")
    gateway.sdk.v1.products.delete(deleted)
    emu.control.clear_requests()

    catalog = observe_catalog(gateway, products_with_features=[kept, deleted])

    assert [p.stripe_id for p in catalog.products] == [kept]
    feature_lists = emu.control.requests(method="GET", path_prefix="/v1/products/")
    assert [r.path for r in feature_lists] == [f"/v1/products/{kept}/features"]

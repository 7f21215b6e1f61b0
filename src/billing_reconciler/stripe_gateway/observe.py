"""Reads: list endpoints with full pagination, and the observed catalog.

Only list endpoints, `limit=100`, `starting_after` cursors: one call per hundred objects and no
per-object GETs. Never Search: it is eventually consistent, and observation feeds
read-after-write decisions (DESIGN §4).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, cast

import stripe

from billing_reconciler.model import Catalog, ProductRecord
from billing_reconciler.stripe_gateway.client import StripeGateway
from billing_reconciler.stripe_gateway.errors import PermanentStripeError
from billing_reconciler.stripe_gateway.mapping import map_catalog, map_product

if TYPE_CHECKING:
    from stripe.params import (
        PriceListParams,
        ProductFeatureListParams,
        ProductListParams,
    )
    from stripe.params.billing import MeterListParams
    from stripe.params.entitlements import FeatureListParams

PAGE_SIZE = 100
PRICE_EXPAND = ("data.tiers", "data.currency_options")

# The SDK's list methods take per-endpoint TypedDicts; pagination adds keys generically, so a
# page fetcher receives a plain dict and each call site casts it to its endpoint's TypedDict.
PageFetcher = Callable[[dict[str, Any]], stripe.ListObject[Any]]


def list_all(
    gateway: StripeGateway,
    *,
    endpoint: str,
    fetch_page: PageFetcher,
    params: Mapping[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """Every object of a list endpoint as plain dicts, page by page (each page is one paced,
    retried request reported as `GET <endpoint>`)."""
    page_params: dict[str, Any] = {**(params or {}), "limit": PAGE_SIZE}
    while True:
        page = gateway.request(
            method="GET", endpoint=endpoint, send=functools.partial(fetch_page, dict(page_params))
        )
        objects = [obj.to_dict(for_json=True) for obj in page.data]
        yield from objects
        if not page.has_more or not objects:
            return
        page_params["starting_after"] = objects[-1]["id"]


def list_all_raw(
    gateway: StripeGateway,
    *,
    endpoint: str,
    params: Mapping[str, Any] | None = None,
) -> Iterator[Mapping[str, Any]]:
    """As `list_all` (the same requests: `limit=100`, `starting_after` the last id, one paced,
    retried call per page reported as `GET <endpoint>`, errors translated as every call's),
    but each page read as Stripe's JSON through the SDK's `StripeClient.raw_request`: no
    `StripeObject` built for every object and nested object only to be turned back into a
    dict (at 100,000 subscriptions with their items and prices that was three quarters of a
    full resync's CPU). The objects are the JSON's (their `to_dict(for_json=True)` is the
    same). `endpoint` is a plain path (no `{id}`), and no list parameter may be named like
    one of the SDK's request options (`api_key`, `idempotency_key`, `headers`, `base`...),
    which `raw_request` would take out of its keywords (a ValueError)."""
    page_params: dict[str, Any] = {**(params or {}), "limit": PAGE_SIZE}
    if clash := sorted(_RAW_OPTIONS.intersection(page_params)):
        raise ValueError(f"list parameters named like request options: {clash}")
    while True:
        response = gateway.request(
            method="GET",
            endpoint=endpoint,
            send=functools.partial(_raw_get, gateway.sdk, endpoint, dict(page_params)),
        )
        page = response.data
        if not isinstance(page, Mapping):
            raise PermanentStripeError(f"GET {endpoint}: the answer is not a list object")
        objects = [obj for obj in page.get("data") or () if isinstance(obj, Mapping)]
        yield from objects
        if not page.get("has_more") or not objects:
            return
        page_params["starting_after"] = objects[-1]["id"]


#: Keywords `StripeClient.raw_request` reads as request options, not parameters.
_RAW_OPTIONS: Final = frozenset(
    {
        "api_key",
        "stripe_version",
        "stripe_account",
        "stripe_context",
        "max_network_retries",
        "idempotency_key",
        "content_type",
        "headers",
        "base",
        "usage",
    }
)


def _raw_get(sdk: stripe.StripeClient, path: str, params: dict[str, Any]) -> stripe.StripeResponse:
    # `raw_request` is the SDK's own request path (its requestor: the client's key, version,
    # HTTP client and error handling) without the object model; untyped in the SDK.
    return cast("stripe.StripeResponse", sdk.raw_request("get", path, **params))


FeatureProducts = Iterable[str] | Callable[[Sequence[ProductRecord]], Iterable[str]]


def observe_catalog(
    gateway: StripeGateway, *, products_with_features: FeatureProducts | None = None
) -> Catalog:
    """The live catalog: meters, features, products, prices, and product features.

    Stripe has no account-wide list of product features, only `/v1/products/{id}/features`,
    so attachments are listed only for the product ids `products_with_features` names: ids, or
    a function of the live products that picks them (the planner's rule: products whose
    attachment record may be out of date). Listing them for every product would cost one
    request per product and break the ceil(N/100) budget. Ids of products that no longer
    exist (deleted in Stripe since we last applied) have no features.
    """
    products = list(_products(gateway))
    observed_ids = {obj["id"] for obj in products}
    if callable(products_with_features):
        products_with_features = products_with_features([map_product(p) for p in products])
    return map_catalog(
        meters=list(_meters(gateway)),
        features=list(_features(gateway)),
        products=products,
        prices=list(_prices(gateway)),
        product_features=[
            (product_id, obj)
            for product_id in dict.fromkeys(products_with_features or ())
            if product_id in observed_ids
            for obj in _product_features(gateway, product_id)
        ],
    )


def _meters(gateway: StripeGateway) -> Iterator[dict[str, Any]]:
    # No `status` filter: active and inactive meters both come back.
    meters = gateway.sdk.v1.billing.meters
    return list_all(
        gateway,
        endpoint="/v1/billing/meters",
        fetch_page=lambda p: meters.list(cast("MeterListParams", p)),
    )


def _features(gateway: StripeGateway) -> Iterator[dict[str, Any]]:
    # `archived` is documented as "if set, filter results to ... the given archive status":
    # unset, active and archived features come back in one listing (ceil(N/100) calls).
    features = gateway.sdk.v1.entitlements.features
    yield from list_all(
        gateway,
        endpoint="/v1/entitlements/features",
        fetch_page=lambda p: features.list(cast("FeatureListParams", p)),
    )


def _products(gateway: StripeGateway) -> Iterator[dict[str, Any]]:
    # No `active` filter: active and archived products both come back.
    products = gateway.sdk.v1.products
    return list_all(
        gateway,
        endpoint="/v1/products",
        fetch_page=lambda p: products.list(cast("ProductListParams", p)),
    )


def _prices(gateway: StripeGateway) -> Iterator[dict[str, Any]]:
    # No `active` filter: archived prices matter (reactivation, grandfathered subscriptions).
    prices = gateway.sdk.v1.prices
    return list_all(
        gateway,
        endpoint="/v1/prices",
        fetch_page=lambda p: prices.list(cast("PriceListParams", p)),
        params={"expand": list(PRICE_EXPAND)},
    )


def _product_features(gateway: StripeGateway, product_id: str) -> Iterator[dict[str, Any]]:
    features = gateway.sdk.v1.products.features
    try:
        yield from list_all(
            gateway,
            endpoint="/v1/products/{product}/features",
            fetch_page=lambda p: features.list(product_id, cast("ProductFeatureListParams", p)),
        )
    except PermanentStripeError as error:
        # A product we applied may have been deleted in the dashboard (Stripe allows it while
        # the product has no prices). It has no attachments then; failing here would make
        # every later plan fail instead of letting the diff re-create the product.
        if error.http_status != 404:
            raise

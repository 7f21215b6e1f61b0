"""Entitlements features and product features (attach a feature to a product).

Stripe emits no events for these two resources (only
`entitlements.active_entitlement_summary.updated`, which needs subscriptions), so none here.
"""

from __future__ import annotations

import copy

from stripe_emulator.core import RequestContext
from stripe_emulator.errors import invalid
from stripe_emulator.ids import new_id
from stripe_emulator.listing import expand_of, list_response
from stripe_emulator.params import Params
from stripe_emulator.render import render
from stripe_emulator.resources._common import (
    apply_metadata,
    deleted_stub,
    fetch,
    new_metadata,
    save_update,
)
from stripe_emulator.routing import Router
from stripe_emulator.state import StripeObject

FEATURE = "entitlements.feature"
PRODUCT_FEATURE = "product_feature"
LOOKUP_KEY_MAX_LENGTH = 80


def register(router: Router) -> None:
    """Attach the feature and product-feature endpoints."""
    p = "entitlements._feature_"
    base = "/v1/entitlements/features"
    router.add("POST", base, f"{p}create_params.FeatureCreateParams", create_feature)
    router.add("GET", base, f"{p}list_params.FeatureListParams", list_features)
    router.add("GET", base + "/{id}", f"{p}retrieve_params.FeatureRetrieveParams", retrieve_feature)
    router.add("POST", base + "/{id}", f"{p}update_params.FeatureUpdateParams", update_feature)
    pf = "_product_feature_"
    attached = "/v1/products/{product}/features"
    router.add("POST", attached, f"{pf}create_params.ProductFeatureCreateParams", attach)
    router.add("GET", attached, f"{pf}list_params.ProductFeatureListParams", list_attached)
    router.add(
        "GET",
        attached + "/{id}",
        f"{pf}retrieve_params.ProductFeatureRetrieveParams",
        retrieve_attached,
    )
    router.add(
        "DELETE", attached + "/{id}", f"{pf}delete_params.ProductFeatureDeleteParams", detach
    )


def create_feature(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/entitlements/features`: lookup keys are unique among active features (an
    archived feature's key can be taken by a new one, since archived features stay archived)."""
    key = params["lookup_key"]
    if len(key) > LOOKUP_KEY_MAX_LENGTH:
        raise invalid(
            f"Invalid lookup_key: must be at most {LOOKUP_KEY_MAX_LENGTH} characters",
            param="lookup_key",
        )
    if any(f["active"] for f in ctx.store.collection(FEATURE).lookup("lookup_key", key)):
        raise invalid(f"A feature with lookup_key `{key}` already exists.", param="lookup_key")
    feature: StripeObject = {
        "id": new_id("feat"),
        "object": FEATURE,
        "active": True,
        "livemode": False,
        "lookup_key": key,
        "metadata": new_metadata(params.get("metadata")),
        "name": params["name"],
    }
    ctx.store.insert(FEATURE, feature)
    return render(ctx.store, feature, expand_of(params))


def retrieve_feature(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/entitlements/features/{id}`."""
    return render(ctx.store, fetch(ctx, FEATURE, path["id"], "feature"), expand_of(params))


def list_features(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/entitlements/features` (filters `lookup_key`, `archived`)."""
    equals: dict[str, list[object]] = {}
    if "lookup_key" in params:
        equals["lookup_key"] = [params["lookup_key"]]
    if "archived" in params:
        equals["active"] = [not params["archived"]]
    return list_response(
        ctx.store, kind=FEATURE, params=params, url="/v1/entitlements/features", equals=equals
    )


def update_feature(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/entitlements/features/{id}`: name, active, metadata. An archived feature
    can be neither edited nor unarchived."""
    before = fetch(ctx, FEATURE, path["id"], "feature")
    if not before["active"]:
        raise invalid("Archived features cannot be updated.", param="active")
    after = copy.deepcopy(before)
    for field in ("name", "active"):
        if field in params:
            after[field] = params[field]
    after["metadata"] = apply_metadata(after["metadata"], params.get("metadata"))
    save_update(ctx, FEATURE, before, after, None)
    return render(ctx.store, ctx.store.get(FEATURE, after["id"]) or after, expand_of(params))


def attach(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/products/{product}/features`: attaching twice is refused."""
    product = fetch(ctx, "product", path["product"], "product", param="product")
    feature = fetch(
        ctx,
        FEATURE,
        params["entitlement_feature"],
        "feature",
        param="entitlement_feature",
        in_body=True,
    )
    if not feature["active"]:
        raise invalid(
            "An archived feature cannot be attached to a product.", param="entitlement_feature"
        )
    for existing in ctx.store.collection(PRODUCT_FEATURE).lookup("_product", product["id"]):
        if existing["_feature"] == feature["id"]:
            raise invalid(
                "This feature is already attached to this product.", param="entitlement_feature"
            )
    attached: StripeObject = {
        "id": new_id("prodft"),
        "object": PRODUCT_FEATURE,
        "livemode": False,
        "_product": product["id"],
        "_feature": feature["id"],
    }
    ctx.store.insert(PRODUCT_FEATURE, attached)
    return _render_attached(ctx, attached)


def list_attached(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/products/{product}/features`."""
    product = fetch(ctx, "product", path["product"], "product", param="product")
    page = list_response(
        ctx.store,
        kind=PRODUCT_FEATURE,
        params=params,
        url=f"/v1/products/{product['id']}/features",
        equals={"_product": [product["id"]]},
    )
    page["data"] = [_with_feature(ctx, item) for item in page["data"]]
    return page


def retrieve_attached(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/products/{product}/features/{id}`."""
    return _render_attached(ctx, _attached(ctx, path))


def detach(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`DELETE /v1/products/{product}/features/{id}`."""
    attached = _attached(ctx, path)
    ctx.store.delete(PRODUCT_FEATURE, attached["id"])
    return deleted_stub(attached)


def _attached(ctx: RequestContext, path: dict[str, str]) -> StripeObject:
    fetch(ctx, "product", path["product"], "product", param="product")
    attached = fetch(ctx, PRODUCT_FEATURE, path["id"], "product feature")
    if attached["_product"] != path["product"]:
        fetch(ctx, PRODUCT_FEATURE, "", "product feature")
    return attached


def _render_attached(ctx: RequestContext, attached: StripeObject) -> StripeObject:
    return _with_feature(ctx, render(ctx.store, attached))


def _with_feature(ctx: RequestContext, rendered: StripeObject) -> StripeObject:
    # `entitlement_feature` is always the embedded feature object, never an id.
    stored = ctx.store.get(PRODUCT_FEATURE, rendered["id"])
    feature = ctx.store.get(FEATURE, stored["_feature"]) if stored else None
    rendered["entitlement_feature"] = render(ctx.store, feature) if feature else None
    return rendered

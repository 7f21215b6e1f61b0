"""Products: create (with `default_price_data`), update (default-price rules), delete only
without prices, list with `active`/`ids`/`shippable`/`url`/`created` filters."""

from __future__ import annotations

import copy
from typing import Any

from stripe_emulator.core import RequestContext
from stripe_emulator.errors import StripeError, invalid
from stripe_emulator.ids import new_id
from stripe_emulator.listing import expand_of, list_response
from stripe_emulator.params import Params
from stripe_emulator.render import render
from stripe_emulator.resources import prices
from stripe_emulator.resources._common import (
    apply_metadata,
    check_enum,
    deleted_stub,
    fetch,
    new_metadata,
    nullable,
    save_update,
)
from stripe_emulator.routing import Router
from stripe_emulator.state import StripeObject

KIND = "product"

# Plain fields copied from params as given ("" clears the nullable ones on update).
_SIMPLE_FIELDS = (
    "description",
    "shippable",
    "statement_descriptor",
    "tax_code",
    "unit_label",
    "url",
)


def register(router: Router) -> None:
    """Attach the product endpoints."""
    router.add("POST", "/v1/products", "_product_create_params.ProductCreateParams", create)
    router.add("GET", "/v1/products", "_product_list_params.ProductListParams", list_products)
    router.add(
        "GET", "/v1/products/{id}", "_product_retrieve_params.ProductRetrieveParams", retrieve
    )
    router.add("POST", "/v1/products/{id}", "_product_update_params.ProductUpdateParams", update)
    router.add("DELETE", "/v1/products/{id}", "_product_delete_params.ProductDeleteParams", delete)


def create(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/products`."""
    default = params.get("default_price_data")
    product = create_product(ctx, params, param=None, emit=default is None)
    if default is not None:
        product = _create_default_price(ctx, product, default)
        # One event showing the product as created, default price included.
        ctx.emit("product.created", product)
    return render(ctx.store, product, expand_of(params))


def create_product(
    ctx: RequestContext, params: Params, *, param: str | None, emit: bool = True
) -> StripeObject:
    """Insert a product from create params (or a price's `product_data`)."""
    product_id = params.get("id") or new_id("prod")
    if ctx.store.get(KIND, product_id) is not None:
        raise StripeError(
            "Product already exists.", code="resource_already_exists", param=_name(param, "id")
        )
    if not params.get("name"):
        raise invalid(
            "Missing required param: name.", param=_name(param, "name"), code="parameter_missing"
        )
    check_enum(params.get("type"), _name(param, "type"), ("good", "service"))
    now = ctx.now()
    product: StripeObject = {
        "id": product_id,
        "object": "product",
        "active": params.get("active", True),
        "created": now,
        "default_price": None,
        "description": None,
        "images": params.get("images", []),
        "livemode": False,
        "marketing_features": params.get("marketing_features", []),
        "metadata": new_metadata(params.get("metadata"), param=_name(param, "metadata")),
        "name": params["name"],
        "package_dimensions": params.get("package_dimensions"),
        "shippable": None,
        "statement_descriptor": None,
        "tax_code": None,
        "type": params.get("type", "service"),
        "unit_label": None,
        "updated": now,
        "url": None,
    }
    for field in _SIMPLE_FIELDS:
        if field in params:
            product[field] = nullable(params[field])
    ctx.store.insert(KIND, product)
    if emit:
        ctx.emit("product.created", product)
    return product


def _create_default_price(ctx: RequestContext, product: StripeObject, data: Params) -> StripeObject:
    price = prices.build_price(ctx, data, product_id=product["id"])
    prices.insert_price(ctx, price, transfer=False)
    updated = copy.deepcopy(product)
    updated["default_price"] = price["id"]
    ctx.store.replace(KIND, updated)
    return updated


def retrieve(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/products/{id}`."""
    return render(ctx.store, fetch(ctx, KIND, path["id"], "product"), expand_of(params))


def list_products(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/products`."""
    equals: dict[str, Any] = {}
    if "active" in params:
        equals["active"] = [params["active"]]
    if "ids" in params:
        equals["id"] = params["ids"]
    extra = {k: params[k] for k in ("shippable", "url") if k in params}

    def matches(product: StripeObject) -> bool:
        return all(product.get(k) == v for k, v in extra.items())

    predicate = matches if extra else None
    return list_response(
        ctx.store, kind=KIND, params=params, url="/v1/products", equals=equals, predicate=predicate
    )


def update(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/products/{id}`."""
    before = fetch(ctx, KIND, path["id"], "product")
    after = copy.deepcopy(before)
    for field in (*_SIMPLE_FIELDS, "name", "active"):
        if field in params:
            after[field] = nullable(params[field])
    for field in ("images", "marketing_features", "package_dimensions"):
        if field in params:
            after[field] = (
                []
                if params[field] == "" and field != "package_dimensions"
                else nullable(params[field])
            )
    if "default_price" in params:
        after["default_price"] = _default_price(ctx, after, params["default_price"])
    after["metadata"] = apply_metadata(after["metadata"], params.get("metadata"))
    save_update(ctx, KIND, before, after, "product.updated")
    return render(ctx.store, ctx.store.get(KIND, after["id"]) or after, expand_of(params))


def _default_price(ctx: RequestContext, product: StripeObject, price_id: str) -> str | None:
    if price_id == "":
        return None
    price = prices.price_or_404(ctx, price_id, param="default_price")
    if price["product"] != product["id"]:
        raise invalid(
            f"The price `{price_id}` does not belong to product `{product['id']}`.",
            param="default_price",
        )
    if not price["active"]:
        raise invalid(
            "The price specified is inactive. This field only accepts active prices.",
            param="default_price",
        )
    return price_id


def delete(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`DELETE /v1/products/{id}`: refused while the product has prices (even archived)."""
    product = fetch(ctx, KIND, path["id"], "product")
    if ctx.store.collection("price").lookup("product", product["id"]):
        raise invalid(
            "This product cannot be deleted because it has one or more user-created prices."
        )
    for feature in ctx.store.collection("product_feature").lookup("_product", product["id"]):
        ctx.store.delete("product_feature", feature["id"])
    ctx.store.delete(KIND, product["id"])
    ctx.emit("product.deleted", product)
    return deleted_stub(product)


def _name(parent: str | None, field: str) -> str:
    return f"{parent}[{field}]" if parent else field

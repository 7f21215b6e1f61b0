"""Writes: one mutating Stripe call per plan step, always with the caller's idempotency key.

The planner derives idempotency keys from the step (STYLE 9); this module only guarantees the
key rides on every attempt of the call, that the call is paced and retried like any other, and
tells the caller whether Stripe replayed an earlier response (`Idempotent-Replayed`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

import stripe

from billing_reconciler.model import Kind
from billing_reconciler.stripe_gateway.client import StripeGateway
from billing_reconciler.stripe_gateway.errors import PermanentStripeError

if TYPE_CHECKING:
    from stripe.params import ProductFeatureCreateParams
    from stripe.params.billing import MeterCreateParams, MeterUpdateParams


class Operation(StrEnum):
    """What a write does to its target."""

    CREATE = "create"
    UPDATE = "update"
    DEACTIVATE = "deactivate"
    REACTIVATE = "reactivate"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The object written, Stripe's request id, and whether Stripe replayed a stored response
    for this idempotency key (the step had already been applied)."""

    stripe_id: str
    request_id: str | None
    replayed: bool


@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    endpoint: str
    send: Callable[[], stripe.StripeObject]


def write(
    gateway: StripeGateway,
    *,
    kind: Kind,
    operation: Operation,
    params: Mapping[str, Any],
    idempotency_key: str,
    target_id: str | None = None,
    parent_id: str | None = None,
) -> WriteResult:
    """Apply one change to one Stripe object.

    `target_id` names the object for every operation but CREATE; `parent_id` is the product of
    a product feature. DEACTIVATE/REACTIVATE of products, prices and features are updates of
    `active`; meters have their own endpoints. DELETE exists only for product features: a 404
    there means the attachment is already gone (an earlier attempt's response was lost) and
    counts as done, since DELETE carries no replayable idempotent response.
    """
    if not idempotency_key:
        raise ValueError("every mutating Stripe call needs an idempotency key")
    call = _call_for(
        gateway.sdk,
        kind=kind,
        operation=operation,
        params=dict(params),
        options={"idempotency_key": idempotency_key},
        target_id=target_id,
        parent_id=parent_id,
    )
    try:
        obj = gateway.request(method=call.method, endpoint=call.endpoint, send=call.send)
    except PermanentStripeError as error:
        if operation is Operation.DELETE and error.http_status == 404 and target_id:
            return WriteResult(stripe_id=target_id, request_id=error.request_id, replayed=True)
        raise
    return _result(obj)


def _call_for(
    sdk: stripe.StripeClient,
    *,
    kind: Kind,
    operation: Operation,
    params: dict[str, Any],
    options: stripe.RequestOptions,
    target_id: str | None,
    parent_id: str | None,
) -> _Call:
    match kind:
        case Kind.METER:
            return _meter_call(sdk, operation, params, options, target_id)
        case Kind.FEATURE | Kind.PRODUCT | Kind.PRICE:
            endpoint = _archivable_endpoint(sdk, kind)
            return _archivable_call(endpoint, operation, params, options, target_id)
        case Kind.PRODUCT_FEATURE:
            return _product_feature_call(sdk, operation, params, options, target_id, parent_id)
        case Kind.PLAN:
            raise ValueError("plans have no Stripe object; they live in the store")


# The SDK types each endpoint's params as its own TypedDict; plan steps carry plain mappings
# validated by the planner (and by Stripe), so each call site casts to its endpoint's type.


def _meter_call(
    sdk: stripe.StripeClient,
    operation: Operation,
    params: dict[str, Any],
    options: stripe.RequestOptions,
    target_id: str | None,
) -> _Call:
    meters = sdk.v1.billing.meters
    match operation:
        case Operation.CREATE:
            return _Call(
                "POST",
                "/v1/billing/meters",
                lambda: meters.create(cast("MeterCreateParams", params), options),
            )
        case Operation.UPDATE:
            ident = _required(target_id, kind=Kind.METER, operation=operation)
            return _Call(
                "POST",
                "/v1/billing/meters/{id}",
                lambda: meters.update(ident, cast("MeterUpdateParams", params), options),
            )
        case Operation.DEACTIVATE:
            ident = _required(target_id, kind=Kind.METER, operation=operation)
            return _Call(
                "POST",
                "/v1/billing/meters/{id}/deactivate",
                lambda: meters.deactivate(ident, {}, options),
            )
        case Operation.REACTIVATE:
            ident = _required(target_id, kind=Kind.METER, operation=operation)
            return _Call(
                "POST",
                "/v1/billing/meters/{id}/reactivate",
                lambda: meters.reactivate(ident, {}, options),
            )
    raise _unsupported(Kind.METER, operation)


@dataclass(frozen=True, slots=True)
class _ArchivableEndpoint:
    """A collection whose objects are archived by updating `active` (features, products,
    prices): create at `path`, update at `path/{id}`."""

    kind: Kind
    path: str
    create: Callable[[Any, stripe.RequestOptions], stripe.StripeObject]
    update: Callable[[str, Any, stripe.RequestOptions], stripe.StripeObject]


def _archivable_endpoint(sdk: stripe.StripeClient, kind: Kind) -> _ArchivableEndpoint:
    # The SDK types each endpoint's params as its own TypedDict; the step's plain mapping
    # was checked by the planner (and is by Stripe), so the endpoints take it as it is.
    v1 = sdk.v1
    match kind:
        case Kind.FEATURE:
            service: Any = v1.entitlements.features
            path = "/v1/entitlements/features"
        case Kind.PRODUCT:
            service = v1.products
            path = "/v1/products"
        case Kind.PRICE:
            service = v1.prices
            path = "/v1/prices"
        case _:
            raise ValueError(f"a {kind.value} is not archived through `active`")
    return _ArchivableEndpoint(kind, path, service.create, service.update)


def _archivable_call(
    endpoint: _ArchivableEndpoint,
    operation: Operation,
    params: dict[str, Any],
    options: stripe.RequestOptions,
    target_id: str | None,
) -> _Call:
    if operation is Operation.CREATE:
        return _Call("POST", endpoint.path, lambda: endpoint.create(params, options))
    update = _with_active(params, operation, kind=endpoint.kind)
    ident = _required(target_id, kind=endpoint.kind, operation=operation)
    return _Call("POST", endpoint.path + "/{id}", lambda: endpoint.update(ident, update, options))


def _product_feature_call(
    sdk: stripe.StripeClient,
    operation: Operation,
    params: dict[str, Any],
    options: stripe.RequestOptions,
    target_id: str | None,
    parent_id: str | None,
) -> _Call:
    features = sdk.v1.products.features
    product = _required(parent_id, kind=Kind.PRODUCT_FEATURE, operation=operation, what="parent_id")
    match operation:
        case Operation.CREATE:
            return _Call(
                "POST",
                "/v1/products/{product}/features",
                lambda: features.create(
                    product, cast("ProductFeatureCreateParams", params), options
                ),
            )
        case Operation.DELETE:
            ident = _required(target_id, kind=Kind.PRODUCT_FEATURE, operation=operation)
            return _Call(
                "DELETE",
                "/v1/products/{product}/features/{id}",
                lambda: features.delete(product, ident, None, options),
            )
    raise _unsupported(Kind.PRODUCT_FEATURE, operation)


def _with_active(params: dict[str, Any], operation: Operation, *, kind: Kind) -> dict[str, Any]:
    """Update params; archiving and unarchiving are updates of `active` for these kinds."""
    match operation:
        case Operation.UPDATE:
            return params
        case Operation.DEACTIVATE:
            return {**params, "active": False}
        case Operation.REACTIVATE:
            return {**params, "active": True}
    raise _unsupported(kind, operation)


def _required(
    value: str | None, *, kind: Kind, operation: Operation, what: str = "target_id"
) -> str:
    if not value:
        raise ValueError(f"{operation.value} of a {kind.value} needs {what}")
    return value


def _unsupported(kind: Kind, operation: Operation) -> ValueError:
    return ValueError(f"Stripe has no {operation.value} for a {kind.value}")


def _result(obj: stripe.StripeObject) -> WriteResult:
    response = obj.last_response
    headers = response.headers if response is not None else {}
    replayed = next((v for k, v in headers.items() if k.lower() == "idempotent-replayed"), "false")
    return WriteResult(
        stripe_id=str(obj["id"]),
        request_id=response.request_id if response is not None else None,
        replayed=replayed.strip().lower() == "true",
    )

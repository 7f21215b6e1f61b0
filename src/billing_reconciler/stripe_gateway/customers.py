"""Customers in Stripe: observation by list, the events cursor, and writes (DESIGN §14, §15).

Observation never costs a call per customer: a full resync lists every customer of the account
(`limit=100`, `expand[]=data.tax_ids`: ceil(N/100) calls; Stripe's list cannot filter on
metadata, and Search is eventually consistent) and keeps ours, those whose marker names this
installation. Between full resyncs `customer_events_since` reads `GET /v1/events` after the
stored cursor and names the customers to reobserve (`customers_by_id`, one retrieve each, so
bounded by what changed). Writes take the caller's idempotency key and go through
`StripeGateway.request` like the catalog's (`write.py`): paced, retried, translated.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

from billing_reconciler.customer_validation import stripe_field_path
from billing_reconciler.model_customers import (
    Address,
    CustomerFields,
    CustomerOwner,
    CustomerRecord,
    TaxId,
    customer_key,
    customer_record,
    customer_user_metadata,
)
from billing_reconciler.stripe_gateway.client import StripeGateway
from billing_reconciler.stripe_gateway.errors import PermanentStripeError, StripeGatewayError
from billing_reconciler.stripe_gateway.observe import PAGE_SIZE, list_all
from billing_reconciler.stripe_gateway.write import WriteResult, _result

if TYPE_CHECKING:
    from stripe.params import (
        CustomerCreateParams,
        CustomerListParams,
        CustomerRetrieveParams,
        CustomerTaxIdCreateParams,
        CustomerTaxIdListParams,
        CustomerUpdateParams,
        EventListParams,
    )

CUSTOMER_EXPAND: Final[tuple[str, ...]] = ("data.tax_ids",)
#: Event types that name a customer whose merged fields may have changed. Tax ids added or
#: removed in the portal emit `customer.tax_id.*`, not `customer.updated`.
CUSTOMER_EVENT_TYPES: Final[tuple[str, ...]] = (
    "customer.created",
    "customer.updated",
    "customer.deleted",
    "customer.tax_id.created",
    "customer.tax_id.updated",
    "customer.tax_id.deleted",
)
MAX_EVENT_TYPES: Final[int] = 20  # Stripe's limit on `types[]` per call
#: Stripe keeps events for 30 days; a cursor near that age may name a purged event, whose
#: successors are then unknowable: resync fully instead (DESIGN §14). The margin covers the
#: time between reading the cursor and the request, and clock skew.
EVENT_RETENTION_SECONDS: Final[int] = 30 * 86_400
RETENTION_MARGIN_SECONDS: Final[int] = 3_600


# --------------------------------------------------------------------------------------------
# Observation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ObservedCustomers:
    """Our live customers, and the ids asked for that Stripe answers as deleted (or unknown).

    A full listing never names deleted customers (Stripe does not list them): a managed
    account whose customer id is absent from it was deleted, or unmarked, in Stripe."""

    customers: tuple[CustomerRecord, ...]
    deleted_ids: frozenset[str] = frozenset()


def observe_customers(gateway: StripeGateway, *, installation_id: str) -> ObservedCustomers:
    """Every customer of this installation: ceil(N/100) list calls for N customers."""
    service = gateway.sdk.v1.customers
    objects = list_all(
        gateway,
        endpoint="/v1/customers",
        fetch_page=lambda p: service.list(cast("CustomerListParams", p)),
        params={"expand": list(CUSTOMER_EXPAND)},
    )
    records = (_observed(gateway, obj, installation_id=installation_id) for obj in objects)
    return ObservedCustomers(customers=tuple(r for r in records if r is not None))


def customers_by_id(
    gateway: StripeGateway, ids: Iterable[str], *, installation_id: str
) -> ObservedCustomers:
    """The customers events named: one retrieve each. Foreign ones are left out."""
    service = gateway.sdk.v1.customers
    records: list[CustomerRecord] = []
    deleted: set[str] = set()
    for customer_id in dict.fromkeys(ids):
        try:
            obj = gateway.request(
                method="GET",
                endpoint="/v1/customers/{id}",
                send=functools.partial(
                    service.retrieve,
                    customer_id,
                    cast("CustomerRetrieveParams", {"expand": ["tax_ids"]}),
                ),
            ).to_dict(for_json=True)
        except PermanentStripeError as error:
            if error.http_status != 404:
                raise
            deleted.add(customer_id)
            continue
        if obj.get("deleted"):
            deleted.add(customer_id)
            continue
        record = _observed(gateway, obj, installation_id=installation_id)
        if record is not None:
            records.append(record)
    return ObservedCustomers(customers=tuple(records), deleted_ids=frozenset(deleted))


def map_customer(
    obj: Mapping[str, Any], *, installation_id: str | None = None
) -> CustomerRecord | None:
    """A Stripe customer (a plain dict, `tax_ids` expanded) as a record; None for one that is
    not ours: no marker, another kind's key, or (given `installation_id`) another
    installation's."""
    owner = CustomerOwner.from_metadata(obj.get("metadata") or {})
    if owner is None or (installation_id is not None and owner.installation_id != installation_id):
        return None
    stripe_tax_ids = tuple(
        (TaxId(type=str(t["type"]), value=str(t["value"])), str(t["id"]))
        for t in _tax_id_objects(obj)
    )
    clock = obj.get("test_clock")
    return customer_record(
        owner.org_id,
        fields=CustomerFields(
            name=obj.get("name"),
            email=obj.get("email"),
            phone=obj.get("phone"),
            address=_address(obj.get("address")),
            tax_ids=tuple(tax for tax, _ in stripe_tax_ids),
        ),
        stripe_id=str(obj["id"]),
        currency=obj.get("currency"),
        metadata=customer_user_metadata(obj.get("metadata") or {}),
        owner=owner,
        test_clock=clock if isinstance(clock, str) else None,
        stripe_tax_ids=tuple(sorted(stripe_tax_ids)),
    )


def _observed(
    gateway: StripeGateway, obj: dict[str, Any], *, installation_id: str
) -> CustomerRecord | None:
    if map_customer(obj, installation_id=installation_id) is None:
        return None
    tax_ids = obj.get("tax_ids")
    if isinstance(tax_ids, Mapping) and tax_ids.get("has_more"):
        # The embedded list is the first page only (10 in Stripe); a customer with more tax
        # ids than that is rare enough to cost its own listing.
        obj = {**obj, "tax_ids": {"data": list(_all_tax_ids(gateway, str(obj["id"])))}}
    return map_customer(obj, installation_id=installation_id)


def _all_tax_ids(gateway: StripeGateway, customer_id: str) -> Iterator[dict[str, Any]]:
    service = gateway.sdk.v1.customers.tax_ids
    return list_all(
        gateway,
        endpoint="/v1/customers/{customer}/tax_ids",
        fetch_page=lambda p: service.list(customer_id, cast("CustomerTaxIdListParams", p)),
    )


def _tax_id_objects(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    tax_ids = obj.get("tax_ids")
    data = tax_ids.get("data") if isinstance(tax_ids, Mapping) else None
    return [t for t in data or () if isinstance(t, Mapping)]


def _address(value: object) -> Address | None:
    if not isinstance(value, Mapping):
        return None
    return Address(
        line1=value.get("line1") or None,
        line2=value.get("line2") or None,
        city=value.get("city") or None,
        state=value.get("state") or None,
        postal_code=value.get("postal_code") or None,
        country=value.get("country") or None,
    )


# --------------------------------------------------------------------------------------------
# The events cursor
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventCursor:
    """The newest customer event read: its id and `created` (unix seconds)."""

    event_id: str
    created: int


@dataclass(frozen=True, slots=True)
class CustomerEvents:
    """What changed since a cursor.

    `full_resync` is True when the cursor could not be followed (none stored, older than
    Stripe's retention, or naming a purged event): list every customer then, and ignore
    `customer_ids`. `cursor` is where the next read starts: the newest event seen (taken
    before the resync lists anything, so a change made during the listing is read next time),
    the given cursor when nothing happened, or None when the account has no such event yet.
    """

    customer_ids: tuple[str, ...]
    cursor: EventCursor | None
    full_resync: bool


def customer_events_since(
    gateway: StripeGateway,
    cursor: EventCursor | None,
    *,
    now: Callable[[], float] = time.time,
    types: tuple[str, ...] = CUSTOMER_EVENT_TYPES,
) -> CustomerEvents:
    """The customers named by events after `cursor`: one call when nothing happened, one more
    per hundred events."""
    if len(types) > MAX_EVENT_TYPES:
        raise ValueError(f"Stripe filters on at most {MAX_EVENT_TYPES} event types per call")
    if (
        cursor is None
        or now() - cursor.created >= EVENT_RETENTION_SECONDS - RETENTION_MARGIN_SECONDS
    ):
        return _resync(gateway, types)
    try:
        pages = list(_pages_after(gateway, cursor.event_id, types))
    except PermanentStripeError as error:
        # The cursor's event is gone (purged by retention): its successors cannot be listed.
        if error.http_status == 404:
            return _resync(gateway, types)
        raise
    # Pages walk forward in time, each newest first: the newest event opens the last page.
    newest = pages[-1][0] if pages and pages[-1] else None
    ids = dict.fromkeys(cid for page in pages for event in page if (cid := _customer_of(event)))
    return CustomerEvents(
        customer_ids=tuple(ids),
        cursor=cursor if newest is None else EventCursor(str(newest["id"]), int(newest["created"])),
        full_resync=False,
    )


def _resync(gateway: StripeGateway, types: tuple[str, ...]) -> CustomerEvents:
    page = _event_page(gateway, {"types": list(types), "limit": 1})
    newest = page.data[0] if page.data else None
    cursor = None if newest is None else EventCursor(str(newest.id), int(newest.created))
    return CustomerEvents(customer_ids=(), cursor=cursor, full_resync=True)


def _pages_after(
    gateway: StripeGateway, event_id: str, types: tuple[str, ...]
) -> Iterator[list[dict[str, Any]]]:
    """Pages of the events newer than `event_id`. `ending_before` returns the page nearest
    the cursor (still newest first), so the next page ends before this one's newest event."""
    before = event_id
    while True:
        page = _event_page(
            gateway, {"types": list(types), "limit": PAGE_SIZE, "ending_before": before}
        )
        objects = [event.to_dict(for_json=True) for event in page.data]
        if objects:
            yield objects
        if not page.has_more or not objects:
            return
        before = str(objects[0]["id"])


def _event_page(gateway: StripeGateway, params: dict[str, Any]) -> Any:
    events = gateway.sdk.v1.events
    return gateway.request(
        method="GET",
        endpoint="/v1/events",
        send=functools.partial(events.list, cast("EventListParams", params)),
    )


def _customer_of(event: Mapping[str, Any]) -> str | None:
    obj = (event.get("data") or {}).get("object") or {}
    if str(event.get("type", "")).startswith("customer.tax_id."):
        value = obj.get("customer")
    else:
        value = obj.get("id")
    return value if isinstance(value, str) and value else None


# --------------------------------------------------------------------------------------------
# Writes
# --------------------------------------------------------------------------------------------


def create_customer(
    gateway: StripeGateway,
    *,
    org_id: str,
    installation_id: str,
    fields: CustomerFields,
    idempotency_key: str,
    metadata: Mapping[str, str] | None = None,
    test_clock: str | None = None,
    revision: str = "",
) -> WriteResult:
    """Create an org's customer with our marker (DESIGN §14) and its tax ids (`tax_id_data`).

    The key must be derived (`model_customers.creation_idempotency_key`: store salt,
    installation, org, account): a replay within Stripe's 24 hours returns the first customer.
    No currency: Stripe has no such parameter; the first subscription or invoice sets it."""
    owner = CustomerOwner(
        installation_id=installation_id,
        key=customer_key(org_id),
        org_id=org_id,
        revision=revision,
    )
    user = customer_user_metadata(metadata or {})
    canonical = fields.canonical()
    params: dict[str, Any] = {"metadata": {**user, **owner.as_metadata()}}
    for name in ("name", "email", "phone"):
        value = getattr(canonical, name)
        if value is not None:
            params[name] = value
    if canonical.address is not None:
        params["address"] = canonical.address.as_params()
    if canonical.tax_ids:
        params["tax_id_data"] = [{"type": t.type, "value": t.value} for t in canonical.tax_ids]
    if test_clock is not None:
        params["test_clock"] = test_clock
    service = gateway.sdk.v1.customers
    return _send(
        gateway,
        "POST",
        "/v1/customers",
        lambda options: service.create(cast("CustomerCreateParams", params), options),
        idempotency_key,
    )


def update_customer(
    gateway: StripeGateway,
    *,
    stripe_id: str,
    params: Mapping[str, Any],
    idempotency_key: str,
) -> WriteResult:
    """Update fields of a customer (`customer_merge.update_params` builds `params`)."""
    body = dict(params)
    service = gateway.sdk.v1.customers
    return _send(
        gateway,
        "POST",
        "/v1/customers/{id}",
        lambda options: service.update(stripe_id, cast("CustomerUpdateParams", body), options),
        idempotency_key,
    )


def add_tax_id(
    gateway: StripeGateway,
    *,
    stripe_id: str,
    tax_id: TaxId,
    idempotency_key: str,
    index: int | None = None,
) -> WriteResult:
    """Add a tax id to a customer; the result's `stripe_id` is the tax id's (`txi_...`).

    `index` is the tax id's place among the customer's (canonical order, as
    `create_customer` sends them): a refusal names `tax_ids[<index>].value`, not `value`."""
    body = {"type": tax_id.type, "value": tax_id.value}
    service = gateway.sdk.v1.customers.tax_ids
    return _send(
        gateway,
        "POST",
        "/v1/customers/{customer}/tax_ids",
        lambda options: service.create(stripe_id, cast("CustomerTaxIdCreateParams", body), options),
        idempotency_key,
        tax_id_index=-1 if index is None else index,
    )


def delete_tax_id(
    gateway: StripeGateway, *, stripe_id: str, tax_id_id: str, idempotency_key: str
) -> WriteResult:
    """Delete a customer's tax id. A 404 means it is already gone (an earlier attempt's
    response was lost): done, since a DELETE has no replayable idempotent response."""
    service = gateway.sdk.v1.customers.tax_ids
    try:
        return _send(
            gateway,
            "DELETE",
            "/v1/customers/{customer}/tax_ids/{id}",
            lambda options: service.delete(stripe_id, tax_id_id, None, options),
            idempotency_key,
        )
    except PermanentStripeError as error:
        if error.http_status == 404:
            return WriteResult(stripe_id=tax_id_id, request_id=error.request_id, replayed=True)
        raise


def _send(
    gateway: StripeGateway,
    method: str,
    endpoint: str,
    call: Callable[[Any], Any],
    idempotency_key: str,
    *,
    tax_id_index: int | None = None,
) -> WriteResult:
    """Send a write; a refusal's `param` is renamed to our field's path (`tax_id_data[0][type]`
    is `tax_ids[0].type`, `address[line1]` is `address.line1`), as the API and YAML name it.
    `tax_id_index` is the tax id a tax id endpoint writes (-1: not known)."""
    if not idempotency_key:
        raise ValueError("every mutating Stripe call needs an idempotency key")
    options = {"idempotency_key": idempotency_key}
    try:
        obj = gateway.request(method=method, endpoint=endpoint, send=lambda: call(options))
    except StripeGatewayError as error:
        if error.param:
            error.param = _our_field(error.param, tax_id_index)
        raise
    return _result(obj)


def _our_field(param: str, tax_id_index: int | None) -> str:
    if tax_id_index == -1 and param in ("type", "value"):
        return f"tax_ids[].{param}"
    return stripe_field_path(param, tax_id_index=tax_id_index)

"""Subscriptions and subscription schedules in Stripe: observation by list, the events cursor,
and writes (DESIGN §14, §16).

Observation never costs a call per customer: a full resync lists every subscription
(`status=all`, `limit=100`: ceil(N/100) calls) and every subscription schedule (`limit=100`,
ceil(M/100) calls). The pinned API (`2026-10-28.endive`) embeds the items with their periods
(`items.data[].current_period_*`) and the price, so nothing is expanded. Stripe embeds at most
10 items; a subscription whose embedded list says `has_more` costs one more call
(`/v1/subscription_items?subscription=...&limit=100`; Stripe allows at most 20 items, so one
page holds them all). A customer's targeted read lists its subscriptions and schedules with
the `customer=` filter. Between full resyncs `subscription_events_since` reads `GET /v1/events`
after the stored cursor for the `customer.subscription.*` and `subscription_schedule.*` types
and names the customers to reobserve.

Writes take the caller's idempotency key (the rules derive it), carry our marker metadata
(`SubscriptionOwner`), go through `StripeGateway.request` (paced, retried, translated) and
return the written object mapped (`SubscriptionWrite` / `ScheduleWrite`) with Stripe's request
id and whether Stripe replayed an earlier response.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, cast

from billing_reconciler.model_subscriptions import (
    META_PLAN,
    CollectionMethod,
    ScheduleRecord,
    SubscriptionOwner,
    SubscriptionRecord,
)
from billing_reconciler.stripe_gateway.client import StripeGateway
from billing_reconciler.stripe_gateway.customers import (
    EVENT_RETENTION_SECONDS,
    MAX_EVENT_TYPES,
    RETENTION_MARGIN_SECONDS,
    EventCursor,
    _event_page,
    _pages_after,
)
from billing_reconciler.stripe_gateway.errors import PermanentStripeError
from billing_reconciler.stripe_gateway.observe import list_all_raw
from billing_reconciler.stripe_gateway.subscription_mapping import (
    map_schedule,
    map_subscription,
)
from billing_reconciler.stripe_gateway.write import _result

if TYPE_CHECKING:
    from stripe.params import (
        SubscriptionCancelParams,
        SubscriptionCreateParams,
        SubscriptionItemListParams,
        SubscriptionListParams,
        SubscriptionRetrieveParams,
        SubscriptionScheduleCancelParams,
        SubscriptionScheduleCreateParams,
        SubscriptionScheduleListParams,
        SubscriptionScheduleReleaseParams,
        SubscriptionScheduleRetrieveParams,
        SubscriptionScheduleUpdateParams,
        SubscriptionUpdateParams,
    )

#: Event types that name a customer whose subscription or schedule may have changed (the
#: SDK's `Event.type` values of both families: 15, within Stripe's 20 per call).
SUBSCRIPTION_EVENT_TYPES: Final[tuple[str, ...]] = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.subscription.trial_will_end",
    "customer.subscription.pending_update_applied",
    "customer.subscription.pending_update_expired",
    "subscription_schedule.created",
    "subscription_schedule.updated",
    "subscription_schedule.released",
    "subscription_schedule.canceled",
    "subscription_schedule.completed",
    "subscription_schedule.aborted",
    "subscription_schedule.expiring",
)
#: Stripe's most items on one subscription: one page of `subscription_items` holds them all.
MAX_ITEMS: Final[int] = 20

ProrationBehavior = Literal["create_prorations", "always_invoice", "none"]
PaymentBehavior = Literal[
    "allow_incomplete", "default_incomplete", "error_if_incomplete", "pending_if_incomplete"
]
#: How a subscription we create handles its first invoice (`payment_behavior`, which applies
#: to `charge_automatically` only; `send_invoice` subscriptions start `active` regardless).
#: `error_if_incomplete`: a first invoice that needs no payment (a free plan, a trial, a 0
#: total) is paid at finalization, so the subscription is `active` (or `trialing`) at once;
#: one that needs a payment the customer cannot make (a default plan that costs money on an
#: account with no payment method: 400 `resource_missing`; a decline or 3DS: 402) is refused
#: and nothing is created, so the caller gets Stripe's verdict and no `incomplete`
#: subscription lingers for 23 hours holding the account's one live slot.
#: `allow_incomplete` (Stripe's default) would create that `incomplete` subscription with an
#: open invoice; `default_incomplete` never attempts the payment (the flow for collecting it
#: on a page of ours, which we do through Checkout instead). Note: Stripe keeps such a
#: refusal under its idempotency key for 24 hours (it is the result of an executed request),
#: so the retry after the customer added a card needs a new key (the rules' next key).
DEFAULT_PAYMENT_BEHAVIOR: Final[PaymentBehavior] = "error_if_incomplete"


class PricedItem(Protocol):
    """What a subscription or phase item needs: the price and the quantity (None: metered).
    `DesiredItem`, `ItemRecord` and `PhaseItem` all are."""

    @property
    def price_id(self) -> str: ...

    @property
    def quantity(self) -> int | None: ...


# --------------------------------------------------------------------------------------------
# Observation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ObservedSubscriptions:
    """Every subscription (any status, ours and foreign: `owner` None on a foreign one) and
    every subscription schedule listed."""

    subscriptions: tuple[SubscriptionRecord, ...]
    schedules: tuple[ScheduleRecord, ...]


def observe_subscriptions(gateway: StripeGateway, *, installation_id: str) -> ObservedSubscriptions:
    """The full listing: ceil(N/100) calls for N subscriptions plus ceil(M/100) for M
    schedules (plus one per subscription with more than 10 items)."""
    return ObservedSubscriptions(
        subscriptions=tuple(
            _list_subscriptions(gateway, {"status": "all"}, installation_id=installation_id)
        ),
        schedules=tuple(_list_schedules(gateway, {}, installation_id=installation_id)),
    )


def subscriptions_of_customer(
    gateway: StripeGateway, customer_id: str, *, installation_id: str
) -> ObservedSubscriptions:
    """One customer's subscriptions (any status) and schedules: the targeted read a webhook, an
    API write or a member change triggers (two calls for a customer with up to 100 of each)."""
    if not customer_id:
        raise ValueError("a targeted read needs a customer id")
    return ObservedSubscriptions(
        subscriptions=tuple(
            _list_subscriptions(
                gateway,
                {"status": "all", "customer": customer_id},
                installation_id=installation_id,
            )
        ),
        schedules=tuple(
            _list_schedules(gateway, {"customer": customer_id}, installation_id=installation_id)
        ),
    )


def retrieve_subscription(
    gateway: StripeGateway, subscription_id: str, *, installation_id: str
) -> SubscriptionRecord:
    """One subscription by id (after a write whose response cannot be replayed)."""
    service = gateway.sdk.v1.subscriptions
    obj = gateway.request(
        method="GET",
        endpoint="/v1/subscriptions/{id}",
        send=functools.partial(
            service.retrieve, subscription_id, cast("SubscriptionRetrieveParams", {})
        ),
    ).to_dict(for_json=True)
    return _subscription(gateway, obj, installation_id=installation_id)


def retrieve_schedule(
    gateway: StripeGateway, schedule_id: str, *, installation_id: str
) -> ScheduleRecord:
    service = gateway.sdk.v1.subscription_schedules
    obj = gateway.request(
        method="GET",
        endpoint="/v1/subscription_schedules/{id}",
        send=functools.partial(
            service.retrieve, schedule_id, cast("SubscriptionScheduleRetrieveParams", {})
        ),
    ).to_dict(for_json=True)
    return map_schedule(obj, installation_id=installation_id)


def _list_subscriptions(
    gateway: StripeGateway, params: SubscriptionListParams, *, installation_id: str
) -> Iterator[SubscriptionRecord]:
    # Read raw (`list_all_raw`); the SDK's parameter types still check what is sent.
    for obj in list_all_raw(gateway, endpoint="/v1/subscriptions", params=dict(params)):
        yield _subscription(gateway, obj, installation_id=installation_id)


def _list_schedules(
    gateway: StripeGateway, params: SubscriptionScheduleListParams, *, installation_id: str
) -> Iterator[ScheduleRecord]:
    for obj in list_all_raw(gateway, endpoint="/v1/subscription_schedules", params=dict(params)):
        yield map_schedule(obj, installation_id=installation_id)


def _subscription(
    gateway: StripeGateway, obj: Mapping[str, Any], *, installation_id: str
) -> SubscriptionRecord:
    items = obj.get("items")
    if isinstance(items, Mapping) and items.get("has_more"):
        # The embedded list is the first page only (10 in Stripe).
        obj = {**obj, "items": {"data": list(_all_items(gateway, str(obj["id"])))}}
    return map_subscription(obj, installation_id=installation_id)


def _all_items(gateway: StripeGateway, subscription_id: str) -> Iterator[Mapping[str, Any]]:
    params: SubscriptionItemListParams = {"subscription": subscription_id}
    return list_all_raw(gateway, endpoint="/v1/subscription_items", params=dict(params))


# --------------------------------------------------------------------------------------------
# The events cursor
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscriptionEvents:
    """What changed since a cursor: the customers whose subscriptions or schedules to
    reobserve (`subscriptions_of_customer`), with the subscription and schedule ids the events
    named. `full_resync` and `cursor` as `customers.CustomerEvents`: when True, list everything
    and ignore the ids; `cursor` is where the next read starts."""

    customer_ids: tuple[str, ...]
    subscription_ids: tuple[str, ...]
    schedule_ids: tuple[str, ...]
    cursor: EventCursor | None
    full_resync: bool


def subscription_events_since(
    gateway: StripeGateway,
    cursor: EventCursor | None,
    *,
    now: Callable[[], float] = time.time,
    types: tuple[str, ...] = SUBSCRIPTION_EVENT_TYPES,
) -> SubscriptionEvents:
    """The customers named by subscription and schedule events after `cursor`: one call when
    nothing happened, one more per hundred events. No cursor, one older than Stripe's 30-day
    retention (less a margin), or one naming a purged event: a full resync."""
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
        if error.http_status == 404:
            return _resync(gateway, types)
        raise
    newest = pages[-1][0] if pages and pages[-1] else None
    events = [event for page in pages for event in page]
    customers: dict[str, None] = {}
    subscriptions: dict[str, None] = {}
    schedules: dict[str, None] = {}
    for event in events:
        obj = (event.get("data") or {}).get("object") or {}
        customer = _id(obj.get("customer"))
        if customer:
            customers[customer] = None
        object_id = _id(obj.get("id"))
        if str(event.get("type", "")).startswith("subscription_schedule."):
            if object_id:
                schedules[object_id] = None
            for name in ("subscription", "released_subscription"):
                if sub := _id(obj.get(name)):
                    subscriptions[sub] = None
        elif object_id:
            subscriptions[object_id] = None
    return SubscriptionEvents(
        customer_ids=tuple(customers),
        subscription_ids=tuple(subscriptions),
        schedule_ids=tuple(schedules),
        cursor=cursor if newest is None else EventCursor(str(newest["id"]), int(newest["created"])),
        full_resync=False,
    )


def _resync(gateway: StripeGateway, types: tuple[str, ...]) -> SubscriptionEvents:
    page = _event_page(gateway, {"types": list(types), "limit": 1})
    newest = page.data[0] if page.data else None
    cursor = None if newest is None else EventCursor(str(newest.id), int(newest.created))
    return SubscriptionEvents(
        customer_ids=(), subscription_ids=(), schedule_ids=(), cursor=cursor, full_resync=True
    )


def _id(value: object) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


# --------------------------------------------------------------------------------------------
# Writes: subscriptions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscriptionWrite:
    """The subscription as Stripe answered the write, mapped; Stripe's request id; whether
    Stripe replayed an earlier response for the key (the step had already been applied)."""

    record: SubscriptionRecord
    request_id: str | None
    replayed: bool


@dataclass(frozen=True, slots=True)
class ScheduleWrite:
    record: ScheduleRecord
    request_id: str | None
    replayed: bool


@dataclass(frozen=True, slots=True)
class ItemChange:
    """One entry of `items[]` on an update: an existing item (`item_id`) re-quantified,
    moved to another price or deleted, or (no `item_id`) a new item. `quantity` None leaves it
    out (a metered price, or a change of price only)."""

    item_id: str | None = None
    price_id: str | None = None
    quantity: int | None = None
    deleted: bool = False

    def as_params(self) -> dict[str, Any]:
        if self.item_id is None and self.price_id is None:
            raise ValueError("a new subscription item needs a price")
        if self.deleted and self.item_id is None:
            raise ValueError("only an existing subscription item can be deleted")
        out: dict[str, Any] = {}
        if self.item_id is not None:
            out["id"] = self.item_id
        if self.deleted:
            out["deleted"] = True
            return out
        if self.price_id is not None:
            out["price"] = self.price_id
        if self.quantity is not None:
            out["quantity"] = self.quantity
        return out


def create_subscription(
    gateway: StripeGateway,
    *,
    customer_id: str,
    owner: SubscriptionOwner,
    items: Sequence[PricedItem],
    currency: str,
    idempotency_key: str,
    automatic_tax: bool = False,
    collection_method: str = CollectionMethod.CHARGE_AUTOMATICALLY.value,
    days_until_due: int | None = None,
    trial_period_days: int | None = None,
    trial_end: int | None = None,
    trial_missing_payment_method: Literal["cancel", "create_invoice", "pause"] | None = None,
    cancel_at_period_end: bool = False,
    pending_invoice_item_interval: tuple[str, int] | None = None,
    payment_behavior: PaymentBehavior = DEFAULT_PAYMENT_BEHAVIOR,
    metadata: Mapping[str, str] | None = None,
) -> SubscriptionWrite:
    """Create an account's subscription with our marker (DESIGN §14, §16).

    `items`: price and quantity each (a metered price's quantity is None and is not sent).
    `days_until_due` only with `send_invoice` (Stripe refuses it otherwise). At most one of
    `trial_period_days` / `trial_end`. No `billing_mode`: flexible is the pinned API's default.
    The key must be derived from the installation, org, plan and intent: a replay within
    Stripe's 24 hours returns the first subscription, never a second one."""
    if not items:
        raise ValueError("a subscription needs at least one item")
    if trial_period_days is not None and trial_end is not None:
        raise ValueError("give trial_period_days or trial_end, not both")
    params: dict[str, Any] = {
        "customer": customer_id,
        "items": [_item_params(item) for item in items],
        "currency": currency.lower(),
        "automatic_tax": {"enabled": automatic_tax},
        "collection_method": collection_method,
        "payment_behavior": payment_behavior,
        "metadata": {**dict(metadata or {}), **owner.as_metadata()},
    }
    params.update(_collection(collection_method, days_until_due))
    if trial_period_days is not None:
        params["trial_period_days"] = trial_period_days
    if trial_end is not None:
        params["trial_end"] = trial_end
    if trial_missing_payment_method is not None:
        params["trial_settings"] = {
            "end_behavior": {"missing_payment_method": trial_missing_payment_method}
        }
    if cancel_at_period_end:
        params["cancel_at_period_end"] = True
    if pending_invoice_item_interval is not None:
        params["pending_invoice_item_interval"] = _interval(pending_invoice_item_interval)
    service = gateway.sdk.v1.subscriptions
    return _subscription_write(
        gateway,
        "POST",
        "/v1/subscriptions",
        lambda options: service.create(cast("SubscriptionCreateParams", params), options),
        idempotency_key,
        installation_id=owner.installation_id,
    )


_UNCHANGED: Final[Any] = object()


def update_subscription(
    gateway: StripeGateway,
    *,
    subscription_id: str,
    installation_id: str,
    idempotency_key: str,
    items: Sequence[ItemChange] = (),
    proration_behavior: ProrationBehavior | None = None,
    automatic_tax: bool | None = None,
    cancel_at_period_end: bool | None = None,
    collection_method: str | None = None,
    days_until_due: int | None = None,
    pending_invoice_item_interval: tuple[str, int] | None = _UNCHANGED,
    payment_behavior: PaymentBehavior | None = None,
    owner: SubscriptionOwner | None = None,
    metadata: Mapping[str, str] | None = None,
) -> SubscriptionWrite:
    """Update a subscription of ours: items (`items[i][id]`, `quantity`, `price`, `deleted`)
    with `proration_behavior`, `automatic_tax[enabled]`, `cancel_at_period_end`, collection,
    `pending_invoice_item_interval` (None unsets it; left out: unchanged), `payment_behavior`
    (for a change that invoices at once: `error_if_incomplete` refuses it with Stripe's 402
    instead of applying it unpaid) and metadata. Only what is given is sent. `metadata` merges
    (a value "" removes that key, as Stripe does); `owner` rewrites the marker keys (the `plan`
    after a change, the revision)."""
    params: dict[str, Any] = {}
    if items:
        params["items"] = [change.as_params() for change in items]
    if proration_behavior is not None:
        params["proration_behavior"] = proration_behavior
    if automatic_tax is not None:
        params["automatic_tax"] = {"enabled": automatic_tax}
    if cancel_at_period_end is not None:
        params["cancel_at_period_end"] = cancel_at_period_end
    if collection_method is not None:
        params["collection_method"] = collection_method
        params.update(_collection(collection_method, days_until_due))
    elif days_until_due is not None:
        params["days_until_due"] = days_until_due
    if pending_invoice_item_interval is not _UNCHANGED:
        params["pending_invoice_item_interval"] = (
            ""
            if pending_invoice_item_interval is None
            else _interval(pending_invoice_item_interval)
        )
    if payment_behavior is not None:
        params["payment_behavior"] = payment_behavior
    if metadata or owner is not None:
        params["metadata"] = {
            **dict(metadata or {}),
            **(owner.as_metadata() if owner is not None else {}),
        }
    if not params:
        raise ValueError("an update with nothing to change")
    service = gateway.sdk.v1.subscriptions
    return _subscription_write(
        gateway,
        "POST",
        "/v1/subscriptions/{id}",
        lambda options: service.update(
            subscription_id, cast("SubscriptionUpdateParams", params), options
        ),
        idempotency_key,
        installation_id=installation_id,
    )


def cancel_subscription(
    gateway: StripeGateway,
    *,
    subscription_id: str,
    installation_id: str,
    idempotency_key: str,
    invoice_now: bool = False,
    prorate: bool = False,
) -> SubscriptionWrite:
    """Cancel a subscription at once (`DELETE /v1/subscriptions/{id}`; `invoice_now` and
    `prorate` as Frontier's immediate cancel). Stripe keeps no idempotent response for a
    DELETE, so when it refuses because the subscription has already ended (an earlier
    attempt's response was lost) the subscription is read back and returned as replayed."""
    params: dict[str, Any] = {}
    if invoice_now:
        params["invoice_now"] = True
    if prorate:
        params["prorate"] = True
    service = gateway.sdk.v1.subscriptions
    try:
        return _subscription_write(
            gateway,
            "DELETE",
            "/v1/subscriptions/{id}",
            lambda options: service.cancel(
                subscription_id, cast("SubscriptionCancelParams", params), options
            ),
            idempotency_key,
            installation_id=installation_id,
        )
    except PermanentStripeError as error:
        if error.http_status not in (400, 404):
            raise
        try:
            record = retrieve_subscription(
                gateway, subscription_id, installation_id=installation_id
            )
        except PermanentStripeError:
            raise error from None
        if record.status not in {"canceled", "incomplete_expired"}:
            raise
        return SubscriptionWrite(record=record, request_id=error.request_id, replayed=True)


# --------------------------------------------------------------------------------------------
# Writes: subscription schedules
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PhaseSpec:
    """One phase to write: its items, its end (a timestamp, "now" for the current phase of an
    immediate change, None for an open last phase), the plan it bills (phase metadata `plan`,
    merged into the subscription's metadata when the phase starts), and its settings.
    `start` is only sent for the first phase and only repeats the current phase's start.
    `trial_end` keeps a running trial in the current phase (phases are declarative: one
    written without it is no trial, and Stripe would end the trial now): the phase's own end
    is sent as `trial: true` (the whole phase a trial), an earlier time as `trial_end`."""

    items: tuple[PricedItem, ...]
    end: int | Literal["now"] | None = None
    start: int | None = None
    plan: str | None = None
    proration_behavior: ProrationBehavior | None = None
    collection_method: str | None = None
    days_until_due: int | None = None
    automatic_tax: bool | None = None
    metadata: Mapping[str, str] | None = None
    trial_end: int | None = None

    def as_params(self) -> dict[str, Any]:
        if not self.items:
            raise ValueError("a schedule phase needs at least one item")
        out: dict[str, Any] = {"items": [_item_params(item) for item in self.items]}
        if self.start is not None:
            out["start_date"] = self.start
        if self.end is not None:
            out["end_date"] = self.end
        if self.trial_end is not None:
            if self.trial_end == self.end:
                out["trial"] = True
            else:
                out["trial_end"] = self.trial_end
        if self.proration_behavior is not None:
            out["proration_behavior"] = self.proration_behavior
        if self.collection_method is not None:
            out["collection_method"] = self.collection_method
            if self.collection_method == CollectionMethod.SEND_INVOICE.value:
                if self.days_until_due is None:
                    raise ValueError("send_invoice needs days_until_due")
                out["invoice_settings"] = {"days_until_due": self.days_until_due}
        if self.automatic_tax is not None:
            out["automatic_tax"] = {"enabled": self.automatic_tax}
        phase_metadata = {
            **dict(self.metadata or {}),
            **({META_PLAN: self.plan} if self.plan else {}),
        }
        if phase_metadata:
            out["metadata"] = phase_metadata
        return out


def create_schedule_from_subscription(
    gateway: StripeGateway,
    *,
    subscription_id: str,
    installation_id: str,
    idempotency_key: str,
) -> ScheduleWrite:
    """Put a subscription under a new schedule (`from_subscription`: one phase, the current
    period, `end_behavior=release`). Stripe takes no other parameter with `from_subscription`
    ("we recommend making two separate API calls"): `update_schedule` then writes the phases
    and the marker."""
    params: dict[str, Any] = {"from_subscription": subscription_id}
    service = gateway.sdk.v1.subscription_schedules
    return _schedule_write(
        gateway,
        "POST",
        "/v1/subscription_schedules",
        lambda options: service.create(cast("SubscriptionScheduleCreateParams", params), options),
        idempotency_key,
        installation_id=installation_id,
    )


def update_schedule(
    gateway: StripeGateway,
    *,
    schedule_id: str,
    owner: SubscriptionOwner,
    phases: Sequence[PhaseSpec],
    idempotency_key: str,
    end_behavior: Literal["release", "cancel"] = "release",
    proration_behavior: ProrationBehavior | None = None,
    metadata: Mapping[str, str] | None = None,
) -> ScheduleWrite:
    """Rewrite a schedule's phases from the current one on (DESIGN §16): a plan change is two
    phases, the current one ending at the period end (or "now": immediate) and the new plan's;
    cancelling an upcoming change is the current phase alone; a cancel at period end is the
    current phase with `end_behavior="cancel"`. `proration_behavior` applies to a change of the
    current phase; each phase carries its own for its start. The schedule gets our marker."""
    if not phases:
        raise ValueError("a schedule needs at least its current phase")
    params: dict[str, Any] = {
        "phases": [phase.as_params() for phase in phases],
        "end_behavior": end_behavior,
        "metadata": {**dict(metadata or {}), **owner.as_metadata()},
    }
    if proration_behavior is not None:
        params["proration_behavior"] = proration_behavior
    service = gateway.sdk.v1.subscription_schedules
    return _schedule_write(
        gateway,
        "POST",
        "/v1/subscription_schedules/{id}",
        lambda options: service.update(
            schedule_id, cast("SubscriptionScheduleUpdateParams", params), options
        ),
        idempotency_key,
        installation_id=owner.installation_id,
    )


def release_schedule(
    gateway: StripeGateway,
    *,
    schedule_id: str,
    installation_id: str,
    idempotency_key: str,
) -> ScheduleWrite:
    """Release a schedule: the subscription stays as it is, unscheduled. A refusal because it
    is already released (an earlier attempt's response lost past the key's window) reads it
    back as replayed."""
    service = gateway.sdk.v1.subscription_schedules
    return _ending_schedule_write(
        gateway,
        "/v1/subscription_schedules/{id}/release",
        lambda options: service.release(
            schedule_id, cast("SubscriptionScheduleReleaseParams", {}), options
        ),
        idempotency_key,
        schedule_id=schedule_id,
        installation_id=installation_id,
        ended=frozenset({"released"}),
    )


def cancel_schedule(
    gateway: StripeGateway,
    *,
    schedule_id: str,
    installation_id: str,
    idempotency_key: str,
    invoice_now: bool = False,
    prorate: bool = False,
) -> ScheduleWrite:
    """Cancel a schedule and its subscription at once. `invoice_now` and `prorate` are always
    sent: Stripe's defaults here are true for both, unlike the subscription cancel's."""
    params: dict[str, Any] = {"invoice_now": invoice_now, "prorate": prorate}
    service = gateway.sdk.v1.subscription_schedules
    return _ending_schedule_write(
        gateway,
        "/v1/subscription_schedules/{id}/cancel",
        lambda options: service.cancel(
            schedule_id, cast("SubscriptionScheduleCancelParams", params), options
        ),
        idempotency_key,
        schedule_id=schedule_id,
        installation_id=installation_id,
        ended=frozenset({"canceled"}),
    )


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _item_params(item: PricedItem) -> dict[str, Any]:
    out: dict[str, Any] = {"price": item.price_id}
    if item.quantity is not None:
        out["quantity"] = item.quantity
    return out


def _collection(method: str, days_until_due: int | None) -> dict[str, Any]:
    if method == CollectionMethod.SEND_INVOICE.value:
        if days_until_due is None:
            raise ValueError("collection_method=send_invoice needs days_until_due")
        return {"days_until_due": days_until_due}
    if days_until_due is not None:
        raise ValueError("days_until_due applies to collection_method=send_invoice only")
    return {}


def _interval(value: tuple[str, int]) -> dict[str, Any]:
    interval, count = value
    return {"interval": interval, "interval_count": count}


def _send(
    gateway: StripeGateway,
    method: str,
    endpoint: str,
    call: Callable[[Any], Any],
    idempotency_key: str,
) -> tuple[dict[str, Any], str | None, bool]:
    if not idempotency_key:
        raise ValueError("every mutating Stripe call needs an idempotency key")
    options = {"idempotency_key": idempotency_key}
    obj = gateway.request(method=method, endpoint=endpoint, send=lambda: call(options))
    result = _result(obj)
    return obj.to_dict(for_json=True), result.request_id, result.replayed


def _subscription_write(
    gateway: StripeGateway,
    method: str,
    endpoint: str,
    call: Callable[[Any], Any],
    idempotency_key: str,
    *,
    installation_id: str,
) -> SubscriptionWrite:
    obj, request_id, replayed = _send(gateway, method, endpoint, call, idempotency_key)
    record = _subscription(gateway, obj, installation_id=installation_id)
    return SubscriptionWrite(record=record, request_id=request_id, replayed=replayed)


def _schedule_write(
    gateway: StripeGateway,
    method: str,
    endpoint: str,
    call: Callable[[Any], Any],
    idempotency_key: str,
    *,
    installation_id: str,
) -> ScheduleWrite:
    obj, request_id, replayed = _send(gateway, method, endpoint, call, idempotency_key)
    record = map_schedule(obj, installation_id=installation_id)
    return ScheduleWrite(record=record, request_id=request_id, replayed=replayed)


def _ending_schedule_write(
    gateway: StripeGateway,
    endpoint: str,
    call: Callable[[Any], Any],
    idempotency_key: str,
    *,
    schedule_id: str,
    installation_id: str,
    ended: frozenset[str],
) -> ScheduleWrite:
    try:
        return _schedule_write(
            gateway, "POST", endpoint, call, idempotency_key, installation_id=installation_id
        )
    except PermanentStripeError as error:
        if error.http_status != 400:
            raise
        record = retrieve_schedule(gateway, schedule_id, installation_id=installation_id)
        if record.status not in ended:
            raise
        return ScheduleWrite(record=record, request_id=error.request_id, replayed=True)

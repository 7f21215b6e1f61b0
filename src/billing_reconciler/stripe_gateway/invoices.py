"""Invoice previews in Stripe: what a plan change would invoice (DESIGN §16, §19).

`preview_plan_change` asks Stripe's `POST /v1/invoices/create_preview` (the pinned API
`2026-10-28.endive` has no `upcoming`) about an existing subscription with
`subscription_details.items` set to the target plan's items. The item changes are the ones a
schedule phase makes when it starts (Stripe's phase semantics, which the plan change goes
through): an item whose price the new phase keeps stays (re-quantified when its quantity
differs), every other item is deleted and the new prices are added. A preview writes
nothing in Stripe (it takes no idempotency key).

No `proration_date` is sent: Stripe prorates as of its "now", which for a customer on a test
clock is the clock's frozen time, the same instant the change itself would be prorated at
(a schedule phase takes no `proration_date`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from billing_reconciler.stripe_gateway.client import StripeGateway
from billing_reconciler.stripe_gateway.subscriptions import (
    ItemChange,
    PricedItem,
    ProrationBehavior,
    retrieve_subscription,
)

if TYPE_CHECKING:
    from stripe.params import InvoiceCreatePreviewParams


@dataclass(frozen=True, slots=True)
class PreviewLine:
    """One line of a previewed invoice: amounts in minor units, the period it bills."""

    description: str
    quantity: int | None
    amount: int
    period_start: int
    period_end: int
    proration: bool
    price_id: str | None = None
    # A subscription item's line (`parent.type = subscription_item_details`), not an
    # invoice item's.
    subscription_item: bool = False


@dataclass(frozen=True, slots=True)
class InvoicePreview:
    """The invoice Stripe would create (`created`: when), as `create_preview` answered it."""

    currency: str
    billing_reason: str | None
    subtotal: int
    total: int
    amount_due: int
    created: int
    period_start: int | None
    period_end: int | None
    lines: tuple[PreviewLine, ...]

    @property
    def proration_lines(self) -> tuple[PreviewLine, ...]:
        return tuple(line for line in self.lines if line.proration)


def phase_item_changes(
    current: Sequence[tuple[str | None, str, int | None]], target: Sequence[PricedItem]
) -> tuple[ItemChange, ...]:
    """The `items[]` that make a subscription with `current` items (item id, price id,
    quantity) bill `target`, as a starting schedule phase makes them: a kept price's item
    stays (its quantity updated when it differs), the others are deleted, new prices added
    (additions first, so the subscription never has no item in between)."""
    wanted: dict[str, PricedItem] = {}
    for item in target:
        wanted.setdefault(item.price_id, item)
    kept: list[ItemChange] = []
    for item_id, price_id, quantity in current:
        if item_id is None:  # not observed with its id: nothing to address
            continue
        keep = wanted.pop(price_id, None)
        if keep is None:
            kept.append(ItemChange(item_id=item_id, deleted=True))
        elif keep.quantity != quantity:
            kept.append(ItemChange(item_id=item_id, quantity=keep.quantity))
    added = [ItemChange(price_id=p.price_id, quantity=p.quantity) for p in wanted.values()]
    return (*added, *kept)


@dataclass(frozen=True, slots=True)
class PlanChangePreview:
    """What a plan change would invoice: the invoice made at once (`always_invoice` with
    something to prorate, or a change of billing interval, which Stripe invoices at once;
    else None) and the next renewal on the new plan, made at `renews_at` (None: unknown)."""

    invoice_now: InvoicePreview | None
    renewal: InvoicePreview
    renews_at: int | None = None

    @property
    def proration_lines(self) -> tuple[PreviewLine, ...]:
        """The prorations: on the invoice made now, or carried by the renewal."""
        source = self.invoice_now if self.invoice_now is not None else self.renewal
        return source.proration_lines


def preview_plan_change(
    gateway: StripeGateway,
    *,
    subscription_id: str,
    installation_id: str,
    items: Sequence[PricedItem],
    proration_behavior: ProrationBehavior,
    immediate: bool = True,
) -> PlanChangePreview:
    """What moving `subscription_id` onto `items` with `proration_behavior` would invoice.
    One GET (the subscription's current item ids and period), then `create_preview`.

    Stripe answers the invoice made at once when there is one: with `always_invoice` and
    something to prorate, or for items at another billing interval (Stripe resets the
    billing cycle anchor to now and invoices the new interval in full, the unused time
    credited unless `none`), whatever the proration; that invoice is created before the
    current period ends. A second preview (`proration_behavior=none`) then gives the
    renewal after it: at the period end, or, after an interval change, at the end of the new
    period the invoice made now opened. Otherwise the one preview is the next renewal,
    carrying the prorations (`create_prorations`) or none.

    Not `immediate` (the change starts at the period end, `proration_behavior` then
    `none`): the one preview is the first invoice on the new items, made at the period end
    (for another interval Stripe answers the cycle restarting, whose lines are that
    invoice's)."""
    if not items:
        raise ValueError("a plan change previews at least one item")
    record = retrieve_subscription(gateway, subscription_id, installation_id=installation_id)
    period_end = record.current_period_end
    current = tuple((item.item_id, item.price_id, item.quantity) for item in record.items)
    changes = phase_item_changes(current, items)
    item_params = [change.as_params() for change in changes]

    def preview(behavior: ProrationBehavior) -> InvoicePreview:
        details: dict[str, Any] = {"proration_behavior": behavior}
        if item_params:
            details["items"] = item_params
        return preview_subscription_invoice(
            gateway, subscription_id=subscription_id, details=details
        )

    first = preview(proration_behavior)
    if not immediate:
        return PlanChangePreview(invoice_now=None, renewal=first, renews_at=period_end)
    if period_end is not None and first.created < period_end:
        renewal = preview("none")
        return PlanChangePreview(
            invoice_now=first, renewal=renewal, renews_at=_renews_at(first, renewal)
        )
    if period_end is None and proration_behavior == "always_invoice" and first.proration_lines:
        renewal = preview("none")
        return PlanChangePreview(invoice_now=first, renewal=renewal, renews_at=renewal.created)
    return PlanChangePreview(invoice_now=None, renewal=first, renews_at=first.created or None)


def _renews_at(now: InvoicePreview, renewal: InvoicePreview) -> int | None:
    """When the renewal after an invoice made at once is made: when the invoice made now
    bills the subscription's items for a new period (a billing cycle reset; an invoice made
    for prorations only has invoice item lines), that period's end; else the renewal's own
    creation (the period end)."""
    opened = [line.period_end for line in now.lines if line.subscription_item]
    if opened:
        return max(opened)
    return renewal.created or None


def preview_subscription_invoice(
    gateway: StripeGateway, *, subscription_id: str, details: Mapping[str, Any]
) -> InvoicePreview:
    """`create_preview` for `subscription_id` with `subscription_details` (nothing saved)."""
    params: dict[str, Any] = {"subscription": subscription_id}
    if details:
        params["subscription_details"] = dict(details)
    service = gateway.sdk.v1.invoices
    obj = gateway.request(
        method="POST",
        endpoint="/v1/invoices/create_preview",
        send=functools.partial(service.create_preview, cast("InvoiceCreatePreviewParams", params)),
    ).to_dict(for_json=True)
    return map_preview(obj)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _proration(line: Mapping[str, Any]) -> bool:
    parent = line.get("parent")
    if not isinstance(parent, Mapping):
        return False
    for name in ("subscription_item_details", "invoice_item_details"):
        details = parent.get(name)
        if isinstance(details, Mapping) and details.get("proration"):
            return True
    return False


def _subscription_item(line: Mapping[str, Any]) -> bool:
    parent = line.get("parent")
    return isinstance(parent, Mapping) and parent.get("type") == "subscription_item_details"


def _price_id(line: Mapping[str, Any]) -> str | None:
    pricing = line.get("pricing")
    details = pricing.get("price_details") if isinstance(pricing, Mapping) else None
    price = details.get("price") if isinstance(details, Mapping) else None
    if isinstance(price, Mapping):
        price = price.get("id")
    return price if isinstance(price, str) else None


def map_preview(obj: Mapping[str, Any]) -> InvoicePreview:
    """A `create_preview` answer as an `InvoicePreview` (lines in Stripe's order)."""
    lines_obj = obj.get("lines")
    raw_lines = lines_obj.get("data") if isinstance(lines_obj, Mapping) else None
    lines: list[PreviewLine] = []
    for raw in raw_lines if isinstance(raw_lines, list) else []:
        if not isinstance(raw, Mapping):
            continue
        period = raw.get("period")
        period = period if isinstance(period, Mapping) else {}
        lines.append(
            PreviewLine(
                description=str(raw.get("description") or ""),
                quantity=_opt_int(raw.get("quantity")),
                amount=_int(raw.get("amount")),
                period_start=_int(period.get("start")),
                period_end=_int(period.get("end")),
                proration=_proration(raw),
                price_id=_price_id(raw),
                subscription_item=_subscription_item(raw),
            )
        )
    reason = obj.get("billing_reason")
    return InvoicePreview(
        currency=str(obj.get("currency") or "").lower(),
        billing_reason=reason if isinstance(reason, str) else None,
        subtotal=_int(obj.get("subtotal")),
        total=_int(obj.get("total")),
        amount_due=_int(obj.get("amount_due")),
        created=_int(obj.get("created")),
        period_start=_opt_int(obj.get("period_start")),
        period_end=_opt_int(obj.get("period_end")),
        lines=tuple(lines),
    )

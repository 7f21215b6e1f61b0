"""Invoices and invoice items: create, retrieve, list, finalize, pay, send, void,
mark_uncollectible, delete drafts, `create_preview`; `invoiceitems` create, retrieve, list,
update, delete. `payment_settings` (`card`, `customer_balance` on `send_invoice` invoices,
paid by bank transfer into the cash balance); automatic retries of failed subscription
invoice payments are scheduled here with resources/dunning.py (`attempt_payment(automatic=)`,
`retry`), run by the subscriptions module's clock walk.

Status machine (Stripe's): draft -> open (finalize) -> paid | void | uncollectible
(uncollectible can still be paid or voided). Totals: `subtotal` is the sum of the lines,
`total` the same (no discounts or taxes here); at finalization the customer's `balance` is
applied (`starting_balance`, `ending_balance`): a credit (negative balance) lowers
`amount_due`, a debit raises it, and the customer's balance moves accordingly.
`amount_remaining = amount_due - amount_paid`.

Paying a `charge_automatically` invoice creates a PaymentIntent through the payment intents
module (`payment_intents.create` with `confirm=true, off_session=true`) on the invoice's
payment method: `pay`'s `payment_method`, else the invoice's `default_payment_method`, else
the subscription's, else the customer's `invoice_settings.default_payment_method`. A decline
leaves the invoice open (`attempted`, `attempt_count`) and emits `invoice.payment_failed`.

Objects of a customer on a test clock live in its time: they are created, finalized and
paid at the clock's frozen time, and their events carry that time (`clocked`).

The subscriptions module builds on the public functions here (`draft`, `finalize`,
`attempt_payment`, ...) and registers `PAYMENT_HOOKS` to follow its invoices' payments.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stripe_emulator import tax
from stripe_emulator.core import RequestContext
from stripe_emulator.errors import StripeError, invalid
from stripe_emulator.ids import new_id
from stripe_emulator.listing import created_predicate, envelope, expand_of, list_response
from stripe_emulator.params import Params
from stripe_emulator.render import render
from stripe_emulator.resources import cash_balances, dunning, payment_intents
from stripe_emulator.resources._common import (
    apply_metadata,
    check_enum,
    currency,
    deleted_stub,
    fetch,
    new_metadata,
    previous_attributes,
)
from stripe_emulator.resources._payments import (
    PaymentError,
    expandable_when_null,
    includable,
    time_for,
)
from stripe_emulator.resources.currencies import MINIMUM_AMOUNTS
from stripe_emulator.routing import Router
from stripe_emulator.state import StripeObject

KIND = "invoice"
ITEM = "invoiceitem"
COLLECTION_METHODS = ("charge_automatically", "send_invoice")
PENDING_BEHAVIORS = ("exclude", "include")
# Stripe finalizes an auto-advancing draft about an hour after creating it.
FINALIZE_DELAY = 3600
DAY = 24 * 3600

# Parameters each endpoint implements; every other one the SDK accepts is refused.
_CREATE_HANDLED = frozenset(
    {
        "customer",
        "automatic_tax",
        "collection_method",
        "pending_invoice_items_behavior",
        "days_until_due",
        "due_date",
        "subscription",
        "default_payment_method",
        "currency",
        "auto_advance",
        "metadata",
        "description",
        "footer",
        "statement_descriptor",
        "payment_settings",
    }
)
_UPDATE_HANDLED = frozenset(
    {
        "metadata",
        "description",
        "auto_advance",
        "footer",
        "default_payment_method",
        "days_until_due",
        "due_date",
        "statement_descriptor",
        "payment_settings",
    }
)
_PAY_HANDLED = frozenset({"payment_method", "paid_out_of_band", "off_session"})
_LIST_HANDLED = frozenset(
    {
        "customer",
        "subscription",
        "status",
        "collection_method",
        "created",
        "due_date",
        "limit",
        "starting_after",
        "ending_before",
    }
)
_LINES_HANDLED = frozenset({"limit", "starting_after", "ending_before"})
_PAYMENT_SETTINGS_HANDLED = frozenset({"payment_method_types", "payment_method_options"})
_PAYMENT_OPTIONS_HANDLED = frozenset({"customer_balance"})
# The payment method types the emulator can collect an invoice with: cards (the charge of a
# `charge_automatically` invoice, or `pay`) and `customer_balance` (bank transfers into the
# customer's cash balance, on `send_invoice` invoices).
PAYMENT_METHOD_TYPES = ("card", "customer_balance")
_PREVIEW_HANDLED = frozenset(
    {"subscription", "subscription_details", "schedule", "customer", "currency", "automatic_tax"}
)
_PREVIEW_DETAILS_HANDLED = frozenset(
    {"items", "proration_behavior", "proration_date", "cancel_at_period_end"}
)
_ITEM_CREATE_HANDLED = frozenset(
    {
        "customer",
        "amount",
        "currency",
        "description",
        "invoice",
        "metadata",
        "period",
        "price_data",
        "pricing",
        "quantity",
        "subscription",
    }
)

# hook(ctx, invoice, succeeded): after a payment attempt on an invoice (or its payment out of
# band); the subscriptions module moves the subscription's status.
PaymentHook = Callable[[RequestContext, StripeObject, bool], None]
PAYMENT_HOOKS: list[PaymentHook] = []

expandable_when_null(
    KIND,
    "customer",
    "default_payment_method",
    "subscription",
    "test_clock",
    "latest_revision",
    "on_behalf_of",
    "application",
    "default_source",
)
expandable_when_null(ITEM, "customer", "invoice", "test_clock")
# `payments` (the invoice's `invoice_payment`s) is served only when expanded, as Stripe does.
includable(KIND, "payments")


def refuse_unhandled(params: Params, handled: frozenset[str], *, prefix: str = "") -> None:
    """400 for a parameter the SDK's types accept but the emulator does not implement (so
    nothing is silently ignored); `automatic_tax[enabled]=false` is always fine."""
    for name, value in params.items():
        if name in handled or name == "expand":
            continue
        if name == "automatic_tax" and not (value or {}).get("enabled"):
            continue
        where = f"{prefix}[{name}]" if prefix else name
        raise invalid(
            f"`{where}` is not supported by the emulator (see docs/emulator.md).", param=where
        )


@dataclass(slots=True)
class ClockedContext(RequestContext):
    """A request context whose `now()` is a test clock's frozen time (events carry it)."""

    frozen: int = 0

    def now(self) -> int:
        """The clock's time."""
        return self.frozen


def clocked(ctx: RequestContext, customer_id: str | None) -> RequestContext:
    """`ctx`, or a view of it at the customer's test clock time."""
    customer = ctx.store.get("customer", customer_id) if customer_id else None
    if customer is None or not customer.get("test_clock"):
        return ctx
    at = time_for(ctx, customer_id)
    if isinstance(ctx, ClockedContext):
        ctx.frozen = at
        return ctx
    return ClockedContext(
        ctx.emulator, ctx.request_id, ctx.idempotency_key, ctx.path, ctx.events, frozen=at
    )


def register(router: Router) -> None:
    """Attach the invoice and invoice item endpoints."""
    p = "_invoice_"
    base, one = "/v1/invoices", "/v1/invoices/{invoice}"
    router.add("POST", base, f"{p}create_params.InvoiceCreateParams", create)
    router.add("GET", base, f"{p}list_params.InvoiceListParams", list_invoices)
    router.add(
        "POST",
        base + "/create_preview",
        f"{p}create_preview_params.InvoiceCreatePreviewParams",
        create_preview,
    )
    router.add("GET", one, f"{p}retrieve_params.InvoiceRetrieveParams", retrieve)
    router.add("POST", one, f"{p}update_params.InvoiceUpdateParams", update)
    router.add("DELETE", one, f"{p}delete_params.InvoiceDeleteParams", delete)
    router.add("GET", one + "/lines", f"{p}list_lines_params.InvoiceListLinesParams", list_lines)
    router.add(
        "POST",
        one + "/finalize",
        f"{p}finalize_invoice_params.InvoiceFinalizeInvoiceParams",
        finalize_endpoint,
    )
    router.add("POST", one + "/pay", f"{p}pay_params.InvoicePayParams", pay)
    router.add("POST", one + "/send", f"{p}send_invoice_params.InvoiceSendInvoiceParams", send)
    router.add("POST", one + "/void", f"{p}void_invoice_params.InvoiceVoidInvoiceParams", void)
    router.add(
        "POST",
        one + "/mark_uncollectible",
        f"{p}mark_uncollectible_params.InvoiceMarkUncollectibleParams",
        mark_uncollectible,
    )
    q = "_invoice_item_"
    items, item = "/v1/invoiceitems", "/v1/invoiceitems/{invoiceitem}"
    router.add("POST", items, f"{q}create_params.InvoiceItemCreateParams", create_item)
    router.add("GET", items, f"{q}list_params.InvoiceItemListParams", list_items)
    router.add("GET", item, f"{q}retrieve_params.InvoiceItemRetrieveParams", retrieve_item)
    router.add("POST", item, f"{q}update_params.InvoiceItemUpdateParams", update_item)
    router.add("DELETE", item, f"{q}delete_params.InvoiceItemDeleteParams", delete_item)


# --- building blocks (used by subscriptions) ----------------------------------------------


def draft(
    ctx: RequestContext,
    customer: StripeObject,
    *,
    cur: str,
    billing_reason: str,
    collection_method: str = "charge_automatically",
    days_until_due: int | None = None,
    subscription: StripeObject | None = None,
    auto_advance: bool = True,
    default_payment_method: str | None = None,
    metadata: dict[str, str] | None = None,
    description: str | None = None,
    save: bool = True,
    automatic_tax: bool = False,
) -> StripeObject:
    """A new draft invoice (inserted and `invoice.created` emitted when `save`)."""
    ctx = clocked(ctx, customer["id"])
    now = ctx.now()
    invoice_id = new_id("in")
    parent = None
    if subscription is not None:
        parent = {
            "quote_details": None,
            "subscription_details": {
                "metadata": copy.deepcopy(subscription["metadata"]),
                "subscription": subscription["id"],
                "subscription_proration_date": None,
            },
            "type": "subscription_details",
        }
    address = customer.get("address")
    invoice: StripeObject = {
        "id": invoice_id,
        "object": KIND,
        "account_country": "US",
        "account_name": "Stripe Emulator",
        "account_tax_ids": None,
        "amount_due": 0,
        "amount_overpaid": 0,
        "amount_paid": 0,
        "amount_remaining": 0,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": 0,
        "attempted": False,
        "auto_advance": auto_advance,
        "automatic_tax": {
            "disabled_reason": None,
            "enabled": False,
            "liability": None,
            "provider": None,
            "status": None,
        },
        "automatically_finalizes_at": now + FINALIZE_DELAY if auto_advance else None,
        "billing_reason": billing_reason,
        "collection_method": collection_method,
        "confirmation_secret": None,
        "created": now,
        "currency": cur,
        "custom_fields": None,
        "customer": customer["id"],
        "customer_account": None,
        "customer_address": copy.deepcopy(address) if address else None,
        "customer_email": customer.get("email"),
        "customer_name": customer.get("name"),
        "customer_phone": customer.get("phone"),
        "customer_shipping": copy.deepcopy(customer.get("shipping")),
        "customer_tax_exempt": customer.get("tax_exempt", "none"),
        "customer_tax_ids": [],
        "default_payment_method": default_payment_method,
        "default_source": None,
        "default_tax_rates": [],
        "description": description,
        "discounts": [],
        "due_date": None,
        "effective_at": None,
        "ending_balance": None,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": None,
        "invoice_pdf": None,
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "lines": envelope([], False, f"/v1/invoices/{invoice_id}/lines"),
        "livemode": False,
        "metadata": dict(metadata or {}),
        "next_payment_attempt": None,
        "number": None,
        "on_behalf_of": None,
        "parent": parent,
        "payment_settings": {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        "payments": envelope([], False, f"/v1/invoices/{invoice_id}/payments"),
        "period_end": now,
        "period_start": now,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": "draft",
        "status_transitions": {
            "finalized_at": None,
            "marked_uncollectible_at": None,
            "paid_at": None,
            "voided_at": None,
        },
        "subtotal": 0,
        "subtotal_excluding_tax": 0,
        "test_clock": customer.get("test_clock"),
        "total": 0,
        "total_discount_amounts": [],
        "total_excluding_tax": 0,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": None,
        "_days_until_due": days_until_due,
        "_subscription": subscription["id"] if subscription is not None else None,
        "_tax_behaviors": {},
    }
    if automatic_tax:
        invoice["automatic_tax"].update(
            {"enabled": True, "liability": {"type": "self"}, "provider": "stripe"}
        )
        locate_tax(invoice, customer)
    if save:
        ctx.store.insert(KIND, invoice)
    return invoice


def announce_created(ctx: RequestContext, invoice: StripeObject) -> None:
    """`invoice.created` (after the lines are in)."""
    clocked(ctx, invoice["customer"]).emit("invoice.created", invoice)


def line(
    invoice: StripeObject,
    *,
    amount: int,
    description: str,
    period: tuple[int, int],
    price: StripeObject | None,
    quantity: int | None,
    subscription_id: str | None,
    subscription_item: str | None = None,
    invoice_item: str | None = None,
    proration: bool = False,
    metadata: dict[str, str] | None = None,
    tax_behavior: str | None = None,
) -> StripeObject:
    """One `line_item`, from a subscription item or an invoice item, appended to `invoice`."""
    if invoice_item is not None:
        parent: StripeObject = {
            "invoice_item_details": {
                "invoice_item": invoice_item,
                "proration": proration,
                "proration_details": {"credited_items": None},
                "subscription": subscription_id,
            },
            "subscription_item_details": None,
            "type": "invoice_item_details",
        }
    else:
        parent = {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": proration,
                "proration_details": {"credited_items": None},
                "subscription": subscription_id,
                "subscription_item": subscription_item,
            },
            "type": "subscription_item_details",
        }
    item: StripeObject = {
        "id": new_id("il"),
        "object": "line_item",
        "amount": amount,
        "currency": invoice["currency"],
        "description": description,
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "invoice": invoice["id"],
        "livemode": False,
        "metadata": dict(metadata or {}),
        "parent": parent,
        "period": {"end": period[1], "start": period[0]},
        "pretax_credit_amounts": [],
        "pricing": _pricing(price),
        "quantity": quantity,
        "quantity_decimal": str(quantity) if quantity is not None else None,
        "subscription": subscription_id,
        "subtotal": amount,
        "taxes": [],
    }
    invoice["lines"]["data"].append(item)
    # A price's `unspecified` tax behavior is taken as `exclusive` (docs/emulator.md).
    behavior = tax_behavior if tax_behavior in ("inclusive", "exclusive") else "exclusive"
    invoice.setdefault("_tax_behaviors", {})[item["id"]] = behavior
    return item


def _pricing(price: StripeObject | None) -> StripeObject | None:
    if price is None:
        return None
    unit = price.get("unit_amount_decimal")
    return {
        "price_details": {"price": price["id"], "product": price["product"]},
        "type": "price_details",
        "unit_amount_decimal": unit,
    }


def pull_pending_items(
    ctx: RequestContext, invoice: StripeObject, *, subscription_id: str | None
) -> list[StripeObject]:
    """Attach the customer's pending invoice items to `invoice` as lines (those of another
    subscription stay pending); returns them."""
    taken: list[StripeObject] = []
    for ii in pending_items(ctx, invoice["customer"]):
        owner = _item_subscription(ii)
        if owner not in (None, subscription_id) or ii["currency"] != invoice["currency"]:
            continue
        taken.append(ii)
        add_item_line(invoice, ii)
    return taken


def claim_items(ctx: RequestContext, invoice: StripeObject, items: list[StripeObject]) -> None:
    """Mark pulled invoice items as belonging to `invoice` (when the invoice is saved)."""
    for ii in items:
        after = copy.deepcopy(ii)
        after["invoice"] = invoice["id"]
        ctx.store.replace(ITEM, after)


def add_item_line(invoice: StripeObject, ii: StripeObject) -> StripeObject:
    """The line of one invoice item."""
    details = ii["pricing"]["price_details"] if ii["pricing"] else None
    price = {"id": details["price"], "product": details["product"]} if details else None
    if price is not None:
        price["unit_amount_decimal"] = ii["pricing"]["unit_amount_decimal"]
    return line(
        invoice,
        amount=ii["amount"],
        description=ii["description"] or "",
        period=(ii["period"]["start"], ii["period"]["end"]),
        price=price,
        quantity=ii["quantity"],
        subscription_id=_item_subscription(ii),
        invoice_item=ii["id"],
        proration=ii["proration"],
        metadata=ii["metadata"],
        tax_behavior=ii.get("_tax_behavior"),
    )


def pending_items(ctx: RequestContext, customer_id: str) -> list[StripeObject]:
    """The customer's invoice items not yet on an invoice, oldest first."""
    return [
        ii for ii in ctx.store.collection(ITEM).lookup("customer", customer_id) if not ii["invoice"]
    ]


def _item_subscription(ii: StripeObject) -> str | None:
    parent = ii.get("parent")
    if parent and parent.get("subscription_details"):
        sub: str = parent["subscription_details"]["subscription"]
        return sub
    return None


def locate_tax(invoice: StripeObject, customer: StripeObject) -> None:
    """With automatic tax on: the customer's tax location and rate (kept privately as
    `_tax`) and `automatic_tax.status`; finalization re-locates."""
    if not invoice["automatic_tax"]["enabled"]:
        invoice["_tax"] = None
        return
    location = tax.customer_location(customer)
    invoice["automatic_tax"]["status"] = tax.automatic_tax_status(location)
    if location is None:
        invoice["_tax"] = None
        return
    exempt = customer.get("tax_exempt") or "none"
    rate = tax.customer_rate(location, exempt)
    invoice["_tax"] = {
        "basis_points": rate.basis_points,
        "jurisdiction": rate.jurisdiction,
        "country": rate.country,
        "state": rate.state,
        "tax_type": rate.tax_type,
        "reason": _taxability_reason(exempt, tax.rate_for(location).basis_points),
    }


def _taxability_reason(exempt: str, located_rate: int) -> str:
    if exempt == "exempt":
        return "customer_exempt"
    if exempt == "reverse":
        return "reverse_charge"
    return "standard_rated" if located_rate > 0 else "not_collecting"


def tax_rate_id(country: str, state: str | None) -> str:
    """The emulator's stable id for an automatic-tax rate (`txr_emulator_us_ca`)."""
    return "txr_emulator_" + "_".join(p.lower() for p in (country, state) if p)


def _line_taxes(invoice: StripeObject) -> None:
    info = invoice.get("_tax")
    behaviors = invoice.get("_tax_behaviors") or {}
    for li in invoice["lines"]["data"]:
        if not info:
            li["taxes"] = []
            continue
        rate = tax.TaxRate(
            int(info["basis_points"]),
            str(info["jurisdiction"]),
            str(info["country"]),
            info["state"],
            str(info["tax_type"]),
        )
        computed = tax.line_tax(int(li["amount"]), rate, behaviors.get(li["id"], "exclusive"))
        li["taxes"] = [
            {
                "amount": computed.tax,
                "tax_behavior": computed.tax_behavior,
                "tax_rate_details": {"tax_rate": tax_rate_id(rate.country, rate.state)},
                "taxability_reason": info["reason"],
                "taxable_amount": computed.taxable,
                "type": "tax_rate_details",
            }
        ]


def _total_taxes(invoice: StripeObject) -> list[StripeObject]:
    totals: dict[tuple[str, str, str], StripeObject] = {}
    for li in invoice["lines"]["data"]:
        for t in li.get("taxes") or []:
            key = (t["tax_rate_details"]["tax_rate"], t["tax_behavior"], t["taxability_reason"])
            if key not in totals:
                totals[key] = copy.deepcopy(t)
            else:
                totals[key]["amount"] += t["amount"]
                totals[key]["taxable_amount"] += t["taxable_amount"]
    return list(totals.values())


def recompute(invoice: StripeObject) -> None:
    """Totals from the lines and their automatic tax (computed while a draft): `subtotal`
    is the lines' amounts, `total` adds exclusive tax, `_excluding_tax` takes all tax out."""
    if invoice["status"] == "draft":
        _line_taxes(invoice)
    subtotal = sum(int(li["amount"]) for li in invoice["lines"]["data"])
    taxes = [t for li in invoice["lines"]["data"] for t in li.get("taxes") or []]
    inclusive = sum(int(t["amount"]) for t in taxes if t["tax_behavior"] == "inclusive")
    exclusive = sum(int(t["amount"]) for t in taxes if t["tax_behavior"] == "exclusive")
    invoice["total_taxes"] = _total_taxes(invoice)
    invoice["subtotal"] = subtotal
    invoice["subtotal_excluding_tax"] = subtotal - inclusive
    invoice["total"] = subtotal + exclusive
    invoice["total_excluding_tax"] = subtotal - inclusive
    invoice["amount_due"] = max(0, invoice["total"] + invoice["starting_balance"])
    invoice["amount_remaining"] = invoice["amount_due"] - invoice["amount_paid"]


def finalize(ctx: RequestContext, invoice: StripeObject) -> StripeObject:
    """draft -> open: number, balance applied, due date; a zero amount is paid at once."""
    ctx = clocked(ctx, invoice["customer"])
    now = ctx.now()
    before = copy.deepcopy(invoice)
    after = copy.deepcopy(invoice)
    customer = ctx.store.get("customer", invoice["customer"])
    if customer is not None:
        locate_tax(after, customer)
        recompute(after)
    if after["automatic_tax"]["status"] == "requires_location_inputs":
        raise tax_location_invalid()
    after["status"] = "open"
    after["number"] = _number(ctx, customer)
    after["effective_at"] = now
    after["status_transitions"]["finalized_at"] = now
    after["automatically_finalizes_at"] = None
    after["hosted_invoice_url"] = f"https://invoice.stripe.com/i/emulator/{after['id']}"
    after["invoice_pdf"] = f"https://pay.stripe.com/invoice/emulator/{after['id']}/pdf"
    if after["collection_method"] == "send_invoice" and after["due_date"] is None:
        after["due_date"] = now + DAY * int(after["_days_until_due"] or 0)
    if customer is not None:
        _apply_balance(ctx, customer, after)
    recompute(after)
    minimum = MINIMUM_AMOUNTS.get(after["currency"], 0)
    if customer is not None and 0 < after["amount_due"] < minimum:
        _carry_below_minimum(ctx, after)
    if after["collection_method"] == "charge_automatically" and after["amount_due"] > 0:
        after["next_payment_attempt"] = now
    ctx.store.replace(KIND, after)
    ctx.emit("invoice.finalized", after, previous_attributes=previous_attributes(before, after))
    if after["amount_due"] == 0:
        after = _mark_paid(ctx, after, out_of_band=False)
    elif after["collection_method"] == "send_invoice" and "customer_balance" in (
        after["payment_settings"]["payment_method_types"] or []
    ):
        after = _await_bank_transfer(ctx, after)
    return after


def tax_location_invalid() -> StripeError:
    """Stripe's 400 when automatic tax cannot locate the customer."""
    return invalid(
        "The customer's location isn't recognized. Automatic tax needs a valid address "
        "(a US address needs a valid ZIP code) or IP address to calculate tax.",
        param="customer_details[address]",
        code="customer_tax_location_invalid",
    )


def finalization_failed(ctx: RequestContext, invoice: StripeObject, error: StripeError) -> None:
    """An automatic finalization Stripe could not do: the invoice stays a draft with
    `last_finalization_error`, no longer auto-finalizing, and `invoice.finalization_failed`."""
    ctx = clocked(ctx, invoice["customer"])
    after = copy.deepcopy(invoice)
    after["last_finalization_error"] = {
        "code": error.code,
        "doc_url": error.body(request_id="")["error"].get("doc_url"),
        "message": error.message,
        "param": error.param,
        "type": error.type,
    }
    after["automatically_finalizes_at"] = None
    ctx.store.replace(KIND, after)
    ctx.emit(
        "invoice.finalization_failed",
        after,
        previous_attributes=previous_attributes(invoice, after),
    )


def _apply_balance(ctx: RequestContext, customer: StripeObject, invoice: StripeObject) -> None:
    """Stripe's rule: `amount_due = max(0, total + balance)`; what is left (an unused credit,
    or a negative total) stays on the customer's balance as `ending_balance`."""
    balance = int(customer.get("balance") or 0)
    if customer.get("currency") not in (None, invoice["currency"]):
        balance = 0
    total = int(invoice["total"])
    due = max(0, total + balance)
    ending = balance + total - due
    invoice["starting_balance"] = balance
    invoice["ending_balance"] = ending
    if ending == balance:
        return
    applied = balance - ending
    after = copy.deepcopy(customer)
    after["balance"] = ending
    ctx.store.insert(
        "customer_balance_transaction",
        {
            "id": new_id("cbtxn"),
            "object": "customer_balance_transaction",
            "amount": -applied,
            "checkout_session": None,
            "created": ctx.now(),
            "credit_note": None,
            "currency": invoice["currency"],
            "customer": customer["id"],
            "customer_account": None,
            "description": None,
            "ending_balance": ending,
            "invoice": invoice["id"],
            "livemode": False,
            "metadata": {},
            "type": "applied_to_invoice",
        },
    )
    ctx.store.replace("customer", after)
    ctx.emit("customer.updated", after, previous_attributes={"balance": customer.get("balance")})


def _carry_below_minimum(ctx: RequestContext, invoice: StripeObject) -> None:
    """Stripe does not charge less than the currency's minimum: the amount moves to the
    customer's balance (owed, applied to the next invoice) and the invoice is paid."""
    customer = ctx.store.get("customer", invoice["customer"])
    assert customer is not None
    owed = int(invoice["amount_due"])
    invoice["ending_balance"] = int(invoice["ending_balance"] or 0) + owed
    invoice["starting_balance"] -= owed
    recompute(invoice)
    after = copy.deepcopy(customer)
    after["balance"] = int(customer.get("balance") or 0) + owed
    ctx.store.insert(
        "customer_balance_transaction",
        {
            "id": new_id("cbtxn"),
            "object": "customer_balance_transaction",
            "amount": owed,
            "checkout_session": None,
            "created": ctx.now(),
            "credit_note": None,
            "currency": invoice["currency"],
            "customer": customer["id"],
            "customer_account": None,
            "description": "Invoice amount below the minimum charge",
            "ending_balance": after["balance"],
            "invoice": invoice["id"],
            "livemode": False,
            "metadata": {},
            "type": "unapplied_from_invoice",
        },
    )
    ctx.store.replace("customer", after)
    ctx.emit("customer.updated", after, previous_attributes={"balance": customer.get("balance")})


def _number(ctx: RequestContext, customer: StripeObject | None) -> str:
    prefix = (customer or {}).get("invoice_prefix") or "EMUL0000"
    count = sum(
        1
        for i in ctx.store.collection(KIND).lookup("customer", (customer or {}).get("id"))
        if i["number"]
    )
    return f"{prefix}-{count + 1:04d}"


def payment_method_for(ctx: RequestContext, invoice: StripeObject) -> str | None:
    """The invoice's, then its subscription's, then the customer's default payment method."""
    if invoice["default_payment_method"]:
        pm: str = invoice["default_payment_method"]
        return pm
    sub = ctx.store.get("subscription", invoice["_subscription"] or "")
    if sub is not None and sub.get("default_payment_method"):
        found: str = sub["default_payment_method"]
        return found
    customer = ctx.store.get("customer", invoice["customer"])
    settings = (customer or {}).get("invoice_settings") or {}
    default: str | None = settings.get("default_payment_method")
    return default


def attempt_payment(
    ctx: RequestContext,
    invoice: StripeObject,
    *,
    payment_method: str | None = None,
    off_session: bool = True,
    raise_decline: bool = False,
    automatic: bool = False,
) -> StripeObject:
    """Charge an open invoice; returns the invoice after the attempt. A decline (or no
    payment method) leaves it open, emits `invoice.payment_failed` (with the next retry
    of a subscription invoice's schedule when `automatic`, resources/dunning.py), and
    re-raises when `raise_decline`."""
    ctx = clocked(ctx, invoice["customer"])
    pm_id = payment_method or payment_method_for(ctx, invoice)
    after = copy.deepcopy(invoice)
    after["attempted"] = True
    after["attempt_count"] += 1
    after["next_payment_attempt"] = None

    def failed(decline_code: str | None = None, *, action_required: bool = False) -> None:
        dunning.after_failure(
            ctx,
            after,
            automatic=automatic,
            had_payment_method=pm_id is not None,
            decline_code=decline_code,
        )
        ctx.store.replace(KIND, after)
        _failed(ctx, after, action_required=action_required)

    if pm_id is None:
        failed()
        return after
    try:
        intent = payment_intents.create(
            ctx,
            {
                "amount": after["amount_remaining"],
                "currency": after["currency"],
                "customer": after["customer"],
                "payment_method": pm_id,
                "confirm": True,
                "off_session": off_session,
                "description": f"Invoice {after['number']}",
                "metadata": {},
            },
            {},
        )
    except PaymentError as declined:
        declined_intent = declined.extra.get("payment_intent") or {}
        _record_payment(ctx, after, declined_intent.get("id"), paid=False)
        failed(declined.extra.get("decline_code"))
        if raise_decline:
            raise
        return after
    except StripeError:
        # The payment method cannot be used at all (e.g. detached, single-use): a failed
        # attempt, not an error of the request that triggered it (a clock advance).
        failed()
        if raise_decline:
            raise
        return after
    succeeded = intent["status"] == "succeeded"
    _record_payment(ctx, after, intent["id"], paid=succeeded)
    if not succeeded:
        failed(action_required=intent["status"] == "requires_action")
        return after
    after["amount_paid"] += after["amount_remaining"]
    recompute(after)
    ctx.store.replace(KIND, after)
    return _mark_paid(ctx, after, out_of_band=False)


# --- automatic retries (resources/dunning.py), for the subscriptions' clock walk ----------


def retry_due(invoice: StripeObject) -> int | None:
    """When the clock walk retries this open subscription invoice (None: never)."""
    return dunning.retry_due(invoice)


def retries_exhausted(invoice: StripeObject) -> bool:
    """Whether the invoice's last scheduled retry has just failed."""
    return dunning.exhausted(invoice)


def exhausted_subscription_status(ctx: RequestContext) -> str:
    """What a subscription becomes once every retry failed: canceled, unpaid or past_due."""
    return dunning.settings_of(ctx.emulator).subscription_status


def retry(ctx: RequestContext, invoice_id: str) -> None:
    """The scheduled automatic retry of an open invoice; none for a subscription that is
    canceled or unpaid (Stripe stops collecting those: the SDK's `Subscription.status`
    and `cancellation_details` docstrings)."""
    invoice = ctx.store.get(KIND, invoice_id)
    if invoice is None or invoice["status"] != "open":
        return
    ctx = clocked(ctx, invoice["customer"])
    sub = ctx.store.get("subscription", invoice.get("_subscription") or "")
    if sub is None or sub["status"] in ("canceled", "incomplete_expired", "unpaid"):
        stop_collection(ctx, invoice)
        return
    attempt_payment(ctx, invoice, automatic=True)


def stop_collection(ctx: RequestContext, invoice: StripeObject) -> None:
    """No more automatic attempts on an open invoice (`next_payment_attempt = null`)."""
    after = copy.deepcopy(invoice)
    after["next_payment_attempt"] = None
    after["auto_advance"] = False
    if after.get("_dunning"):
        after["_dunning"] = {**after["_dunning"], "at": None}
    if previous_attributes(invoice, after):
        ctx.store.replace(KIND, after)


def _record_payment(
    ctx: RequestContext, invoice: StripeObject, intent_id: str | None, *, paid: bool
) -> None:
    """An `invoice_payment` in the invoice's includable `payments` list, newest first."""
    now = ctx.now()
    payment: StripeObject = {
        "id": new_id("inpay"),
        "object": "invoice_payment",
        "amount_paid": invoice["amount_remaining"] if paid else None,
        "amount_requested": invoice["amount_remaining"],
        "created": now,
        "currency": invoice["currency"],
        "invoice": invoice["id"],
        "is_default": True,
        "livemode": False,
        "payment": {"payment_intent": intent_id, "type": "payment_intent"},
        "status": "paid" if paid else "open",
        "status_transitions": {"canceled_at": None, "paid_at": now if paid else None},
    }
    payments = invoice["payments"]
    for earlier in payments["data"]:
        earlier["is_default"] = False
    payments["data"].insert(0, payment)


def _failed(ctx: RequestContext, invoice: StripeObject, *, action_required: bool = False) -> None:
    ctx.emit(
        "invoice.payment_action_required" if action_required else "invoice.payment_failed",
        invoice,
    )
    for hook in PAYMENT_HOOKS:
        hook(ctx, invoice, False)
    if (
        dunning.exhausted(invoice)
        and dunning.settings_of(ctx.emulator).invoice_status == "uncollectible"
    ):
        stored = ctx.store.get(KIND, invoice["id"])
        if stored is not None and stored["status"] == "open":
            _transition(
                ctx,
                stored,
                "uncollectible",
                "marked_uncollectible_at",
                "invoice.marked_uncollectible",
                {},
                reason="max_payment_attempts",
            )


def _mark_paid(ctx: RequestContext, invoice: StripeObject, *, out_of_band: bool) -> StripeObject:
    after = copy.deepcopy(invoice)
    after["status"] = "paid"
    after.pop("status_details", None)
    after["status_transitions"]["paid_at"] = ctx.now()
    after["next_payment_attempt"] = None
    after["auto_advance"] = False
    if out_of_band:
        after["amount_paid_off_stripe"] = after["amount_remaining"]
        after["amount_paid"] += after["amount_remaining"]
    recompute(after)
    ctx.store.replace(KIND, after)
    ctx.emit("invoice.paid", after)
    if not out_of_band:
        ctx.emit("invoice.payment_succeeded", after)
    for hook in PAYMENT_HOOKS:
        hook(ctx, after, True)
    return after


# --- payment settings ---------------------------------------------------------------------


def payment_settings(
    raw: Any, current: StripeObject | None, collection_method: str, cur: str
) -> StripeObject:
    """The invoice's `payment_settings` from `payment_settings[...]` (`""` unsets all,
    or one field): `payment_method_types` (`card`, `customer_balance`) and
    `payment_method_options[customer_balance]`; every other field is refused by name."""
    out: StripeObject = copy.deepcopy(current) if current else _no_payment_settings()
    if raw is None:
        return out
    if raw == "":
        return _no_payment_settings()
    refuse_unhandled(raw, _PAYMENT_SETTINGS_HANDLED, prefix="payment_settings")
    if "payment_method_types" in raw:
        types = raw["payment_method_types"]
        if types in ("", None):
            out["payment_method_types"] = None
        else:
            for i, name in enumerate(types):
                if name not in PAYMENT_METHOD_TYPES:
                    where = f"payment_settings[payment_method_types][{i}]"
                    raise invalid(
                        f"The emulator collects invoices with {', '.join(PAYMENT_METHOD_TYPES)} "
                        f"only; `{name}` is not supported (see docs/emulator.md).",
                        param=where,
                    )
            if "customer_balance" in types and collection_method != "send_invoice":
                raise invalid(
                    "The emulator supports `customer_balance` on `send_invoice` invoices only.",
                    param="payment_settings[payment_method_types]",
                )
            if "customer_balance" in types and cur not in cash_balances.BANK_TRANSFER_TYPES:
                raise invalid(
                    "The emulator offers bank transfers in usd, eur and gbp only.",
                    param="payment_settings[payment_method_types]",
                )
            out["payment_method_types"] = list(dict.fromkeys(types))
    if "payment_method_options" in raw:
        out["payment_method_options"] = _payment_method_options(
            raw["payment_method_options"], out["payment_method_options"]
        )
    return out


def _no_payment_settings() -> StripeObject:
    return {"default_mandate": None, "payment_method_options": None, "payment_method_types": None}


_OPTION_KEYS = (
    "acss_debit",
    "bancontact",
    "card",
    "customer_balance",
    "konbini",
    "sepa_debit",
    "us_bank_account",
)


def _payment_method_options(raw: Any, current: StripeObject | None) -> StripeObject | None:
    if raw in ("", None):
        return None
    where = "payment_settings[payment_method_options]"
    refuse_unhandled(raw, _PAYMENT_OPTIONS_HANDLED, prefix=where)
    out: StripeObject = copy.deepcopy(current) if current else dict.fromkeys(_OPTION_KEYS)
    balance = raw.get("customer_balance")
    if balance in ("", None):
        out["customer_balance"] = None
        return out
    where += "[customer_balance]"
    refuse_unhandled(balance, frozenset({"bank_transfer", "funding_type"}), prefix=where)
    funding = balance.get("funding_type")
    check_enum(funding, f"{where}[funding_type]", ("bank_transfer",))
    transfer = balance.get("bank_transfer") or {}
    refuse_unhandled(
        transfer, frozenset({"type", "eu_bank_transfer"}), prefix=f"{where}[bank_transfer]"
    )
    kind = transfer.get("type")
    check_enum(
        kind, f"{where}[bank_transfer][type]", tuple(cash_balances.BANK_TRANSFER_TYPES.values())
    )
    eu = transfer.get("eu_bank_transfer")
    if eu is not None and kind != "eu_bank_transfer":
        raise invalid(
            "`eu_bank_transfer` goes with `type=eu_bank_transfer`.",
            param=f"{where}[bank_transfer][eu_bank_transfer]",
        )
    out["customer_balance"] = {
        "bank_transfer": {
            "eu_bank_transfer": {"country": eu["country"]} if eu else None,
            "type": kind,
        },
        "funding_type": funding,
    }
    return out


def _await_bank_transfer(ctx: RequestContext, invoice: StripeObject) -> StripeObject:
    """A finalized `send_invoice` invoice payable by `customer_balance`: a PaymentIntent
    waiting for a bank transfer (paid at once from an available cash balance; later by
    `fund_cash_balance`, through `_on_intent_outcome`)."""
    options = (invoice["payment_settings"]["payment_method_options"] or {}).get(
        "customer_balance"
    ) or {}
    kind = (options.get("bank_transfer") or {}).get("type") or cash_balances.BANK_TRANSFER_TYPES[
        invoice["currency"]
    ]
    transfer: StripeObject = {"type": kind}
    eu = (options.get("bank_transfer") or {}).get("eu_bank_transfer")
    if eu:
        transfer["eu_bank_transfer"] = {"country": eu["country"]}
    intent = payment_intents.create(
        ctx,
        {
            "amount": invoice["amount_remaining"],
            "currency": invoice["currency"],
            "customer": invoice["customer"],
            "allowed_payment_method_types": ["customer_balance"],
            "payment_method_data": {"type": "customer_balance"},
            "payment_method_options": {
                "customer_balance": {"funding_type": "bank_transfer", "bank_transfer": transfer}
            },
            "confirm": True,
            "description": f"Invoice {invoice['number']}",
            "metadata": {},
        },
        {},
    )
    after = copy.deepcopy(ctx.store.get(KIND, invoice["id"]) or invoice)
    succeeded = intent["status"] == "succeeded"
    _record_payment(ctx, after, intent["id"], paid=succeeded)
    if not succeeded:
        ctx.store.replace(KIND, after)
        return after
    after["amount_paid"] += after["amount_remaining"]
    recompute(after)
    ctx.store.replace(KIND, after)
    return _mark_paid(ctx, after, out_of_band=False)


# --- invoice endpoints --------------------------------------------------------------------


def create(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/invoices`: a draft, `auto_advance` false by default; pending invoice items
    only with `pending_invoice_items_behavior=include`."""
    refuse_unhandled(params, _CREATE_HANDLED)
    if "customer" not in params:
        raise invalid("Missing required param: customer.", param="customer")
    customer = fetch(
        ctx, "customer", params["customer"], "customer", param="customer", in_body=True
    )
    method = params.get("collection_method", "charge_automatically")
    check_enum(method, "collection_method", COLLECTION_METHODS)
    behavior = params.get("pending_invoice_items_behavior", "exclude")
    check_enum(behavior, "pending_invoice_items_behavior", PENDING_BEHAVIORS)
    if method == "send_invoice" and "days_until_due" not in params and "due_date" not in params:
        raise invalid(
            "Invoices with `collection_method=send_invoice` need `days_until_due` or `due_date`.",
            param="days_until_due",
        )
    if method == "charge_automatically" and ("days_until_due" in params or "due_date" in params):
        raise invalid(
            "`days_until_due` and `due_date` are only for `collection_method=send_invoice`.",
            param="days_until_due",
        )
    if "subscription" in params:
        raise invalid(
            "The emulator drafts subscription invoices itself; `subscription` on invoice "
            "create is not supported.",
            param="subscription",
        )
    pm = params.get("default_payment_method")
    if pm is not None:
        _check_attached(ctx, pm, customer["id"], "default_payment_method")
    cur = currency(params.get("currency") or customer.get("currency") or "usd")
    settings = payment_settings(params.get("payment_settings"), None, method, cur)
    invoice = draft(
        ctx,
        customer,
        cur=cur,
        billing_reason="manual",
        collection_method=method,
        days_until_due=params.get("days_until_due"),
        auto_advance=bool(params.get("auto_advance", False)),
        default_payment_method=pm,
        metadata=new_metadata(params.get("metadata")),
        description=params.get("description"),
        automatic_tax=bool((params.get("automatic_tax") or {}).get("enabled")),
    )
    if "due_date" in params:
        invoice["due_date"] = params["due_date"]
    for name in ("footer", "statement_descriptor"):
        invoice[name] = params.get(name)
    invoice["payment_settings"] = settings
    taken = pull_pending_items(ctx, invoice, subscription_id=None) if behavior == "include" else []
    claim_items(ctx, invoice, taken)
    recompute(invoice)
    announce_created(ctx, invoice)
    return render(ctx.store, invoice, expand_of(params))


def _check_attached(ctx: RequestContext, pm_id: str, customer_id: str, param: str) -> None:
    pm = ctx.store.get("payment_method", pm_id)
    if pm is None or pm.get("customer") != customer_id:
        raise invalid(
            f"The customer does not have a payment method with the ID {pm_id}. The payment "
            "method must be attached to the customer.",
            param=param,
        )


def retrieve(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/invoices/{invoice}`."""
    return render(ctx.store, _invoice(ctx, path), expand_of(params))


def list_invoices(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/invoices` (`customer`, `subscription`, `status`, `collection_method`,
    `created`, `due_date`)."""
    refuse_unhandled(params, _LIST_HANDLED)
    equals: dict[str, list[Any]] = {}
    for name in ("customer", "status", "collection_method"):
        if name in params:
            equals[name] = [params[name]]
    if "subscription" in params:
        equals["_subscription"] = [params["subscription"]]
    check_enum(params.get("status"), "status", ("draft", "open", "paid", "uncollectible", "void"))
    due = created_predicate(params.get("due_date"), "due_date")

    def due_matches(invoice: StripeObject) -> bool:
        # An invoice without a due date never matches a `due_date` filter.
        return invoice["due_date"] is not None and (due is None or due(invoice))

    return list_response(
        ctx.store,
        kind=KIND,
        params=params,
        url="/v1/invoices",
        equals=equals,
        predicate=due_matches if "due_date" in params else None,
    )


def list_lines(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/invoices/{invoice}/lines`: a page of at most `limit` lines, in invoice
    order, after `starting_after` / before `ending_before` (a line id)."""
    refuse_unhandled(params, _LINES_HANDLED)
    invoice = _invoice(ctx, path)
    limit = int(params.get("limit", 10))
    if not 1 <= limit <= 100:
        raise invalid("`limit` must be between 1 and 100.", param="limit")
    if "starting_after" in params and "ending_before" in params:
        raise invalid(
            "You may only specify one of these parameters: starting_after, ending_before.",
            param="starting_after",
        )
    lines = invoice["lines"]["data"]
    ids = [li["id"] for li in lines]
    for name in ("starting_after", "ending_before"):
        if name in params and params[name] not in ids:
            raise invalid(f"No such line item: '{params[name]}'", param=name)
    if "ending_before" in params:
        end = ids.index(params["ending_before"])
        page = lines[max(0, end - limit) : end]
        has_more = end - limit > 0
    else:
        start = ids.index(params["starting_after"]) + 1 if "starting_after" in params else 0
        page = lines[start : start + limit]
        has_more = start + limit < len(lines)
    return envelope(copy.deepcopy(page), has_more, invoice["lines"]["url"])


def update(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/invoices/{invoice}`: metadata and description always; `auto_advance`,
    `default_payment_method`, `days_until_due`, `due_date` while draft."""
    refuse_unhandled(params, _UPDATE_HANDLED)
    before = _invoice(ctx, path)
    after = copy.deepcopy(before)
    for name in params:
        if name in ("metadata", "description", "expand", "auto_advance", "footer"):
            continue
        if before["status"] != "draft":
            raise invalid(f"You can only update `{name}` on a draft invoice.", param=name)
    if "auto_advance" in params:
        after["auto_advance"] = bool(params["auto_advance"])
        if after["status"] == "draft":
            after["automatically_finalizes_at"] = (
                after["created"] + FINALIZE_DELAY if after["auto_advance"] else None
            )
    if "default_payment_method" in params:
        pm = params["default_payment_method"] or None
        if pm is not None:
            _check_attached(ctx, pm, after["customer"], "default_payment_method")
        after["default_payment_method"] = pm
    if "days_until_due" in params:
        after["_days_until_due"] = params["days_until_due"]
    if "payment_settings" in params:
        after["payment_settings"] = payment_settings(
            params["payment_settings"],
            after["payment_settings"],
            after["collection_method"],
            after["currency"],
        )
    for name in ("description", "footer", "due_date", "statement_descriptor"):
        if name in params:
            after[name] = params[name] or None
    after["metadata"] = apply_metadata(after["metadata"], params.get("metadata"))
    changes = previous_attributes(before, after)
    if changes:
        ctx.store.replace(KIND, after)
        clocked(ctx, after["customer"]).emit("invoice.updated", after, previous_attributes=changes)
    return render(ctx.store, after, expand_of(params))


def delete(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`DELETE /v1/invoices/{invoice}`: drafts only; their invoice items become pending."""
    invoice = _invoice(ctx, path)
    if invoice["status"] != "draft":
        raise invalid(
            "You can only delete draft invoices. Void or mark uncollectible instead.",
            code="invoice_not_editable",
        )
    for ii in list(ctx.store.collection(ITEM).lookup("customer", invoice["customer"])):
        if ii["invoice"] == invoice["id"]:
            after = copy.deepcopy(ii)
            after["invoice"] = None
            ctx.store.replace(ITEM, after)
    ctx.store.delete(KIND, invoice["id"])
    clocked(ctx, invoice["customer"]).emit("invoice.deleted", invoice)
    return deleted_stub(invoice)


def finalize_endpoint(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/invoices/{invoice}/finalize`."""
    invoice = _invoice(ctx, path)
    if invoice["status"] != "draft":
        raise invalid(
            "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
            code="invoice_not_editable",
        )
    after = finalize(ctx, invoice)
    if "auto_advance" in params:
        after["auto_advance"] = bool(params["auto_advance"])
    return render(ctx.store, ctx.store.get(KIND, after["id"]) or after, expand_of(params))


def pay(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/invoices/{invoice}/pay` (`payment_method`, `paid_out_of_band`,
    `off_session`); a draft is finalized first; a decline answers 402. An uncollectible
    invoice can be paid."""
    refuse_unhandled(params, _PAY_HANDLED)
    invoice = _invoice(ctx, path)
    if invoice["status"] in ("paid", "void"):
        raise invalid(f"Invoice is already {invoice['status']}", code="invoice_not_open")
    if invoice["status"] == "draft":
        invoice = finalize(ctx, invoice)
        if invoice["status"] == "paid":
            return render(ctx.store, invoice, expand_of(params))
    if params.get("paid_out_of_band"):
        after = _mark_paid(clocked(ctx, invoice["customer"]), invoice, out_of_band=True)
        return render(ctx.store, after, expand_of(params))
    pm = params.get("payment_method")
    if pm is not None:
        pm = _resolve_for(ctx, pm, invoice["customer"])
    after = attempt_payment(
        ctx,
        invoice,
        payment_method=pm,
        off_session=bool(params.get("off_session", True)),
        raise_decline=True,
    )
    if after["status"] != "paid" and pm is None and payment_method_for(ctx, after) is None:
        raise invalid(
            "This invoice cannot be paid: the customer has no default payment method. Pass "
            "`payment_method` or set the customer's invoice_settings.default_payment_method.",
            param="payment_method",
        )
    if after["status"] != "paid":
        raise invalid(
            "Payment for this invoice requires a payment method that needs authentication; "
            "confirm the PaymentIntent in the invoice's payments.",
            code="invoice_payment_intent_requires_action",
        )
    return render(ctx.store, after, expand_of(params))


def _resolve_for(ctx: RequestContext, pm_id: str, customer_id: str) -> str:
    from stripe_emulator.resources import payment_methods

    pm = payment_methods.resolve(ctx, pm_id, param="payment_method")
    if pm["customer"] is None:
        pm = payment_methods.attach_to(ctx, pm, customer_id)
    resolved: str = pm["id"]
    return resolved


def void(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/invoices/{invoice}/void`: open or uncollectible invoices."""
    invoice = _invoice(ctx, path)
    if invoice["status"] not in ("open", "uncollectible"):
        raise invalid(
            f"You can only void open or uncollectible invoices; this one is {invoice['status']}.",
            code="invoice_not_open",
        )
    return _transition(ctx, invoice, "void", "voided_at", "invoice.voided", params)


def mark_uncollectible(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/invoices/{invoice}/mark_uncollectible`: open invoices."""
    invoice = _invoice(ctx, path)
    if invoice["status"] != "open":
        raise invalid("You can only mark open invoices as uncollectible.", code="invoice_not_open")
    return _transition(
        ctx,
        invoice,
        "uncollectible",
        "marked_uncollectible_at",
        "invoice.marked_uncollectible",
        params,
    )


def send(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/invoices/{invoice}/send`: finalized `send_invoice` invoices (the SDK's
    `send_invoice` docstring: paid ones too, the email then not mentioning the payment);
    test mode sends no email, only `invoice.sent`."""
    invoice = _invoice(ctx, path)
    if invoice["collection_method"] != "send_invoice":
        raise invalid(
            "You can only manually send an invoice if its collection method is 'send_invoice'.",
            code="invoice_not_editable",
        )
    if invoice["status"] == "draft":
        raise invalid(
            "You can only send finalized invoices; finalize this draft first.",
            code="invoice_not_editable",
        )
    if invoice["status"] == "void":
        raise invalid("You cannot send a voided invoice.", code="invoice_not_editable")
    clocked(ctx, invoice["customer"]).emit("invoice.sent", invoice)
    return render(ctx.store, invoice, expand_of(params))


def _transition(
    ctx: RequestContext,
    invoice: StripeObject,
    status: str,
    stamp: str,
    event: str,
    params: Params,
    *,
    reason: str = "user_forgiven",
) -> StripeObject:
    ctx = clocked(ctx, invoice["customer"])
    before = invoice
    after = copy.deepcopy(invoice)
    after["status"] = status
    # Served only while uncollectible (API 2026-09-30.endive changelog, "Adds detailed
    # status to explain why an Invoice is uncollectable").
    after.pop("status_details", None)
    if status == "uncollectible":
        after["status_details"] = {"uncollectible": {"reason": reason}}
    after["status_transitions"][stamp] = ctx.now()
    after["next_payment_attempt"] = None
    after["auto_advance"] = False
    ctx.store.replace(KIND, after)
    ctx.emit(event, after, previous_attributes=previous_attributes(before, after))
    return render(ctx.store, after, expand_of(params))


def _invoice(ctx: RequestContext, path: dict[str, str]) -> StripeObject:
    return fetch(ctx, KIND, path["invoice"], "invoice")


# --- create_preview -----------------------------------------------------------------------

# The subscriptions module provides the preview of a subscription's next invoice.
PreviewProvider = Callable[[RequestContext, Params], StripeObject]
PREVIEW: dict[str, PreviewProvider] = {}


def create_preview(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/invoices/create_preview`: the next invoice, computed and not saved."""
    refuse_unhandled(params, _PREVIEW_HANDLED)
    refuse_unhandled(
        params.get("subscription_details") or {},
        _PREVIEW_DETAILS_HANDLED,
        prefix="subscription_details",
    )
    _check_proration_date(ctx, params)
    by_schedule = PREVIEW.get("schedule")
    if "schedule" in params and by_schedule is not None:
        return render(ctx.store, by_schedule(ctx, params))
    provider = PREVIEW.get("subscription")
    if ("subscription" in params or "subscription_details" in params) and provider is not None:
        return render(ctx.store, provider(ctx, params))
    if "customer" not in params:
        raise invalid("Missing required param: customer (or subscription).", param="customer")
    customer = fetch(
        ctx, "customer", params["customer"], "customer", param="customer", in_body=True
    )
    cur = currency(params.get("currency") or customer.get("currency") or "usd")
    automatic = bool((params.get("automatic_tax") or {}).get("enabled"))
    invoice = draft(
        ctx, customer, cur=cur, billing_reason="manual", save=False, automatic_tax=automatic
    )
    invoice["id"] = "upcoming_in_emulator"
    pull_pending_items(ctx, invoice, subscription_id=None)
    recompute(invoice)
    return render(ctx.store, preview_view(ctx, invoice))


def _check_proration_date(ctx: RequestContext, params: Params) -> None:
    """`subscription_details.proration_date` as the SDK's docstring states it: it needs
    `subscription` and `subscription_details.items` (`trial_end` is not handled here), not
    with `proration_behavior=none`, and within the subscription's current period (and the
    current phase of its schedule, when it has one)."""
    details = params.get("subscription_details") or {}
    if "proration_date" not in details:
        return
    where = "subscription_details[proration_date]"
    if "subscription" not in params or "items" not in details:
        raise invalid(
            "When `subscription_details[proration_date]` is set, `subscription` and "
            "`subscription_details[items]` are required.",
            param=where,
        )
    if details.get("proration_behavior") == "none":
        raise invalid(
            "`subscription_details[proration_date]` cannot be used with "
            "`subscription_details[proration_behavior]=none`.",
            param=where,
        )
    sub = ctx.store.get("subscription", str(params["subscription"]))
    items = [] if sub is None else sub["items"]["data"]
    if not items:
        return  # the subscription preview refuses an unknown subscription itself
    at = int(details["proration_date"])
    start = min(int(i["current_period_start"]) for i in items)
    end = max(int(i["current_period_end"]) for i in items)
    phase_end = sub.get("_schedule_phase_end") if sub is not None else None
    if not start <= at <= end or (phase_end is not None and at > int(phase_end)):
        raise invalid(
            "The proration date must be within the current subscription period"
            + (" and the current phase of its schedule." if phase_end is not None else "."),
            param=where,
        )


def preview_view(ctx: RequestContext, invoice: StripeObject) -> StripeObject:
    """A preview as Stripe serves it: an `upcoming_in_...` id, `billing_reason: upcoming`,
    and the customer's balance applied as finalization would apply it (nothing is saved)."""
    out = copy.deepcopy(invoice)
    customer = ctx.store.get("customer", invoice["customer"]) or {}
    balance = int(customer.get("balance") or 0)
    if balance and customer.get("currency") in (None, invoice["currency"]):
        subtotal = int(out["total"])
        applied = max(balance, -subtotal) if balance < 0 else balance
        out["starting_balance"] = balance
        out["ending_balance"] = balance - applied
        recompute(out)
    out["id"] = f"upcoming_{new_id('in')}"
    # The SDK's `Invoice.billing_reason`: "`upcoming`: Reserved for upcoming invoices created
    # through the Create Preview Invoice API or when an `invoice.upcoming` event is generated".
    out["billing_reason"] = "upcoming"
    out["lines"]["url"] = "/v1/invoices/upcoming/lines"
    for li in out["lines"]["data"]:
        li["invoice"] = out["id"]
    return out


# --- invoice items ------------------------------------------------------------------------


def create_item(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/invoiceitems`: `amount`, or `pricing[price]` with `quantity`, or
    `price_data`; pending (no invoice) unless `invoice` names a draft."""
    refuse_unhandled(params, _ITEM_CREATE_HANDLED)
    if "customer" not in params:
        raise invalid("Missing required param: customer.", param="customer")
    customer = fetch(
        ctx, "customer", params["customer"], "customer", param="customer", in_body=True
    )
    ctx = clocked(ctx, customer["id"])
    quantity = int(params.get("quantity", 1))
    price: StripeObject | None = None
    pricing = params.get("pricing") or {}
    if "price" in pricing:
        price = fetch(ctx, "price", pricing["price"], "price", param="pricing[price]", in_body=True)
        cur = price["currency"]
        unit = int(price["unit_amount"] or 0)
        amount = unit * quantity
    elif "price_data" in params:
        data = params["price_data"]
        cur = currency(data["currency"], param="price_data[currency]")
        unit = int(data.get("unit_amount", 0))
        amount = unit * quantity
        price = {
            "id": new_id("price"),
            "product": data["product"],
            "unit_amount_decimal": str(unit),
            "tax_behavior": data.get("tax_behavior", "unspecified"),
        }
    elif "amount" in params:
        amount = int(params["amount"])
        if "currency" not in params and not customer.get("currency"):
            raise invalid("Missing required param: currency.", param="currency")
        cur = currency(params.get("currency") or customer["currency"])
    else:
        raise invalid(
            "You must specify either `amount`, `pricing[price]` or `price_data`.",
            param="amount",
        )
    if "currency" in params and currency(params["currency"]) != cur:
        raise invalid("The currency must match the price's currency.", param="currency")
    invoice_id = params.get("invoice")
    if invoice_id is not None:
        target = fetch(ctx, KIND, invoice_id, "invoice", param="invoice", in_body=True)
        if target["status"] != "draft":
            raise invalid(
                "Invoice items can only be added to draft invoices.",
                param="invoice",
                code="invoice_not_editable",
            )
    now = ctx.now()
    period = params.get("period") or {"start": now, "end": now}
    sub_id = params.get("subscription")
    if sub_id is not None:
        owned = fetch(
            ctx, "subscription", sub_id, "subscription", param="subscription", in_body=True
        )
        if owned["customer"] != customer["id"]:
            # Stripe's wording (quoted in stripe/stripe-dotnet#1857).
            raise invalid(
                f"Customer {customer['id']} does not have a subscription with ID {sub_id}",
                param="subscription",
            )
    ii = build_item(
        ctx,
        customer,
        amount=amount,
        cur=cur,
        description=params.get("description"),
        period=(int(period["start"]), int(period["end"])),
        price=price,
        quantity=quantity,
        subscription_id=sub_id,
        metadata=new_metadata(params.get("metadata")),
    )
    if invoice_id is not None:
        stored = ctx.store.get(KIND, invoice_id)
        assert stored is not None
        updated = copy.deepcopy(stored)
        ii["invoice"] = invoice_id
        add_item_line(updated, ii)
        recompute(updated)
        ctx.store.replace(KIND, updated)
    ctx.store.insert(ITEM, ii)
    ctx.emit("invoiceitem.created", ii)
    return render(ctx.store, ii, expand_of(params))


def build_item(
    ctx: RequestContext,
    customer: StripeObject,
    *,
    amount: int,
    cur: str,
    description: str | None,
    period: tuple[int, int],
    price: StripeObject | None,
    quantity: int,
    subscription_id: str | None,
    subscription_item: str | None = None,
    proration: bool = False,
    metadata: dict[str, str] | None = None,
) -> StripeObject:
    """An `invoiceitem` (not inserted)."""
    parent = None
    if subscription_id is not None:
        parent = {
            "subscription_details": {
                "subscription": subscription_id,
                "subscription_item": subscription_item,
            },
            "type": "subscription_details",
        }
    return {
        "id": new_id("ii"),
        "object": ITEM,
        "amount": amount,
        "currency": cur,
        "customer": customer["id"],
        "customer_account": None,
        "date": clocked(ctx, customer["id"]).now(),
        "description": description,
        "discountable": not proration,
        "discounts": [],
        "invoice": None,
        "livemode": False,
        "metadata": dict(metadata or {}),
        "net_amount": amount,
        "parent": parent,
        "period": {"end": period[1], "start": period[0]},
        "pricing": _pricing(price),
        "_tax_behavior": (price or {}).get("tax_behavior"),
        "proration": proration,
        "proration_details": {"discount_amounts": []},
        "quantity": quantity,
        "quantity_decimal": str(quantity),
        "tax_rates": [],
        "test_clock": customer.get("test_clock"),
    }


def retrieve_item(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/invoiceitems/{invoiceitem}`."""
    ii = fetch(ctx, ITEM, path["invoiceitem"], "invoiceitem")
    return render(ctx.store, ii, expand_of(params))


def list_items(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/invoiceitems` (`customer`, `invoice`, `pending`)."""
    equals: dict[str, list[Any]] = {}
    if "customer" in params:
        equals["customer"] = [params["customer"]]
    invoice = params.get("invoice")
    pending = params.get("pending")

    def matches(ii: StripeObject) -> bool:
        if invoice is not None and ii["invoice"] != invoice:
            return False
        return pending is None or (ii["invoice"] is None) == bool(pending)

    return list_response(
        ctx.store,
        kind=ITEM,
        params=params,
        url="/v1/invoiceitems",
        equals=equals,
        predicate=matches,
    )


def update_item(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/invoiceitems/{invoiceitem}`: description and metadata (pending items)."""
    before = fetch(ctx, ITEM, path["invoiceitem"], "invoiceitem")
    after = copy.deepcopy(before)
    refuse_unhandled(params, frozenset({"description", "metadata"}))
    if before["invoice"] is not None:
        inv = ctx.store.get(KIND, before["invoice"])
        if inv is not None and inv["status"] != "draft":
            raise invalid(
                "Invoice items on a finalized invoice cannot be updated.",
                code="invoice_not_editable",
            )
    if "description" in params:
        after["description"] = params["description"] or None
    after["metadata"] = apply_metadata(after["metadata"], params.get("metadata"))
    changes = previous_attributes(before, after)
    if changes:
        ctx.store.replace(ITEM, after)
        clocked(ctx, after["customer"]).emit(
            "invoiceitem.updated", after, previous_attributes=changes
        )
    return render(ctx.store, after, expand_of(params))


def delete_item(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`DELETE /v1/invoiceitems/{invoiceitem}`: pending items or items on a draft."""
    ii = fetch(ctx, ITEM, path["invoiceitem"], "invoiceitem")
    if ii["invoice"] is not None:
        inv = ctx.store.get(KIND, ii["invoice"])
        if inv is not None and inv["status"] != "draft":
            raise invalid(
                "Invoice items on a finalized invoice cannot be deleted.",
                code="invoice_not_editable",
            )
        if inv is not None:
            updated = copy.deepcopy(inv)
            updated["lines"]["data"] = [
                li
                for li in updated["lines"]["data"]
                if ((li["parent"] or {}).get("invoice_item_details") or {}).get("invoice_item")
                != ii["id"]
            ]
            recompute(updated)
            ctx.store.replace(KIND, updated)
    ctx.store.delete(ITEM, ii["id"])
    clocked(ctx, ii["customer"]).emit("invoiceitem.deleted", ii)
    return deleted_stub(ii)


def _on_intent_outcome(ctx: RequestContext, intent: StripeObject, succeeded: bool) -> None:
    """An open invoice whose payment needed authentication (its newest payment is this
    intent, still `open`) is paid when the intent later succeeds."""
    if not succeeded or not intent.get("customer"):
        return
    for invoice in ctx.store.collection(KIND).lookup("customer", intent["customer"]):
        payments = invoice["payments"]["data"]
        if invoice["status"] != "open" or not payments:
            continue
        newest = payments[0]
        if newest["status"] != "open" or newest["payment"]["payment_intent"] != intent["id"]:
            continue
        cctx = clocked(ctx, invoice["customer"])
        after = copy.deepcopy(invoice)
        paid = after["payments"]["data"][0]
        paid["status"] = "paid"
        paid["amount_paid"] = paid["amount_requested"]
        paid["status_transitions"]["paid_at"] = cctx.now()
        after["amount_paid"] += after["amount_remaining"]
        recompute(after)
        ctx.store.replace(KIND, after)
        _mark_paid(cctx, after, out_of_band=False)


payment_intents.on_intent_outcome(_on_intent_outcome)

"""Overdraft invoices in Stripe (DESIGN §17): the one-off invoice that bills a window's
overdrawn credits, and the list that tells which of them exist and in which status.

Each write takes the caller's idempotency key (derived from the window, so a rerun or a
second replica replays the first answer): `create_draft` (`POST /v1/invoices`,
`send_invoice`, auto-advance off: we finalize it ourselves once its item is on it),
`add_item` (`POST /v1/invoiceitems` on that draft: `price_data` of the overdraft product,
the unit amount, the quantity, the window as the period), `finalize` (`POST
/v1/invoices/{id}/finalize`: Stripe then emails it). `retrieve` reads one invoice back
(a rerun resuming a window whose invoice id the store has); `find_by_key` finds a draft a
crash left before its id reached the store, among the customer's invoices since the window
(one call, on that rare path only). `overdraft_invoices` lists the invoices created since
a moment, whatever their status, with pagination (ceil(N/100) calls whatever the number of
customers), and keeps ours: what was paid, voided or marked uncollectible, and, after a lost
store, which windows were invoiced.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from billing_reconciler.model import MANAGED_BY, META_INSTALLATION, META_KEY, META_MANAGED_BY
from billing_reconciler.model_customers import META_ORG_ID
from billing_reconciler.stripe_gateway.client import StripeGateway
from billing_reconciler.stripe_gateway.observe import list_all

if TYPE_CHECKING:
    from stripe.params import (
        InvoiceCreateParams,
        InvoiceFinalizeInvoiceParams,
        InvoiceItemCreateParams,
        InvoiceListParams,
    )

__all__ = [
    "InvoiceLine",
    "OverdraftInvoice",
    "add_item",
    "create_draft",
    "finalize",
    "find_by_key",
    "overdraft_invoices",
    "retrieve",
]


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    id: str
    quantity: int
    br_key: str | None
    amount: int = 0
    unit_amount: int | None = None
    """The price's unit amount (`pricing.unit_amount_decimal`), None when not shown."""
    period: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class OverdraftInvoice:
    """An invoice as Stripe answered: its status, lines, our `br_key`, the write's request
    id and whether Stripe replayed it for our key."""

    id: str
    status: str
    br_key: str | None
    installation_id: str | None
    lines: tuple[InvoiceLine, ...]
    created: int = 0
    currency: str = ""
    customer: str = ""
    org_id: str | None = None
    request_id: str | None = None
    replayed: bool = False

    def line_of(self, br_key: str) -> InvoiceLine | None:
        return next((line for line in self.lines if line.br_key == br_key), None)


def _unit_amount(line: Mapping[str, Any]) -> int | None:
    pricing = line.get("pricing") or {}
    unit = pricing.get("unit_amount_decimal")
    if unit is None:
        unit = (line.get("price") or {}).get("unit_amount_decimal")
    try:
        return None if unit is None else int(Decimal(str(unit)))
    except (ArithmeticError, ValueError):
        return None


def _period(line: Mapping[str, Any]) -> tuple[int, int] | None:
    period = line.get("period") or {}
    if period.get("start") is None or period.get("end") is None:
        return None
    return int(period["start"]), int(period["end"])


def _invoice(obj: Mapping[str, Any], request_id: str | None, replayed: bool) -> OverdraftInvoice:
    metadata = obj.get("metadata") or {}
    lines = (obj.get("lines") or {}).get("data") or ()
    customer = obj.get("customer")
    if isinstance(customer, Mapping):
        customer = customer.get("id")
    return OverdraftInvoice(
        id=str(obj["id"]),
        status=str(obj.get("status") or ""),
        br_key=metadata.get(META_KEY) if metadata.get(META_MANAGED_BY) == MANAGED_BY else None,
        installation_id=metadata.get(META_INSTALLATION),
        lines=tuple(
            InvoiceLine(
                id=str(line["id"]),
                quantity=int(line.get("quantity") or 0),
                br_key=(line.get("metadata") or {}).get(META_KEY),
                amount=int(line.get("amount") or 0),
                unit_amount=_unit_amount(line),
                period=_period(line),
            )
            for line in lines
        ),
        created=int(obj.get("created") or 0),
        currency=str(obj.get("currency") or ""),
        customer=str(customer or ""),
        org_id=metadata.get(META_ORG_ID),
        request_id=request_id,
        replayed=replayed,
    )


def _write(
    gateway: StripeGateway, method: str, endpoint: str, call: Any, idempotency_key: str
) -> tuple[dict[str, Any], str | None, bool]:
    if not idempotency_key:
        raise ValueError("every mutating Stripe call needs an idempotency key")
    obj = gateway.request(
        method=method,
        endpoint=endpoint,
        send=lambda: call({"idempotency_key": idempotency_key}),
    )
    response = obj.last_response
    headers = response.headers if response is not None else {}
    replayed = next((v for k, v in headers.items() if k.lower() == "idempotent-replayed"), "")
    request_id = response.request_id if response is not None else None
    return obj.to_dict(for_json=True), request_id, replayed.strip().lower() == "true"


def create_draft(
    gateway: StripeGateway,
    *,
    customer_id: str,
    currency: str,
    days_until_due: int,
    automatic_tax: bool,
    payment_method_types: Sequence[str] | None,
    description: str,
    metadata: Mapping[str, str],
    idempotency_key: str,
) -> OverdraftInvoice:
    """A `send_invoice` draft of ours (no pending items pulled in: only our item bills)."""
    params: dict[str, Any] = {
        "customer": customer_id,
        "currency": currency.lower(),
        "collection_method": "send_invoice",
        "days_until_due": days_until_due,
        "auto_advance": False,
        "automatic_tax": {"enabled": automatic_tax},
        "pending_invoice_items_behavior": "exclude",
        "description": description,
        "metadata": dict(metadata),
    }
    if payment_method_types is not None:
        params["payment_settings"] = {"payment_method_types": list(payment_method_types)}
    invoices = gateway.sdk.v1.invoices
    obj, request_id, replayed = _write(
        gateway,
        "POST",
        "/v1/invoices",
        lambda options: invoices.create(cast("InvoiceCreateParams", params), options),
        idempotency_key,
    )
    return _invoice(obj, request_id, replayed)


def add_item(
    gateway: StripeGateway,
    *,
    customer_id: str,
    invoice_id: str,
    currency: str,
    product_id: str,
    unit_amount: int,
    quantity: int,
    period: tuple[int, int],
    description: str,
    metadata: Mapping[str, str],
    idempotency_key: str,
) -> str:
    """The invoice's one item; its id."""
    params: dict[str, Any] = {
        "customer": customer_id,
        "invoice": invoice_id,
        "currency": currency.lower(),
        "price_data": {
            "currency": currency.lower(),
            "product": product_id,
            "unit_amount": unit_amount,
        },
        "quantity": quantity,
        "period": {"start": period[0], "end": period[1]},
        "description": description,
        "metadata": dict(metadata),
    }
    items = gateway.sdk.v1.invoice_items
    obj, _, _ = _write(
        gateway,
        "POST",
        "/v1/invoiceitems",
        lambda options: items.create(cast("InvoiceItemCreateParams", params), options),
        idempotency_key,
    )
    return str(obj["id"])


def finalize(gateway: StripeGateway, *, invoice_id: str, idempotency_key: str) -> OverdraftInvoice:
    """draft -> open: Stripe sends a `send_invoice` invoice to the customer."""
    invoices = gateway.sdk.v1.invoices
    params: dict[str, Any] = {}
    obj, request_id, replayed = _write(
        gateway,
        "POST",
        "/v1/invoices/{invoice}/finalize",
        lambda options: invoices.finalize_invoice(
            invoice_id, cast("InvoiceFinalizeInvoiceParams", params), options
        ),
        idempotency_key,
    )
    return _invoice(obj, request_id, replayed)


def retrieve(gateway: StripeGateway, invoice_id: str) -> OverdraftInvoice:
    invoices = gateway.sdk.v1.invoices
    obj = gateway.request(
        method="GET",
        endpoint="/v1/invoices/{invoice}",
        send=lambda: invoices.retrieve(invoice_id),
    )
    return _invoice(obj.to_dict(for_json=True), None, False)


def _listed(gateway: StripeGateway, params: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    invoices = gateway.sdk.v1.invoices
    return list_all(
        gateway,
        endpoint="/v1/invoices",
        fetch_page=lambda page: invoices.list(cast("InvoiceListParams", page)),
        params=params,
    )


def find_by_key(
    gateway: StripeGateway, *, customer_id: str, br_key: str, created_since: int
) -> OverdraftInvoice | None:
    """The customer's invoice carrying `br_key` (not void), created since `created_since`."""
    params = {"customer": customer_id, "created": {"gte": created_since}}
    for obj in _listed(gateway, params):
        invoice = _invoice(obj, None, False)
        if invoice.br_key == br_key and invoice.status != "void":
            return invoice
    return None


def overdraft_invoices(
    gateway: StripeGateway, *, created_since: int, installation_id: str, br_key_prefix: str
) -> list[OverdraftInvoice]:
    """Every invoice of ours (this installation, `br_key` under `br_key_prefix`), whatever its
    status, created since `created_since`: one paginated list of the account's invoices
    (ceil(N/100) calls whatever the number of customers), ours kept."""
    found: list[OverdraftInvoice] = []
    for obj in _listed(gateway, {"created": {"gte": created_since}}):
        invoice = _invoice(obj, None, False)
        key = invoice.br_key
        if key is None or not key.startswith(br_key_prefix):
            continue
        if invoice.installation_id == installation_id:
            found.append(invoice)
    return found

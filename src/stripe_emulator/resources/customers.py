"""Customers (address, tax settings, test clock) and their balance transactions."""

from __future__ import annotations

import copy
import secrets
import string
from typing import Any

from stripe_emulator.core import RequestContext
from stripe_emulator.errors import invalid
from stripe_emulator.ids import new_id
from stripe_emulator.listing import expand_of, list_response
from stripe_emulator.params import Params
from stripe_emulator.render import render
from stripe_emulator.resources._common import (
    apply_metadata,
    check_enum,
    currency,
    deleted_stub,
    fetch,
    new_metadata,
    nullable,
    save_update,
)
from stripe_emulator.routing import Router
from stripe_emulator.state import StripeObject

KIND = "customer"
# Stripe still answers a retrieve of a deleted customer, with `{"deleted": true, ...}`.
TOMBSTONE = "deleted_customer"
TRANSACTION = "customer_balance_transaction"
TAX_EXEMPT = ("none", "exempt", "reverse")
_ADDRESS_FIELDS = ("city", "country", "line1", "line2", "postal_code", "state")
_SIMPLE_FIELDS = (
    "description",
    "email",
    "name",
    "phone",
    "invoice_prefix",
    "business_name",
    "individual_name",
)


def register(router: Router) -> None:
    """Attach the customer and balance-transaction endpoints."""
    p = "_customer_"
    router.add("POST", "/v1/customers", f"{p}create_params.CustomerCreateParams", create)
    router.add("GET", "/v1/customers", f"{p}list_params.CustomerListParams", list_customers)
    router.add(
        "GET", "/v1/customers/{customer}", f"{p}retrieve_params.CustomerRetrieveParams", retrieve
    )
    router.add("POST", "/v1/customers/{customer}", f"{p}update_params.CustomerUpdateParams", update)
    router.add(
        "DELETE", "/v1/customers/{customer}", f"{p}delete_params.CustomerDeleteParams", delete
    )
    tx = "/v1/customers/{customer}/balance_transactions"
    bp = "_customer_balance_transaction_"
    router.add(
        "POST", tx, f"{bp}create_params.CustomerBalanceTransactionCreateParams", create_transaction
    )
    router.add(
        "GET", tx, f"{bp}list_params.CustomerBalanceTransactionListParams", list_transactions
    )
    router.add(
        "GET",
        tx + "/{transaction}",
        f"{bp}retrieve_params.CustomerBalanceTransactionRetrieveParams",
        retrieve_transaction,
    )
    router.add(
        "POST",
        tx + "/{transaction}",
        f"{bp}update_params.CustomerBalanceTransactionUpdateParams",
        update_transaction,
    )


def create(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/customers`."""
    check_enum(params.get("tax_exempt"), "tax_exempt", TAX_EXEMPT)
    clock = params.get("test_clock")
    if clock is not None:
        fetch(ctx, "test_helpers.test_clock", clock, "test_clock", param="test_clock", in_body=True)
    customer: StripeObject = {
        "id": new_id("cus"),
        "object": "customer",
        "address": _address(params.get("address")),
        "balance": params.get("balance", 0),
        "created": ctx.now(),
        "currency": None,
        "customer_account": None,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": None,
        "invoice_prefix": _invoice_prefix(),
        "invoice_settings": _invoice_settings(params.get("invoice_settings")),
        "livemode": False,
        "metadata": new_metadata(params.get("metadata")),
        "name": None,
        "next_invoice_sequence": params.get("next_invoice_sequence", 1),
        "phone": None,
        "preferred_locales": params.get("preferred_locales", []),
        "shipping": _shipping(params.get("shipping")),
        "tax_exempt": params.get("tax_exempt", "none"),
        "test_clock": clock,
        "tax": _tax(params.get("tax")),
    }
    for field in _SIMPLE_FIELDS:
        if field in params:
            customer[field] = nullable(params[field])
    ctx.store.insert(KIND, customer)
    ctx.emit("customer.created", customer)
    return render(ctx.store, customer, expand_of(params))


def retrieve(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/customers/{customer}` (a deleted customer answers its deleted stub)."""
    tombstone = ctx.store.get(TOMBSTONE, path["customer"])
    if tombstone is not None:
        return deleted_stub(tombstone)
    return render(ctx.store, fetch(ctx, KIND, path["customer"], "customer"), expand_of(params))


def list_customers(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/customers` with `email`, `test_clock`, `created` filters."""
    equals: dict[str, Any] = {k: [params[k]] for k in ("email", "test_clock") if k in params}
    return list_response(ctx.store, kind=KIND, params=params, url="/v1/customers", equals=equals)


def update(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/customers/{customer}`."""
    before = fetch(ctx, KIND, path["customer"], "customer")
    check_enum(nullable(params.get("tax_exempt")), "tax_exempt", TAX_EXEMPT)
    after = copy.deepcopy(before)
    for field in _SIMPLE_FIELDS:
        if field in params:
            after[field] = nullable(params[field])
    if "address" in params:
        after["address"] = _address(nullable(params["address"]))
    if "shipping" in params:
        after["shipping"] = _shipping(nullable(params["shipping"]))
    if "tax_exempt" in params:
        after["tax_exempt"] = nullable(params["tax_exempt"]) or "none"
    if "invoice_settings" in params:
        after["invoice_settings"] = _invoice_settings(
            params["invoice_settings"], after["invoice_settings"]
        )
    for field in ("balance", "next_invoice_sequence", "preferred_locales"):
        if field in params:
            after[field] = params[field]
    if "tax" in params:
        after["tax"] = _tax(params["tax"])
    after["metadata"] = apply_metadata(after["metadata"], params.get("metadata"))
    save_update(ctx, KIND, before, after, "customer.updated")
    return render(ctx.store, ctx.store.get(KIND, after["id"]) or after, expand_of(params))


def delete(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`DELETE /v1/customers/{customer}`."""
    customer = fetch(ctx, KIND, path["customer"], "customer")
    delete_customer(ctx, customer)
    return deleted_stub(customer)


def delete_customer(ctx: RequestContext, customer: StripeObject) -> None:
    """Remove a customer, keep its tombstone, emit `customer.deleted`."""
    ctx.store.delete(KIND, customer["id"])
    ctx.store.insert(TOMBSTONE, {"id": customer["id"], "object": KIND})
    ctx.emit("customer.deleted", customer)


def create_transaction(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/customers/{customer}/balance_transactions`: adjusts `customer.balance`."""
    before = fetch(ctx, KIND, path["customer"], "customer")
    cur = currency(params["currency"])
    if before["currency"] not in (None, cur):
        raise invalid(
            f"The currency of a balance transaction must match the customer's currency "
            f"({before['currency']}).",
            param="currency",
        )
    after = copy.deepcopy(before)
    after["balance"] = before["balance"] + params["amount"]
    after["currency"] = cur
    transaction: StripeObject = {
        "id": new_id("cbtxn"),
        "object": TRANSACTION,
        "amount": params["amount"],
        "checkout_session": None,
        "created": ctx.now(),
        "credit_note": None,
        "currency": cur,
        "customer": before["id"],
        "customer_account": None,
        "description": params.get("description"),
        "ending_balance": after["balance"],
        "invoice": None,
        "livemode": False,
        "metadata": new_metadata(params.get("metadata")),
        "type": "adjustment",
    }
    ctx.store.insert(TRANSACTION, transaction)
    save_update(ctx, KIND, before, after, "customer.updated")
    return render(ctx.store, transaction, expand_of(params))


def list_transactions(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/customers/{customer}/balance_transactions`."""
    customer = fetch(ctx, KIND, path["customer"], "customer")
    return list_response(
        ctx.store,
        kind=TRANSACTION,
        params=params,
        url=f"/v1/customers/{customer['id']}/balance_transactions",
        equals={"customer": [customer["id"]]},
    )


def retrieve_transaction(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/customers/{customer}/balance_transactions/{transaction}`."""
    return render(ctx.store, _transaction(ctx, path), expand_of(params))


def update_transaction(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST .../balance_transactions/{transaction}`: description and metadata only."""
    before = _transaction(ctx, path)
    after = copy.deepcopy(before)
    if "description" in params:
        after["description"] = nullable(params["description"])
    after["metadata"] = apply_metadata(after["metadata"], params.get("metadata"))
    save_update(ctx, TRANSACTION, before, after, None)
    return render(ctx.store, ctx.store.get(TRANSACTION, after["id"]) or after, expand_of(params))


def _transaction(ctx: RequestContext, path: dict[str, str]) -> StripeObject:
    fetch(ctx, KIND, path["customer"], "customer")
    transaction = fetch(ctx, TRANSACTION, path["transaction"], "customer balance transaction")
    if transaction["customer"] != path["customer"]:
        fetch(ctx, TRANSACTION, "", "customer balance transaction")
    return transaction


def _address(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    return {k: nullable(raw.get(k)) for k in _ADDRESS_FIELDS}


def _shipping(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    return {
        "address": _address(raw.get("address", {})),
        "name": raw.get("name"),
        "phone": raw.get("phone"),
    }


def _invoice_settings(
    raw: dict[str, Any] | None, current: dict[str, Any] | None = None
) -> dict[str, Any]:
    settings = (
        copy.deepcopy(current)
        if current
        else {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        }
    )
    for key, value in (raw or {}).items():
        settings[key] = nullable(value)
    return settings


def _tax(raw: dict[str, Any] | None) -> dict[str, Any]:
    # Includable `tax`: without Stripe Tax there is no location to recognise.
    return {
        "automatic_tax": "unrecognized_location",
        "ip_address": nullable((raw or {}).get("ip_address")),
        "location": None,
        "provider": "stripe",
    }


def _invoice_prefix() -> str:
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(8))

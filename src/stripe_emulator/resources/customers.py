"""Customers (address, tax, tax ids, invoice settings, test clock, cash balance) and their
balance transactions.

Includable fields are rendered here, not by `render.INCLUDABLE`'s defaults: `tax` (computed
by `stripe_emulator.tax` from the shipping address, billing address, then `tax.ip_address`),
`tax_ids` (the customer's tax ids, `resources/tax_ids.py`), `subscriptions` and `sources`
(lists a later module fills through `INCLUDED_LISTS`), `cash_balance`, and
`invoice_settings.default_payment_method` (expandable to the payment method).

`payment_method` on create attaches that payment method (or a minted test one) through the
payment methods module after `customer.created`, every refusal checked first; legacy `source`
and `default_source` are refused. `invoice_settings.default_payment_method` must name a
payment method attached to the customer (`""` unsets it).

Deleting a customer runs every hook registered with `on_customer_deleted` first (a
subscriptions module registers one to cancel the customer's subscriptions), then removes its
tax ids and cash balance, keeps a tombstone and emits `customer.deleted`.
"""

from __future__ import annotations

import copy
import re
import secrets
import string
from collections.abc import Callable
from typing import Any

from stripe_emulator import tax
from stripe_emulator.core import RequestContext
from stripe_emulator.errors import StripeError, invalid, no_such
from stripe_emulator.ids import new_id
from stripe_emulator.listing import expand_of, list_response
from stripe_emulator.params import Params
from stripe_emulator.render import ExpandTree, list_expand_tree, render
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
from stripe_emulator.resources.tax_ids import (
    check_tax_id,
    delete_all_of,
    new_tax_id,
    tax_ids_of,
)
from stripe_emulator.routing import Router
from stripe_emulator.state import StripeObject

KIND = "customer"
# Stripe still answers a retrieve of a deleted customer, with `{"deleted": true, ...}`.
TOMBSTONE = "deleted_customer"
TRANSACTION = "customer_balance_transaction"
TAX_EXEMPT = ("none", "exempt", "reverse")
RECONCILIATION_MODES = ("automatic", "manual", "merchant_default")
# The payment methods module's collection (`customer` holds the attached customer's id) and
# the cash balance layout it shares (`cashbal_<customer>`, see `cash_balance_of`).
PAYMENT_METHOD = "payment_method"
CASH_BALANCE = "cash_balance"
CASH_TRANSACTION = "customer_cash_balance_transaction"
# Embedded lists (`tax_ids`, `subscriptions`, `sources`) show their first page, as Stripe's.
EMBEDDED_LIST_LIMIT = 10
_INVOICE_PREFIX = re.compile(r"[A-Z0-9]{3,12}")

CustomerDeletionHook = Callable[[RequestContext, StripeObject], None]
ListProvider = Callable[[RequestContext, StripeObject], list[StripeObject]]

# Run, in registration order, before a customer is deleted (by the API or with its test
# clock). A subscriptions module registers one to cancel the customer's subscriptions.
DELETION_HOOKS: list[CustomerDeletionHook] = []
# `subscriptions` / `sources` when expanded: a module serving them registers a provider of
# the customer's objects, newest first; without one they are empty lists.
INCLUDED_LISTS: dict[str, ListProvider] = {}
_OWN_EXPANSIONS = frozenset(
    {"tax", "tax_ids", "subscriptions", "sources", "cash_balance", "invoice_settings"}
)


def on_customer_deleted(hook: CustomerDeletionHook) -> None:
    """Register `hook(ctx, customer)` to run before any customer is deleted (idempotent)."""
    if hook not in DELETION_HOOKS:
        DELETION_HOOKS.append(hook)


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
    cash = "/v1/customers/{customer}/cash_balance"
    cp = "_customer_cash_balance_"
    router.add("GET", cash, f"{cp}retrieve_params.CustomerCashBalanceRetrieveParams", get_cash)
    router.add("POST", cash, f"{cp}update_params.CustomerCashBalanceUpdateParams", update_cash)
    ctx_ = "/v1/customers/{customer}/cash_balance_transactions"
    ctp = "_customer_cash_balance_transaction_"
    router.add(
        "GET",
        ctx_,
        f"{ctp}list_params.CustomerCashBalanceTransactionListParams",
        list_cash_transactions,
    )
    router.add(
        "GET",
        ctx_ + "/{transaction}",
        f"{ctp}retrieve_params.CustomerCashBalanceTransactionRetrieveParams",
        retrieve_cash_transaction,
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
    _refuse_legacy_sources(params, ("source",))
    _check_invoice_prefix(params.get("invoice_prefix"))
    _check_lengths(params)
    _check_cash_settings(params.get("cash_balance"))
    tax_id_data: list[dict[str, str]] = params.get("tax_id_data", [])
    for index, datum in enumerate(tax_id_data):
        check_tax_id(datum["type"], datum["value"], param_prefix=f"tax_id_data[{index}]")
    created = ctx.now()
    clock = params.get("test_clock")
    if clock is not None:
        frozen = fetch(
            ctx, "test_helpers.test_clock", clock, "test_clock", param="test_clock", in_body=True
        )
        # Objects on a test clock live in its time.
        created = frozen["frozen_time"]
    customer_id = new_id("cus")
    payment_method = (
        _attachable(ctx, params["payment_method"], customer_id)
        if "payment_method" in params
        else None
    )
    invoice_settings = params.get("invoice_settings")
    if (
        payment_method is not None
        and invoice_settings
        and invoice_settings.get("default_payment_method") == params["payment_method"]
    ):
        # `payment_method=pm_card_visa` with `invoice_settings[default_payment_method]=
        # pm_card_visa` (Stripe's test clock example in its invoicing docs): the second names
        # the payment method the first minted and attaches.
        invoice_settings = {**invoice_settings, "default_payment_method": payment_method["id"]}
    customer: StripeObject = {
        "id": customer_id,
        "object": "customer",
        "address": _address(nullable(params.get("address"))),
        "balance": params.get("balance", 0),
        "created": created,
        "currency": None,
        "customer_account": None,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": None,
        "invoice_prefix": _invoice_prefix(),
        "invoice_settings": _invoice_settings(
            ctx,
            customer_id,
            invoice_settings,
            None,
            attaching=payment_method["id"] if payment_method else None,
        ),
        "livemode": False,
        "metadata": new_metadata(params.get("metadata")),
        "name": None,
        "next_invoice_sequence": params.get("next_invoice_sequence", 1),
        "phone": None,
        "preferred_locales": params.get("preferred_locales", []),
        "shipping": _shipping(nullable(params.get("shipping"))),
        "tax_exempt": nullable(params.get("tax_exempt")) or "none",
        "test_clock": clock,
        "tax": {"ip_address": None},
    }
    for field in _SIMPLE_FIELDS:
        if field in params:
            customer[field] = nullable(params[field])
    customer["tax"] = _tax(customer, params.get("tax"))
    ctx.store.insert(KIND, customer)
    _set_cash_settings(ctx, customer_id, params.get("cash_balance"))
    ctx.emit("customer.created", customer)
    if payment_method is not None:
        from stripe_emulator.resources import payment_methods

        payment_methods.attach_to(ctx, payment_method, customer_id)
    for datum in tax_id_data:
        new_tax_id(ctx, datum["type"], datum["value"], customer_id=customer_id)
    return render_customer(ctx, ctx.store.get(KIND, customer_id) or customer, expand_of(params))


def retrieve(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/customers/{customer}` (a deleted customer answers its deleted stub)."""
    tombstone = ctx.store.get(TOMBSTONE, path["customer"])
    if tombstone is not None:
        return deleted_stub(tombstone)
    customer = fetch(ctx, KIND, path["customer"], "customer")
    return render_customer(ctx, customer, expand_of(params))


def list_customers(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/customers` with `email`, `test_clock`, `created` filters."""
    equals: dict[str, Any] = {k: [params[k]] for k in ("email", "test_clock") if k in params}
    paths: list[str] = params.get("expand", [])
    own = [p for p in paths if p.split(".")[1:2] and p.split(".")[1] in _OWN_EXPANSIONS]
    rest = {**params, "expand": [p for p in paths if p not in own]}
    page = list_response(ctx.store, kind=KIND, params=rest, url="/v1/customers", equals=equals)
    tree = list_expand_tree(own)
    if tree:
        for item in page["data"]:
            stored = ctx.store.get(KIND, item["id"])
            if stored is not None:
                item.update(_own_expansions(ctx, stored, tree))
    return page


def update(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/customers/{customer}`."""
    before = fetch(ctx, KIND, path["customer"], "customer")
    check_enum(nullable(params.get("tax_exempt")), "tax_exempt", TAX_EXEMPT)
    _refuse_legacy_sources(params, ("default_source", "source"))
    _check_invoice_prefix(params.get("invoice_prefix"))
    _check_lengths(params)
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
            ctx, before["id"], params["invoice_settings"], after["invoice_settings"]
        )
    for field in ("balance", "next_invoice_sequence", "preferred_locales"):
        if field in params:
            after[field] = params[field]
    after["tax"] = _tax(after, params.get("tax"))
    after["metadata"] = apply_metadata(after["metadata"], params.get("metadata"))
    _set_cash_settings(ctx, before["id"], params.get("cash_balance"))
    save_update(ctx, KIND, before, after, "customer.updated")
    stored = ctx.store.get(KIND, after["id"]) or after
    return render_customer(ctx, stored, expand_of(params))


def delete(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`DELETE /v1/customers/{customer}`: refused while the customer has a cash balance."""
    customer = fetch(ctx, KIND, path["customer"], "customer")
    cash = ctx.store.get(CASH_BALANCE, cash_balance_id(customer["id"]))
    if cash is not None and cash.get("available"):
        raise invalid(
            "You cannot delete a customer with a cash balance, even if the balance is 0.",
            param="customer",
        )
    delete_customer(ctx, customer)
    return deleted_stub(customer)


def delete_customer(ctx: RequestContext, customer: StripeObject) -> None:
    """Run the deletion hooks, remove the customer with its tax ids and cash balance, keep
    its tombstone, emit `customer.deleted`."""
    for hook in list(DELETION_HOOKS):
        hook(ctx, customer)
    current = ctx.store.get(KIND, customer["id"]) or customer
    delete_all_of(ctx, current)
    if ctx.store.get(CASH_BALANCE, cash_balance_id(customer["id"])) is not None:
        ctx.store.delete(CASH_BALANCE, cash_balance_id(customer["id"]))
    ctx.store.delete(KIND, customer["id"])
    ctx.store.insert(TOMBSTONE, {"id": customer["id"], "object": KIND})
    ctx.emit("customer.deleted", current)


def render_customer(ctx: RequestContext, customer: StripeObject, tree: ExpandTree) -> StripeObject:
    """The customer's response, with its own includable and nested expansions."""
    out = render(ctx.store, customer, {k: v for k, v in tree.items() if k not in _OWN_EXPANSIONS})
    out.update(_own_expansions(ctx, customer, tree))
    return out


def _own_expansions(ctx: RequestContext, customer: StripeObject, tree: ExpandTree) -> StripeObject:
    out: StripeObject = {}
    for name, subtree in tree.items():
        if name not in _OWN_EXPANSIONS:
            continue
        if name == "tax":
            _no_deeper(subtree, name)
            out[name] = tax_view(customer)
        elif name == "cash_balance":
            _no_deeper(subtree, name)
            out[name] = cash_balance_view(ctx, customer["id"])
        elif name == "invoice_settings":
            out[name] = _expanded_invoice_settings(ctx, customer, subtree)
        else:
            if name == "tax_ids":
                items = tax_ids_of(ctx, customer)
            else:
                provider = INCLUDED_LISTS.get(name)
                items = provider(ctx, customer) if provider is not None else []
            out[name] = _embedded_list(ctx, customer, name, items, subtree)
    return out


def _embedded_list(
    ctx: RequestContext,
    customer: StripeObject,
    name: str,
    items: list[StripeObject],
    subtree: ExpandTree,
) -> StripeObject:
    for key in subtree:
        if key != "data":
            raise _not_expandable(f"{name}.{key}")
    shown = items[:EMBEDDED_LIST_LIMIT]
    return {
        "object": "list",
        "data": [render(ctx.store, item, subtree.get("data", {})) for item in shown],
        "has_more": len(items) > len(shown),
        "url": f"/v1/customers/{customer['id']}/{name}",
    }


def _expanded_invoice_settings(
    ctx: RequestContext, customer: StripeObject, subtree: ExpandTree
) -> StripeObject:
    settings: StripeObject = copy.deepcopy(customer["invoice_settings"])
    for key, deeper in subtree.items():
        if key != "default_payment_method":
            raise _not_expandable(f"invoice_settings.{key}")
        pm_id = settings.get(key)
        target = ctx.store.get(PAYMENT_METHOD, pm_id) if isinstance(pm_id, str) else None
        if target is not None:
            settings[key] = render(ctx.store, target, deeper)
    return settings


def _no_deeper(subtree: ExpandTree, name: str) -> None:
    if subtree:
        raise _not_expandable(f"{name}.{next(iter(subtree))}")


def _not_expandable(path: str) -> StripeError:
    return invalid(f"This property cannot be expanded ({path}).", param="expand")


def tax_view(customer: StripeObject) -> StripeObject:
    """`customer.tax`, from the customer's addresses and IP address (`stripe_emulator.tax`)."""
    location = tax.customer_location(customer)
    return {
        "automatic_tax": tax.customer_automatic_tax(location),
        "ip_address": (customer.get("tax") or {}).get("ip_address"),
        "location": location.as_stripe() if location is not None else None,
        "provider": "stripe",
    }


def _tax(customer: StripeObject, raw: dict[str, Any] | None) -> StripeObject:
    # Stored (and in event payloads) as computed now; rendered only when expanded.
    current = dict(customer.get("tax") or {})
    raw = raw or {}
    validate = raw.get("validate_location")
    check_enum(validate, "tax[validate_location]", ("auto", "deferred", "immediately"))
    if "ip_address" in raw:
        current["ip_address"] = nullable(raw["ip_address"])
    view = tax_view({**customer, "tax": current})
    if validate == "immediately" and view["location"] is None:
        raise invalid(
            "The customer's location isn't recognized: give a shipping or billing address with "
            "a country (and a postal code in the US), or a tax[ip_address].",
            code="customer_tax_location_invalid",
        )
    return view


def cash_balance_id(customer_id: str) -> str:
    """The store id of a customer's cash balance (shared with the payment methods module)."""
    return f"cashbal_{customer_id}"


def cash_balance_view(ctx: RequestContext, customer_id: str) -> StripeObject:
    """Stripe's `cash_balance` object (no id); empty `available` until funded."""
    stored = ctx.store.get(CASH_BALANCE, cash_balance_id(customer_id))
    if stored is not None:
        return {k: copy.deepcopy(v) for k, v in stored.items() if k != "id"}
    return {
        "object": CASH_BALANCE,
        "available": {},
        "customer": customer_id,
        "customer_account": None,
        "livemode": False,
        "settings": {"reconciliation_mode": "automatic", "using_merchant_default": True},
    }


def _check_cash_settings(raw: dict[str, Any] | None, prefix: str = "cash_balance") -> str | None:
    mode: str | None = ((raw or {}).get("settings") or {}).get("reconciliation_mode")
    param = (
        f"{prefix}[settings][reconciliation_mode]" if prefix else "settings[reconciliation_mode]"
    )
    check_enum(mode, param, RECONCILIATION_MODES)
    return mode


def _set_cash_settings(
    ctx: RequestContext, customer_id: str, raw: dict[str, Any] | None, prefix: str = "cash_balance"
) -> None:
    mode = _check_cash_settings(raw, prefix)
    if mode is None:
        return
    stored = ctx.store.get(CASH_BALANCE, cash_balance_id(customer_id))
    balance = (
        copy.deepcopy(stored)
        if stored is not None
        else {
            "id": cash_balance_id(customer_id),
            **cash_balance_view(ctx, customer_id),
        }
    )
    balance["settings"] = {
        "reconciliation_mode": "automatic" if mode == "merchant_default" else mode,
        "using_merchant_default": mode == "merchant_default",
    }
    if stored is None:
        ctx.store.insert(CASH_BALANCE, balance)
    else:
        ctx.store.replace(CASH_BALANCE, balance)


def get_cash(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`GET /v1/customers/{customer}/cash_balance`."""
    customer = fetch(ctx, KIND, path["customer"], "customer")
    return cash_balance_view(ctx, customer["id"])


def update_cash(ctx: RequestContext, params: Params, path: dict[str, str]) -> StripeObject:
    """`POST /v1/customers/{customer}/cash_balance` (`settings[reconciliation_mode]`)."""
    customer = fetch(ctx, KIND, path["customer"], "customer")
    _set_cash_settings(ctx, customer["id"], params, prefix="")
    return cash_balance_view(ctx, customer["id"])


def list_cash_transactions(
    ctx: RequestContext, params: Params, path: dict[str, str]
) -> StripeObject:
    """`GET /v1/customers/{customer}/cash_balance_transactions`, newest first (the payment
    methods module records them; a scan of the collection: there is no index by customer)."""
    customer = fetch(ctx, KIND, path["customer"], "customer")
    customer_id = customer["id"]
    return list_response(
        ctx.store,
        kind=CASH_TRANSACTION,
        params=params,
        url=f"/v1/customers/{customer_id}/cash_balance_transactions",
        predicate=lambda t: t.get("customer") == customer_id,
    )


def retrieve_cash_transaction(
    ctx: RequestContext, params: Params, path: dict[str, str]
) -> StripeObject:
    """`GET /v1/customers/{customer}/cash_balance_transactions/{transaction}`."""
    fetch(ctx, KIND, path["customer"], "customer")
    noun = "customer cash balance transaction"
    transaction = fetch(ctx, CASH_TRANSACTION, path["transaction"], noun)
    if transaction.get("customer") != path["customer"]:
        raise no_such(noun, path["transaction"])
    return render(ctx.store, transaction, expand_of(params))


def _refuse_legacy_sources(params: Params, names: tuple[str, ...]) -> None:
    for name in names:
        if name in params:
            raise invalid(
                f"The emulator does not support `{name}` on customers: attach a payment method "
                "with POST /v1/payment_methods/{id}/attach and set "
                "invoice_settings[default_payment_method].",
                param=name,
            )


# Stripe's limits on a customer's text fields (shorter than the 5,000 of other strings): a
# longer phone is refused as `Invalid string: +1 555-555...5678456789; must be at most 20
# characters` (param `phone`); `name` up to 256, `email` up to 512 (the SDK's docstring).
_MAX_LENGTHS: dict[str, int] = {"phone": 20, "name": 256, "email": 512}


def _check_lengths(params: Params) -> None:
    for name, limit in _MAX_LENGTHS.items():
        value = params.get(name)
        if isinstance(value, str) and len(value) > limit:
            raise invalid(
                f"Invalid string: {value[:10]}...{value[-10:]}; must be at most {limit} characters",
                param=name,
            )


def _check_invoice_prefix(value: Any) -> None:
    if value is not None and not _INVOICE_PREFIX.fullmatch(value):
        raise invalid(
            "Invoice prefix must be 3 to 12 uppercase letters or numbers.",
            param="invoice_prefix",
        )


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
    ctx: RequestContext,
    customer_id: str,
    raw: dict[str, Any] | None,
    current: dict[str, Any] | None,
    *,
    attaching: str | None = None,
) -> dict[str, Any]:
    settings: dict[str, Any] = (
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
        if key == "rendering_options" and isinstance(value, dict):
            settings[key] = {
                "amount_tax_display": nullable(value.get("amount_tax_display")),
                "template": nullable(value.get("template")),
            }
        else:
            settings[key] = nullable(value)
    default = settings["default_payment_method"]
    if "default_payment_method" in (raw or {}) and default and default != attaching:
        _check_default_payment_method(ctx, customer_id, default)
    return settings


def _attachable(ctx: RequestContext, pm_id: str, customer_id: str) -> StripeObject:
    """The payment method `payment_method` names on a customer create, checked before anything
    is created: every refusal of `payment_methods.attach_to` (attached elsewhere, spent, a
    card whose check declines: 402) is raised before it changes anything, so it is asked to
    raise it now; the attachment itself follows `customer.created`."""
    from stripe_emulator.resources import payment_methods

    pm = payment_methods.resolve(ctx, pm_id, param="payment_method")
    if pm.get("customer") is not None:
        payment_methods.attach_to(ctx, pm, customer_id)
    payment_methods.check_reusable(pm, param="payment_method")
    card = payment_methods.behaviour(pm)
    if card is not None and card.declines_on_setup and card.decline_code is not None:
        payment_methods.attach_to(ctx, pm, customer_id)
    return pm


def _check_default_payment_method(ctx: RequestContext, customer_id: str, pm_id: str) -> None:
    """Stripe's rule: the default payment method is one attached to this customer."""
    param = "invoice_settings[default_payment_method]"
    pm = ctx.store.get(PAYMENT_METHOD, pm_id)
    if pm is None:
        raise no_such("PaymentMethod", pm_id, param=param, in_body=True)
    if pm.get("customer") != customer_id:
        raise invalid(
            f"The customer does not have a payment method with the ID {pm_id}. The payment "
            "method must be attached to the customer.",
            param=param,
            code="resource_missing",
        )


def _invoice_prefix() -> str:
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(8))

"""A customer's cash balance (the `customer_balance` payment method's funds) and its
`customer_cash_balance_transaction`s.

Stored as a `cash_balance` object with id `cashbal_<customer>` (Stripe's cash balance has no
id of its own; the id is private to the store and never rendered). Funding and applying to
payments live in `payment_intents`, which knows the intents the funds go to.
"""

from __future__ import annotations

import copy

from stripe_emulator.core import RequestContext
from stripe_emulator.ids import new_id
from stripe_emulator.resources._payments import time_for
from stripe_emulator.state import StripeObject

KIND = "cash_balance"
TRANSACTION = "customer_cash_balance_transaction"

BANK_TRANSFER_TYPES: dict[str, str] = {
    "usd": "us_bank_transfer",
    "eur": "eu_bank_transfer",
    "gbp": "gb_bank_transfer",
}


def balance_of(ctx: RequestContext, customer_id: str) -> StripeObject:
    """The stored cash balance (created empty on first use)."""
    existing = ctx.store.get(KIND, _id(customer_id))
    if existing is not None:
        return existing
    balance: StripeObject = {
        "id": _id(customer_id),
        "object": KIND,
        "available": {},
        "customer": customer_id,
        "customer_account": None,
        "livemode": False,
        "settings": {"reconciliation_mode": "automatic", "using_merchant_default": True},
    }
    ctx.store.insert(KIND, balance)
    return balance


def available(ctx: RequestContext, customer_id: str, currency: str) -> int:
    """Funds available in `currency`."""
    amount = balance_of(ctx, customer_id)["available"].get(currency, 0)
    return int(amount)


def automatic(ctx: RequestContext, customer_id: str) -> bool:
    """Whether funds go to waiting payments by themselves (`reconciliation_mode`
    `automatic`; `manual` waits for `apply_customer_balance`)."""
    settings = balance_of(ctx, customer_id)["settings"]
    return bool(settings.get("reconciliation_mode", "automatic") == "automatic")


def render_balance(balance: StripeObject) -> StripeObject:
    """Stripe's `cash_balance` object (no id)."""
    return {k: copy.deepcopy(v) for k, v in balance.items() if k != "id"}


def move(
    ctx: RequestContext,
    customer_id: str,
    currency: str,
    net_amount: int,
    *,
    type_: str,
    details: StripeObject,
) -> StripeObject:
    """Change the balance by `net_amount` and record the transaction (emits
    `customer_cash_balance_transaction.created`)."""
    before = balance_of(ctx, customer_id)
    after = copy.deepcopy(before)
    ending = int(after["available"].get(currency, 0)) + net_amount
    after["available"][currency] = ending
    ctx.store.replace(KIND, after)
    transaction: StripeObject = {
        "id": new_id("ccsbtxn"),
        "object": TRANSACTION,
        "adjusted_for_overdraft": None,
        "applied_to_payment": None,
        "created": time_for(ctx, customer_id),
        "currency": currency,
        "customer": customer_id,
        "customer_account": None,
        "ending_balance": ending,
        "funded": None,
        "livemode": False,
        "net_amount": net_amount,
        "refunded_from_payment": None,
        "transferred_to_balance": None,
        "type": type_,
        "unapplied_from_payment": None,
    }
    transaction.update(details)
    ctx.store.insert(TRANSACTION, transaction)
    ctx.emit("customer_cash_balance_transaction.created", transaction)
    return transaction


def _id(customer_id: str) -> str:
    return f"cashbal_{customer_id}"

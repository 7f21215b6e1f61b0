"""Delegated credit purchases: the admin subscribe route with a product instead of a plan
(DESIGN §17, §19; Frontier's delegated checkout with a product).

`POST .../billing/subscriptions` `{product: {name, quantity?}, id?}` (admin) adds `quantity x
credit_amount` credits of a `behavior: credits` product to the org's account, source
`system.awarded`, without a checkout: nothing is paid and no Stripe object is made (like
Frontier's, it bypasses payment; a paid purchase goes through a checkout). The answer is the
purchase `{id, product, quantity, checkout_id: null, created_at, credits, transaction_id}`.

Idempotency: the optional `id` is the purchase's key. Its ledger transaction's id is derived
from the org and it (`purchase_transaction_id`), so the same id again answers the stored
purchase (200) and adds nothing, also after the catalog changed; the same id with another
product or quantity is 409 `id_conflict`. Without an `id` every request is a new purchase
(a generated id).

Products are read "as applied" (this installation's last-applied records, as the plans of a
subscribe are): a product not applied to Stripe, or archived, is unknown here.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from billing_reconciler.api.context import ApiContext
from billing_reconciler.api.errors import ApiError, invalid, not_found, precondition
from billing_reconciler.api.models import INT64_MAX, Purchase, SubscribeIn
from billing_reconciler.api.onboarding import require_org
from billing_reconciler.api.routing import PREFIX
from billing_reconciler.domains.subscription_types import BEHAVIOR_CREDITS
from billing_reconciler.model import META_BEHAVIOR, Kind
from billing_reconciler.store import (
    AccountRecord,
    AccountRepository,
    IdConflictError,
    LastAppliedRepository,
    LedgerRepository,
)
from billing_reconciler.store import LedgerTransaction as StoredTransaction
from billing_reconciler.store.ledger import SOURCE_AWARDED

#: The literal form of a delegated purchase's ledger id: `system.purchase:<org id>/<id>`
#: (an org id holds no `/`, so the first one ends it).
PURCHASE_ID_PREFIX: Final = "system.purchase:"
#: The hashed form, for ids too long for the literal one: `system.purchase#<sha256 hex>`.
PURCHASE_HASHED_PREFIX: Final = "system.purchase#"
#: The longest ledger id (`ledger_transactions.id` is a String(255)).
_MAX_LEDGER_ID: Final = 255
#: Metadata keys of a purchase's transaction.
META_PURCHASE_ID: Final = "purchase_id"
META_PRODUCT: Final = "product"
META_QUANTITY: Final = "quantity"
META_CREDIT_AMOUNT: Final = "credit_amount"
META_DELEGATED: Final = "delegated"


def purchase_transaction_id(org_id: str, purchase_id: str) -> str:
    """The ledger id of org `org_id`'s purchase `purchase_id`: per org (two orgs may use the
    same purchase ids), injective, and never a caller's usage id (`system.` is reserved)."""
    literal = f"{PURCHASE_ID_PREFIX}{org_id}/{purchase_id}"
    if len(literal) <= _MAX_LEDGER_ID:
        return literal
    digest = hashlib.sha256(f"{org_id}/{purchase_id}".encode()).hexdigest()
    return f"{PURCHASE_HASHED_PREFIX}{digest}"


@dataclass(frozen=True, slots=True)
class CreditsProduct:
    name: str
    credit_amount: int
    min_quantity: int | None
    max_quantity: int | None


def _count(metadata: Mapping[str, Any], key: str) -> int | None:
    """A product config count the catalog wrote as metadata text (`br_<key>`); None if unset
    or 0 (Frontier's "no limit")."""
    try:
        value = int(str(metadata.get(f"br_{key}", "")))
    except ValueError:
        return None
    return value if value > 0 else None


def _sold_how(session: Session, installation_id: str, product: str, org: str) -> str:
    """How a product that is not `credits` is bought, for the refusal's message."""
    prefix = f"{Kind.PRICE.value}/{product}/"
    entries = LastAppliedRepository(session).for_installation(installation_id)
    recurring = [
        e for key, e in entries.items() if key.startswith(prefix) and e.fields.get("recurring")
    ]
    if recurring:
        return "it is billed in plans: subscribe to a plan that has it"
    return (
        "it is a one-time product that must be paid: buy it through a checkout (POST "
        f"{PREFIX}/organizations/{org}/billing/checkouts with product)"
    )


def _credits_product(session: Session, installation_id: str, name: str, org: str) -> CreditsProduct:
    wanted = name.lower()
    entry = LastAppliedRepository(session).get(installation_id, f"{Kind.PRODUCT.value}/{wanted}")
    if entry is None:
        raise not_found(
            f"no product {name} (of the catalog as applied to Stripe)",
            field="product.name",
            product=name,
        )
    metadata = entry.fields.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    behavior = str(metadata.get(META_BEHAVIOR) or "basic")
    if behavior != BEHAVIOR_CREDITS:
        raise invalid(
            f"product {wanted} has behavior {behavior}, not credits: a delegated purchase "
            f"only adds credits; {_sold_how(session, installation_id, wanted, org)}",
            field="product.name",
            product=wanted,
            behavior=behavior,
        )
    credit_amount = _count(metadata, "credit_amount")
    if credit_amount is None:
        raise precondition(
            f"credits product {wanted} grants no credits (its config.credit_amount is unset or 0)",
            field="product.name",
            product=wanted,
        )
    return CreditsProduct(
        name=wanted,
        credit_amount=credit_amount,
        min_quantity=_count(metadata, "min_quantity"),
        max_quantity=_count(metadata, "max_quantity"),
    )


def _check_quantity(product: CreditsProduct, quantity: int) -> None:
    low, high = product.min_quantity, product.max_quantity
    if (low is not None and quantity < low) or (high is not None and quantity > high):
        bounds = f"{low or 1}..{high}" if high is not None else f"at least {low}"
        raise invalid(
            f"product {product.name} is sold in quantities of {bounds} (its config "
            f"min_quantity/max_quantity), not {quantity}",
            field="product.quantity",
            product=product.name,
            min_quantity=low,
            max_quantity=high,
        )


def _account(session: Session, org: str) -> AccountRecord:
    """The org's active account: 404 without one, 409 when it is disabled."""
    require_org(session, org)
    account = AccountRepository(session).latest_for_org(org)
    if account is None:
        raise not_found(f"organization {org} has no billing account", org_id=org)
    if account.state != "active":
        raise precondition(
            f"the billing account of organization {org} is {account.state}: enable it first",
            org_id=org,
            account_id=account.id,
            state=account.state,
        )
    return account


def purchase_of(record: StoredTransaction) -> Purchase:
    """The purchase a delegated purchase's transaction records."""
    metadata = record.metadata
    return Purchase(
        id=metadata[META_PURCHASE_ID],
        product=metadata[META_PRODUCT],
        quantity=int(metadata[META_QUANTITY]),
        checkout_id=None,
        created_at=record.created_at,
        credits=record.amount,
        transaction_id=record.id,
    )


def _conflict(purchase_id: str, org: str) -> ApiError:
    return ApiError(
        409,
        "id_conflict",
        f"purchase id {purchase_id!r} was used before with another product or quantity",
        {"field": "id", "id": purchase_id, "org_id": org},
    )


def _replay(
    stored: StoredTransaction, account: AccountRecord, body: SubscribeIn, purchase_id: str, org: str
) -> Purchase:
    """The stored purchase when `body` is the same purchase again, else 409."""
    assert body.product is not None
    same = (
        stored.account_id == account.id
        and stored.metadata.get(META_PRODUCT) == body.product.name.lower()
        and stored.metadata.get(META_QUANTITY) == str(body.product.quantity)
    )
    if not same:
        raise _conflict(purchase_id, org)
    return purchase_of(stored)


def _answer(purchase: Purchase, *, created: bool) -> JSONResponse:
    return JSONResponse(purchase.model_dump(mode="json"), status_code=201 if created else 200)


def purchase_credits(context: ApiContext, org: str, body: SubscribeIn) -> JSONResponse:
    """Add the credits of `body.product` to the org's account once per purchase id: 201 with
    the purchase, 200 with the stored one for the same purchase again."""
    assert body.product is not None
    purchase_id = body.id if body.id is not None else uuid.uuid4().hex
    transaction_id = purchase_transaction_id(org, purchase_id)
    quantity = body.product.quantity
    with context.store.session() as session:
        account = _account(session, org)
        ledger = LedgerRepository(session, clock=context.clock)
        stored = ledger.get(transaction_id)
        if stored is not None:  # a retry: answered as stored, whatever the catalog says now
            return _answer(_replay(stored, account, body, purchase_id, org), created=False)
        product = _credits_product(session, context.installation_id(), body.product.name, org)
        _check_quantity(product, quantity)
        credits = quantity * product.credit_amount
        balance, _ = ledger.balance(account.id)
        if credits > INT64_MAX or balance + credits > INT64_MAX:
            raise invalid(
                f"{quantity} x {product.credit_amount} credits would take the balance "
                f"({balance}) past {INT64_MAX}",
                field="product.quantity",
                balance=balance,
                limit=INT64_MAX,
            )
        try:
            record, created = ledger.credit(
                account.id,
                id=transaction_id,
                amount=credits,
                source=SOURCE_AWARDED,
                description=f"delegated purchase of {quantity} x {product.name}",
                metadata={
                    META_PURCHASE_ID: purchase_id,
                    META_PRODUCT: product.name,
                    META_QUANTITY: str(quantity),
                    META_CREDIT_AMOUNT: str(product.credit_amount),
                    META_DELEGATED: "true",
                },
            )
        except IdConflictError:
            # The same id was taken concurrently with another product or quantity.
            raise _conflict(purchase_id, org) from None
    if created:
        context.reconcile_customer(org, "credits purchased")
    return _answer(purchase_of(record), created=created)

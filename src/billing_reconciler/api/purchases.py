"""Delegated credit purchases: the admin subscribe route with a product instead of a plan
(DESIGN §17, §19; Frontier's delegated checkout with a product).

`POST .../billing/subscriptions` `{product: {name, quantity?}, id?}` (admin) adds `quantity x
credit_amount` credits of a `behavior: credits` product to the org's account, source
`system.awarded`, without a checkout: nothing is paid and no Stripe object is made (like
Frontier's, it bypasses payment; a paid purchase goes through a checkout). The answer is the
purchase `{id, product, quantity, checkout_id: null, created_at, credits, transaction_id,
account_id}`.

Idempotency: the optional `id` is the purchase's key. Its ledger transaction's id is derived
from the org and it (`purchase_transaction_id`), so the same id again answers the stored
purchase (200) and adds nothing, also after the catalog changed, after the account was
disabled (tester T2 G2: a retry straddling a disable must not hear that an added purchase
failed), and after the org opened a new account (G3: the purchase id is the org's; the
answer's `account_id` names the earlier account its credits went to, the new one gets
nothing). The same id with another product or quantity is 409 `id_conflict` (naming the
earlier account when the purchase was credited to one), except on a disabled account, whose
409 `failed_precondition` stands for anything but a replay (as for usages). Without an `id`
every request is a new purchase (a generated id).

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
    """The org's latest account: 404 without an org or an account."""
    require_org(session, org)
    account = AccountRepository(session).latest_for_org(org)
    if account is None:
        raise not_found(f"organization {org} has no billing account", org_id=org)
    return account


def _require_active(account: AccountRecord, org: str) -> None:
    """409 when the org's account is not active (disabled)."""
    if account.state != "active":
        raise precondition(
            f"the billing account of organization {org} is {account.state}: enable it first",
            org_id=org,
            account_id=account.id,
            state=account.state,
        )


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
        account_id=record.account_id,
    )


def _conflict(purchase_id: str, org: str, *, earlier: str | None = None) -> ApiError:
    """409 id_conflict; `earlier`: the purchase was credited to that earlier account of the
    org (not its current one), named in the message and the details."""
    where = f" on the org's earlier billing account {earlier}" if earlier else ""
    details: dict[str, Any] = {"field": "id", "id": purchase_id, "org_id": org}
    if earlier is not None:
        details["account_id"] = earlier
    return ApiError(
        409,
        "id_conflict",
        f"purchase id {purchase_id!r} was used before{where} with another product or quantity",
        details,
    )


def _stored_purchase(
    session: Session, stored: StoredTransaction, org: str, purchase_id: str
) -> StoredTransaction | None:
    """`stored` when it is org `org`'s purchase `purchase_id` (credited to any account of
    the org, its current one or an earlier one), else None."""
    if stored.metadata.get(META_PURCHASE_ID) != purchase_id:
        return None
    credited = AccountRepository(session).get(stored.account_id)
    return stored if credited is not None and credited.org_id == org else None


def _is_same(stored: StoredTransaction, body: SubscribeIn) -> bool:
    assert body.product is not None
    return stored.metadata.get(META_PRODUCT) == body.product.name.lower() and stored.metadata.get(
        META_QUANTITY
    ) == str(body.product.quantity)


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
        found = ledger.get(transaction_id)
        stored = None if found is None else _stored_purchase(session, found, org, purchase_id)
        if stored is not None and _is_same(stored, body):
            # A retry: answered as stored, whatever the catalog or the account's state says
            # now, also when the org has opened another account since (G2, G3).
            return _answer(purchase_of(stored), created=False)
        _require_active(account, org)
        if found is not None:
            earlier = stored.account_id if stored and stored.account_id != account.id else None
            raise _conflict(purchase_id, org, earlier=earlier)
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

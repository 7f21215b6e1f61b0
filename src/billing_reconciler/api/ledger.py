"""The credit ledger over HTTP: balance, transactions, and the admin's grants (DESIGN §17).

A grant's `id` is its idempotency key: resending the same grant answers 200 with the stored
transaction and changes nothing; the same id with other content is 409 `id_conflict`. The
balance row is updated under a row lock in the grant's transaction, so concurrent grants
sum exactly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from pydantic import AfterValidator, AwareDatetime

from billing_reconciler.api.auth import Scope, requires
from billing_reconciler.api.context import ApiContext
from billing_reconciler.api.errors import invalid, not_found, precondition
from billing_reconciler.api.models import INT64_MAX, Balance, CreditGrantIn, Page, Transaction
from billing_reconciler.api.onboarding import require_active, require_org
from billing_reconciler.api.routing import (
    DEFAULT_LIMIT,
    PREFIX,
    ApiRoute,
    Cursor,
    Limit,
    OrgId,
    error_responses,
)
from billing_reconciler.store import AccountRecord, AccountRepository, LedgerRepository
from billing_reconciler.store import LedgerTransaction as StoredTransaction

GRANT_SOURCE = "system.awarded"
RESERVED_SOURCE_PREFIX = "system."


def _in_utc(value: datetime | None) -> datetime | None:
    """The instant in UTC; one the datetime range cannot hold in UTC (`0001-01-01T00:00+14:00`)
    is a bad parameter (tester T3-5: it was an OverflowError, answered 503)."""
    if value is None:
        return None
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of the representable range once converted to UTC") from None


Since = Annotated[
    AwareDatetime | None,
    AfterValidator(_in_utc),
    Query(description="RFC 3339; transactions at or after this instant."),
]
Until = Annotated[
    AwareDatetime | None,
    AfterValidator(_in_utc),
    Query(description="RFC 3339; transactions before this instant."),
]


def transaction(record: StoredTransaction) -> Transaction:
    return Transaction(
        id=record.id,
        type="credit" if record.type == "credit" else "debit",
        amount=record.amount,
        source=record.source,
        description=record.description,
        user_id=record.user_id,
        metadata=dict(record.metadata),
        created_at=record.created_at,
        reverts=record.reverts,
    )


def _account(context: ApiContext, org: str) -> AccountRecord:
    with context.store.session() as session:
        require_org(session, org)
        record = AccountRepository(session).latest_for_org(org)
    if record is None:
        raise not_found(f"organization {org} has no billing account", org_id=org)
    return record


def ledger_router(context: ApiContext) -> APIRouter:
    """Balance and transactions (app scope)."""
    router = APIRouter(
        prefix=f"{PREFIX}/organizations/{{org}}/billing",
        tags=["ledger"],
        route_class=ApiRoute,
        dependencies=[Depends(requires(context.tokens, Scope.APP))],
    )

    @router.get("/balance", response_model=Balance, responses=error_responses(404))
    def get_balance(org: OrgId) -> Balance:
        """The balance of the org's active (else newest) account."""
        with context.store.session() as session:
            require_org(session, org)
            record = AccountRepository(session).latest_for_org(org)
            if record is None:
                raise not_found(f"organization {org} has no billing account", org_id=org)
            amount, updated_at = LedgerRepository(session).balance(record.id)
        return Balance(amount=amount, updated_at=updated_at)

    @router.get("/transactions", response_model=Page[Transaction], responses=error_responses(404))
    def list_transactions(
        org: OrgId,
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
        start: Since = None,
        end: Until = None,
    ) -> Page[Transaction]:
        """Newest first, in `[start, end)`."""
        record = _account(context, org)
        with context.store.session() as session:
            try:
                page, next_cursor = LedgerRepository(session).transactions(
                    record.id, limit=limit, cursor=cursor, start=start, end=end
                )
            except ValueError:
                raise invalid("not a cursor this list handed out", field="cursor") from None
        return Page[Transaction](data=[transaction(t) for t in page], next_cursor=next_cursor)

    return router


def admin_ledger_router(context: ApiContext) -> APIRouter:
    """`POST /admin/organizations/{org}/billing/credits`."""
    router = APIRouter(
        prefix=f"{PREFIX}/admin/organizations/{{org}}/billing",
        tags=["admin"],
        route_class=ApiRoute,
        dependencies=[Depends(requires(context.tokens, Scope.ADMIN))],
    )

    @router.post(
        "/credits",
        status_code=201,
        response_model=Transaction,
        responses={200: {"model": Transaction}, **error_responses(403, 404, 409)},
    )
    def grant_credits(org: OrgId, body: CreditGrantIn, response: Response) -> Transaction:
        """Grant credits (201); the same grant again answers 200 and changes nothing. Of
        the reserved `system.*` sources only `system.awarded` may be granted by hand: the
        others are the engine's own records (purchases, overdraft credits, reverts), which
        invoicing reads."""
        source = (body.source or GRANT_SOURCE).lower()
        if source.startswith(RESERVED_SOURCE_PREFIX) and source != GRANT_SOURCE:
            raise invalid(
                f"source {source!r} is reserved for the engine's own entries; grant with "
                f"{GRANT_SOURCE!r} or a source of your own",
                field="source",
                source=source,
            )
        with context.store.session() as session:
            require_org(session, org)
            latest = AccountRepository(session).latest_for_org(org)
            if latest is not None and latest.state != "active":
                # As usages and the credit check answer a disabled account (tester T1 F9).
                raise precondition(
                    f"the billing account of organization {org} is {latest.state}: enable it first",
                    org_id=org,
                    account_id=latest.id,
                    state=latest.state,
                )
            account = latest if latest is not None else require_active(session, org)
            ledger = LedgerRepository(session, clock=context.clock)
            balance, _ = ledger.balance(account.id)
            if balance + body.amount > INT64_MAX and ledger.get(body.id) is None:
                raise invalid(
                    f"a grant of {body.amount} would take the balance ({balance}) past {INT64_MAX}",
                    field="amount",
                    balance=balance,
                    limit=INT64_MAX,
                )
            record, created = ledger.credit(
                account.id,
                id=body.id,
                amount=body.amount,
                source=source,
                description=body.description,
            )
        if created:
            context.reconcile_customer(org, "credits granted")
        response.status_code = 201 if created else 200
        return transaction(record)

    return router

"""`/organizations/{org}` and its members: the host's facts about who is billed (DESIGN §15).

Writes are idempotent upserts. An org created while `customer.auto_create_with_org` is set
gets its billing account (and onboard credits) in the same transaction; every change asks for
the targeted reconcile of that org's customer once committed.

A delete (DESIGN §19) is refused with 409 `failed_precondition` while the org's account has
a negative balance or a live paid subscription (its plan bills a non-zero price in the
account's currency, as the subscribe route tells a free plan), unless `?force=true`. A
delete disables the account and, in the same transaction, asks for the end of its live
subscription: an immediate cancel (`invoice_now` and `prorate`, as `POST .../cancel
{immediate: true}` does: what is owed is invoiced, the unused time becomes a credit on the
Stripe customer's balance, never a refund), which the subscriptions domain carries out for the
disabled account on the targeted reconcile the delete asks for (and on later passes until it
is done). A deleted org is never left billing. An intent with nothing in Stripe (an offline
account's) just ends.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from billing_reconciler.api.auth import Scope, requires
from billing_reconciler.api.context import ApiContext
from billing_reconciler.api.errors import precondition
from billing_reconciler.api.models import Member, MemberIn, Organization, OrganizationIn, Page
from billing_reconciler.api.onboarding import (
    AUTO_CREATED_KEY,
    NewAccount,
    check_test_clock,
    open_account,
    require_org,
)
from billing_reconciler.api.routing import (
    DEFAULT_LIMIT,
    NO_BODY,
    PREFIX,
    ApiRoute,
    Cursor,
    Limit,
    OrgId,
    UserId,
    accepted_response,
    error_responses,
)
from billing_reconciler.api.subscription_end import end_subscription
from billing_reconciler.api.subscriptions import check_seat_limit
from billing_reconciler.api.verdicts import accepted, is_pending, raise_if_refused
from billing_reconciler.store import (
    AccountRecord,
    AccountRepository,
    LedgerRepository,
    MemberRecord,
    MemberRepository,
    OrganizationRecord,
    OrganizationRepository,
)
from billing_reconciler.store.subscriptions import lock_organization

TestClockHeader = Annotated[
    str | None,
    Header(
        alias="X-Stripe-Test-Clock",
        pattern=r"^clock_[A-Za-z0-9]+$",
        max_length=255,
        description="Test mode only: the test clock of the account auto-created with the org.",
    ),
]


def organization(record: OrganizationRecord) -> Organization:
    return Organization(
        id=record.org_id,
        title=record.title,
        owner_email=record.owner_email,
        metadata=dict(record.metadata),
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def member(record: MemberRecord) -> Member:
    return Member(
        user_id=record.user_id, email=record.email, role=record.role, created_at=record.created_at
    )


def organizations_router(context: ApiContext) -> APIRouter:
    router = APIRouter(
        prefix=f"{PREFIX}/organizations",
        tags=["organizations"],
        route_class=ApiRoute,
        dependencies=[Depends(requires(context.tokens, Scope.APP))],
    )

    @router.put(
        "/{org}",
        response_model=Organization,
        responses={
            201: {"model": Organization},
            **accepted_response(),
            **error_responses(402, 409),
        },
    )
    def put_organization(
        org: OrgId,
        body: OrganizationIn,
        response: Response,
        test_clock: TestClockHeader = None,
    ) -> Organization | JSONResponse:
        """Create or replace an org (201 when created, or re-created after a delete; a field
        left out is cleared, as a PUT replaces the whole org). Auto-creates its account if
        configured (a re-created org gets a new one: the deleted org's stays disabled, with its
        history; but a contract account, declared in desired/customers, stays the org's: the
        PUT opens none, and `POST .../billing/enable` re-enables it with its Stripe customer);
        when that account is online the answer waits for its Stripe customer (202
        when it takes longer). `X-Stripe-Test-Clock` sets the auto-created account's test
        clock, and replaces it while the account has no Stripe customer yet."""
        check_test_clock(context, test_clock)
        with context.store.session() as session:
            record, created = OrganizationRepository(session, clock=context.clock).upsert(
                org, title=body.title, owner_email=body.owner_email, metadata=body.metadata
            )
            settings = context.config().billing.customer
            opened = None
            accounts = AccountRepository(session)
            latest = accounts.latest_for_org(org)
            if settings.auto_create_with_org and (
                latest is None
                # A re-created org gets a new account, unless its newest is a contract's
                # (desired/customers): that one stays the org's, to enable, with its customer.
                or (created and latest.state != "active" and not latest.contract)
            ):
                opened = open_account(
                    context,
                    session,
                    record,
                    NewAccount(test_clock=test_clock, metadata={AUTO_CREATED_KEY: "true"}),
                )
            elif test_clock is not None:
                opened = _replace_test_clock(context, session, org, test_clock)
        response.status_code = 201 if created else 200
        if opened is None or opened.offline:
            context.reconcile_customer(org, "organization upserted")
            return organization(record)
        # A new online account: its Stripe customer is created now; wait for Stripe's verdict.
        verdict = context.await_customer(org, "organization upserted")
        if verdict is not None:
            raise_if_refused(verdict, org_id=org, account_id=opened.id)
            if is_pending(verdict):
                return accepted(verdict, f"{PREFIX}/organizations/{org}/billing")
        return organization(record)

    @router.delete(
        "/{org}", status_code=204, responses=error_responses(404, 409), dependencies=[NO_BODY]
    )
    def delete_organization(
        org: OrgId,
        force: Annotated[
            bool,
            Query(
                description="Delete even while overdrawn or on a live paid subscription (the "
                "subscription is then cancelled at once)."
            ),
        ] = False,
    ) -> Response:
        """Delete an org; refused (409) while its balance is negative or a paid subscription
        is live, unless `?force=true`. The account is disabled and its live subscription, paid
        or free, cancelled at once (invoiced and prorated, as an immediate cancel) by the
        targeted reconcile the delete asks for."""
        with context.store.session() as session:
            record = OrganizationRepository(session).get(org)
            if record is None:
                require_org(session, org)
            elif record.deleted_at is None:
                _delete(context, session, org, force=force)
        context.reconcile_customer(org, "organization deleted")
        return Response(status_code=204)

    @router.put(
        "/{org}/members/{user}",
        response_model=Member,
        responses={201: {"model": Member}, **error_responses(404, 409)},
    )
    def put_member(org: OrgId, user: UserId, body: MemberIn, response: Response) -> Member:
        """Add or update a member (201 when added). Adding one beyond a per-seat product's
        `seat_limit` of the account's plan is 409 `seat_limit_reached` and records nothing
        (the org row is locked while counting, so concurrent adds never overshoot)."""
        with context.store.session() as session:
            require_org(session, org)
            lock_organization(session, org)
            record, created = MemberRepository(session, clock=context.clock).upsert(
                org, user, email=body.email, role=body.role
            )
            if created:
                check_seat_limit(context, session, org)  # raises: the add is rolled back
        context.reconcile_customer(org, "member upserted")
        response.status_code = 201 if created else 200
        return member(record)

    @router.delete(
        "/{org}/members/{user}",
        status_code=204,
        responses=error_responses(404),
        dependencies=[NO_BODY],
    )
    def delete_member(org: OrgId, user: UserId) -> Response:
        """Remove a member (204 also when it was not one: deletes are idempotent)."""
        with context.store.session() as session:
            require_org(session, org)
            removed = MemberRepository(session).delete(org, user)
        if removed:
            context.reconcile_customer(org, "member removed")
        return Response(status_code=204)

    @router.get("/{org}/members", response_model=Page[Member], responses=error_responses(404))
    def list_members(
        org: OrgId, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
    ) -> Page[Member]:
        """Members ordered by user id, a page at a time."""
        with context.store.session() as session:
            require_org(session, org)
            records, next_cursor = MemberRepository(session).list(org, limit=limit, cursor=cursor)
        return Page[Member](data=[member(r) for r in records], next_cursor=next_cursor)

    return router


def _replace_test_clock(
    context: ApiContext, session: Session, org: str, test_clock: str
) -> AccountRecord | None:
    """A test clock sent again for an active account whose Stripe customer does not exist yet
    (the first clock named none, say) replaces its clock, so the customer's create is tried
    again with it: the account, or None when nothing changed. Once the customer exists its
    clock is fixed and the header is ignored, as on any PUT of an org with an account."""
    accounts = AccountRepository(session, clock=context.clock)
    account = accounts.active_for_org(org)
    if account is None or account.stripe_customer_id is not None:
        return None
    if account.test_clock == test_clock:
        return None
    return accounts.update(account.id, test_clock=test_clock)


def _delete(context: ApiContext, session: Session, org: str, *, force: bool) -> None:
    lock_organization(session, org)
    accounts = AccountRepository(session, clock=context.clock)
    account = accounts.latest_for_org(org)
    if account is not None:
        balance, _ = LedgerRepository(session).balance(account.id)
        if balance < 0 and not force:
            raise precondition(
                f"organization {org} has a negative balance ({balance}); "
                "settle it or delete with ?force=true",
                org_id=org,
                account_id=account.id,
                balance=balance,
            )
        end_subscription(context, session, org, account, force=force)
        if account.state == "active":
            accounts.set_state(account.id, "disabled", reason="organization deleted")
    OrganizationRepository(session, clock=context.clock).mark_deleted(org)

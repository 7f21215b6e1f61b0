"""Opening a billing account, and the onboard grant that comes with an org's first one.

Shared by `PUT /organizations/{org}` (auto-create, `customer.auto_create_with_org`) and the
explicit `POST .../billing`. Both run inside the caller's transaction, so the account and its
onboard credits are recorded together or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from billing_reconciler.api.context import ApiContext
from billing_reconciler.api.errors import ApiError, precondition
from billing_reconciler.model_customers import AUTO_CREATED_KEY as AUTO_CREATED_KEY
from billing_reconciler.store import (
    AccountRecord,
    AccountRepository,
    Address,
    IntentRepository,
    OrganizationRecord,
    OrganizationRepository,
    TaxId,
)
from billing_reconciler.store import grant_onboard_credits as store_grant


@dataclass(frozen=True, slots=True)
class NewAccount:
    """What the caller asked for; None fields default from the org and billing.yaml."""

    name: str | None = None
    email: str | None = None
    phone: str | None = None
    address: Address | None = None
    tax_ids: tuple[TaxId, ...] = ()
    currency: str | None = None
    offline: bool | None = None
    test_clock: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def check_test_clock(context: ApiContext, test_clock: str | None) -> None:
    if test_clock is not None and context.live_mode:
        raise precondition(
            "test clocks exist in test mode only; this controller uses a live Stripe key",
            field="test_clock",
        )


def open_account(
    context: ApiContext, session: Session, org: OrganizationRecord, wanted: NewAccount
) -> AccountRecord:
    """Create the org's account (the store refuses a second active one, or one while an older
    account is overdrawn) and grant the onboard credits if this org never had them."""
    check_test_clock(context, wanted.test_clock)
    settings = context.config().billing
    account = AccountRepository(session, clock=context.clock).create(
        org.org_id,
        name=wanted.name if wanted.name is not None else org.title,
        email=wanted.email if wanted.email is not None else org.owner_email,
        phone=wanted.phone,
        address=wanted.address,
        tax_ids=wanted.tax_ids,
        currency=wanted.currency or settings.currency,
        offline=settings.customer.default_offline if wanted.offline is None else wanted.offline,
        test_clock=wanted.test_clock,
        metadata=wanted.metadata,
    )
    grant_onboard_credits(context, session, account)
    if settings.customer.default_plan:
        # DESIGN §16: subscribed directly (no checkout, no trial) by the subscriptions domain;
        # an offline account's intent waits for `register`.
        IntentRepository(session, clock=context.clock).record(
            account.id, plan=settings.customer.default_plan.lower(), source="default_plan"
        )
    return account


def grant_onboard_credits(context: ApiContext, session: Session, account: AccountRecord) -> None:
    """`customer.onboard_credits_with_org`, once per org ever (`store.grant_onboard_credits`:
    the ledger id is derived from the org id, so a later account of the same org, or a
    retry, finds it already granted)."""
    store_grant(
        session,
        account_id=account.id,
        org_id=account.org_id,
        amount=context.config().billing.customer.onboard_credits_with_org,
        clock=context.clock,
    )


def require_active(session: Session, org_id: str) -> AccountRecord:
    account = AccountRepository(session).active_for_org(org_id)
    if account is None:
        raise ApiError(
            404,
            "not_found",
            f"organization {org_id} has no active billing account",
            {"org_id": org_id},
        )
    return account


def require_org(session: Session, org_id: str) -> OrganizationRecord:
    org = OrganizationRepository(session).get(org_id)
    if org is None or org.deleted_at is not None:
        raise ApiError(404, "not_found", f"no organization {org_id}", {"org_id": org_id})
    return org

"""The store's tables, as SQLAlchemy 2 typed ORM models.

These declarations are the source of truth that `migrations/versions/*` must reproduce exactly
(a test compares them on SQLite and PostgreSQL). Change a table here, then add a migration.
Constraint names come from the naming convention so migrations can refer to them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from billing_reconciler.store.types import JSONColumn, SurrogateKey, UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Identifiers from Stripe and keys we derive stay well below this.
KEY = 255


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class PlanModel(Base):
    """Plans have no Stripe object, so their desired definition lives here."""

    __tablename__ = "plans"
    __table_args__ = (CheckConstraint("state IN ('active', 'archived')", name="state"),)

    name: Mapped[str] = mapped_column(String(KEY), primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    interval: Mapped[str | None] = mapped_column(String(32))
    trial_days: Mapped[int] = mapped_column(Integer)
    on_start_credits: Mapped[int] = mapped_column(BigInteger)
    products: Mapped[list[str]] = mapped_column(JSONColumn)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONColumn)
    content_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LastAppliedModel(Base):
    """What we last wrote to each managed object: the third side of the three-way diff."""

    __tablename__ = "last_applied"

    installation_id: Mapped[str] = mapped_column(String(KEY), primary_key=True)
    object_key: Mapped[str] = mapped_column(String(KEY), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    stripe_id: Mapped[str | None] = mapped_column(String(KEY))
    fields: Mapped[dict[str, Any]] = mapped_column(JSONColumn)
    content_hash: Mapped[str] = mapped_column(String(64))
    revision: Mapped[str] = mapped_column(String(KEY))
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RunModel(Base):
    """Audit of every reconcile: who, when, from which revisions, and how it ended."""

    __tablename__ = "reconcile_runs"
    __table_args__ = (
        CheckConstraint("mode IN ('dry_run', 'apply')", name="mode"),
        CheckConstraint(
            "result IN ('running', 'no_changes', 'changes_pending', 'applied', 'failed')",
            name="result",
        ),
        Index(None, "domain", "started_at"),
    )

    run_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    domain: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(KEY))
    git_revision: Mapped[str | None] = mapped_column(String(KEY))
    desired_revision: Mapped[str | None] = mapped_column(String(KEY))
    plan_fingerprint: Mapped[str | None] = mapped_column(String(KEY))
    result: Mapped[str] = mapped_column(String(16))
    summary: Mapped[dict[str, Any]] = mapped_column(JSONColumn)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class JournalModel(Base):
    """One row per plan step executed; rows are never deleted and `done` rows never change."""

    __tablename__ = "apply_journal"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'done', 'failed')", name="state"),
        Index(None, "installation_id", "state"),
        Index(None, "run_id"),
        Index(None, "installation_id", "step_key"),
    )

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("reconcile_runs.run_id"))
    installation_id: Mapped[str] = mapped_column(String(KEY))
    plan_fingerprint: Mapped[str] = mapped_column(String(KEY))
    step_index: Mapped[int] = mapped_column(Integer)
    object_key: Mapped[str] = mapped_column(String(KEY))
    action: Mapped[str] = mapped_column(String(32))
    idempotency_key: Mapped[str] = mapped_column(String(KEY), unique=True)
    # The plan's key for the step (`idempotency_key` is it bound to the run); migration 0002.
    step_key: Mapped[str | None] = mapped_column(String(KEY))
    state: Mapped[str] = mapped_column(String(16))
    stripe_id: Mapped[str | None] = mapped_column(String(KEY))
    error: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(KEY))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class InboxModel(Base):
    """Verified Stripe webhook events, deduplicated by event id, waiting to be acted upon."""

    __tablename__ = "webhook_inbox"
    __table_args__ = (Index(None, "processed_at", "id"),)

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(KEY), unique=True)
    type: Mapped[str] = mapped_column(String(KEY))
    object_id: Mapped[str | None] = mapped_column(String(KEY))
    livemode: Mapped[bool] = mapped_column(Boolean)
    api_version: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONColumn)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)


class ControllerStateModel(Base):
    """Small key/value facts about the controller, e.g. `suspended`."""

    __tablename__ = "controller_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSONColumn)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LeaseModel(Base):
    """Who holds a leadership lock, for status pages; the lock itself is an advisory/file lock."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(KEY))
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime)
    renewed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


# --- organizations, members, billing accounts (DESIGN §15), ledger (§17) ---------------------

#: Host org ids are 1-64 characters; account ids are "acct_" + 32 hex digits.
ORG_ID = 64
ACCOUNT_ID = 64


class OrganizationModel(Base):
    """An organization as the host told us of it; deletion is a mark, never a row removal."""

    __tablename__ = "organizations"

    org_id: Mapped[str] = mapped_column(String(ORG_ID), primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    owner_email: Mapped[str | None] = mapped_column(String(KEY))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONColumn)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MemberModel(Base):
    """A user of an organization (seats are counted from these)."""

    __tablename__ = "members"

    org_id: Mapped[str] = mapped_column(
        String(ORG_ID), ForeignKey("organizations.org_id"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(KEY), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(KEY))
    role: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class BillingAccountModel(Base):
    """A billing account (the Stripe customer) of an org; at most one active per org.

    `org_id` has no foreign key: contract customers (desired/customers) may name an org the
    host has not told us of yet.
    """

    __tablename__ = "billing_accounts"
    __table_args__ = (
        CheckConstraint("state IN ('active', 'disabled')", name="state"),
        CheckConstraint("due_in_days >= 0", name="due_in_days"),
        # One active account per org, enforced by the database on both backends.
        Index(
            "uq_billing_accounts_active_org_id",
            "org_id",
            unique=True,
            sqlite_where=text("state = 'active'"),
            postgresql_where=text("state = 'active'"),
        ),
        Index(None, "org_id", "created_at"),
        Index(None, "state", "id"),
    )

    id: Mapped[str] = mapped_column(String(ACCOUNT_ID), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(ORG_ID))
    stripe_customer_id: Mapped[str | None] = mapped_column(String(KEY), unique=True)
    state: Mapped[str] = mapped_column(String(16))
    offline: Mapped[bool] = mapped_column(Boolean)
    name: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(String(KEY))
    phone: Mapped[str | None] = mapped_column(String(64))
    address: Mapped[dict[str, Any] | None] = mapped_column(JSONColumn)
    tax_ids: Mapped[list[dict[str, str]]] = mapped_column(JSONColumn)
    currency: Mapped[str | None] = mapped_column(String(3))
    credit_min: Mapped[int] = mapped_column(BigInteger)
    due_in_days: Mapped[int] = mapped_column(Integer)
    test_clock: Mapped[str | None] = mapped_column(String(KEY))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONColumn)
    contract: Mapped[bool] = mapped_column(Boolean)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    last_applied: Mapped[dict[str, Any]] = mapped_column(JSONColumn)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LedgerTransactionModel(Base):
    """One credit or debit of an account; its id is the caller's idempotency key."""

    __tablename__ = "ledger_transactions"
    __table_args__ = (
        CheckConstraint("type IN ('credit', 'debit')", name="type"),
        CheckConstraint("amount > 0", name="amount"),
        Index(None, "account_id", "created_at", "id"),
        Index(None, "reverts"),
    )

    id: Mapped[str] = mapped_column(String(KEY), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(ACCOUNT_ID), ForeignKey("billing_accounts.id"))
    type: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(KEY))
    description: Mapped[str | None] = mapped_column(Text)
    user_id: Mapped[str | None] = mapped_column(String(KEY))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONColumn)
    content_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The usage (a debit) this credit reverts; None for every other transaction. A revert
    # (non-null here) is never itself reverted.
    reverts: Mapped[str | None] = mapped_column(String(KEY))


class LedgerEntryModel(Base):
    """The two sides of a transaction: the account's and the platform's, summing to zero."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint("side IN ('account', 'platform')", name="side"),
        CheckConstraint("amount <> 0", name="amount"),
        CheckConstraint(
            "(side = 'account' AND account_id IS NOT NULL)"
            " OR (side = 'platform' AND account_id IS NULL)",
            name="account_side",
        ),
        UniqueConstraint("transaction_id", "side"),
        Index(None, "account_id"),
    )

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True, autoincrement=True)
    transaction_id: Mapped[str] = mapped_column(String(KEY), ForeignKey("ledger_transactions.id"))
    side: Mapped[str] = mapped_column(String(16))
    # The account's side names the account; the platform's side has none.
    account_id: Mapped[str | None] = mapped_column(
        String(ACCOUNT_ID), ForeignKey("billing_accounts.id")
    )
    amount: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LedgerBalanceModel(Base):
    """The running balance of an account, updated with each entry under a row lock."""

    __tablename__ = "ledger_balances"

    account_id: Mapped[str] = mapped_column(
        String(ACCOUNT_ID), ForeignKey("billing_accounts.id"), primary_key=True
    )
    amount: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DomainCursorModel(Base):
    """Where a domain is in Stripe's event stream, and when it last resynced in full."""

    __tablename__ = "domain_cursors"

    domain: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_event_id: Mapped[str | None] = mapped_column(String(KEY))
    last_event_created: Mapped[datetime | None] = mapped_column(UTCDateTime)
    full_resync_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


# --- subscriptions (DESIGN §16): intents, the mirror of Stripe's, plan history ----------------


class SubscriptionIntentModel(Base):
    """What an account's subscription should be (the desired side): its plan, a pending change
    and a cancel request. At most one `current` intent per account (a partial unique index);
    a replaced or ended intent stays as history, never removed."""

    __tablename__ = "subscription_intents"
    __table_args__ = (
        CheckConstraint("state IN ('current', 'replaced', 'ended')", name="state"),
        CheckConstraint(
            "source IN ('default_plan', 'checkout', 'subscribe', 'contract')", name="source"
        ),
        CheckConstraint(
            "pending_reason IS NULL OR pending_reason IN ('change', 'cancel')",
            name="pending_reason",
        ),
        CheckConstraint(
            "cancel_mode IS NULL OR cancel_mode IN ('immediate', 'period_end')",
            name="cancel_mode",
        ),
        # One current intent per account, enforced by the database on both backends.
        Index(
            "uq_subscription_intents_current_account_id",
            "account_id",
            unique=True,
            sqlite_where=text("state = 'current'"),
            postgresql_where=text("state = 'current'"),
        ),
        Index(None, "state", "account_id"),
        Index(None, "account_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(KEY), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(ACCOUNT_ID), ForeignKey("billing_accounts.id"))
    org_id: Mapped[str] = mapped_column(String(ORG_ID))
    plan: Mapped[str] = mapped_column(String(KEY))
    source: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    requested_by: Mapped[str | None] = mapped_column(String(KEY))
    skip_trial: Mapped[bool] = mapped_column(Boolean)
    cancel_after_trial: Mapped[bool] = mapped_column(Boolean)
    # The pending change (DESIGN §16 `pending_change`); all None when there is none.
    pending_plan: Mapped[str | None] = mapped_column(String(KEY))
    pending_effective_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pending_immediate: Mapped[bool] = mapped_column(Boolean)
    pending_reason: Mapped[str | None] = mapped_column(String(16))
    pending_requested_by: Mapped[str | None] = mapped_column(String(KEY))
    pending_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The cancel request; None when there is none.
    cancel_mode: Mapped[str | None] = mapped_column(String(16))
    cancel_requested_by: Mapped[str | None] = mapped_column(String(KEY))
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    replaced_by: Mapped[str | None] = mapped_column(String(KEY))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SubscriptionModel(Base):
    """The mirror of a Stripe subscription on one of our accounts, as last observed.

    Stripe's times are kept as UTC timestamps; `record` rebuilds the observed record exactly.
    `observed_at` orders observations: an older one never overwrites a newer one.
    """

    __tablename__ = "subscriptions"
    __table_args__ = (
        Index(None, "account_id", "stripe_created"),
        Index(None, "org_id"),
        Index(None, "status", "stripe_id"),
    )

    stripe_id: Mapped[str] = mapped_column(String(KEY), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(ACCOUNT_ID), ForeignKey("billing_accounts.id"))
    org_id: Mapped[str] = mapped_column(String(ORG_ID))
    customer_id: Mapped[str] = mapped_column(String(KEY))
    intent_id: Mapped[str | None] = mapped_column(String(KEY))
    plan: Mapped[str | None] = mapped_column(String(KEY))
    seats: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3))
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSONColumn)
    collection_method: Mapped[str] = mapped_column(String(32))
    days_until_due: Mapped[int | None] = mapped_column(Integer)
    automatic_tax: Mapped[bool] = mapped_column(Boolean)
    current_period_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    current_period_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    trial_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    trial_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean)
    canceled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    schedule_id: Mapped[str | None] = mapped_column(String(KEY))
    pending_invoice_item_interval: Mapped[list[Any] | None] = mapped_column(JSONColumn)
    latest_invoice_id: Mapped[str | None] = mapped_column(String(KEY))
    test_clock: Mapped[str | None] = mapped_column(String(KEY))
    stripe_created: Mapped[datetime] = mapped_column(UTCDateTime)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONColumn)
    owner: Mapped[dict[str, Any] | None] = mapped_column(JSONColumn)
    content_hash: Mapped[str] = mapped_column(String(64))
    observed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PlanHistoryModel(Base):
    """The plans an account held, one row per period of a plan on a Stripe subscription; at
    most one open period per (account, plan, subscription). Trials once per plan read it."""

    __tablename__ = "subscription_plan_history"
    __table_args__ = (
        Index(
            "uq_subscription_plan_history_open",
            "account_id",
            "plan",
            "stripe_subscription_id",
            unique=True,
            sqlite_where=text("ended_at IS NULL"),
            postgresql_where=text("ended_at IS NULL"),
        ),
        Index(None, "account_id", "plan"),
    )

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(ACCOUNT_ID), ForeignKey("billing_accounts.id"))
    plan: Mapped[str] = mapped_column(String(KEY))
    stripe_subscription_id: Mapped[str] = mapped_column(String(KEY))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    trialed: Mapped[bool] = mapped_column(Boolean)


# --- credits (DESIGN §17): the meter-event outbox, aggregated events, overdraft windows -------


class MeterOutboxModel(Base):
    """A usage's meter event, written in the usage's transaction and sent to Stripe later
    (`billing/meter_events`, identifier = the usage id). `seq` orders the outbox; a row is
    pending until `sent_at` is set, or, when aggregated, until it names the aggregate that
    carries it (`aggregate_id`)."""

    __tablename__ = "meter_outbox"
    __table_args__ = (
        CheckConstraint("value >= 0", name="value"),
        Index(
            "ix_meter_outbox_pending",
            "account_id",
            "seq",
            sqlite_where=text("sent_at IS NULL AND aggregate_id IS NULL"),
            postgresql_where=text("sent_at IS NULL AND aggregate_id IS NULL"),
        ),
        Index(None, "aggregate_id"),
    )

    seq: Mapped[int] = mapped_column(SurrogateKey, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(KEY), unique=True)
    account_id: Mapped[str] = mapped_column(String(ACCOUNT_ID), ForeignKey("billing_accounts.id"))
    org_id: Mapped[str] = mapped_column(String(ORG_ID))
    event_name: Mapped[str] = mapped_column(String(KEY))
    value: Mapped[int] = mapped_column(BigInteger)
    event_time: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    aggregate_id: Mapped[str | None] = mapped_column(String(KEY))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    # Stripe refused the event for good (older than 35 days, say): kept, never sent again
    # by itself, reported (plan warning, status) until someone deals with it.
    refused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MeterAggregateModel(Base):
    """One meter event carrying the sum of an account's outbox rows of one `sum` meter and
    flush window (`reconcile.usage.aggregate`); its id, the event's identifier, is derived
    from (account, meter, window, part). A part > 0 carries rows that committed after the
    window's first part was formed."""

    __tablename__ = "meter_aggregates"
    __table_args__ = (
        CheckConstraint("value >= 0", name="value"),
        UniqueConstraint("account_id", "event_name", "window_start", "part"),
        Index(
            "ix_meter_aggregates_pending",
            "account_id",
            "created_at",
            sqlite_where=text("sent_at IS NULL"),
            postgresql_where=text("sent_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(KEY), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(ACCOUNT_ID), ForeignKey("billing_accounts.id"))
    org_id: Mapped[str] = mapped_column(String(ORG_ID))
    event_name: Mapped[str] = mapped_column(String(KEY))
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    part: Mapped[int] = mapped_column(Integer)
    value: Mapped[int] = mapped_column(BigInteger)
    event_time: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    refused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OverdraftWindowModel(Base):
    """An account's overdraft window once evaluated (DESIGN §17): one row per (account,
    window end), ever. `deficit` 0 means nothing was owed; otherwise the Stripe invoice that
    bills it, its last known status, and whether its payment was credited back."""

    __tablename__ = "overdraft_windows"
    __table_args__ = (
        CheckConstraint("deficit >= 0", name="deficit"),
        Index(None, "invoice_id"),
    )

    account_id: Mapped[str] = mapped_column(
        String(ACCOUNT_ID), ForeignKey("billing_accounts.id"), primary_key=True
    )
    window_end: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    org_id: Mapped[str] = mapped_column(String(ORG_ID))
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    deficit: Mapped[int] = mapped_column(BigInteger)
    unit_amount: Mapped[int | None] = mapped_column(BigInteger)
    remainder: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    invoice_id: Mapped[str | None] = mapped_column(String(KEY))
    invoice_status: Mapped[str | None] = mapped_column(String(32))
    credited: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


# --- checkouts, purchases, invoices (DESIGN §18) ---------------------------------------------


class CheckoutModel(Base):
    """A checkout the host asked for (`POST .../billing/checkouts`) and its Stripe session.

    `id` is ours (the `{{.CheckoutID}}` of the URLs, the session's `checkout_id` metadata, the
    idempotency key's seed). The row is recorded by the API in state `pending`; the checkouts
    domain makes the Stripe session (`open`, with `stripe_session_id` and `url`) or records
    Stripe's refusal (`failed`, `last_error`), then mirrors it (`complete`, `expired`).
    `processed_at` is set in the transaction that applies a completion (subscription claimed,
    credits granted, purchase recorded): a completion is processed exactly once."""

    __tablename__ = "checkouts"
    __table_args__ = (
        CheckConstraint("mode IN ('subscription', 'payment', 'setup', 'portal')", name="mode"),
        CheckConstraint(
            "state IN ('pending', 'open', 'complete', 'expired', 'failed')", name="state"
        ),
        CheckConstraint("quantity IS NULL OR quantity > 0", name="quantity"),
        Index(None, "account_id", "created_at"),
        Index(None, "org_id"),
        Index(
            "ix_checkouts_unsettled",
            "state",
            "created_at",
            sqlite_where=text("state IN ('pending', 'open') OR processed_at IS NULL"),
            postgresql_where=text("state IN ('pending', 'open') OR processed_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(KEY), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(ACCOUNT_ID), ForeignKey("billing_accounts.id"))
    org_id: Mapped[str] = mapped_column(String(ORG_ID))
    mode: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    plan: Mapped[str | None] = mapped_column(String(KEY))
    product: Mapped[str | None] = mapped_column(String(KEY))
    quantity: Mapped[int | None] = mapped_column(Integer)
    skip_trial: Mapped[bool] = mapped_column(Boolean)
    cancel_after_trial: Mapped[bool] = mapped_column(Boolean)
    success_url: Mapped[str | None] = mapped_column(Text)
    cancel_url: Mapped[str | None] = mapped_column(Text)
    return_url: Mapped[str | None] = mapped_column(Text)
    # What the session was made with (the amount in the account's currency, minor units).
    currency: Mapped[str | None] = mapped_column(String(3))
    amount_subtotal: Mapped[int | None] = mapped_column(BigInteger)
    allowed_payment_method_types: Mapped[list[str] | None] = mapped_column(JSONColumn)
    requested_by: Mapped[str | None] = mapped_column(String(KEY))
    stripe_session_id: Mapped[str | None] = mapped_column(String(KEY), unique=True)
    url: Mapped[str | None] = mapped_column(Text)
    payment_status: Mapped[str | None] = mapped_column(String(32))
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(KEY))
    stripe_payment_intent_id: Mapped[str | None] = mapped_column(String(KEY))
    # The session's payment intent's state when it is not through (`requires_action`, a
    # decline's failure code): the checkout stays open and the account unchanged.
    payment_intent_status: Mapped[str | None] = mapped_column(String(32))
    failure_code: Mapped[str | None] = mapped_column(String(KEY))
    last_error: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PurchaseModel(Base):
    """A one-time product bought (a completed payment-mode checkout, or a delegated purchase):
    its product's features are entitled permanently. One row per checkout."""

    __tablename__ = "purchases"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity"),
        Index(None, "account_id", "product"),
    )

    id: Mapped[str] = mapped_column(String(KEY), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(ACCOUNT_ID), ForeignKey("billing_accounts.id"))
    org_id: Mapped[str] = mapped_column(String(ORG_ID))
    product: Mapped[str] = mapped_column(String(KEY))
    quantity: Mapped[int] = mapped_column(Integer)
    checkout_id: Mapped[str | None] = mapped_column(String(KEY), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class InvoiceModel(Base):
    """The mirror of a Stripe invoice of one of our customers, as last observed (DESIGN §18).

    Amounts are Stripe's, in minor units of `currency`. `failure_code` / `payment_intent_status`
    mirror the last payment attempt when it did not go through (a decline's code,
    `requires_action`); `observed_at` orders observations (an older one never overwrites)."""

    __tablename__ = "invoices"
    __table_args__ = (
        Index(None, "account_id", "stripe_created"),
        Index(None, "customer_id"),
        Index(None, "status"),
        Index(None, "failure_code"),
    )

    stripe_id: Mapped[str] = mapped_column(String(KEY), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(ACCOUNT_ID), ForeignKey("billing_accounts.id"))
    org_id: Mapped[str] = mapped_column(String(ORG_ID))
    customer_id: Mapped[str] = mapped_column(String(KEY))
    subscription_id: Mapped[str | None] = mapped_column(String(KEY))
    status: Mapped[str] = mapped_column(String(32))
    billing_reason: Mapped[str | None] = mapped_column(String(64))
    collection_method: Mapped[str | None] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3))
    subtotal: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[int] = mapped_column(BigInteger)
    tax: Mapped[int | None] = mapped_column(BigInteger)
    amount_due: Mapped[int] = mapped_column(BigInteger)
    amount_paid: Mapped[int] = mapped_column(BigInteger)
    amount_remaining: Mapped[int] = mapped_column(BigInteger)
    automatic_tax: Mapped[bool] = mapped_column(Boolean)
    automatic_tax_status: Mapped[str | None] = mapped_column(String(64))
    hosted_url: Mapped[str | None] = mapped_column(Text)
    number: Mapped[str | None] = mapped_column(String(KEY))
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempt_count: Mapped[int] = mapped_column(Integer)
    next_payment_attempt: Mapped[datetime | None] = mapped_column(UTCDateTime)
    payment_intent_id: Mapped[str | None] = mapped_column(String(KEY))
    payment_intent_status: Mapped[str | None] = mapped_column(String(32))
    failure_code: Mapped[str | None] = mapped_column(String(KEY))
    decline_code: Mapped[str | None] = mapped_column(String(KEY))
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSONColumn)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONColumn)
    stripe_created: Mapped[datetime] = mapped_column(UTCDateTime)
    content_hash: Mapped[str] = mapped_column(String(64))
    observed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PaymentFailureModel(Base):
    """One failed payment attempt, append-only (`failed payments by code` in status and
    metrics): keyed by Stripe's object of the attempt (the failed charge or intent attempt),
    so a webhook seen twice and the observation that finds it again record it once."""

    __tablename__ = "payment_failures"
    __table_args__ = (
        Index(None, "account_id", "created_at"),
        Index(None, "code"),
    )

    id: Mapped[str] = mapped_column(String(KEY), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(ACCOUNT_ID), ForeignKey("billing_accounts.id"))
    org_id: Mapped[str] = mapped_column(String(ORG_ID))
    invoice_id: Mapped[str | None] = mapped_column(String(KEY))
    checkout_id: Mapped[str | None] = mapped_column(String(KEY))
    payment_intent_id: Mapped[str | None] = mapped_column(String(KEY))
    code: Mapped[str] = mapped_column(String(KEY))
    decline_code: Mapped[str | None] = mapped_column(String(KEY))
    amount: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

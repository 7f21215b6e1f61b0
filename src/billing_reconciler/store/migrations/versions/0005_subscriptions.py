"""Subscriptions: intents (the desired side), the mirror of Stripe's, plan history.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

DESIGN §16. At most one current intent per account is a partial unique index (`WHERE state =
'current'`, on SQLite and PostgreSQL), as 0004 does for active billing accounts; replaced and
ended intents stay as history. The mirror is keyed by the Stripe subscription id. Plan history
has at most one open period per (account, plan, subscription), also a partial unique index.
Types are spelled out, as in 0001.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = 255
ORG_ID = 64
ACCOUNT_ID = 64


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _surrogate_key() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _account_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["account_id"],
        ["billing_accounts.id"],
        name=op.f(f"fk_{table}_account_id_billing_accounts"),
    )


def upgrade() -> None:
    op.create_table(
        "subscription_intents",
        sa.Column("id", sa.String(KEY), nullable=False),
        sa.Column("account_id", sa.String(ACCOUNT_ID), nullable=False),
        sa.Column("org_id", sa.String(ORG_ID), nullable=False),
        sa.Column("plan", sa.String(KEY), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.String(KEY), nullable=True),
        sa.Column("skip_trial", sa.Boolean(), nullable=False),
        sa.Column("cancel_after_trial", sa.Boolean(), nullable=False),
        sa.Column("pending_plan", sa.String(KEY), nullable=True),
        sa.Column("pending_effective_at", _utc(), nullable=True),
        sa.Column("pending_immediate", sa.Boolean(), nullable=False),
        sa.Column("pending_reason", sa.String(16), nullable=True),
        sa.Column("pending_requested_by", sa.String(KEY), nullable=True),
        sa.Column("pending_requested_at", _utc(), nullable=True),
        sa.Column("cancel_mode", sa.String(16), nullable=True),
        sa.Column("cancel_requested_by", sa.String(KEY), nullable=True),
        sa.Column("cancel_requested_at", _utc(), nullable=True),
        sa.Column("replaced_by", sa.String(KEY), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.Column("ended_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscription_intents")),
        _account_fk("subscription_intents"),
        sa.CheckConstraint(
            "state IN ('current', 'replaced', 'ended')", name=op.f("ck_subscription_intents_state")
        ),
        sa.CheckConstraint(
            "source IN ('default_plan', 'checkout', 'subscribe', 'contract')",
            name=op.f("ck_subscription_intents_source"),
        ),
        sa.CheckConstraint(
            "pending_reason IS NULL OR pending_reason IN ('change', 'cancel')",
            name=op.f("ck_subscription_intents_pending_reason"),
        ),
        sa.CheckConstraint(
            "cancel_mode IS NULL OR cancel_mode IN ('immediate', 'period_end')",
            name=op.f("ck_subscription_intents_cancel_mode"),
        ),
    )
    op.create_index(
        op.f("uq_subscription_intents_current_account_id"),
        "subscription_intents",
        ["account_id"],
        unique=True,
        sqlite_where=sa.text("state = 'current'"),
        postgresql_where=sa.text("state = 'current'"),
    )
    op.create_index(
        op.f("ix_subscription_intents_state_account_id"),
        "subscription_intents",
        ["state", "account_id"],
    )
    op.create_index(
        op.f("ix_subscription_intents_account_id_created_at"),
        "subscription_intents",
        ["account_id", "created_at"],
    )
    op.create_table(
        "subscriptions",
        sa.Column("stripe_id", sa.String(KEY), nullable=False),
        sa.Column("account_id", sa.String(ACCOUNT_ID), nullable=False),
        sa.Column("org_id", sa.String(ORG_ID), nullable=False),
        sa.Column("customer_id", sa.String(KEY), nullable=False),
        sa.Column("intent_id", sa.String(KEY), nullable=True),
        sa.Column("plan", sa.String(KEY), nullable=True),
        sa.Column("seats", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("items", _json(), nullable=False),
        sa.Column("collection_method", sa.String(32), nullable=False),
        sa.Column("days_until_due", sa.Integer(), nullable=True),
        sa.Column("automatic_tax", sa.Boolean(), nullable=False),
        sa.Column("current_period_start", _utc(), nullable=True),
        sa.Column("current_period_end", _utc(), nullable=True),
        sa.Column("trial_start", _utc(), nullable=True),
        sa.Column("trial_end", _utc(), nullable=True),
        sa.Column("cancel_at", _utc(), nullable=True),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        sa.Column("canceled_at", _utc(), nullable=True),
        sa.Column("ended_at", _utc(), nullable=True),
        sa.Column("schedule_id", sa.String(KEY), nullable=True),
        sa.Column("pending_invoice_item_interval", _json(), nullable=True),
        sa.Column("latest_invoice_id", sa.String(KEY), nullable=True),
        sa.Column("test_clock", sa.String(KEY), nullable=True),
        sa.Column("stripe_created", _utc(), nullable=False),
        sa.Column("metadata", _json(), nullable=False),
        sa.Column("owner", _json(), nullable=True),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("observed_at", _utc(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("stripe_id", name=op.f("pk_subscriptions")),
        _account_fk("subscriptions"),
    )
    op.create_index(
        op.f("ix_subscriptions_account_id_stripe_created"),
        "subscriptions",
        ["account_id", "stripe_created"],
    )
    op.create_index(op.f("ix_subscriptions_org_id"), "subscriptions", ["org_id"])
    op.create_index(
        op.f("ix_subscriptions_status_stripe_id"), "subscriptions", ["status", "stripe_id"]
    )
    op.create_table(
        "subscription_plan_history",
        sa.Column("id", _surrogate_key(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(ACCOUNT_ID), nullable=False),
        sa.Column("plan", sa.String(KEY), nullable=False),
        sa.Column("stripe_subscription_id", sa.String(KEY), nullable=False),
        sa.Column("started_at", _utc(), nullable=False),
        sa.Column("ended_at", _utc(), nullable=True),
        sa.Column("trialed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscription_plan_history")),
        _account_fk("subscription_plan_history"),
    )
    op.create_index(
        op.f("uq_subscription_plan_history_open"),
        "subscription_plan_history",
        ["account_id", "plan", "stripe_subscription_id"],
        unique=True,
        sqlite_where=sa.text("ended_at IS NULL"),
        postgresql_where=sa.text("ended_at IS NULL"),
    )
    op.create_index(
        op.f("ix_subscription_plan_history_account_id_plan"),
        "subscription_plan_history",
        ["account_id", "plan"],
    )


def downgrade() -> None:
    for table in ("subscription_plan_history", "subscriptions", "subscription_intents"):
        op.drop_table(table)

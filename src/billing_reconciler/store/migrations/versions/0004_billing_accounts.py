"""Organizations, members, billing accounts, the double-entry ledger and domain event cursors.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

DESIGN §15 and §17. At most one active billing account per org is a partial unique index
(`WHERE state = 'active'`, on SQLite and PostgreSQL). Each ledger transaction has exactly two
entries (the account's side and the platform's, signed, summing to zero), and each account has
one balance row that is updated under a row lock in the same transaction. Money and credits
are BIGINT. Types are spelled out, as in 0001.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
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


def upgrade() -> None:
    op.create_table(
        "organizations",
        sa.Column("org_id", sa.String(ORG_ID), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("owner_email", sa.String(KEY), nullable=True),
        sa.Column("metadata", _json(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.Column("deleted_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_organizations")),
    )
    op.create_table(
        "members",
        sa.Column("org_id", sa.String(ORG_ID), nullable=False),
        sa.Column("user_id", sa.String(KEY), nullable=False),
        sa.Column("email", sa.String(KEY), nullable=True),
        sa.Column("role", sa.String(64), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "user_id", name=op.f("pk_members")),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.org_id"], name=op.f("fk_members_org_id_organizations")
        ),
    )
    op.create_table(
        "billing_accounts",
        sa.Column("id", sa.String(ACCOUNT_ID), nullable=False),
        sa.Column("org_id", sa.String(ORG_ID), nullable=False),
        sa.Column("stripe_customer_id", sa.String(KEY), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("offline", sa.Boolean(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("email", sa.String(KEY), nullable=True),
        sa.Column("phone", sa.String(64), nullable=True),
        sa.Column("address", _json(), nullable=True),
        sa.Column("tax_ids", _json(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("credit_min", sa.BigInteger(), nullable=False),
        sa.Column("due_in_days", sa.Integer(), nullable=False),
        sa.Column("test_clock", sa.String(KEY), nullable=True),
        sa.Column("metadata", _json(), nullable=False),
        sa.Column("contract", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("last_applied", _json(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_accounts")),
        sa.UniqueConstraint(
            "stripe_customer_id", name=op.f("uq_billing_accounts_stripe_customer_id")
        ),
        sa.CheckConstraint(
            "state IN ('active', 'disabled')", name=op.f("ck_billing_accounts_state")
        ),
        sa.CheckConstraint("due_in_days >= 0", name=op.f("ck_billing_accounts_due_in_days")),
    )
    op.create_index(
        op.f("uq_billing_accounts_active_org_id"),
        "billing_accounts",
        ["org_id"],
        unique=True,
        sqlite_where=sa.text("state = 'active'"),
        postgresql_where=sa.text("state = 'active'"),
    )
    op.create_index(
        op.f("ix_billing_accounts_org_id_created_at"),
        "billing_accounts",
        ["org_id", "created_at"],
    )
    op.create_index(op.f("ix_billing_accounts_state_id"), "billing_accounts", ["state", "id"])
    op.create_table(
        "ledger_transactions",
        sa.Column("id", sa.String(KEY), nullable=False),
        sa.Column("account_id", sa.String(ACCOUNT_ID), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(KEY), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("user_id", sa.String(KEY), nullable=True),
        sa.Column("metadata", _json(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_transactions")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["billing_accounts.id"],
            name=op.f("fk_ledger_transactions_account_id_billing_accounts"),
        ),
        sa.CheckConstraint("type IN ('credit', 'debit')", name=op.f("ck_ledger_transactions_type")),
        sa.CheckConstraint("amount > 0", name=op.f("ck_ledger_transactions_amount")),
    )
    op.create_index(
        op.f("ix_ledger_transactions_account_id_created_at_id"),
        "ledger_transactions",
        ["account_id", "created_at", "id"],
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", _surrogate_key(), autoincrement=True, nullable=False),
        sa.Column("transaction_id", sa.String(KEY), nullable=False),
        sa.Column("side", sa.String(16), nullable=False),
        sa.Column("account_id", sa.String(ACCOUNT_ID), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
            name=op.f("fk_ledger_entries_transaction_id_ledger_transactions"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["billing_accounts.id"],
            name=op.f("fk_ledger_entries_account_id_billing_accounts"),
        ),
        sa.UniqueConstraint(
            "transaction_id", "side", name=op.f("uq_ledger_entries_transaction_id_side")
        ),
        sa.CheckConstraint("side IN ('account', 'platform')", name=op.f("ck_ledger_entries_side")),
        sa.CheckConstraint("amount <> 0", name=op.f("ck_ledger_entries_amount")),
        sa.CheckConstraint(
            "(side = 'account' AND account_id IS NOT NULL)"
            " OR (side = 'platform' AND account_id IS NULL)",
            name=op.f("ck_ledger_entries_account_side"),
        ),
    )
    op.create_index(op.f("ix_ledger_entries_account_id"), "ledger_entries", ["account_id"])
    op.create_table(
        "ledger_balances",
        sa.Column("account_id", sa.String(ACCOUNT_ID), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_ledger_balances")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["billing_accounts.id"],
            name=op.f("fk_ledger_balances_account_id_billing_accounts"),
        ),
    )
    op.create_table(
        "domain_cursors",
        sa.Column("domain", sa.String(64), nullable=False),
        sa.Column("last_event_id", sa.String(KEY), nullable=True),
        sa.Column("last_event_created", _utc(), nullable=True),
        sa.Column("full_resync_at", _utc(), nullable=True),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("domain", name=op.f("pk_domain_cursors")),
    )


def downgrade() -> None:
    for table in (
        "domain_cursors",
        "ledger_balances",
        "ledger_entries",
        "ledger_transactions",
        "billing_accounts",
        "members",
        "organizations",
    ):
        op.drop_table(table)

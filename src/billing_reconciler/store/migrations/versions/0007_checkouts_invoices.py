"""Checkouts, purchases, the invoice mirror and failed payments.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

DESIGN §18. A checkout is ours first (recorded by the API as `pending`), then its Stripe
session's mirror; `processed_at` makes its completion happen once. A purchase is one row per
checkout (unique `checkout_id`). The invoice mirror is keyed by Stripe's id; failed payment
attempts are append-only, keyed by Stripe's object of the attempt. Types are spelled out, as
in 0001.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = 255
ORG_ID = 64
ACCOUNT_ID = 64
_UNSETTLED = "state IN ('pending', 'open') OR processed_at IS NULL"


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _json() -> sa.types.TypeEngine[Any]:
    from sqlalchemy.dialects.postgresql import JSONB

    return sa.JSON().with_variant(JSONB(), "postgresql")


def _account_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["account_id"],
        ["billing_accounts.id"],
        name=op.f(f"fk_{table}_account_id_billing_accounts"),
    )


def upgrade() -> None:
    op.create_table(
        "checkouts",
        sa.Column("id", sa.String(KEY), nullable=False),
        sa.Column("account_id", sa.String(ACCOUNT_ID), nullable=False),
        sa.Column("org_id", sa.String(ORG_ID), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("plan", sa.String(KEY), nullable=True),
        sa.Column("product", sa.String(KEY), nullable=True),
        sa.Column("quantity", sa.Integer(), nullable=True),
        sa.Column("skip_trial", sa.Boolean(), nullable=False),
        sa.Column("cancel_after_trial", sa.Boolean(), nullable=False),
        sa.Column("success_url", sa.Text(), nullable=True),
        sa.Column("cancel_url", sa.Text(), nullable=True),
        sa.Column("return_url", sa.Text(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("amount_subtotal", sa.BigInteger(), nullable=True),
        sa.Column("allowed_payment_method_types", _json(), nullable=True),
        sa.Column("requested_by", sa.String(KEY), nullable=True),
        sa.Column("stripe_session_id", sa.String(KEY), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("payment_status", sa.String(32), nullable=True),
        sa.Column("stripe_subscription_id", sa.String(KEY), nullable=True),
        sa.Column("stripe_payment_intent_id", sa.String(KEY), nullable=True),
        sa.Column("payment_intent_status", sa.String(32), nullable=True),
        sa.Column("failure_code", sa.String(KEY), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("expires_at", _utc(), nullable=True),
        sa.Column("completed_at", _utc(), nullable=True),
        sa.Column("processed_at", _utc(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checkouts")),
        sa.UniqueConstraint("stripe_session_id", name=op.f("uq_checkouts_stripe_session_id")),
        _account_fk("checkouts"),
        sa.CheckConstraint(
            "mode IN ('subscription', 'payment', 'setup', 'portal')", name=op.f("ck_checkouts_mode")
        ),
        sa.CheckConstraint(
            "state IN ('pending', 'open', 'complete', 'expired', 'failed')",
            name=op.f("ck_checkouts_state"),
        ),
        sa.CheckConstraint("quantity IS NULL OR quantity > 0", name=op.f("ck_checkouts_quantity")),
    )
    op.create_index(
        op.f("ix_checkouts_account_id_created_at"), "checkouts", ["account_id", "created_at"]
    )
    op.create_index(op.f("ix_checkouts_org_id"), "checkouts", ["org_id"])
    op.create_index(
        "ix_checkouts_unsettled",
        "checkouts",
        ["state", "created_at"],
        sqlite_where=sa.text(_UNSETTLED),
        postgresql_where=sa.text(_UNSETTLED),
    )
    op.create_table(
        "purchases",
        sa.Column("id", sa.String(KEY), nullable=False),
        sa.Column("account_id", sa.String(ACCOUNT_ID), nullable=False),
        sa.Column("org_id", sa.String(ORG_ID), nullable=False),
        sa.Column("product", sa.String(KEY), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("checkout_id", sa.String(KEY), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purchases")),
        sa.UniqueConstraint("checkout_id", name=op.f("uq_purchases_checkout_id")),
        _account_fk("purchases"),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_purchases_quantity")),
    )
    op.create_index(op.f("ix_purchases_account_id_product"), "purchases", ["account_id", "product"])
    op.create_table(
        "invoices",
        sa.Column("stripe_id", sa.String(KEY), nullable=False),
        sa.Column("account_id", sa.String(ACCOUNT_ID), nullable=False),
        sa.Column("org_id", sa.String(ORG_ID), nullable=False),
        sa.Column("customer_id", sa.String(KEY), nullable=False),
        sa.Column("subscription_id", sa.String(KEY), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("billing_reason", sa.String(64), nullable=True),
        sa.Column("collection_method", sa.String(32), nullable=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("subtotal", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("tax", sa.BigInteger(), nullable=True),
        sa.Column("amount_due", sa.BigInteger(), nullable=False),
        sa.Column("amount_paid", sa.BigInteger(), nullable=False),
        sa.Column("amount_remaining", sa.BigInteger(), nullable=False),
        sa.Column("automatic_tax", sa.Boolean(), nullable=False),
        sa.Column("automatic_tax_status", sa.String(64), nullable=True),
        sa.Column("hosted_url", sa.Text(), nullable=True),
        sa.Column("number", sa.String(KEY), nullable=True),
        sa.Column("due_at", _utc(), nullable=True),
        sa.Column("period_start", _utc(), nullable=True),
        sa.Column("period_end", _utc(), nullable=True),
        sa.Column("attempt_count", sa.Integer(), nullable=False),
        sa.Column("next_payment_attempt", _utc(), nullable=True),
        sa.Column("payment_intent_id", sa.String(KEY), nullable=True),
        sa.Column("payment_intent_status", sa.String(32), nullable=True),
        sa.Column("failure_code", sa.String(KEY), nullable=True),
        sa.Column("decline_code", sa.String(KEY), nullable=True),
        sa.Column("lines", _json(), nullable=False),
        sa.Column("metadata", _json(), nullable=False),
        sa.Column("stripe_created", _utc(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("observed_at", _utc(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("stripe_id", name=op.f("pk_invoices")),
        _account_fk("invoices"),
    )
    op.create_index(
        op.f("ix_invoices_account_id_stripe_created"), "invoices", ["account_id", "stripe_created"]
    )
    op.create_index(op.f("ix_invoices_customer_id"), "invoices", ["customer_id"])
    op.create_index(op.f("ix_invoices_status"), "invoices", ["status"])
    op.create_index(op.f("ix_invoices_failure_code"), "invoices", ["failure_code"])
    op.create_table(
        "payment_failures",
        sa.Column("id", sa.String(KEY), nullable=False),
        sa.Column("account_id", sa.String(ACCOUNT_ID), nullable=False),
        sa.Column("org_id", sa.String(ORG_ID), nullable=False),
        sa.Column("invoice_id", sa.String(KEY), nullable=True),
        sa.Column("checkout_id", sa.String(KEY), nullable=True),
        sa.Column("payment_intent_id", sa.String(KEY), nullable=True),
        sa.Column("code", sa.String(KEY), nullable=False),
        sa.Column("decline_code", sa.String(KEY), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("failed_at", _utc(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_failures")),
        _account_fk("payment_failures"),
    )
    op.create_index(
        op.f("ix_payment_failures_account_id_created_at"),
        "payment_failures",
        ["account_id", "created_at"],
    )
    op.create_index(op.f("ix_payment_failures_code"), "payment_failures", ["code"])


def downgrade() -> None:
    op.drop_index(op.f("ix_payment_failures_code"), table_name="payment_failures")
    op.drop_index(op.f("ix_payment_failures_account_id_created_at"), table_name="payment_failures")
    op.drop_table("payment_failures")
    for name in ("failure_code", "status", "customer_id", "account_id_stripe_created"):
        op.drop_index(op.f(f"ix_invoices_{name}"), table_name="invoices")
    op.drop_table("invoices")
    op.drop_index(op.f("ix_purchases_account_id_product"), table_name="purchases")
    op.drop_table("purchases")
    op.drop_index("ix_checkouts_unsettled", table_name="checkouts")
    op.drop_index(op.f("ix_checkouts_org_id"), table_name="checkouts")
    op.drop_index(op.f("ix_checkouts_account_id_created_at"), table_name="checkouts")
    op.drop_table("checkouts")

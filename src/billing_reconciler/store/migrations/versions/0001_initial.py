"""Initial tables: plans, last-applied state, apply journal, runs, webhook inbox, controller state.

Revision ID: 0001
Revises:
Create Date: 2025-11-27

Types are spelled out here rather than imported from `tables.py`: a migration must keep
producing the same schema after the models move on. Names are wrapped in `op.f()` because they
are final already; the naming convention must not prefix them again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = 255


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _surrogate_key() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("name", sa.String(KEY), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("interval", sa.String(32), nullable=True),
        sa.Column("trial_days", sa.Integer(), nullable=False),
        sa.Column("on_start_credits", sa.BigInteger(), nullable=False),
        sa.Column("products", _json(), nullable=False),
        sa.Column("metadata", _json(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_plans")),
        sa.CheckConstraint("state IN ('active', 'archived')", name=op.f("ck_plans_state")),
    )
    op.create_table(
        "last_applied",
        sa.Column("installation_id", sa.String(KEY), nullable=False),
        sa.Column("object_key", sa.String(KEY), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("stripe_id", sa.String(KEY), nullable=True),
        sa.Column("fields", _json(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("revision", sa.String(KEY), nullable=False),
        sa.Column("applied_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("installation_id", "object_key", name=op.f("pk_last_applied")),
    )
    op.create_table(
        "reconcile_runs",
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("domain", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(KEY), nullable=False),
        sa.Column("git_revision", sa.String(KEY), nullable=True),
        sa.Column("desired_revision", sa.String(KEY), nullable=True),
        sa.Column("plan_fingerprint", sa.String(KEY), nullable=True),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("summary", _json(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", _utc(), nullable=False),
        sa.Column("finished_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_reconcile_runs")),
        sa.CheckConstraint("mode IN ('dry_run', 'apply')", name=op.f("ck_reconcile_runs_mode")),
        sa.CheckConstraint(
            "result IN ('running', 'no_changes', 'changes_pending', 'applied', 'failed')",
            name=op.f("ck_reconcile_runs_result"),
        ),
    )
    op.create_index(
        op.f("ix_reconcile_runs_domain_started_at"), "reconcile_runs", ["domain", "started_at"]
    )
    op.create_table(
        "apply_journal",
        sa.Column("id", _surrogate_key(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("installation_id", sa.String(KEY), nullable=False),
        sa.Column("plan_fingerprint", sa.String(KEY), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("object_key", sa.String(KEY), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("idempotency_key", sa.String(KEY), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("stripe_id", sa.String(KEY), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("request_id", sa.String(KEY), nullable=True),
        sa.Column("started_at", _utc(), nullable=False),
        sa.Column("finished_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_apply_journal")),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["reconcile_runs.run_id"],
            name=op.f("fk_apply_journal_run_id_reconcile_runs"),
        ),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_apply_journal_idempotency_key")),
        sa.CheckConstraint(
            "state IN ('pending', 'done', 'failed')", name=op.f("ck_apply_journal_state")
        ),
    )
    op.create_index(op.f("ix_apply_journal_run_id"), "apply_journal", ["run_id"])
    op.create_index(
        op.f("ix_apply_journal_installation_id_state"),
        "apply_journal",
        ["installation_id", "state"],
    )
    op.create_table(
        "webhook_inbox",
        sa.Column("id", _surrogate_key(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(KEY), nullable=False),
        sa.Column("type", sa.String(KEY), nullable=False),
        sa.Column("object_id", sa.String(KEY), nullable=True),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("api_version", sa.String(64), nullable=True),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("received_at", _utc(), nullable=False),
        sa.Column("processed_at", _utc(), nullable=True),
        sa.Column("claimed_until", _utc(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_inbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_webhook_inbox_event_id")),
    )
    op.create_index(
        op.f("ix_webhook_inbox_processed_at_id"), "webhook_inbox", ["processed_at", "id"]
    )
    op.create_table(
        "controller_state",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", _json(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_controller_state")),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(KEY), nullable=False),
        sa.Column("acquired_at", _utc(), nullable=False),
        sa.Column("renewed_at", _utc(), nullable=False),
        sa.Column("expires_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )


def downgrade() -> None:
    for table in (
        "leases",
        "controller_state",
        "webhook_inbox",
        "apply_journal",
        "reconcile_runs",
        "last_applied",
        "plans",
    ):
        op.drop_table(table)

"""Credits: usage reverts, the meter-event outbox, aggregated meter events, overdraft windows.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

DESIGN §17. A revert names the usage it reverts (`ledger_transactions.reverts`, nullable, so
every existing row is untouched). The outbox and the aggregates keep their pending rows in
partial indexes (`WHERE sent_at IS NULL ...`, on SQLite and PostgreSQL), so the depth and the
next batch read only what is unsent. An overdraft window is keyed by (account, window end):
one row, hence one invoice, per window ever. Types are spelled out, as in 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = 255
ORG_ID = 64
ACCOUNT_ID = 64


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
    op.add_column("ledger_transactions", sa.Column("reverts", sa.String(KEY), nullable=True))
    op.create_index(op.f("ix_ledger_transactions_reverts"), "ledger_transactions", ["reverts"])
    op.create_table(
        "meter_outbox",
        sa.Column("seq", _surrogate_key(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(KEY), nullable=False),
        sa.Column("account_id", sa.String(ACCOUNT_ID), nullable=False),
        sa.Column("org_id", sa.String(ORG_ID), nullable=False),
        sa.Column("event_name", sa.String(KEY), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("event_time", _utc(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("aggregate_id", sa.String(KEY), nullable=True),
        sa.Column("sent_at", _utc(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("refused_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_meter_outbox")),
        sa.UniqueConstraint("id", name=op.f("uq_meter_outbox_id")),
        _account_fk("meter_outbox"),
        sa.CheckConstraint("value >= 0", name=op.f("ck_meter_outbox_value")),
    )
    op.create_index(
        "ix_meter_outbox_pending",
        "meter_outbox",
        ["account_id", "seq"],
        sqlite_where=sa.text("sent_at IS NULL AND aggregate_id IS NULL"),
        postgresql_where=sa.text("sent_at IS NULL AND aggregate_id IS NULL"),
    )
    op.create_index(op.f("ix_meter_outbox_aggregate_id"), "meter_outbox", ["aggregate_id"])
    op.create_table(
        "meter_aggregates",
        sa.Column("id", sa.String(KEY), nullable=False),
        sa.Column("account_id", sa.String(ACCOUNT_ID), nullable=False),
        sa.Column("org_id", sa.String(ORG_ID), nullable=False),
        sa.Column("event_name", sa.String(KEY), nullable=False),
        sa.Column("window_start", _utc(), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("event_time", _utc(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("sent_at", _utc(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("refused_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_meter_aggregates")),
        sa.UniqueConstraint(
            "account_id",
            "event_name",
            "window_start",
            "part",
            name=op.f("uq_meter_aggregates_account_id_event_name_window_start_part"),
        ),
        _account_fk("meter_aggregates"),
        sa.CheckConstraint("value >= 0", name=op.f("ck_meter_aggregates_value")),
    )
    op.create_index(
        "ix_meter_aggregates_pending",
        "meter_aggregates",
        ["account_id", "created_at"],
        sqlite_where=sa.text("sent_at IS NULL"),
        postgresql_where=sa.text("sent_at IS NULL"),
    )
    op.create_table(
        "overdraft_windows",
        sa.Column("account_id", sa.String(ACCOUNT_ID), nullable=False),
        sa.Column("window_end", _utc(), nullable=False),
        sa.Column("org_id", sa.String(ORG_ID), nullable=False),
        sa.Column("window_start", _utc(), nullable=False),
        sa.Column("deficit", sa.BigInteger(), nullable=False),
        sa.Column("unit_amount", sa.BigInteger(), nullable=True),
        sa.Column("remainder", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("invoice_id", sa.String(KEY), nullable=True),
        sa.Column("invoice_status", sa.String(32), nullable=True),
        sa.Column("credited", sa.Boolean(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "window_end", name=op.f("pk_overdraft_windows")),
        _account_fk("overdraft_windows"),
        sa.CheckConstraint("deficit >= 0", name=op.f("ck_overdraft_windows_deficit")),
    )
    op.create_index(op.f("ix_overdraft_windows_invoice_id"), "overdraft_windows", ["invoice_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_overdraft_windows_invoice_id"), table_name="overdraft_windows")
    op.drop_table("overdraft_windows")
    op.drop_index("ix_meter_aggregates_pending", table_name="meter_aggregates")
    op.drop_table("meter_aggregates")
    op.drop_index(op.f("ix_meter_outbox_aggregate_id"), table_name="meter_outbox")
    op.drop_index("ix_meter_outbox_pending", table_name="meter_outbox")
    op.drop_table("meter_outbox")
    op.drop_index(op.f("ix_ledger_transactions_reverts"), table_name="ledger_transactions")
    with op.batch_alter_table("ledger_transactions") as batch:
        batch.drop_column("reverts")

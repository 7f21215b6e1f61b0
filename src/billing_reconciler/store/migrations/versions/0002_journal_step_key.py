"""The journal keeps each step's plan idempotency key, so a later plan never reuses a spent one.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

`step_key` is the idempotency key the plan gave the step (the row's own `idempotency_key` is
that key bound to the run). Planning reads the `done` ones: a key Stripe has already answered
for a completed write must not be sent for another write within Stripe's 24 h window, or Stripe
replays the old response and nothing happens. Rows journaled before this revision have none.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = 255


def upgrade() -> None:
    with op.batch_alter_table("apply_journal") as batch:
        batch.add_column(sa.Column("step_key", sa.String(KEY), nullable=True))
    op.create_index(
        op.f("ix_apply_journal_installation_id_step_key"),
        "apply_journal",
        ["installation_id", "step_key"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_apply_journal_installation_id_step_key"), table_name="apply_journal")
    with op.batch_alter_table("apply_journal") as batch:
        batch.drop_column("step_key")

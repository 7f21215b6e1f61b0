"""Give the store an identity of its own, made once, when the store is created or upgraded.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Idempotency keys are salted with it. The journal tells which keys this store has spent; a
store that was lost (or a new one beside it) knows nothing of the keys an earlier store sent
in the last 24 hours. Salted with a new identity, its keys cannot collide with those, so Stripe
never answers one of its writes with a response stored for another store's.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STORE_ID = "store_id"


def upgrade() -> None:
    state = sa.table(
        "controller_state",
        sa.column("key", sa.String(64)),
        sa.column("value", sa.JSON()),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    op.bulk_insert(
        state,
        [{"key": STORE_ID, "value": {"id": uuid.uuid4().hex}, "updated_at": datetime.now(UTC)}],
    )


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM controller_state WHERE key = :key").bindparams(key=STORE_ID))

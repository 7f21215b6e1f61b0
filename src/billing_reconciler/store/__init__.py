"""The local store: SQLAlchemy tables, Alembic migrations, repositories; the only SQL writer.

Open it with `Store.open(url)` (migrates to head), then work inside one transaction::

    with store.session() as session:
        changed = PlanRepository(session).upsert(row)

Repositories take and return frozen dataclasses; ORM objects never leave this package.
"""

from billing_reconciler.store.controller_state import (
    ControllerStateRepository,
    Lease,
    LeaseRepository,
    Suspension,
)
from billing_reconciler.store.database import (
    Store,
    current_revision,
    default_sqlite_url,
    head_revision,
    normalize_url,
)
from billing_reconciler.store.errors import ConflictError, NotFoundError, StoreError
from billing_reconciler.store.inbox import InboxEvent, InboxRepository
from billing_reconciler.store.journal import (
    JournalEntry,
    JournalRecord,
    JournalRepository,
    JournalState,
)
from billing_reconciler.store.last_applied import LastApplied, LastAppliedRepository
from billing_reconciler.store.plans import PlanRecord, PlanRepository, PlanRow, PlanState
from billing_reconciler.store.runs import (
    RunMode,
    RunRecord,
    RunRepository,
    RunResult,
    default_actor,
)

__all__ = [
    "ConflictError",
    "ControllerStateRepository",
    "InboxEvent",
    "InboxRepository",
    "JournalEntry",
    "JournalRecord",
    "JournalRepository",
    "JournalState",
    "LastApplied",
    "LastAppliedRepository",
    "Lease",
    "LeaseRepository",
    "NotFoundError",
    "PlanRecord",
    "PlanRepository",
    "PlanRow",
    "PlanState",
    "RunMode",
    "RunRecord",
    "RunRepository",
    "RunResult",
    "Store",
    "StoreError",
    "Suspension",
    "current_revision",
    "default_actor",
    "default_sqlite_url",
    "head_revision",
    "normalize_url",
]

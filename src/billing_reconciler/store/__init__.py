"""The local store: SQLAlchemy tables, Alembic migrations, repositories; the only SQL writer.

Open it with `Store.open(url)` (migrates to head), then work inside one transaction::

    with store.session() as session:
        changed = PlanRepository(session).upsert(row)

Repositories take and return frozen dataclasses; ORM objects never leave this package.
"""

from billing_reconciler.store.accounts import AccountRecord, AccountRepository, Address, TaxId
from billing_reconciler.store.controller_state import (
    ControllerStateRepository,
    Lease,
    LeaseRepository,
    Suspension,
)
from billing_reconciler.store.cursors import CursorRecord, DomainCursorRepository
from billing_reconciler.store.database import (
    Store,
    current_revision,
    default_sqlite_url,
    head_revision,
    normalize_url,
)
from billing_reconciler.store.errors import (
    ConflictError,
    IdConflictError,
    InsufficientCreditsError,
    NotFoundError,
    StoreError,
)
from billing_reconciler.store.inbox import InboxEvent, InboxRepository
from billing_reconciler.store.journal import (
    JournalEntry,
    JournalRecord,
    JournalRepository,
    JournalState,
)
from billing_reconciler.store.last_applied import LastApplied, LastAppliedRepository
from billing_reconciler.store.ledger import (
    LedgerRepository,
    LedgerTransaction,
    onboard_grant_id,
    revert_source,
)
from billing_reconciler.store.onboard import grant_onboard_credits
from billing_reconciler.store.organizations import (
    MemberRecord,
    MemberRepository,
    OrganizationRecord,
    OrganizationRepository,
)
from billing_reconciler.store.plans import PlanRecord, PlanRepository, PlanRow, PlanState
from billing_reconciler.store.runs import (
    RunMode,
    RunRecord,
    RunRepository,
    RunResult,
    default_actor,
)
from billing_reconciler.store.subscriptions import (
    CancelMode,
    IntentRepository,
    IntentSource,
    IntentState,
    MirroredSubscription,
    MirrorEntry,
    PlanHistoryRepository,
    PlanPeriod,
    SubscriptionIntent,
    SubscriptionMirrorRepository,
    UpsertResult,
    new_intent_id,
)

__all__ = [
    "AccountRecord",
    "AccountRepository",
    "Address",
    "CancelMode",
    "ConflictError",
    "ControllerStateRepository",
    "CursorRecord",
    "DomainCursorRepository",
    "IdConflictError",
    "InboxEvent",
    "InboxRepository",
    "InsufficientCreditsError",
    "IntentRepository",
    "IntentSource",
    "IntentState",
    "JournalEntry",
    "JournalRecord",
    "JournalRepository",
    "JournalState",
    "LastApplied",
    "LastAppliedRepository",
    "Lease",
    "LeaseRepository",
    "LedgerRepository",
    "LedgerTransaction",
    "MemberRecord",
    "MemberRepository",
    "MirrorEntry",
    "MirroredSubscription",
    "NotFoundError",
    "OrganizationRecord",
    "OrganizationRepository",
    "PlanHistoryRepository",
    "PlanPeriod",
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
    "SubscriptionIntent",
    "SubscriptionMirrorRepository",
    "Suspension",
    "TaxId",
    "UpsertResult",
    "current_revision",
    "default_actor",
    "default_sqlite_url",
    "grant_onboard_credits",
    "head_revision",
    "new_intent_id",
    "normalize_url",
    "onboard_grant_id",
    "revert_source",
]

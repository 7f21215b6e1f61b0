"""The webhook inbox: verified Stripe events, stored once per event id, then acted upon.

Events are hints (DESIGN §11): the inbox records what arrived so the receiver can answer 2xx
durably and duplicates are recognised; the reconcile it triggers re-reads Stripe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from billing_reconciler.store._common import Clock, dialect_insert, utc_now
from billing_reconciler.store.tables import InboxModel

DEFAULT_CLAIM_LEASE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class InboxEvent:
    event_id: str
    type: str
    object_id: str | None
    livemode: bool
    api_version: str | None
    payload: Mapping[str, Any]
    received_at: datetime
    processed_at: datetime | None
    claimed_until: datetime | None
    attempts: int
    last_error: str | None


def _event(model: InboxModel) -> InboxEvent:
    return InboxEvent(
        event_id=model.event_id,
        type=model.type,
        object_id=model.object_id,
        livemode=model.livemode,
        api_version=model.api_version,
        payload=dict(model.payload),
        received_at=model.received_at,
        processed_at=model.processed_at,
        claimed_until=model.claimed_until,
        attempts=model.attempts,
        last_error=model.last_error,
    )


class InboxRepository:
    def __init__(self, session: Session, *, clock: Clock = utc_now) -> None:
        self._session = session
        self._clock = clock

    def store_event(
        self,
        *,
        event_id: str,
        event_type: str,
        object_id: str | None,
        livemode: bool,
        api_version: str | None,
        payload: Mapping[str, Any],
        received_at: datetime | None = None,
    ) -> bool:
        """Store an event; False when its id was stored before (by any process)."""
        inserted = self._session.execute(
            dialect_insert(self._session, InboxModel)
            .values(
                event_id=event_id,
                type=event_type,
                object_id=object_id,
                livemode=livemode,
                api_version=api_version,
                payload=dict(payload),
                received_at=received_at or self._clock(),
                attempts=0,
            )
            .on_conflict_do_nothing(index_elements=[InboxModel.event_id])
            .returning(InboxModel.id)
        ).first()
        return inserted is not None

    def get(self, event_id: str) -> InboxEvent | None:
        model = self._session.scalars(
            select(InboxModel)
            .where(InboxModel.event_id == event_id)
            .execution_options(populate_existing=True)
        ).one_or_none()
        return None if model is None else _event(model)

    def claim_unprocessed(
        self, limit: int, *, lease: timedelta = DEFAULT_CLAIM_LEASE
    ) -> list[InboxEvent]:
        """Claim up to `limit` unprocessed events, oldest first, for `lease`.

        A claimed event is invisible to other claimers until it is processed, released by
        `mark_failed`, or its lease runs out (its claimer died). PostgreSQL skips rows another
        transaction is claiming right now; SQLite transactions are serialized anyway.
        """
        now = self._clock()
        candidates = (
            select(InboxModel.id)
            .where(
                InboxModel.processed_at.is_(None),
                or_(InboxModel.claimed_until.is_(None), InboxModel.claimed_until <= now),
            )
            .order_by(InboxModel.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        ids = list(self._session.scalars(candidates))
        if not ids:
            return []
        self._session.execute(
            update(InboxModel)
            .where(InboxModel.id.in_(ids))
            .values(claimed_until=now + lease, attempts=InboxModel.attempts + 1)
            .execution_options(synchronize_session=False)
        )
        claimed = select(InboxModel).where(InboxModel.id.in_(ids)).order_by(InboxModel.id)
        return [
            _event(model)
            for model in self._session.scalars(claimed.execution_options(populate_existing=True))
        ]

    def mark_processed(self, event_id: str) -> bool:
        """True when the event was unprocessed until now."""
        return self._set(
            event_id,
            only_unprocessed=True,
            processed_at=self._clock(),
            claimed_until=None,
        )

    def mark_failed(self, event_id: str, error: str) -> bool:
        """Record why acting on the event failed and release it for another attempt."""
        return self._set(event_id, only_unprocessed=True, last_error=error, claimed_until=None)

    def count(self, *, unprocessed_only: bool = False) -> int:
        query = select(func.count()).select_from(InboxModel)
        if unprocessed_only:
            query = query.where(InboxModel.processed_at.is_(None))
        return self._session.scalar(query) or 0

    def _set(self, event_id: str, *, only_unprocessed: bool, **values: Any) -> bool:
        statement = update(InboxModel).where(InboxModel.event_id == event_id)
        if only_unprocessed:
            statement = statement.where(InboxModel.processed_at.is_(None))
        updated = self._session.execute(
            statement.values(**values)
            .returning(InboxModel.id)
            .execution_options(synchronize_session=False)
        ).first()
        return updated is not None

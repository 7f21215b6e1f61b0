"""Where each domain is in Stripe's event stream, and when it last resynced in full."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from billing_reconciler.store._common import Clock, dialect_insert, utc_now
from billing_reconciler.store.tables import DomainCursorModel


@dataclass(frozen=True, slots=True)
class CursorRecord:
    domain: str
    last_event_id: str | None
    last_event_created: datetime | None
    full_resync_at: datetime | None


class DomainCursorRepository:
    def __init__(self, session: Session, *, clock: Clock = utc_now) -> None:
        self._session = session
        self._clock = clock

    def get(self, domain: str) -> CursorRecord:
        """The domain's cursor; all None when it has never saved one."""
        model = self._session.scalars(
            select(DomainCursorModel)
            .where(DomainCursorModel.domain == domain)
            .execution_options(populate_existing=True)
        ).one_or_none()
        if model is None:
            return CursorRecord(domain, None, None, None)
        return CursorRecord(
            domain=model.domain,
            last_event_id=model.last_event_id,
            last_event_created=model.last_event_created,
            full_resync_at=model.full_resync_at,
        )

    def save(
        self,
        domain: str,
        *,
        last_event_id: str | None,
        last_event_created: datetime | None,
        full_resync_at: datetime | None = None,
    ) -> CursorRecord:
        """Replace the domain's cursor (`full_resync_at` None keeps the stored one)."""
        values: dict[str, object] = {
            "last_event_id": last_event_id,
            "last_event_created": last_event_created,
            "updated_at": self._clock(),
        }
        insert = dialect_insert(self._session, DomainCursorModel.__table__).values(
            domain=domain, full_resync_at=full_resync_at, **values
        )
        if full_resync_at is not None:
            values["full_resync_at"] = full_resync_at
        self._session.execute(
            insert.on_conflict_do_update(index_elements=[DomainCursorModel.domain], set_=values)
        )
        return self.get(domain)

"""Controller facts that outlive a process: suspension, and who holds the leader lease.

The leader lock itself is a PostgreSQL advisory lock or a file lock (runtime/); the lease rows
here are bookkeeping so `reconcile status` can say who leads and since when.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from billing_reconciler.store._common import Clock, dialect_insert, utc_now
from billing_reconciler.store.tables import ControllerStateModel, LeaseModel

SUSPENDED = "suspended"
# Written once by migration 0003; salts idempotency keys (see that migration).
STORE_ID = "store_id"


@dataclass(frozen=True, slots=True)
class Suspension:
    reason: str
    actor: str
    since: datetime


@dataclass(frozen=True, slots=True)
class Lease:
    name: str
    holder: str
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime

    def is_live(self, now: datetime) -> bool:
        return now < self.expires_at


class ControllerStateRepository:
    def __init__(self, session: Session, *, clock: Clock = utc_now) -> None:
        self._session = session
        self._clock = clock

    def suspend(self, reason: str, actor: str) -> Suspension:
        """Pause applying (plans are still computed). Suspending again updates reason and actor."""
        now = self._clock()
        self._put(SUSPENDED, {"reason": reason, "actor": actor}, now)
        return Suspension(reason=reason, actor=actor, since=now)

    def resume(self) -> bool:
        """Lift a suspension; True when there was one."""
        deleted = self._session.execute(
            delete(ControllerStateModel)
            .where(ControllerStateModel.key == SUSPENDED)
            .returning(ControllerStateModel.key)
        ).first()
        return deleted is not None

    def suspension(self) -> Suspension | None:
        row = self._session.execute(
            select(ControllerStateModel.value, ControllerStateModel.updated_at).where(
                ControllerStateModel.key == SUSPENDED
            )
        ).first()
        if row is None:
            return None
        value, since = row
        return Suspension(reason=str(value["reason"]), actor=str(value["actor"]), since=since)

    def store_id(self) -> str:
        """This store's own identity (made by migration 0003); "" if someone deleted it."""
        value = self._session.execute(
            select(ControllerStateModel.value).where(ControllerStateModel.key == STORE_ID)
        ).scalar_one_or_none()
        return str(value.get("id", "")) if isinstance(value, dict) else ""

    def read(self, key: str) -> dict[str, Any] | None:
        """A fact the controller keeps under `key` (keys hold a `/`, never one above)."""
        value = self._session.execute(
            select(ControllerStateModel.value).where(ControllerStateModel.key == key)
        ).scalar_one_or_none()
        return dict(value) if isinstance(value, dict) else None

    def write(self, key: str, value: dict[str, Any]) -> None:
        """Keep `value` under `key` (replacing what was there)."""
        if "/" not in key:
            raise ValueError(f"controller state key {key!r} must hold a '/'")
        self._put(key, value, self._clock())

    def _put(self, key: str, value: dict[str, Any], now: datetime) -> None:
        self._session.execute(
            dialect_insert(self._session, ControllerStateModel)
            .values(key=key, value=value, updated_at=now)
            .on_conflict_do_update(
                index_elements=[ControllerStateModel.key],
                set_={"value": value, "updated_at": now},
            )
        )


class LeaseRepository:
    def __init__(self, session: Session, *, clock: Clock = utc_now) -> None:
        self._session = session
        self._clock = clock

    def record(self, name: str, holder: str, ttl: timedelta) -> Lease:
        """Note that `holder` holds lock `name` for `ttl` from now (acquired or renewed)."""
        now = self._clock()
        current = self.current(name)
        acquired = current.acquired_at if current and current.holder == holder else now
        columns = {"holder": holder, "acquired_at": acquired, "renewed_at": now}
        columns["expires_at"] = now + ttl
        self._session.execute(
            dialect_insert(self._session, LeaseModel)
            .values(name=name, **columns)
            .on_conflict_do_update(index_elements=[LeaseModel.name], set_=columns)
        )
        return Lease(
            name=name, holder=holder, acquired_at=acquired, renewed_at=now, expires_at=now + ttl
        )

    def release(self, name: str, holder: str) -> bool:
        """Forget the lease if `holder` still has it; True when it did."""
        deleted = self._session.execute(
            delete(LeaseModel)
            .where(LeaseModel.name == name, LeaseModel.holder == holder)
            .returning(LeaseModel.name)
        ).first()
        return deleted is not None

    def current(self, name: str) -> Lease | None:
        """The last recorded lease, live or expired (see `Lease.is_live`)."""
        row = self._session.execute(
            select(
                LeaseModel.holder,
                LeaseModel.acquired_at,
                LeaseModel.renewed_at,
                LeaseModel.expires_at,
            ).where(LeaseModel.name == name)
        ).first()
        if row is None:
            return None
        holder, acquired_at, renewed_at, expires_at = row
        return Lease(
            name=name,
            holder=holder,
            acquired_at=acquired_at,
            renewed_at=renewed_at,
            expires_at=expires_at,
        )

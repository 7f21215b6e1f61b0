"""Plan records: plans have no Stripe object, so their definition is kept in the store."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from billing_reconciler.store._common import Clock, content_hash, dialect_insert, utc_now
from billing_reconciler.store.tables import PlanModel


class PlanState(enum.StrEnum):
    ACTIVE = "active"
    ARCHIVED = "archived"


@dataclass(frozen=True, slots=True)
class PlanRow:
    """A plan as desired. Names (plan and products) are case-insensitive and stored lower-cased."""

    name: str
    title: str
    description: str | None = None
    interval: str | None = None
    trial_days: int = 0
    on_start_credits: int = 0
    products: Sequence[str] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def normalized(self) -> PlanRow:
        return PlanRow(
            name=self.name.lower(),
            title=self.title,
            description=self.description,
            interval=self.interval,
            trial_days=self.trial_days,
            on_start_credits=self.on_start_credits,
            products=tuple(product.lower() for product in self.products),
            metadata=dict(self.metadata),
        )

    @property
    def content_hash(self) -> str:
        row = self.normalized()
        return content_hash(
            {
                "name": row.name,
                "title": row.title,
                "description": row.description,
                "interval": row.interval,
                "trial_days": row.trial_days,
                "on_start_credits": row.on_start_credits,
                "products": list(row.products),
                "metadata": dict(row.metadata),
            }
        )


@dataclass(frozen=True, slots=True)
class PlanRecord:
    """A stored plan."""

    name: str
    title: str
    description: str | None
    interval: str | None
    trial_days: int
    on_start_credits: int
    products: tuple[str, ...]
    metadata: Mapping[str, Any]
    content_hash: str
    state: PlanState
    created_at: datetime
    updated_at: datetime

    @property
    def row(self) -> PlanRow:
        return PlanRow(
            name=self.name,
            title=self.title,
            description=self.description,
            interval=self.interval,
            trial_days=self.trial_days,
            on_start_credits=self.on_start_credits,
            products=self.products,
            metadata=self.metadata,
        )


def _record(model: PlanModel) -> PlanRecord:
    return PlanRecord(
        name=model.name,
        title=model.title,
        description=model.description,
        interval=model.interval,
        trial_days=model.trial_days,
        on_start_credits=model.on_start_credits,
        products=tuple(model.products),
        metadata=dict(model.metadata_),
        content_hash=model.content_hash,
        state=PlanState(model.state),
        created_at=model.created_at,
        updated_at=model.updated_at,
    )


def _columns(row: PlanRow) -> dict[str, Any]:
    normal = row.normalized()
    return {
        "title": normal.title,
        "description": normal.description,
        "interval": normal.interval,
        "trial_days": normal.trial_days,
        "on_start_credits": normal.on_start_credits,
        "products": list(normal.products),
        "metadata_": dict(normal.metadata),
        "content_hash": row.content_hash,
    }


class PlanRepository:
    def __init__(self, session: Session, *, clock: Clock = utc_now) -> None:
        self._session = session
        self._clock = clock

    def get(self, name: str) -> PlanRecord | None:
        model = self._session.get(PlanModel, name.lower())
        return None if model is None else _record(model)

    def list_active(self) -> list[PlanRecord]:
        return self._list(PlanState.ACTIVE)

    def list_all(self) -> list[PlanRecord]:
        return self._list(None)

    def upsert(self, record: PlanRow) -> bool:
        """Store `record` as the active definition; True when anything changed (incl. revival)."""
        name = record.name.lower()
        now = self._clock()
        columns = _columns(record)
        inserted = self._session.execute(
            dialect_insert(self._session, PlanModel)
            .values(
                name=name, state=PlanState.ACTIVE.value, created_at=now, updated_at=now, **columns
            )
            .on_conflict_do_nothing(index_elements=[PlanModel.name])
            .returning(PlanModel.name)
        ).first()
        if inserted is not None:
            return True
        changed = self._session.execute(
            update(PlanModel)
            .where(PlanModel.name == name)
            .where(
                (PlanModel.content_hash != columns["content_hash"])
                | (PlanModel.state != PlanState.ACTIVE.value)
            )
            .values(state=PlanState.ACTIVE.value, updated_at=now, **columns)
            .returning(PlanModel.name)
        ).first()
        return changed is not None

    def archive(self, name: str) -> bool:
        """Mark a plan archived (plans are never deleted); True when it was active."""
        changed = self._session.execute(
            update(PlanModel)
            .where(PlanModel.name == name.lower(), PlanModel.state == PlanState.ACTIVE.value)
            .values(state=PlanState.ARCHIVED.value, updated_at=self._clock())
            .returning(PlanModel.name)
        ).first()
        return changed is not None

    def _list(self, state: PlanState | None) -> list[PlanRecord]:
        query = select(PlanModel).order_by(PlanModel.name)
        if state is not None:
            query = query.where(PlanModel.state == state.value)
        return [_record(model) for model in self._session.scalars(query)]

"""Last-applied state: the fields we last wrote to each managed object (three-way diff)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from billing_reconciler.store._common import dialect_insert
from billing_reconciler.store.tables import LastAppliedModel


@dataclass(frozen=True, slots=True)
class LastApplied:
    """What one installation last applied to one object, keyed like `price/team_seat/monthly`."""

    installation_id: str
    object_key: str
    kind: str
    stripe_id: str | None
    fields: Mapping[str, Any]
    content_hash: str
    revision: str
    applied_at: datetime


def _value(model: LastAppliedModel) -> LastApplied:
    return LastApplied(
        installation_id=model.installation_id,
        object_key=model.object_key,
        kind=model.kind,
        stripe_id=model.stripe_id,
        fields=dict(model.fields),
        content_hash=model.content_hash,
        revision=model.revision,
        applied_at=model.applied_at,
    )


class LastAppliedRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def for_installation(self, installation_id: str) -> dict[str, LastApplied]:
        query = (
            select(LastAppliedModel)
            .where(LastAppliedModel.installation_id == installation_id)
            .order_by(LastAppliedModel.object_key)
        )
        return {model.object_key: _value(model) for model in self._session.scalars(query)}

    def get(self, installation_id: str, object_key: str) -> LastApplied | None:
        model = self._session.get(LastAppliedModel, (installation_id, object_key))
        return None if model is None else _value(model)

    def put(self, entry: LastApplied) -> None:
        """Insert or replace the entry for (installation, object key)."""
        columns = {
            "kind": entry.kind,
            "stripe_id": entry.stripe_id,
            "fields": dict(entry.fields),
            "content_hash": entry.content_hash,
            "revision": entry.revision,
            "applied_at": entry.applied_at,
        }
        statement = (
            dialect_insert(self._session, LastAppliedModel)
            .values(installation_id=entry.installation_id, object_key=entry.object_key, **columns)
            .on_conflict_do_update(
                index_elements=[LastAppliedModel.installation_id, LastAppliedModel.object_key],
                set_=columns,
            )
        )
        self._session.execute(statement)
        # ON CONFLICT bypasses the identity map; a later get() must not see a stale object.
        self._session.expire_all()

    def delete(self, installation_id: str, object_key: str) -> bool:
        """Forget an object (after it is archived for good); True when there was an entry."""
        deleted = self._session.execute(
            delete(LastAppliedModel)
            .where(
                LastAppliedModel.installation_id == installation_id,
                LastAppliedModel.object_key == object_key,
            )
            .returning(LastAppliedModel.object_key)
        ).first()
        return deleted is not None

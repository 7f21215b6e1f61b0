"""Organizations and their members, as the host tells us of them (DESIGN §15).

Writes are idempotent upserts: the same PUT twice changes nothing the second time. An org is
never removed, only marked deleted (its billing account and ledger outlive it); upserting a
deleted org undeletes it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from billing_reconciler.store._common import Clock, dialect_insert, utc_now
from billing_reconciler.store.errors import NotFoundError
from billing_reconciler.store.tables import MemberModel, OrganizationModel

#: The host's org ids (DESIGN §15).
ORG_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def check_org_id(org_id: str) -> str:
    """`org_id` if it is a valid host org id (1-64 of `[A-Za-z0-9_.:-]`), else ValueError."""
    if not ORG_ID_PATTERN.fullmatch(org_id):
        raise ValueError(f"invalid org id {org_id!r}: 1-64 characters of [A-Za-z0-9_.:-]")
    return org_id


@dataclass(frozen=True, slots=True)
class OrganizationRecord:
    org_id: str
    title: str
    owner_email: str | None
    metadata: Mapping[str, str]
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


@dataclass(frozen=True, slots=True)
class MemberRecord:
    org_id: str
    user_id: str
    email: str | None
    role: str | None
    created_at: datetime


def _org(model: OrganizationModel) -> OrganizationRecord:
    return OrganizationRecord(
        org_id=model.org_id,
        title=model.title,
        owner_email=model.owner_email,
        metadata=dict(model.metadata_),
        created_at=model.created_at,
        updated_at=model.updated_at,
        deleted_at=model.deleted_at,
    )


def _member(model: MemberModel) -> MemberRecord:
    return MemberRecord(
        org_id=model.org_id,
        user_id=model.user_id,
        email=model.email,
        role=model.role,
        created_at=model.created_at,
    )


class OrganizationRepository:
    def __init__(self, session: Session, *, clock: Clock = utc_now) -> None:
        self._session = session
        self._clock = clock

    def upsert(
        self,
        org_id: str,
        *,
        title: str,
        owner_email: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> tuple[OrganizationRecord, bool]:
        """Create or update an org; True when it was created, or undeleted (a deleted org
        put again is created again, from the host's side: its accounts stay as they are)."""
        check_org_id(org_id)
        now = self._clock()
        meta = dict(metadata or {})
        inserted = self._session.execute(
            dialect_insert(self._session, OrganizationModel.__table__)
            .values(
                org_id=org_id,
                created_at=now,
                updated_at=now,
                deleted_at=None,
                title=title,
                owner_email=owner_email,
                metadata=meta,
            )
            .on_conflict_do_nothing(index_elements=[OrganizationModel.org_id])
            .returning(OrganizationModel.org_id)
        ).first()
        model = self._locked(org_id)
        assert model is not None
        if inserted is not None:
            return _org(model), True
        current = (model.title, model.owner_email, dict(model.metadata_))
        revived = model.deleted_at is not None
        if current != (title, owner_email, meta) or revived:
            model.title = title
            model.owner_email = owner_email
            model.metadata_ = meta
            model.deleted_at = None
            model.updated_at = now
            if revived:
                model.created_at = now  # created again, from the host's side (tester T3-9)
            self._session.flush()
        return _org(model), revived

    def get(self, org_id: str) -> OrganizationRecord | None:
        """The org, deleted ones too (the caller checks `deleted_at`)."""
        model = self._session.scalars(
            select(OrganizationModel)
            .where(OrganizationModel.org_id == org_id)
            .execution_options(populate_existing=True)
        ).one_or_none()
        return None if model is None else _org(model)

    def mark_deleted(self, org_id: str) -> OrganizationRecord:
        """Mark an org deleted (once; a second call keeps the first time)."""
        model = self._locked(org_id)
        if model is None:
            raise NotFoundError(f"no organization {org_id!r}")
        if model.deleted_at is None:
            now = self._clock()
            model.deleted_at = now
            model.updated_at = now
            self._session.flush()
        return _org(model)

    def _locked(self, org_id: str) -> OrganizationModel | None:
        return self._session.scalars(
            select(OrganizationModel)
            .where(OrganizationModel.org_id == org_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one_or_none()


class MemberRepository:
    def __init__(self, session: Session, *, clock: Clock = utc_now) -> None:
        self._session = session
        self._clock = clock

    def upsert(
        self, org_id: str, user_id: str, *, email: str | None = None, role: str | None = None
    ) -> tuple[MemberRecord, bool]:
        """Add or update a member of an existing org; True when the member was added."""
        if not user_id:
            raise ValueError("a member needs a user id")
        org = self._session.scalar(
            select(OrganizationModel.org_id).where(OrganizationModel.org_id == org_id)
        )
        if org is None:
            raise NotFoundError(f"no organization {org_id!r}")
        inserted = self._session.execute(
            dialect_insert(self._session, MemberModel)
            .values(
                org_id=org_id, user_id=user_id, email=email, role=role, created_at=self._clock()
            )
            .on_conflict_do_nothing(index_elements=[MemberModel.org_id, MemberModel.user_id])
            .returning(MemberModel.user_id)
        ).first()
        model = self._session.scalars(
            select(MemberModel)
            .where(MemberModel.org_id == org_id, MemberModel.user_id == user_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one()
        if inserted is None and (model.email, model.role) != (email, role):
            model.email = email
            model.role = role
            self._session.flush()
        return _member(model), inserted is not None

    def delete(self, org_id: str, user_id: str) -> bool:
        """Remove a member; False when there was none."""
        removed = self._session.execute(
            delete(MemberModel)
            .where(MemberModel.org_id == org_id, MemberModel.user_id == user_id)
            .returning(MemberModel.user_id)
            .execution_options(synchronize_session=False)
        ).first()
        return removed is not None

    def list(
        self, org_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[MemberRecord], str | None]:
        """A page of members ordered by user id, and the cursor of the next page (None: last).

        The cursor is the last user id of the page; pass it back as is.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        query = (
            select(MemberModel)
            .where(MemberModel.org_id == org_id)
            .order_by(MemberModel.user_id)
            .limit(limit + 1)
            .execution_options(populate_existing=True)
        )
        if cursor is not None:
            query = query.where(MemberModel.user_id > cursor)
        members = [_member(model) for model in self._session.scalars(query)]
        if len(members) > limit:
            return members[:limit], members[limit - 1].user_id
        return members, None

    def count(self, org_id: str) -> int:
        return (
            self._session.scalar(
                select(func.count()).select_from(MemberModel).where(MemberModel.org_id == org_id)
            )
            or 0
        )

    def count_many(self, org_ids: Iterable[str]) -> dict[str, int]:
        """The member count (seats, DESIGN §16) of each org, 0 for an org with none; one
        grouped query per 500 orgs."""
        wanted = list(dict.fromkeys(org_ids))
        counts = dict.fromkeys(wanted, 0)
        for start in range(0, len(wanted), 500):
            rows = self._session.execute(
                select(MemberModel.org_id, func.count())
                .where(MemberModel.org_id.in_(wanted[start : start + 500]))
                .group_by(MemberModel.org_id)
            )
            for org_id, count in rows:
                counts[org_id] = int(count)
        return counts

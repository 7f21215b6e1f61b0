"""Organizations and members: idempotent upserts, soft deletion, paging; SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from billing_reconciler.store import (
    MemberRepository,
    NotFoundError,
    OrganizationRepository,
    Store,
)
from tests.integration.store.conftest import FakeClock


def test_upsert_creates_then_updates_only_on_change(store: Store, clock: FakeClock) -> None:
    with store.session() as session:
        orgs = OrganizationRepository(session, clock=clock)
        created, was_created = orgs.upsert(
            "org-1", title="Acme", owner_email="ada@acme.test", metadata={"tier": "gold"}
        )
        assert was_created
        assert (created.title, created.owner_email, created.metadata) == (
            "Acme",
            "ada@acme.test",
            {"tier": "gold"},
        )
        assert created.created_at == created.updated_at == clock.now
        assert created.deleted_at is None

        clock.advance(timedelta(minutes=1))
        same, was_created = orgs.upsert(
            "org-1", title="Acme", owner_email="ada@acme.test", metadata={"tier": "gold"}
        )
        assert not was_created
        assert same == created  # an identical PUT changes nothing, not even updated_at

        renamed, was_created = orgs.upsert("org-1", title="Acme Inc")
        assert not was_created
        assert (renamed.title, renamed.owner_email, renamed.metadata) == ("Acme Inc", None, {})
        assert renamed.updated_at == clock.now
        assert renamed.created_at == created.created_at
    with store.session() as session:
        assert OrganizationRepository(session).get("org-1") == renamed
        assert OrganizationRepository(session).get("org-2") is None


def test_deleted_org_is_kept_and_undeleted_by_an_upsert(store: Store, clock: FakeClock) -> None:
    with store.session() as session:
        orgs = OrganizationRepository(session, clock=clock)
        orgs.upsert("org-1", title="Acme")
        clock.advance(timedelta(minutes=1))
        deleted = orgs.mark_deleted("org-1")
        assert deleted.deleted_at == clock.now
        clock.advance(timedelta(minutes=1))
        assert orgs.mark_deleted("org-1").deleted_at == deleted.deleted_at
        assert orgs.get("org-1") == deleted
        with pytest.raises(NotFoundError):
            orgs.mark_deleted("org-404")
        back, was_created = orgs.upsert("org-1", title="Acme")
        assert was_created  # created again, from the host's side
        assert orgs.upsert("org-1", title="Acme") == (back, False)
        assert back.deleted_at is None
        assert back.updated_at == clock.now


@pytest.mark.parametrize("org_id", ["", "a" * 65, "has space", "slash/no", "ümlaut"])
def test_org_ids_are_the_hosts_shape(store: Store, org_id: str) -> None:
    with store.session() as session, pytest.raises(ValueError, match="invalid org id"):
        OrganizationRepository(session).upsert(org_id, title="x")


def test_org_ids_of_every_allowed_character(store: Store) -> None:
    with store.session() as session:
        _, created = OrganizationRepository(session).upsert("A-z_0.9:x" + "y" * 55, title="x")
    assert created


def test_members_upsert_delete_count(store: Store, clock: FakeClock) -> None:
    with store.session() as session:
        OrganizationRepository(session, clock=clock).upsert("org-1", title="Acme")
        members = MemberRepository(session, clock=clock)
        added, was_added = members.upsert("org-1", "u1", email="a@x.test", role="admin")
        assert was_added
        assert (added.org_id, added.user_id, added.email, added.role, added.created_at) == (
            "org-1",
            "u1",
            "a@x.test",
            "admin",
            clock.now,
        )
        assert members.upsert("org-1", "u1", email="a@x.test", role="admin") == (added, False)
        changed, was_added = members.upsert("org-1", "u1", role="member")
        assert not was_added
        assert (changed.email, changed.role, changed.created_at) == (None, "member", clock.now)
        members.upsert("org-1", "u2")
        assert members.count("org-1") == 2
        assert members.count("org-2") == 0
        assert members.delete("org-1", "u2")
        assert not members.delete("org-1", "u2")
        assert members.count("org-1") == 1
        with pytest.raises(NotFoundError):
            members.upsert("org-404", "u1")


def test_members_page_by_user_id(store: Store) -> None:
    with store.session() as session:
        OrganizationRepository(session).upsert("org-1", title="Acme")
        OrganizationRepository(session).upsert("org-2", title="Other")
        members = MemberRepository(session)
        for index in (5, 3, 1, 4, 2):
            members.upsert("org-1", f"u{index}")
        members.upsert("org-2", "u0")
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            page, cursor = members.list("org-1", limit=2, cursor=cursor)
            seen += [member.user_id for member in page]
            pages += 1
            if cursor is None:
                break
        assert seen == ["u1", "u2", "u3", "u4", "u5"]
        assert pages == 3
        page, cursor = members.list("org-1", limit=5)
        assert (len(page), cursor) == (5, None)
        with pytest.raises(ValueError, match="limit"):
            members.list("org-1", limit=0)

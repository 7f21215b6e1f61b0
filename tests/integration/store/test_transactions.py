"""One `Store.session()` is one transaction: all of its writes land, or none do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, StatementError

from billing_reconciler.store import (
    ControllerStateRepository,
    InboxRepository,
    JournalEntry,
    JournalRepository,
    LastApplied,
    LastAppliedRepository,
    PlanRepository,
    PlanRow,
    RunMode,
    RunRepository,
    Store,
)


class Crash(Exception):
    pass


def _write_everywhere_then_crash(store: Store) -> None:
    with store.session() as session:
        run_id = RunRepository(session).start(domain="catalog", mode=RunMode.APPLY, actor="a@b")
        JournalRepository(session).begin(
            JournalEntry(run_id, "prod", "fp", 0, "product/p", "create", "k0")
        )
        PlanRepository(session).upsert(PlanRow(name="free", title="Free"))
        LastAppliedRepository(session).put(
            LastApplied("prod", "product/p", "product", "prod_1", {}, "h", "r", datetime.now(UTC))
        )
        InboxRepository(session).store_event(
            event_id="evt_1",
            event_type="x",
            object_id=None,
            livemode=False,
            api_version=None,
            payload={},
        )
        ControllerStateRepository(session).suspend("why", "who")
        raise Crash


def test_a_failure_midway_leaves_nothing(store: Store) -> None:
    with pytest.raises(Crash):
        _write_everywhere_then_crash(store)
    with store.engine.connect() as connection:
        for table in (
            "reconcile_runs",
            "apply_journal",
            "plans",
            "last_applied",
            "webhook_inbox",
        ):
            assert connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == 0
        # Only the store's identity, which migration 0003 wrote when the store was made.
        keys = connection.execute(text("SELECT key FROM controller_state")).scalars().all()
        assert keys == ["store_id"]


def _plan_then_orphan_step(store: Store) -> None:
    with store.session() as session:
        PlanRepository(session).upsert(PlanRow(name="free", title="Free"))
        JournalRepository(session).begin(
            JournalEntry("no-such-run", "prod", "fp", 0, "product/p", "create", "k0")
        )


def test_a_database_error_rolls_back_earlier_writes(store: Store) -> None:
    with pytest.raises(IntegrityError, match=r"(?i)foreign key"):
        _plan_then_orphan_step(store)
    with store.session() as session:
        assert PlanRepository(session).list_all() == []


def test_timestamps_come_back_aware_utc(store: Store) -> None:
    berlin = timezone(timedelta(hours=1))
    moment = datetime(2025, 1, 1, 13, 0, 0, 123456, tzinfo=berlin)
    with store.session() as session:
        LastAppliedRepository(session).put(
            LastApplied("prod", "product/p", "product", None, {}, "h", "r", moment)
        )
    with store.session() as session:
        stored = LastAppliedRepository(session).get("prod", "product/p")
    assert stored is not None
    assert stored.applied_at == moment
    assert stored.applied_at.tzinfo is UTC
    assert stored.applied_at.hour == 12


def test_naive_timestamps_written_by_others_read_as_utc(store: Store) -> None:
    # Rows written outside the store (a SQL console, an older tool) carry naive timestamps.
    with store.session() as session:
        session.execute(
            text(
                "INSERT INTO controller_state (key, value, updated_at) "
                "VALUES ('suspended', :value, :at)"
            ),
            {"value": '{"reason":"r","actor":"a"}', "at": "2025-06-01 08:30:00"},
        )
    with store.session() as session:
        suspension = ControllerStateRepository(session).suspension()
    assert suspension is not None
    assert suspension.since == datetime(2025, 6, 1, 8, 30, tzinfo=UTC)
    assert suspension.since.tzinfo is UTC


def test_naive_timestamps_are_refused(store: Store) -> None:
    naive = LastApplied("prod", "product/p", "product", None, {}, "h", "r", datetime(2025, 1, 1))
    with pytest.raises(StatementError, match="naive datetime"), store.session() as session:
        LastAppliedRepository(session).put(naive)
    with store.session() as session:
        assert LastAppliedRepository(session).for_installation("prod") == {}

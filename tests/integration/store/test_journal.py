"""Apply journal: idempotent begin (also across connections), state rules, queries."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

from billing_reconciler.store import (
    ConflictError,
    JournalEntry,
    JournalRecord,
    JournalRepository,
    JournalState,
    NotFoundError,
    RunMode,
    RunRepository,
    Store,
)
from tests.integration.store.conftest import FakeClock


def _step(run_id: str, index: int, *, installation: str = "prod") -> JournalEntry:
    return JournalEntry(
        run_id=run_id,
        installation_id=installation,
        plan_fingerprint="fp1",
        step_index=index,
        object_key=f"price/p{index}/monthly",
        action="create",
        idempotency_key=f"{installation}-key-{index}",
    )


def test_begin_records_a_pending_step(store: Store, run_id: str, clock: FakeClock) -> None:
    with store.session() as session:
        record = JournalRepository(session, clock=clock).begin(_step(run_id, 0))
    assert record.state is JournalState.PENDING
    assert (record.run_id, record.step_index, record.object_key) == (run_id, 0, "price/p0/monthly")
    assert record.started_at == clock.now
    assert record.finished_at is None
    assert record.stripe_id is None


def test_begin_twice_returns_the_first_entry(store: Store, run_id: str) -> None:
    with store.session() as session:
        first = JournalRepository(session).begin(_step(run_id, 0))
    with store.session() as session:
        rerun = RunRepository(session).start(domain="catalog", mode=RunMode.APPLY, actor="t@h")
        again = JournalRepository(session).begin(_step(rerun, 0))
    assert again == first  # still the first run's row: the rerun replays, never duplicates
    with store.session() as session:
        assert JournalRepository(session).for_run(rerun) == []


def test_concurrent_begin_from_two_connections_yields_one_row(store: Store, run_id: str) -> None:
    barrier = threading.Barrier(2)

    def begin() -> JournalRecord:
        with store.session() as session:
            barrier.wait(timeout=10)
            return JournalRepository(session).begin(_step(run_id, 7))

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: begin(), range(2)))
    assert results[0] == results[1]
    with store.session() as session:
        assert len(JournalRepository(session).for_run(run_id)) == 1


def test_done_is_final(store: Store, run_id: str, clock: FakeClock) -> None:
    with store.session() as session:
        journal = JournalRepository(session, clock=clock)
        journal.begin(_step(run_id, 0))
        clock.advance(timedelta(seconds=3))
        done = journal.mark_done("prod-key-0", "price_1", "req_1")
        assert (done.state, done.stripe_id, done.request_id) == (
            JournalState.DONE,
            "price_1",
            "req_1",
        )
        assert done.finished_at == clock.now
        assert journal.mark_done("prod-key-0", "price_1", "req_2") == done
        with pytest.raises(ConflictError):
            journal.mark_done("prod-key-0", "price_2", "req_3")
        with pytest.raises(ConflictError):
            journal.mark_failed("prod-key-0", "boom", "req_4")
        assert journal.get("prod-key-0") == done


def test_a_new_step_is_one_statement_to_begin_and_one_to_finish(store: Store, run_id: str) -> None:
    """The journal's share of every apply step (issue 10: a create step's client CPU)."""
    executed: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        if not statement.startswith("BEGIN"):
            executed.append(statement.split(None, 1)[0])

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        with store.session() as session:
            begun = JournalRepository(session).begin(_step(run_id, 0))
        with store.session() as session:
            done = JournalRepository(session).mark_done("prod-key-0", "cus_1", "req_1")
        with store.session() as session:
            JournalRepository(session).begin(_step(run_id, 1))
        with store.session() as session:
            failed = JournalRepository(session).mark_failed("prod-key-1", "boom", "req_2")
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    assert executed == ["INSERT", "UPDATE", "INSERT", "UPDATE"]
    assert (begun.state, begun.id) == (JournalState.PENDING, done.id)
    assert (done.state, done.stripe_id, done.request_id) == (JournalState.DONE, "cus_1", "req_1")
    assert (failed.state, failed.stripe_id, failed.error) == (JournalState.FAILED, None, "boom")
    with store.session() as session:
        assert JournalRepository(session).get("prod-key-0") == done
        assert JournalRepository(session).get("prod-key-1") == failed


def test_a_failed_step_can_be_retried(store: Store, run_id: str) -> None:
    with store.session() as session:
        journal = JournalRepository(session)
        journal.begin(_step(run_id, 0))
        failed = journal.mark_failed("prod-key-0", "card_declined: nope", "req_1")
        assert (failed.state, failed.error, failed.request_id) == (
            JournalState.FAILED,
            "card_declined: nope",
            "req_1",
        )
        assert journal.begin(_step(run_id, 0)).state is JournalState.FAILED
        done = journal.mark_done("prod-key-0", "price_1", "req_2")
        assert (done.state, done.error) == (JournalState.DONE, None)


def test_unknown_keys_and_runs_are_refused(store: Store) -> None:
    with store.session() as session:
        journal = JournalRepository(session)
        with pytest.raises(NotFoundError):
            journal.mark_done("nope", "price_1")
        with pytest.raises(NotFoundError):
            journal.mark_failed("nope", "boom")
    with pytest.raises(IntegrityError), store.session() as session:
        JournalRepository(session).begin(_step("no-such-run", 0))


def test_pending_done_keys_and_for_run(store: Store, run_id: str) -> None:
    with store.session() as session:
        journal = JournalRepository(session)
        for index in (2, 0, 1, 3):
            journal.begin(_step(run_id, index))
        journal.begin(_step(run_id, 0, installation="other"))
        journal.mark_done("prod-key-0", "price_0")
        journal.mark_done("prod-key-2", "price_2")
        journal.mark_failed("prod-key-3", "boom")
        assert [r.step_index for r in journal.pending("prod")] == [1]
        assert journal.done_keys("prod") == {"prod-key-0", "prod-key-2"}
        assert journal.done_keys("other") == set()
        assert [r.idempotency_key for r in journal.pending("other")] == ["other-key-0"]
        assert [r.step_index for r in journal.for_run(run_id)] == [2, 0, 1, 3, 0]

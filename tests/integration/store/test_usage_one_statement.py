"""store.usage.record_in_one_statement, the API's fast path on PostgreSQL: a batch of new
usages written by one autocommit statement, all or nothing; None with nothing written
whenever the general path must decide (a replay, too little balance, an account no longer
active, an id another writer commits meanwhile)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from billing_reconciler.store import (
    AccountRepository,
    LedgerRepository,
    OrganizationRepository,
    Store,
)
from billing_reconciler.store.usage import (
    Batch,
    MeterEvent,
    Usage,
    UsageRepository,
    record_in_one_statement,
)

# The statement is PostgreSQL's (SQLite takes the general path, in a transaction, always).
pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)

NOW = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)


def _account(store: Store, org: str, balance: int, *, credit_min: int = 0) -> str:
    with store.session() as session:
        OrganizationRepository(session).upsert(org, title=org)
        account = AccountRepository(session).create(org, name=None, email=None, currency="usd")
        if balance:
            LedgerRepository(session).credit(account.id, id=f"g-{org}", amount=balance, source="t")
        if credit_min:
            session.execute(
                text("UPDATE billing_accounts SET credit_min = :m WHERE id = :id"),
                {"m": credit_min, "id": account.id},
            )
        return account.id


def _once(store: Store, account_id: str, org: str, usages: list[Usage]) -> Batch | None:
    return asyncio.run(record_in_one_statement(store, account_id, org, usages, clock=lambda: NOW))


def _counts(store: Store) -> tuple[int, int, int]:
    with store.session() as session:
        return tuple(  # type: ignore[return-value]
            int(session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
            for table in ("ledger_transactions", "ledger_entries", "meter_outbox")
        )


def test_a_new_batch_is_written_whole(store: Store) -> None:
    account_id = _account(store, "acme", 100)
    usages = [
        Usage(id="u1", amount=30, source="Search", metadata={"k": "v"}),
        Usage(
            id="u2",
            amount=20,
            source="usage",
            meter=MeterEvent(event_name="api_requests", value=7, timestamp=None),
        ),
    ]
    batch = _once(store, account_id, "acme", usages)
    assert batch is not None
    assert [(r.transaction.id, r.created) for r in batch.recorded] == [("u1", True), ("u2", True)]
    assert batch.recorded[0].transaction.source == "search"
    assert batch.balance == 50
    with store.session() as session:
        ledger = LedgerRepository(session)
        assert ledger.balance(account_id)[0] == 50
        assert ledger.verify() == []
        outbox = session.execute(
            text("SELECT id, org_id, event_name, value, event_time FROM meter_outbox")
        ).all()
    assert [tuple(row) for row in outbox] == [("u2", "acme", "api_requests", 7, NOW)]
    # What it wrote is what the general path would have: a resend is its replay there.
    with store.session() as session:
        again = UsageRepository(session).record(account_id, "acme", usages, credit_min=0)
    assert [r.created for r in again.recorded] == [False, False]
    assert again.balance == 50


def test_nothing_is_written_when_the_general_path_must_decide(store: Store) -> None:
    account_id = _account(store, "acme", 10, credit_min=-5)
    other = _account(store, "other", 10)
    assert _once(store, account_id, "acme", [Usage(id="seen", amount=1, source="usage")])
    before = _counts(store)
    cases: list[tuple[str, str, list[Usage]]] = [
        # A replay (with a new usage beside it): the general path answers it.
        (
            "acme",
            account_id,
            [Usage(id="new", amount=1, source="usage"), Usage(id="seen", amount=1, source="usage")],
        ),
        # 9 - 15 < -5: the general path names the usage refused.
        ("acme", account_id, [Usage(id="big", amount=15, source="usage")]),
        # Another org's account, or an org that is not the account's.
        ("other", account_id, [Usage(id="x1", amount=1, source="usage")]),
        ("acme", other, [Usage(id="x2", amount=1, source="usage")]),
    ]
    for org, account, usages in cases:
        assert _once(store, account, org, usages) is None, (org, usages)
    # Still within credit_min (9 - 14 = -5) it is written.
    assert _once(store, account_id, "acme", [Usage(id="edge", amount=14, source="usage")])
    assert _counts(store) == (before[0] + 1, before[1] + 2, before[2])
    with store.session() as session:
        session.execute(
            text("UPDATE billing_accounts SET state = 'disabled' WHERE id = :id"),
            {"id": account_id},
        )
    assert _once(store, account_id, "acme", [Usage(id="off", amount=1, source="usage")]) is None
    with store.session() as session:
        session.execute(text("UPDATE billing_accounts SET state = 'active'"))
        session.execute(text("UPDATE organizations SET deleted_at = now() WHERE org_id = 'acme'"))
    assert _once(store, account_id, "acme", [Usage(id="gone", amount=1, source="usage")]) is None
    assert _counts(store) == (before[0] + 1, before[1] + 2, before[2])


def test_an_id_another_writer_commits_meanwhile_fails_the_whole_statement(store: Store) -> None:
    """The id check reads the statement's snapshot; a writer that inserted one of the batch's
    ids and commits while the statement waits on it makes the insert a unique violation: the
    statement, the batch's other usage included, leaves nothing."""
    account_id = _account(store, "acme", 100)
    other = _account(store, "other", 100)
    before = _counts(store)
    blocker = Session(store.engine)
    UsageRepository(blocker).record(
        other, "other", [Usage(id="taken", amount=5, source="usage")], credit_min=0
    )
    answers: list[Batch | None] = []
    usages = [
        Usage(id="fresh", amount=1, source="usage"),
        Usage(id="taken", amount=2, source="usage"),
    ]
    worker = threading.Thread(
        target=lambda: answers.append(_once(store, account_id, "acme", usages))
    )
    worker.start()
    worker.join(timeout=2)
    assert worker.is_alive(), "the statement should wait on the uncommitted id"
    blocker.commit()
    blocker.close()
    worker.join(timeout=30)
    assert answers == [None]
    assert _counts(store) == (before[0] + 1, before[1] + 2, before[2])
    with store.session() as session:
        assert LedgerRepository(session).balance(account_id)[0] == 100
        found = session.execute(text("SELECT id FROM ledger_transactions WHERE id = 'fresh'"))
        assert found.first() is None


def test_connections_of_ended_loops_are_closed_not_leaked(store: Store) -> None:
    """Each `asyncio.run` is a new loop (as a test client's requests are): the idle
    connection an ended loop kept is closed at the next use, and `close()` closes the rest,
    so 30 loops leave at most one connection open, then none."""
    account_id = _account(store, "acme", 10_000)

    def backends() -> int:
        with store.session() as session:
            found = session.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                )
            )
            return int(found.scalar_one())

    before = backends()
    for n in range(30):
        assert _once(store, account_id, "acme", [Usage(id=f"u{n}", amount=1, source="usage")])
    assert backends() - before <= 1
    # A refused statement (a unique violation) keeps its connection for the next request.
    assert _once(store, account_id, "acme", [Usage(id="u0", amount=1, source="usage")]) is None
    store.close()
    assert backends() == before

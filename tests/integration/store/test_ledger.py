"""The credits ledger: double entry, exact balances, idempotent ids, the debit rule, paging,
verify(); on SQLite and PostgreSQL, and with real concurrent clients on PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TypeVar

import pytest
from sqlalchemy import event, text

from billing_reconciler.store import (
    AccountRepository,
    DomainCursorRepository,
    IdConflictError,
    InsufficientCreditsError,
    LedgerRepository,
    NotFoundError,
    Store,
    onboard_grant_id,
    revert_source,
)
from tests.integration.store.conftest import FakeClock

T = TypeVar("T")


def _account(store: Store, org_id: str = "org-1", *, credit_min: int = 0) -> str:
    with store.session() as session:
        return (
            AccountRepository(session)
            .create(org_id, name="Acme", email=None, currency="usd", credit_min=credit_min)
            .id
        )


def test_credit_and_debit_write_two_entries_and_move_the_balance(
    store: Store, clock: FakeClock
) -> None:
    account = _account(store)
    with store.session() as session:
        ledger = LedgerRepository(session, clock=clock)
        granted, created = ledger.credit(
            account,
            id="grant-1",
            amount=100,
            source="System.Awarded",
            description="welcome",
            user_id="u1",
            metadata={"k": "v"},
        )
        assert created
        assert (granted.type, granted.amount, granted.source, granted.created_at) == (
            "credit",
            100,
            "system.awarded",
            clock.now,
        )
        assert (granted.description, granted.user_id, granted.metadata) == (
            "welcome",
            "u1",
            {"k": "v"},
        )
        clock.advance(timedelta(seconds=1))
        used, created = ledger.debit(account, id="usage-1", amount=30, source="api", credit_min=0)
        assert created
        assert used.type == "debit"
        assert ledger.balance(account) == (70, clock.now)
        assert ledger.get("grant-1") == granted
        assert ledger.get("missing") is None
        entries = session.execute(
            text(
                "SELECT transaction_id, side, account_id, amount FROM ledger_entries"
                " ORDER BY transaction_id, side"
            )
        ).all()
    assert [tuple(row) for row in entries] == [
        ("grant-1", "account", account, 100),
        ("grant-1", "platform", None, -100),
        ("usage-1", "account", account, -30),
        ("usage-1", "platform", None, 30),
    ]
    with store.session() as session:
        assert LedgerRepository(session).verify() == []


def test_identical_resend_is_a_no_op_and_other_content_is_a_conflict(
    store: Store, clock: FakeClock
) -> None:
    account = _account(store, credit_min=-10)
    other = _account(store, "org-2")
    with store.session() as session:
        ledger = LedgerRepository(session, clock=clock)
        first, _ = ledger.credit(account, id="g", amount=5, source="api")
        used, _ = ledger.debit(account, id="u", amount=15, source="api", credit_min=-10)
        clock.advance(timedelta(minutes=1))
        assert ledger.credit(account, id="g", amount=5, source="API") == (first, False)
        # The resend of a recorded debit succeeds even though the balance (-10) has no room.
        assert ledger.debit(account, id="u", amount=15, source="api", credit_min=-10) == (
            used,
            False,
        )
        attempts: list[Callable[[], object]] = [
            lambda: ledger.credit(account, id="g", amount=6, source="api"),
            lambda: ledger.credit(account, id="g", amount=5, source="other"),
            lambda: ledger.credit(account, id="g", amount=5, source="api", description="d"),
            lambda: ledger.credit(account, id="g", amount=5, source="api", metadata={"a": "b"}),
            lambda: ledger.credit(other, id="g", amount=5, source="api"),
            lambda: ledger.debit(account, id="g", amount=5, source="api", credit_min=-100),
        ]
        for attempt in attempts:
            with pytest.raises(IdConflictError, match="different content") as conflict:
                attempt()
            assert (conflict.value.code, conflict.value.id) == ("id_conflict", "g")
        assert ledger.balance(account)[0] == -10
        assert ledger.balance(other) == (0, None)
        count = session.execute(text("SELECT count(*) FROM ledger_transactions")).scalar_one()
        assert count == 2
        assert ledger.verify() == []


def test_the_debit_rule_balance_minus_amount_at_least_credit_min(store: Store) -> None:
    account = _account(store)
    with store.session() as session:
        ledger = LedgerRepository(session)
        ledger.credit(account, id="g", amount=10, source="api")
        ledger.debit(account, id="u1", amount=10, source="api", credit_min=0)  # exactly 0: ok
        with pytest.raises(InsufficientCreditsError) as refused:
            ledger.debit(account, id="u2", amount=1, source="api", credit_min=0)
        error = refused.value
        assert (
            error.account_id,
            error.balance,
            error.credit_min,
            error.amount,
            error.entry_id,
        ) == (
            account,
            0,
            0,
            1,
            "u2",
        )
        # An overdraft allowance: credit_min below zero.
        ledger.debit(account, id="u3", amount=25, source="api", credit_min=-25)
        with pytest.raises(InsufficientCreditsError):
            ledger.debit(account, id="u4", amount=1, source="api", credit_min=-25)
        assert ledger.balance(account)[0] == -25
        assert ledger.get("u2") is None
        assert ledger.get("u4") is None
        assert ledger.verify() == []


def test_bad_arguments(store: Store) -> None:
    account = _account(store)
    with store.session() as session:
        ledger = LedgerRepository(session)
        for amount in (0, -1, True, 1.5):
            with pytest.raises(ValueError, match="positive integer"):
                ledger.credit(account, id="x", amount=amount, source="api")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="id"):
            ledger.credit(account, id="", amount=1, source="api")
        with pytest.raises(ValueError, match="source"):
            ledger.credit(account, id="x", amount=1, source=" ")
        with pytest.raises(NotFoundError):
            ledger.credit("acct_missing", id="x", amount=1, source="api")


def test_an_account_that_lost_its_balance_row_gets_one_on_its_next_write(store: Store) -> None:
    account = _account(store)
    with store.session() as session:
        LedgerRepository(session).credit(account, id="g1", amount=5, source="api")
    with store.session() as session:
        # A store from before balance rows (or repaired by hand): the entries are the truth.
        session.execute(text("DELETE FROM ledger_balances WHERE account_id = :a"), {"a": account})
    with store.session() as session:
        ledger = LedgerRepository(session)
        assert ledger.credit(account, id="g2", amount=3, source="api")[1]
        with pytest.raises(InsufficientCreditsError):
            ledger.debit(account, id="u1", amount=4, source="api", credit_min=0)
        assert ledger.debit(account, id="u2", amount=3, source="api", credit_min=0)[1]
        assert ledger.balance(account)[0] == 0
        # The balance row restarted from 0; the first grant's entry is not in it.
        assert ledger.verify() == [f"account {account}: balance 0 but its entries sum to 5"]


def test_pg_a_write_is_one_statement(pg_url: str) -> None:
    """On PostgreSQL a grant, a debit and a refused debit each take one round trip (issue 10:
    >= 2,000 entries/s); a resend reads the stored transaction with a second."""
    with Store.open(pg_url) as store:
        account = _account(store, credit_min=-2)
        executed: list[str] = []

        def record(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
            executed.append(statement)

        def statements(write: Callable[[LedgerRepository], object]) -> int:
            executed.clear()
            event.listen(store.engine, "before_cursor_execute", record)
            try:
                with store.session() as session:
                    write(LedgerRepository(session))
            finally:
                event.remove(store.engine, "before_cursor_execute", record)
            return len(executed)

        def refused(ledger: LedgerRepository) -> None:
            with pytest.raises(InsufficientCreditsError) as error:
                ledger.debit(account, id="u2", amount=3, source="api", credit_min=-2)
            assert error.value.balance == 0

        def resent(ledger: LedgerRepository) -> None:
            assert not ledger.credit(account, id="g1", amount=5, source="api")[1]
            with pytest.raises(IdConflictError):
                ledger.credit(account, id="g1", amount=6, source="api")

        assert (
            statements(lambda ledger: ledger.credit(account, id="g1", amount=5, source="api")) == 1
        )
        assert (
            statements(
                lambda ledger: ledger.debit(account, id="u1", amount=5, source="api", credit_min=-2)
            )
            == 1
        )
        assert statements(refused) == 2  # the write, then: is the id taken? (no)
        assert statements(resent) == 4
        with store.session() as session:
            ledger = LedgerRepository(session)
            assert ledger.balance(account)[0] == 0
            assert ledger.verify() == []
            count = session.execute(text("SELECT count(*) FROM ledger_entries")).scalar()
            assert count == 4


def test_database_checks_refuse_a_non_positive_amount(store: Store) -> None:
    account = _account(store)
    insert = text(
        "INSERT INTO ledger_transactions (id, account_id, type, amount, source, metadata,"
        " content_hash, created_at) VALUES ('t', :account, :type, :amount, 'api', '{}', 'h',"
        " '2025-01-01 00:00:00')"
    )
    for kind, amount in (("credit", 0), ("credit", -5), ("refund", 5)):
        with pytest.raises(Exception, match=r"(?i)check"), store.session() as session:
            session.execute(insert, {"account": account, "type": kind, "amount": amount})


def test_transactions_page_newest_first_with_a_cursor_and_a_window(
    store: Store, clock: FakeClock
) -> None:
    account = _account(store)
    other = _account(store, "org-2")
    start = clock.now
    with store.session() as session:
        ledger = LedgerRepository(session, clock=clock)
        for index in range(7):
            ledger.credit(account, id=f"t{index}", amount=index + 1, source="api")
            if index != 2:  # t2 and t3 share a timestamp: the id breaks the tie
                clock.advance(timedelta(minutes=1))
        ledger.credit(other, id="elsewhere", amount=1, source="api")
    with store.session() as session:
        ledger = LedgerRepository(session)
        seen: list[str] = []
        cursor: str | None = None
        while True:
            page, cursor = ledger.transactions(account, limit=3, cursor=cursor)
            assert len(page) <= 3
            seen += [txn.id for txn in page]
            if cursor is None:
                break
        assert seen == ["t6", "t5", "t4", "t3", "t2", "t1", "t0"]
        window, cursor = ledger.transactions(
            account, start=start + timedelta(minutes=1), end=start + timedelta(minutes=4)
        )
        assert [txn.id for txn in window] == ["t4", "t3", "t2", "t1"]
        assert cursor is None
        first, cursor = ledger.transactions(
            account, limit=2, start=start + timedelta(minutes=1), end=start + timedelta(minutes=4)
        )
        rest, _ = ledger.transactions(
            account,
            limit=10,
            cursor=cursor,
            start=start + timedelta(minutes=1),
            end=start + timedelta(minutes=4),
        )
        assert [txn.id for txn in first + rest] == ["t4", "t3", "t2", "t1"]
        assert ledger.transactions("acct_none") == ([], None)
        with pytest.raises(ValueError, match="cursor"):
            ledger.transactions(account, cursor="not-a-cursor")


def test_verify_reports_a_balance_tampered_with_and_a_broken_transaction(store: Store) -> None:
    account = _account(store)
    with store.session() as session:
        LedgerRepository(session).credit(account, id="g", amount=10, source="api")
        LedgerRepository(session).credit(account, id="h", amount=5, source="api")
    with store.session() as session:
        assert LedgerRepository(session).verify() == []
        session.execute(
            text("UPDATE ledger_balances SET amount = 999 WHERE account_id = :a"), {"a": account}
        )
    with store.session() as session:
        problems = LedgerRepository(session).verify()
    assert problems == [f"account {account}: balance 999 but its entries sum to 15"]
    with store.session() as session:
        session.execute(
            text("UPDATE ledger_balances SET amount = 15 WHERE account_id = :a"), {"a": account}
        )
        session.execute(
            text(
                "UPDATE ledger_entries SET amount = -4 WHERE transaction_id = 'h'"
                " AND side = 'platform'"
            )
        )
    with store.session() as session:
        problems = LedgerRepository(session).verify()
    assert len(problems) == 1
    assert problems[0].startswith("transaction h: 2 entries summing to 1")


def test_onboard_grant_is_once_per_org(store: Store) -> None:
    account = _account(store)
    assert onboard_grant_id("org-1") == "onboard:org-1"
    assert revert_source("API") == "system.revert.api"
    with store.session() as session:
        ledger = LedgerRepository(session)
        grant = {"id": onboard_grant_id("org-1"), "amount": 50, "source": "system.awarded"}
        assert ledger.credit(account, **grant)[1]  # type: ignore[arg-type]
        assert not ledger.credit(account, **grant)[1]  # type: ignore[arg-type]
        assert ledger.balance(account)[0] == 50


def test_domain_cursors(store: Store, clock: FakeClock) -> None:
    with store.session() as session:
        cursors = DomainCursorRepository(session, clock=clock)
        empty = cursors.get("customers")
        assert (empty.last_event_id, empty.last_event_created, empty.full_resync_at) == (
            None,
            None,
            None,
        )
        saved = cursors.save(
            "customers",
            last_event_id="evt_1",
            last_event_created=clock.now,
            full_resync_at=clock.now,
        )
        assert (saved.last_event_id, saved.last_event_created, saved.full_resync_at) == (
            "evt_1",
            clock.now,
            clock.now,
        )
        later = clock.now + timedelta(minutes=5)
        moved = cursors.save("customers", last_event_id="evt_2", last_event_created=later)
        assert (moved.last_event_id, moved.last_event_created, moved.full_resync_at) == (
            "evt_2",
            later,
            clock.now,
        )
        assert cursors.get("credits").last_event_id is None


# --- real concurrent clients on PostgreSQL ------------------------------------------------------


@pytest.fixture
def pg_url(postgres_database_url: str) -> str:
    with Store.open(postgres_database_url):
        pass  # migrate once, before the clients
    return postgres_database_url


def _concurrently(url: str, workers: int, tasks: int, task: Callable[[Store, int], T]) -> list[T]:
    """Run `tasks` calls of `task` on `workers` threads, each with its own store (engine,
    connection), all starting together."""
    barrier = threading.Barrier(workers)
    per_worker = [list(range(worker, tasks, workers)) for worker in range(workers)]

    def run(indexes: list[int]) -> list[T]:
        with Store.open(url) as store:
            with store.session() as session:  # connect before the start line
                session.execute(text("SELECT 1"))
            barrier.wait(timeout=60)
            return [task(store, index) for index in indexes]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [result for results in pool.map(run, per_worker) for result in results]


def test_pg_100_concurrent_grants_are_exact(pg_url: str) -> None:
    with Store.open(pg_url) as store:
        account = _account(store)

    def grant(store: Store, index: int) -> bool:
        with store.session() as session:
            return LedgerRepository(session).credit(
                account, id=f"grant-{index}", amount=1, source="api"
            )[1]

    assert _concurrently(pg_url, 20, 100, grant) == [True] * 100
    with Store.open(pg_url) as store, store.session() as session:
        ledger = LedgerRepository(session)
        assert ledger.balance(account)[0] == 100
        assert session.execute(text("SELECT count(*) FROM ledger_transactions")).scalar() == 100
        assert session.execute(text("SELECT count(*) FROM ledger_entries")).scalar() == 200
        assert ledger.verify() == []


def test_pg_20_concurrent_debits_of_2_on_10_exactly_5_succeed(pg_url: str) -> None:
    with Store.open(pg_url) as store:
        account = _account(store)
        with store.session() as session:
            LedgerRepository(session).credit(account, id="g", amount=10, source="api")

    def debit(store: Store, index: int) -> str:
        try:
            with store.session() as session:
                LedgerRepository(session).debit(
                    account, id=f"u{index}", amount=2, source="api", credit_min=0
                )
        except InsufficientCreditsError as error:
            return f"insufficient at {error.balance}"
        return "debited"

    results = _concurrently(pg_url, 20, 20, debit)
    assert sorted(results).count("debited") == 5
    assert sorted(set(results) - {"debited"}) == ["insufficient at 0"]
    with Store.open(pg_url) as store, store.session() as session:
        ledger = LedgerRepository(session)
        assert ledger.balance(account)[0] == 0
        assert session.execute(text("SELECT count(*) FROM ledger_transactions")).scalar() == 6
        assert ledger.verify() == []


def test_pg_one_id_from_10_concurrent_writers_is_one_transaction(pg_url: str) -> None:
    with Store.open(pg_url) as store:
        account = _account(store)
        other = _account(store, "org-2")

    def same(store: Store, _: int) -> bool:
        with store.session() as session:
            return LedgerRepository(session).credit(account, id="the-id", amount=7, source="api")[1]

    assert sorted(_concurrently(pg_url, 10, 10, same)) == [False] * 9 + [True]

    # The same new id, half of the writers on another account: one wins, the others see
    # either the stored transaction (same content) or an IdConflictError, nothing else.
    def mixed(store: Store, index: int) -> str:
        target = account if index % 2 else other
        try:
            with store.session() as session:
                created = LedgerRepository(session).credit(
                    target, id="contested", amount=3, source="api"
                )[1]
        except IdConflictError:
            return "conflict"
        return "created" if created else "existing"

    results = _concurrently(pg_url, 10, 10, mixed)
    assert results.count("created") == 1
    assert results.count("existing") + results.count("conflict") == 9
    assert results.count("conflict") >= 4
    with Store.open(pg_url) as store, store.session() as session:
        ledger = LedgerRepository(session)
        assert session.execute(text("SELECT count(*) FROM ledger_transactions")).scalar() == 2
        assert ledger.balance(account)[0] + ledger.balance(other)[0] == 10
        assert ledger.verify() == []


def test_verify_and_the_total_are_exact_past_int64(store: Store) -> None:
    """Two accounts at 2**62 credits each (the API's largest grant): their balances sum to
    2**63, past int64, where SQLite's SUM raised "integer overflow" (fresh-user test T1,
    finding 4); the check and the total are exact on both backends, a mismatch too."""
    big = 2**62
    accounts = [_account(store, org) for org in ("org-big-1", "org-big-2")]
    with store.session() as session:
        ledger = LedgerRepository(session)
        for account in accounts:
            ledger.credit(account, id=f"big:{account}", amount=big, source="api")
    with store.session() as session:
        ledger = LedgerRepository(session)
        assert ledger.verify() == []
        assert ledger.total_balance() == 2**63
        # A debit and a credit of the largest amount on one account: its entries still sum
        # exactly (negative halves included).
        ledger.debit(accounts[0], id="down", amount=big, source="api", credit_min=-(2**62))
        ledger.debit(accounts[0], id="down-2", amount=big, source="api", credit_min=-(2**62))
        ledger.credit(accounts[0], id="up", amount=big - 1, source="api")
    with store.session() as session:
        ledger = LedgerRepository(session)
        assert ledger.balance(accounts[0])[0] == -1
        assert ledger.verify() == []
        assert ledger.total_balance() == big - 1
        session.execute(
            text("UPDATE ledger_balances SET amount = :v WHERE account_id = :a"),
            {"v": 2**63 - 1, "a": accounts[1]},
        )
    with store.session() as session:
        ledger = LedgerRepository(session)
        assert ledger.verify() == [
            f"account {accounts[1]}: balance {2**63 - 1} but its entries sum to {big}"
        ]
        assert ledger.total_balance() == 2**63 - 2

"""Subscriptions in the store (DESIGN §16): intents (one current per account, also in the
database and under concurrent writers), the mirror of Stripe's subscriptions (exact round trip,
stale observations ignored), plan history, on-start credits once, seat counts; SQLite and
PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError

from billing_reconciler.model_subscriptions import (
    ItemRecord,
    PendingChange,
    SubscriptionOwner,
    SubscriptionRecord,
    on_start_grant_id,
)
from billing_reconciler.store import (
    AccountRepository,
    ConflictError,
    IdConflictError,
    IntentRepository,
    LedgerRepository,
    MemberRepository,
    MirrorEntry,
    NotFoundError,
    OrganizationRepository,
    PlanHistoryRepository,
    Store,
    SubscriptionIntent,
    SubscriptionMirrorRepository,
    UpsertResult,
)
from tests.integration.store.conftest import FakeClock

T0 = 1_767_225_600  # 2026-01-01 00:00:00 UTC
MONTH = 30 * 86_400


@contextmanager
def _statements(store: Store) -> Iterator[list[str]]:
    """The SQL statements the store's engine executes inside the block."""
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(store.engine, "before_cursor_execute", record)


def _account(store: Store, org_id: str = "org-1") -> str:
    with store.session() as session:
        return (
            AccountRepository(session)
            .create(org_id, name="Acme", email="billing@acme.test", currency="usd")
            .id
        )


# --- intents -----------------------------------------------------------------------------------


def test_record_reads_back_and_is_idempotent_for_the_same_content(
    store: Store, clock: FakeClock
) -> None:
    account = _account(store)
    with store.session() as session:
        intents = IntentRepository(session, clock=clock)
        assert intents.current(account) is None
        intent, created = intents.record(
            account,
            plan="team",
            source="subscribe",
            requested_by="admin@host",
            skip_trial=True,
            cancel_after_trial=True,
        )
    assert created
    assert intent.id.startswith("subi_")
    assert len(intent.id) == len("subi_") + 32
    assert (intent.account_id, intent.org_id, intent.plan, intent.source, intent.state) == (
        account,
        "org-1",
        "team",
        "subscribe",
        "current",
    )
    assert (intent.requested_by, intent.skip_trial, intent.cancel_after_trial) == (
        "admin@host",
        True,
        True,
    )
    assert (intent.pending_change, intent.cancel_mode, intent.replaced_by, intent.ended_at) == (
        None,
        None,
        None,
        None,
    )
    assert intent.created_at == intent.updated_at == clock.now
    clock.advance(timedelta(minutes=1))
    with store.session() as session:
        intents = IntentRepository(session, clock=clock)
        assert intents.current(account) == intent
        assert intents.get(intent.id) == intent
        # The same content again (whoever asks) is the stored intent, unchanged.
        again, created = intents.record(
            account,
            plan="team",
            source="subscribe",
            requested_by="other@host",
            skip_trial=True,
            cancel_after_trial=True,
        )
        assert (again, created) == (intent, False)
        # Other content while one is current: refused, nothing written.
        with pytest.raises(ConflictError, match="already has a current") as refused:
            intents.record(account, plan="pro", source="subscribe")
        assert refused.value.code == "already_exists"
        with pytest.raises(ConflictError):
            intents.record(account, plan="team", source="subscribe")  # skip_trial differs
        assert intents.history(account) == [intent]


def test_record_with_a_given_id_and_refusals(store: Store) -> None:
    account = _account(store)
    other = _account(store, "org-2")
    with store.session() as session:
        intents = IntentRepository(session)
        given, created = intents.record(
            account, plan="free", source="default_plan", intent_id="default:org-1"
        )
        assert (given.id, created) == ("default:org-1", True)
        assert intents.record(
            account, plan="free", source="default_plan", intent_id="default:org-1"
        ) == (given, False)
        with pytest.raises(IdConflictError) as conflict:
            intents.record(account, plan="pro", source="default_plan", intent_id="default:org-1")
        assert (conflict.value.code, conflict.value.id) == ("id_conflict", "default:org-1")
        with pytest.raises(IdConflictError):  # the same id on another account
            intents.record(other, plan="free", source="default_plan", intent_id="default:org-1")
        # A new id while the account has a current intent: refused even with equal content.
        with pytest.raises(ConflictError) as taken:
            intents.record(account, plan="free", source="default_plan", intent_id="another")
        assert taken.value.code == "already_exists"
        with pytest.raises(NotFoundError):
            intents.record("acct_missing", plan="free", source="subscribe")
        with pytest.raises(ValueError, match="invalid intent source"):
            intents.record(other, plan="free", source="gift")
        with pytest.raises(ValueError, match="names a plan"):
            intents.record(other, plan="", source="subscribe")
        assert intents.current(other) is None
        assert intents.get("another") is None


def test_the_database_itself_refuses_a_second_current_intent(store: Store) -> None:
    account = _account(store)
    with store.session() as session:
        first, _ = IntentRepository(session).record(account, plan="free", source="default_plan")
    insert = text(
        "INSERT INTO subscription_intents (id, account_id, org_id, plan, source, state,"
        " skip_trial, cancel_after_trial, pending_immediate, created_at, updated_at)"
        " VALUES (:id, :account, 'org-1', 'pro', 'subscribe', :state, false, false, false,"
        " '2025-01-01 00:00:00', '2025-01-01 00:00:00')"
    )
    with pytest.raises(IntegrityError), store.session() as session:
        session.execute(insert, {"id": "subi_raw", "account": account, "state": "current"})
    with store.session() as session:  # a replaced one is history, and allowed
        session.execute(insert, {"id": "subi_raw", "account": account, "state": "replaced"})
        assert IntentRepository(session).current(account) == first


def test_replace_keeps_the_old_intent_as_history(store: Store, clock: FakeClock) -> None:
    account = _account(store)
    with store.session() as session:
        intents = IntentRepository(session, clock=clock)
        free, _ = intents.record(account, plan="free", source="default_plan")
        clock.advance(timedelta(hours=1))
        with pytest.raises(ConflictError) as stale:
            intents.replace(account, plan="pro", source="checkout", expected_intent_id="subi_x")
        assert stale.value.code == "failed_precondition"
        pro, created = intents.replace(
            account,
            plan="pro",
            source="checkout",
            requested_by="user-1",
            intent_id="checkout:cs_1",
            expected_intent_id=free.id,
        )
        assert created
        # A replayed completion of the same checkout replaces nothing more.
        assert intents.replace(
            account, plan="pro", source="checkout", intent_id="checkout:cs_1"
        ) == (pro, False)
        with pytest.raises(IdConflictError):
            intents.replace(account, plan="team", source="checkout", intent_id="checkout:cs_1")
        old = intents.get(free.id)
        assert old is not None
        assert (old.state, old.replaced_by, old.ended_at) == ("replaced", pro.id, clock.now)
        assert (pro.state, pro.plan, pro.source, pro.requested_by) == (
            "current",
            "pro",
            "checkout",
            "user-1",
        )
        assert intents.current(account) == pro
        assert [i.id for i in intents.history(account)] == [free.id, pro.id]
    other = _account(store, "org-2")
    with store.session() as session:  # with no current intent, replace records one
        first, created = IntentRepository(session).replace(other, plan="pro", source="subscribe")
        assert created
        assert first.current


def test_pending_change_cancel_and_end(store: Store, clock: FakeClock) -> None:
    account = _account(store)
    period_end = T0 + MONTH
    with store.session() as session:
        intents = IntentRepository(session, clock=clock)
        with pytest.raises(NotFoundError):
            intents.set_pending_change(account, PendingChange("pro", period_end))
        intents.record(account, plan="team", source="subscribe")
        clock.advance(timedelta(minutes=1))
        change = PendingChange("pro", period_end)
        pending = intents.set_pending_change(account, change, requested_by="user-1")
        assert pending.pending_change == change
        assert (pending.pending_requested_by, pending.pending_requested_at) == (
            "user-1",
            clock.now,
        )
        assert pending.updated_at == clock.now
        clock.advance(timedelta(minutes=1))
        assert intents.set_pending_change(account, change) == pending  # the same: no write
        with pytest.raises(ConflictError) as same_plan:
            intents.set_pending_change(account, PendingChange("team", None))
        assert same_plan.value.code == "failed_precondition"
        with pytest.raises(ValueError, match="names the plan"):
            intents.set_pending_change(account, PendingChange(None, None, reason="change"))
        with pytest.raises(ValueError, match="has no plan"):
            intents.set_pending_change(account, PendingChange("pro", None, reason="cancel"))
        with pytest.raises(ValueError, match="invalid pending change reason"):
            intents.set_pending_change(account, PendingChange("pro", None, reason="swap"))

        cleared = intents.clear_pending_change(account)
        assert (cleared.pending_change, cleared.pending_requested_at, cleared.plan) == (
            None,
            None,
            "team",
        )
        immediate = PendingChange("pro", None, immediate=True)
        assert intents.set_pending_change(account, immediate).pending_change == immediate
        applied = intents.apply_pending_change(account)
        assert (applied.plan, applied.pending_change) == ("pro", None)
        with pytest.raises(ConflictError):
            intents.apply_pending_change(account)

        # Cancel at period end: the pending change becomes {plan: None, reason: cancel}.
        at_end = intents.request_cancel(
            account, immediate=False, effective_at=period_end, requested_by="user-2"
        )
        assert at_end.cancel_mode == "period_end"
        assert at_end.cancel_requested
        assert (at_end.cancel_requested_by, at_end.cancel_requested_at) == ("user-2", clock.now)
        assert at_end.pending_change == PendingChange(None, period_end, reason="cancel")
        clock.advance(timedelta(minutes=1))
        assert intents.request_cancel(account, immediate=False, effective_at=period_end) == at_end
        # Cancelling the upcoming change takes the period-end cancel with it.
        kept = intents.clear_pending_change(account)
        assert (kept.cancel_mode, kept.pending_change, kept.cancel_requested_at) == (
            None,
            None,
            None,
        )
        now = intents.request_cancel(account, immediate=True, requested_by="admin")
        assert (now.cancel_mode, now.pending_change) == ("immediate", None)

        ended = intents.end(account)
        assert ended is not None
        assert (ended.state, ended.ended_at) == ("ended", clock.now)
        assert intents.current(account) is None
        assert intents.end(account) is None  # a replay
        # After the end a new subscription is a new intent; the old one is history.
        again, created = intents.record(account, plan="pro", source="subscribe")
        assert created
        assert again.id != ended.id
        assert [i.state for i in intents.history(account)] == ["ended", "current"]


def test_effective_at_round_trips_as_unix_seconds(store: Store) -> None:
    account = _account(store)
    with store.session() as session:
        intents = IntentRepository(session)
        intents.record(account, plan="team", source="subscribe")
        intents.set_pending_change(account, PendingChange("pro", T0 + 1))
    with store.session() as session:
        current = IntentRepository(session).current(account)
        assert current is not None
        assert current.pending_change == PendingChange("pro", T0 + 1)


def test_fleet_reads_page_by_account_and_read_many_at_once(store: Store) -> None:
    accounts = [_account(store, f"org-{n:02d}") for n in range(7)]
    with store.session() as session:
        intents = IntentRepository(session)
        for account in accounts:
            intents.record(account, plan="free", source="default_plan")
        intents.replace(accounts[3], plan="pro", source="checkout")
        intents.end(accounts[5])
    with store.session() as session:
        intents = IntentRepository(session)
        pages: list[list[str]] = []
        after: str | None = None
        while page := intents.list_current(after_account_id=after, limit=3):
            pages.append([i.account_id for i in page])
            after = page[-1].account_id
        live = sorted(a for a in accounts if a != accounts[5])
        assert [len(p) for p in pages] == [3, 3]
        assert [a for p in pages for a in p] == live
        assert intents.count_current() == 6
        bulk = intents.current_for_accounts([accounts[3], accounts[5], accounts[0], "acct_x"])
        assert set(bulk) == {accounts[3], accounts[0]}
        assert bulk[accounts[3]].plan == "pro"
        assert bulk[accounts[0]] == intents.current(accounts[0])
        with pytest.raises(ValueError, match="at least 1"):
            intents.list_current(limit=0)


def test_concurrent_recorders_of_one_account_one_wins(database_url: str) -> None:
    """Two threads, each with its own store (own connection), record a current intent for
    the same account at once: one wins, the other gets ConflictError `already_exists`; with
    the same content the other gets the winner's intent."""
    with Store.open(database_url) as store:
        account = _account(store)
        same_account = _account(store, "org-2")

    def race(target: str, plans: tuple[str, str]) -> list[str]:
        barrier = threading.Barrier(2)

        def record(plan: str) -> str:
            with Store.open(database_url) as store:
                with store.session() as session:
                    session.execute(text("SELECT 1"))  # connect before the start line
                barrier.wait(timeout=30)
                try:
                    with store.session() as session:
                        intent, created = IntentRepository(session).record(
                            target, plan=plan, source="subscribe"
                        )
                except ConflictError as error:
                    return error.code
                return f"created {intent.plan}" if created else f"existing {intent.plan}"

        with ThreadPoolExecutor(max_workers=2) as pool:
            return sorted(pool.map(record, plans))

    results = race(account, ("pro", "team"))
    assert results[0] == "already_exists"
    assert results[1] in {"created pro", "created team"}
    assert race(same_account, ("pro", "pro")) == ["created pro", "existing pro"]
    with Store.open(database_url) as store, store.session() as session:
        intents = IntentRepository(session)
        assert [i.state for i in intents.history(account)] == ["current"]
        assert len(intents.history(same_account)) == 1


def test_pg_recorders_that_both_saw_no_intent_are_decided_by_the_database(
    postgres_database_url: str,
) -> None:
    """PostgreSQL, two real connections forced to interleave: both read "no current intent",
    then both insert. The partial unique index decides: one commits, the other gets
    ConflictError `already_exists` (not an IntegrityError) and nothing of it is kept."""
    with Store.open(postgres_database_url) as store:
        account = _account(store)
    both_read = threading.Barrier(2)
    waited = threading.local()

    class Interleaved(IntentRepository):
        def current(self, account_id: str) -> SubscriptionIntent | None:
            seen = super().current(account_id)
            if seen is None and not getattr(waited, "done", False):
                # Once per writer: the re-read after the lost race goes straight on.
                waited.done = True
                both_read.wait(timeout=30)
            return seen

    def record(plan: str) -> str:
        with Store.open(postgres_database_url) as store:
            try:
                with store.session() as session:
                    Interleaved(session).record(account, plan=plan, source="subscribe")
            except ConflictError as error:
                return error.code
            return f"created {plan}"

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = sorted(pool.map(record, ("pro", "team")))
    assert results[0] == "already_exists"
    assert results[1] in {"created pro", "created team"}
    with Store.open(postgres_database_url) as store, store.session() as session:
        history = IntentRepository(session).history(account)
        assert [(i.state, f"created {i.plan}") for i in history] == [("current", results[1])]


# --- the mirror --------------------------------------------------------------------------------


def _subscription(stripe_id: str = "sub_1", **fields: object) -> SubscriptionRecord:
    values: dict[str, object] = {
        "stripe_id": stripe_id,
        "customer_id": "cus_1",
        "status": "trialing",
        "currency": "usd",
        "items": (
            ItemRecord("price_seat", 3, "si_1", T0, T0 + MONTH),
            ItemRecord("price_meter", None, "si_2", T0, T0 + MONTH),
        ),
        "collection_method": "send_invoice",
        "days_until_due": 30,
        "automatic_tax": True,
        "trial_start": T0,
        "trial_end": T0 + 14 * 86_400,
        "cancel_at": T0 + MONTH,
        "cancel_at_period_end": True,
        "schedule_id": "sub_sched_1",
        "pending_invoice_item_interval": ("month", 1),
        "latest_invoice_id": "in_1",
        "test_clock": "clock_1",
        "created": T0 - 5,
        "metadata": {"team": "core"},
        "owner": SubscriptionOwner("inst", "org-1", "team", intent_id="subi_1", revision="r1"),
    }
    values.update(fields)
    return SubscriptionRecord(**values)  # type: ignore[arg-type]


def test_upsert_round_trips_the_record_and_is_idempotent(store: Store, clock: FakeClock) -> None:
    account = _account(store)
    record = _subscription()
    with store.session() as session:
        mirror = SubscriptionMirrorRepository(session, clock=clock)
        assert mirror.get("sub_1") is None
        assert mirror.upsert(record, account_id=account, org_id="org-1", seats=3) == (
            UpsertResult.INSERTED
        )
    with store.session() as session:
        mirror = SubscriptionMirrorRepository(session, clock=clock)
        stored = mirror.get("sub_1")
        assert stored is not None
        assert stored.record == record
        assert (stored.account_id, stored.org_id, stored.plan, stored.seats) == (
            account,
            "org-1",
            "team",  # the marker's plan
            3,
        )
        assert (stored.intent_id, stored.stripe_id, stored.status) == (
            "subi_1",
            "sub_1",
            "trialing",
        )
        assert stored.observed_at == stored.created_at == stored.updated_at == clock.now
        assert stored.record.current_period_end == T0 + MONTH
        clock.advance(timedelta(minutes=1))
        assert mirror.upsert(record, account_id=account, org_id="org-1", seats=3) == (
            UpsertResult.UNCHANGED
        )
        unchanged = mirror.get("sub_1")
        assert unchanged is not None
        assert (unchanged.observed_at, unchanged.updated_at) == (clock.now, stored.updated_at)
        clock.advance(timedelta(minutes=1))
        active = replace(record, status="active", trial_end=None, owner=None, metadata={})
        assert mirror.upsert(active, account_id=account, org_id="org-1", seats=4, plan="pro") == (
            UpsertResult.UPDATED
        )
        updated = mirror.get("sub_1")
        assert updated is not None
        assert updated.record == active
        assert (updated.plan, updated.seats, updated.intent_id) == ("pro", 4, None)
        assert updated.updated_at == clock.now
        assert updated.created_at == stored.created_at


def test_a_stale_observation_does_not_overwrite_a_newer_one(store: Store, clock: FakeClock) -> None:
    account = _account(store)
    newer = clock.now
    older = newer - timedelta(seconds=5)
    with store.session() as session:
        mirror = SubscriptionMirrorRepository(session, clock=clock)
        mirror.upsert(
            _subscription(status="active"), account_id=account, org_id="org-1", observed_at=newer
        )
        # An out-of-order read (e.g. a slower reconcile) observed before the stored one.
        assert (
            mirror.upsert(
                _subscription(status="trialing"),
                account_id=account,
                org_id="org-1",
                observed_at=older,
            )
            == UpsertResult.STALE
        )
        kept = mirror.get("sub_1")
        assert kept is not None
        assert (kept.status, kept.observed_at) == ("active", newer)
        # Ended in Stripe: a later observation can never bring it back to life.
        ended = _subscription(status="canceled", canceled_at=T0 + 10, ended_at=T0 + 10)
        assert mirror.upsert(ended, account_id=account, org_id="org-1") == UpsertResult.UPDATED
        clock.advance(timedelta(minutes=1))
        revived = _subscription(status="active")
        assert mirror.upsert(revived, account_id=account, org_id="org-1") == UpsertResult.STALE
        final = mirror.get("sub_1")
        assert final is not None
        assert final.record == ended


def test_upsert_many_batches_a_page_of_records(store: Store, clock: FakeClock) -> None:
    account = _account(store)
    with store.session() as session:
        mirror = SubscriptionMirrorRepository(session, clock=clock)
        mirror.upsert(_subscription("sub_same"), account_id=account, org_id="org-1")
        mirror.upsert(_subscription("sub_moved"), account_id=account, org_id="org-1")
        mirror.upsert(
            _subscription("sub_later"),
            account_id=account,
            org_id="org-1",
            observed_at=clock.now + timedelta(hours=1),
        )
    clock.advance(timedelta(minutes=1))
    new = [MirrorEntry(_subscription(f"sub_new_{n:03d}"), account, "org-1") for n in range(120)]
    entries = [
        MirrorEntry(_subscription("sub_same", status="past_due"), account, "org-1"),
        MirrorEntry(_subscription("sub_same"), account, "org-1"),  # the last one counts
        MirrorEntry(_subscription("sub_moved", status="active"), account, "org-1", seats=9),
        MirrorEntry(_subscription("sub_later", status="active"), account, "org-1"),
        *new,
    ]
    with store.session() as session:
        session.execute(text("SELECT 1"))  # the transaction's BEGIN is not the batch's
        mirror = SubscriptionMirrorRepository(session, clock=clock)
        with _statements(store) as seen:
            results = mirror.upsert_many(entries)
        # One read, one INSERT, one UPDATE of the unchanged, one (executemany) of the changed.
        assert len(seen) == 4
        assert results == {
            "sub_same": UpsertResult.UNCHANGED,
            "sub_moved": UpsertResult.UPDATED,
            "sub_later": UpsertResult.STALE,
            **{entry.record.stripe_id: UpsertResult.INSERTED for entry in new},
        }
    with store.session() as session:
        mirror = SubscriptionMirrorRepository(session, clock=clock)
        same, moved, later = (mirror.get(i) for i in ("sub_same", "sub_moved", "sub_later"))
        assert same is not None
        assert (same.status, same.observed_at) == ("trialing", clock.now)
        assert moved is not None
        assert (moved.status, moved.seats, moved.updated_at) == ("active", 9, clock.now)
        assert later is not None
        assert later.status == "trialing"
        assert len(mirror.for_account(account)) == 123
        new_one = mirror.get("sub_new_042")
        assert new_one is not None
        assert new_one.record == new[42].record
        assert mirror.upsert_many([]) == {}


def test_concurrent_upserts_of_a_new_subscription_insert_it_once(database_url: str) -> None:
    with Store.open(database_url) as store:
        account = _account(store)
    barrier = threading.Barrier(4)

    def upsert(_: int) -> UpsertResult:
        with Store.open(database_url) as store:
            with store.session() as session:
                session.execute(text("SELECT 1"))  # connect before the start line
            barrier.wait(timeout=30)
            with store.session() as session:
                return SubscriptionMirrorRepository(session).upsert(
                    _subscription(), account_id=account, org_id="org-1"
                )

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(upsert, range(4)))
    assert results.count(UpsertResult.INSERTED) == 1
    # The others saw it stored: the same content, or (a later clock reading first) stale.
    assert set(results) - {UpsertResult.INSERTED} <= {UpsertResult.UNCHANGED, UpsertResult.STALE}
    with Store.open(database_url) as store, store.session() as session:
        stored = SubscriptionMirrorRepository(session).for_account(account)
        assert [s.record for s in stored] == [_subscription()]


def test_reads_by_account_live_and_bulk(store: Store) -> None:
    first = _account(store)
    second = _account(store, "org-2")
    with store.session() as session:
        mirror = SubscriptionMirrorRepository(session)
        # A free one replaced by a paid one: both live for a moment; the newest is the live one.
        mirror.upsert(
            _subscription("sub_free", status="active", created=T0),
            account_id=first,
            org_id="org-1",
        )
        mirror.upsert(
            _subscription("sub_paid", status="active", created=T0 + 60),
            account_id=first,
            org_id="org-1",
        )
        mirror.upsert(
            _subscription("sub_old", status="canceled", created=T0 - 600),
            account_id=first,
            org_id="org-1",
        )
        mirror.upsert(
            _subscription("sub_ended", customer_id="cus_2", status="canceled"),
            account_id=second,
            org_id="org-2",
        )
    with store.session() as session:
        mirror = SubscriptionMirrorRepository(session)
        assert [s.stripe_id for s in mirror.for_account(first)] == [
            "sub_paid",
            "sub_free",
            "sub_old",
        ]
        live = mirror.live_for_account(first)
        assert live is not None
        assert live.stripe_id == "sub_paid"
        assert mirror.live_for_account(second) is None
        assert mirror.live_for_account("acct_none") is None
        bulk = mirror.for_accounts([first, second, "acct_none"])
        assert {k: [s.stripe_id for s in v] for k, v in bulk.items()} == {
            first: ["sub_paid", "sub_free", "sub_old"],
            second: ["sub_ended"],
        }
        assert {k: v.stripe_id for k, v in mirror.live_for_accounts([first, second]).items()} == {
            first: "sub_paid"
        }
        assert [s.stripe_id for s in mirror.list_live(limit=1)] == ["sub_free"]
        assert [s.stripe_id for s in mirror.list_live(after_stripe_id="sub_free")] == ["sub_paid"]


# --- plan history --------------------------------------------------------------------------------


def test_plan_history_start_end_trialed_idempotent(store: Store) -> None:
    account = _account(store)
    other = _account(store, "org-2")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    change = start + timedelta(days=30)
    with store.session() as session:
        history = PlanHistoryRepository(session)
        assert not history.had_plan(account, "team")
        assert not history.trialed(account, "team")
        team, created = history.start(
            account, "team", stripe_subscription_id="sub_1", started_at=start
        )
        assert created
        assert (team.ended_at, team.trialed) == (None, False)
        # A replay, later learning it trialed: the same period, now marked trialed.
        again, created = history.start(
            account, "team", stripe_subscription_id="sub_1", started_at=start, trialed=True
        )
        assert not created
        assert again == replace(team, trialed=True)
        assert history.had_plan(account, "team")
        assert history.trialed(account, "team")
        assert not history.had_plan(other, "team")

        assert history.end(account, stripe_subscription_id="sub_1", ended_at=change) == 1
        assert history.end(account, stripe_subscription_id="sub_1", ended_at=change) == 0
        history.start(account, "pro", stripe_subscription_id="sub_1", started_at=change)
        # A replayed start of the closed period opens nothing new.
        assert history.start(account, "team", stripe_subscription_id="sub_1", started_at=start) == (
            replace(team, trialed=True, ended_at=change),
            False,
        )
        # Back to team later on the same subscription: a new period.
        back = change + timedelta(days=30)
        assert history.end(account, stripe_subscription_id="sub_1", ended_at=back, plan="x") == 0
        assert history.end(account, stripe_subscription_id="sub_1", ended_at=back, plan="pro") == 1
        _, created = history.start(account, "team", stripe_subscription_id="sub_1", started_at=back)
        assert created
        periods = history.history(account)
        assert [(p.plan, p.started_at, p.ended_at, p.trialed) for p in periods] == [
            ("team", start, change, True),
            ("pro", change, back, False),
            ("team", back, None, False),
        ]
        assert not history.trialed(account, "pro")
        assert history.had_plan(account, "pro")
        history.start(other, "free", stripe_subscription_id="sub_2", started_at=start)
        assert history.plans_had([account, other, "acct_none"]) == {
            account: frozenset({"team", "pro"}),
            other: frozenset({"free"}),
        }


# --- on-start credits and seats ------------------------------------------------------------------


def test_on_start_credits_are_granted_once_per_account_and_plan(store: Store) -> None:
    account = _account(store)
    grant = on_start_grant_id(account, "team")
    assert grant == f"on_start:{account}:team"
    assert len({grant, on_start_grant_id(account, "pro"), on_start_grant_id("acct_2", "team")}) == 3
    long_plan = "p" * 300
    assert len(on_start_grant_id(account, long_plan)) <= 255
    assert on_start_grant_id(account, long_plan) != on_start_grant_id(account, long_plan + "q")
    with pytest.raises(ValueError, match="needs an account id and a plan"):
        on_start_grant_id(account, "")
    for _ in range(2):  # e.g. the subscription started twice (a replay, a second subscription)
        with store.session() as session:
            LedgerRepository(session).credit(
                account, id=on_start_grant_id(account, "team"), amount=500, source="system.awarded"
            )
    with store.session() as session:
        ledger = LedgerRepository(session)
        assert ledger.balance(account)[0] == 500
        ledger.credit(
            account, id=on_start_grant_id(account, "pro"), amount=100, source="system.awarded"
        )
        assert ledger.balance(account)[0] == 600
        assert ledger.verify() == []


def test_seats_count_members_of_one_and_many_orgs(store: Store) -> None:
    with store.session() as session:
        orgs = OrganizationRepository(session)
        members = MemberRepository(session)
        for org in ("org-1", "org-2", "org-3"):
            orgs.upsert(org, title=org)
        for user in ("u1", "u2", "u3"):
            members.upsert("org-1", user)
        members.upsert("org-2", "u1")
        members.upsert("org-2", "u1")  # an update, not a second seat
        members.delete("org-1", "u3")
        assert members.count("org-1") == 2
        assert members.count_many(["org-1", "org-2", "org-3", "org-none", "org-1"]) == {
            "org-1": 2,
            "org-2": 1,
            "org-3": 0,
            "org-none": 0,
        }
        assert members.count_many([]) == {}

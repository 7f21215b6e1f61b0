"""The store's fleet reads (the subscriptions domain's pass over every account) read plain rows,
not ORM instances, on SQLite and PostgreSQL: the same records as the one-row reads, rows
written before a record field was added (or after one was dropped) still read, nothing left
in the session's identity map, and changes pending in the session seen (autoflush)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from sqlalchemy import event, update

from billing_reconciler.model_subscriptions import (
    ItemRecord,
    PendingChange,
    SubscriptionOwner,
    SubscriptionRecord,
)
from billing_reconciler.store import (
    AccountRepository,
    IntentRepository,
    MirrorEntry,
    Store,
    SubscriptionMirrorRepository,
)
from billing_reconciler.store.tables import BillingAccountModel, SubscriptionModel

T0 = 1_767_225_600  # 2026-01-01 00:00:00 UTC
MONTH = 30 * 86_400


@contextmanager
def _selects(store: Store) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(store.engine, "before_cursor_execute", record)


def _record(index: int, account: str) -> SubscriptionRecord:
    return SubscriptionRecord(
        stripe_id=f"sub_{index:04d}",
        customer_id=f"cus_{index:04d}",
        status="active" if index % 3 else "trialing",
        currency="usd",
        items=(
            ItemRecord("price_seat", 1 + index % 4, f"si_{index}a", T0, T0 + MONTH, "price/seat"),
            ItemRecord("price_meter", None, f"si_{index}b", T0, T0 + MONTH),
        ),
        collection_method="send_invoice" if index % 2 else "charge_automatically",
        days_until_due=30 if index % 2 else None,
        automatic_tax=bool(index % 2),
        trial_start=None if index % 3 else T0,
        trial_end=None if index % 3 else T0 + 14 * 86_400,
        cancel_at=T0 + MONTH if index % 5 == 0 else None,
        cancel_at_period_end=index % 5 == 0,
        schedule_id="sub_sched_1" if index == 7 else None,
        pending_invoice_item_interval=("month", 1) if index % 2 else None,
        latest_invoice_id=f"in_{index}",
        test_clock="clock_1" if index == 3 else None,
        created=T0 + index,
        metadata={"n": str(index)},
        owner=SubscriptionOwner("inst", f"org-{index:04d}", "team", intent_id=f"subi_{index}"),
    )


def _fleet(store: Store, count: int) -> list[str]:
    """`count` accounts, each with a current intent and a mirrored subscription."""
    with store.session() as session:
        repository = AccountRepository(session)
        accounts = [
            repository.create(f"org-{n:04d}", name="Org", email="b@org.test", currency="usd").id
            for n in range(count)
        ]
        intents = IntentRepository(session)
        for n, account in enumerate(accounts):
            intents.record(account, plan="team", source="subscribe", requested_by=f"u{n}")
            repository.set_stripe_customer(account, f"cus_{n:04d}")
        if count > 1:
            intents.set_pending_change(accounts[1], PendingChange("pro", T0 + MONTH))
        SubscriptionMirrorRepository(session).upsert_many(
            MirrorEntry(_record(n, account), account, f"org-{n:04d}", seats=1 + n % 4)
            for n, account in enumerate(accounts)
        )
    return accounts


def test_bulk_reads_are_the_one_row_reads_in_a_query_per_500(store: Store) -> None:
    accounts = _fleet(store, 520)
    with store.session() as session:
        mirror = SubscriptionMirrorRepository(session)
        intents = IntentRepository(session)
        singles = {a: mirror.for_account(a) for a in accounts}
        current = {a: intents.current(a) for a in accounts}
        one_by_one = [AccountRepository(session).get(a) for a in sorted(accounts)]
    with store.session() as session, _selects(store) as selects:
        bulk = SubscriptionMirrorRepository(session).for_accounts(accounts)
        bulk_intents = IntentRepository(session).current_for_accounts(accounts)
        repository = AccountRepository(session)
        paged = repository.list_active(limit=1000)
        live = SubscriptionMirrorRepository(session).list_live(limit=1000)
        assert len(session.identity_map) == 0  # rows, no ORM instances

    assert len(selects) == 2 + 2 + 1 + 1
    assert bulk == singles
    assert bulk_intents == current
    assert bulk[accounts[9]][0].record == _record(9, accounts[9])
    assert bulk_intents[accounts[1]].pending_change == PendingChange("pro", T0 + MONTH)
    assert paged == one_by_one
    assert sorted(s.stripe_id for s in live) == [
        f"sub_{n:04d}" for n in range(520) if _record(n, "").live
    ]


def test_rows_from_before_or_after_a_record_field_read_with_its_default(store: Store) -> None:
    [account] = _fleet(store, 1)
    with store.session() as session:
        # A row as an older version wrote it (no `price_key` on items, no `revision` in the
        # marker) and one a newer version wrote (a key this version does not know).
        item = {"price_id": "price_seat", "quantity": 2, "item_id": "si_0a"}
        session.execute(
            update(SubscriptionModel)
            .where(SubscriptionModel.stripe_id == "sub_0000")
            .values(
                items=[{**item, "current_period_start": None, "later": 1}],
                owner={
                    "installation_id": "inst",
                    "org_id": "org-0000",
                    "plan": "team",
                    "intent_id": "subi_0",
                    "unknown": "x",
                },
            )
        )
    with store.session() as session:
        [stored] = SubscriptionMirrorRepository(session).for_accounts([account])[account]
        assert stored == SubscriptionMirrorRepository(session).get("sub_0000")
    assert stored.record.items == (ItemRecord("price_seat", 2, "si_0a", None, None),)
    assert stored.record.owner == SubscriptionOwner("inst", "org-0000", "team", intent_id="subi_0")


def test_changes_pending_in_the_session_are_read(store: Store) -> None:
    [first, second] = _fleet(store, 2)
    with store.session() as session:
        model = session.get(BillingAccountModel, second)
        assert model is not None
        model.currency = "eur"  # not flushed yet
        IntentRepository(session).set_pending_change(first, PendingChange("pro", T0 + 1))
        mirror = SubscriptionMirrorRepository(session)
        mirror.upsert(
            replace(_record(0, first), status="past_due"), account_id=first, org_id="org-0000"
        )
        listed = {a.id: a for a in AccountRepository(session).list_active()}
        assert listed[second].currency == "eur"
        intent = IntentRepository(session).current_for_accounts([first])[first]
        assert intent.pending_change == PendingChange("pro", T0 + 1)
        assert mirror.for_accounts([first])[first][0].status == "past_due"

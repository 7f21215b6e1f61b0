"""store.usage on SQLite and PostgreSQL: a full batch of 1,000 (ids read in chunks), its
replay, a replay mixed with new usages in a batch the balance allows only without the
replays, and reverts bounded by the usage."""

from __future__ import annotations

import pytest

from billing_reconciler.store import (
    AccountRepository,
    InsufficientCreditsError,
    LedgerRepository,
    OrganizationRepository,
    Store,
)
from billing_reconciler.store.errors import ConflictError
from billing_reconciler.store.usage import OverRevertError, Usage, UsageRepository


def _account(store: Store, balance: int) -> str:
    with store.session() as session:
        OrganizationRepository(session).upsert("acme", title="Acme")
        account = AccountRepository(session).create("acme", name=None, email=None, currency="usd")
        if balance:
            LedgerRepository(session).credit(account.id, id="g", amount=balance, source="t")
        return account.id


def test_a_batch_of_1000_and_its_replay(store: Store) -> None:
    account_id = _account(store, 10_000)
    usages = [Usage(id=f"u{n}", amount=1 + n % 3, source="usage") for n in range(1000)]
    with store.session() as session:
        batch = UsageRepository(session).record(account_id, "acme", usages, credit_min=0)
    assert all(r.created for r in batch.recorded)
    assert batch.balance == 10_000 - sum(u.amount for u in usages)
    with store.session() as session:
        again = UsageRepository(session).record(account_id, "acme", usages, credit_min=0)
    assert [r.created for r in again.recorded] == [False] * 1000
    assert [r.transaction.id for r in again.recorded] == [u.id for u in usages]
    assert again.balance == batch.balance
    with store.session() as session:
        assert LedgerRepository(session).balance(account_id)[0] == batch.balance
        assert LedgerRepository(session).verify() == []


def test_replays_do_not_count_against_the_balance(store: Store) -> None:
    account_id = _account(store, 10)
    with store.session() as session:
        UsageRepository(session).record(
            account_id, "acme", [Usage(id="a", amount=8, source="usage")], credit_min=0
        )
    # 8 (a replay) + 2 (new) is more than the 10 there were, but only the 2 is new.
    mixed = [Usage(id="a", amount=8, source="usage"), Usage(id="b", amount=2, source="usage")]
    with store.session() as session:
        batch = UsageRepository(session).record(account_id, "acme", mixed, credit_min=0)
    assert [r.created for r in batch.recorded] == [False, True]
    assert batch.balance == 0
    with pytest.raises(InsufficientCreditsError) as short, store.session() as session:
        UsageRepository(session).record(
            account_id, "acme", [Usage(id="c", amount=1, source="usage")], credit_min=0
        )
    assert (short.value.entry_id, short.value.balance) == ("c", 0)


def test_reverts_are_bounded_and_not_revertible(store: Store) -> None:
    account_id = _account(store, 10)
    with store.session() as session:
        UsageRepository(session).record(
            account_id, "acme", [Usage(id="u", amount=5, source="Search")], credit_min=0
        )
    with store.session() as session:
        done = UsageRepository(session).revert("acme", "u", 5)
    assert (done.reverted, done.transaction.source, done.transaction.reverts) == (
        5,
        "system.revert.search",
        "u",
    )
    with pytest.raises(OverRevertError) as over, store.session() as session:
        UsageRepository(session).revert("acme", "u", 1)
    assert over.value.remaining == 0
    with pytest.raises(ConflictError) as again, store.session() as session:
        UsageRepository(session).revert("acme", done.transaction.id, 1)
    assert again.value.code == "failed_precondition"
    with store.session() as session:
        assert LedgerRepository(session).balance(account_id)[0] == 10
        assert LedgerRepository(session).verify() == []

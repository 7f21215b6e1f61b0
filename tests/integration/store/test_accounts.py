"""Billing accounts: one active per org (also in the database), currency fixed once set,
field updates, Stripe links, paging; SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError

from billing_reconciler.store import (
    AccountRecord,
    AccountRepository,
    Address,
    ConflictError,
    LedgerRepository,
    NotFoundError,
    Store,
    TaxId,
)
from tests.integration.store.conftest import FakeClock


def _create(accounts: AccountRepository, org_id: str = "org-1", **fields: object) -> AccountRecord:
    values: dict[str, object] = {"name": "Acme", "email": "billing@acme.test", "currency": "usd"}
    values.update(fields)
    return accounts.create(org_id, **values)  # type: ignore[arg-type]


def test_create_and_read_back_every_field(store: Store, clock: FakeClock) -> None:
    address = Address(line1="1 Main St", city="Berlin", postal_code="10115", country="DE")
    with store.session() as session:
        created = AccountRepository(session, clock=clock).create(
            "org-1",
            name="Acme",
            email="billing@acme.test",
            phone="+49 30 1234",
            address=address,
            tax_ids=(TaxId("eu_vat", "DE123456789"),),
            currency="EUR",
            credit_min=-500,
            due_in_days=14,
            offline=True,
            test_clock="clock_1",
            metadata={"auto_created": "true"},
            contract=True,
        )
    assert created.id.startswith("acct_")
    assert len(created.id) == len("acct_") + 32
    assert created.state == "active"
    assert created.currency == "eur"
    assert created.address == address
    assert created.tax_ids == (TaxId("eu_vat", "DE123456789"),)
    assert (created.credit_min, created.due_in_days, created.offline, created.contract) == (
        -500,
        14,
        True,
        True,
    )
    assert created.metadata == {"auto_created": "true"}
    assert (created.stripe_customer_id, created.disabled_reason, created.last_applied) == (
        None,
        None,
        {},
    )
    assert created.created_at == created.updated_at == clock.now
    with store.session() as session:
        accounts = AccountRepository(session)
        assert accounts.get(created.id) == created
        assert accounts.active_for_org("org-1") == created
        assert accounts.latest_for_org("org-1") == created
        assert accounts.get("acct_missing") is None
        assert accounts.active_for_org("org-2") is None
        assert LedgerRepository(session).balance(created.id) == (0, None)


def test_defaults(store: Store) -> None:
    with store.session() as session:
        account = AccountRepository(session).create(
            "org-1", name=None, email=None, currency=None, account_id="acct_given"
        )
    assert account.id == "acct_given"
    assert (account.credit_min, account.due_in_days, account.offline, account.contract) == (
        0,
        30,
        False,
        False,
    )
    assert (account.address, account.tax_ids, account.currency, account.metadata) == (
        None,
        (),
        None,
        {},
    )


def test_one_active_account_per_org(store: Store, clock: FakeClock) -> None:
    with store.session() as session:
        accounts = AccountRepository(session, clock=clock)
        first = _create(accounts)
        with pytest.raises(ConflictError, match="already has an active") as refused:
            _create(accounts)
        assert refused.value.code == "already_exists"
        _create(accounts, "org-2")  # another org is unaffected

        clock.advance(timedelta(minutes=1))
        disabled = accounts.set_state(first.id, "disabled", reason="customer deleted in Stripe")
        assert (disabled.state, disabled.disabled_reason) == (
            "disabled",
            "customer deleted in Stripe",
        )
        assert accounts.active_for_org("org-1") is None
        assert accounts.latest_for_org("org-1") == disabled

        clock.advance(timedelta(minutes=1))
        second = _create(accounts)
        assert accounts.active_for_org("org-1") == second
        assert accounts.latest_for_org("org-1") == second
        with pytest.raises(ConflictError) as reactivate:
            accounts.set_state(first.id, "active")
        assert reactivate.value.code == "already_exists"
        accounts.set_state(second.id, "disabled")
        # Newest first among disabled ones.
        assert accounts.latest_for_org("org-1") == accounts.get(second.id)
        back = accounts.set_state(first.id, "active")
        assert (back.state, back.disabled_reason) == ("active", None)
        assert accounts.count_by_state() == {"active": 2, "disabled": 1}
        with pytest.raises(ValueError, match="invalid account state"):
            accounts.set_state(first.id, "frozen")
        with pytest.raises(NotFoundError):
            accounts.set_state("acct_missing", "disabled")


def test_the_database_itself_refuses_a_second_active_account(store: Store) -> None:
    with store.session() as session:
        first = _create(AccountRepository(session))
    insert = text(
        "INSERT INTO billing_accounts (id, org_id, state, offline, tax_ids, credit_min,"
        " due_in_days, metadata, contract, last_applied, created_at, updated_at)"
        " VALUES (:id, 'org-1', :state, false, '[]', 0, 30, '{}', false, '{}',"
        " '2025-01-01 00:00:00', '2025-01-01 00:00:00')"
    )
    with pytest.raises(IntegrityError), store.session() as session:
        session.execute(insert, {"id": "acct_raw", "state": "active"})
    with store.session() as session:  # a disabled one is fine
        session.execute(insert, {"id": "acct_raw", "state": "disabled"})
        assert AccountRepository(session).active_for_org("org-1") == first


def test_new_account_refused_while_an_older_one_has_a_negative_balance(store: Store) -> None:
    with store.session() as session:
        accounts = AccountRepository(session)
        ledger = LedgerRepository(session)
        old = _create(accounts, credit_min=-100)
        ledger.debit(old.id, id="u1", amount=30, source="api", credit_min=-100)
        accounts.set_state(old.id, "disabled")
        with pytest.raises(ConflictError, match="negative balance") as refused:
            _create(accounts)
        assert refused.value.code == "failed_precondition"
        assert accounts.active_for_org("org-1") is None
        ledger.credit(old.id, id="settle", amount=30, source="system.buy")
        settled = _create(accounts)
    assert settled.state == "active"


def test_concurrent_creators_end_with_one_active_account(database_url: str) -> None:
    """Threads with their own store (own connection) create the org's account at once."""
    workers = 6
    barrier = threading.Barrier(workers)

    def create(_: int) -> str:
        with Store.open(database_url) as store:
            barrier.wait(timeout=30)
            try:
                with store.session() as session:
                    _create(AccountRepository(session))
            except ConflictError as error:
                return error.code
            return "created"

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = sorted(pool.map(create, range(workers)))
    assert results == ["already_exists"] * (workers - 1) + ["created"]
    with Store.open(database_url) as store, store.session() as session:
        assert AccountRepository(session).count_by_state() == {"active": 1, "disabled": 0}


def test_update_changes_only_the_named_fields(store: Store, clock: FakeClock) -> None:
    with store.session() as session:
        accounts = AccountRepository(session, clock=clock)
        created = _create(accounts, phone="+1 555", metadata={"a": "1"})
        clock.advance(timedelta(seconds=5))
        updated = accounts.update(
            created.id,
            name="Acme GmbH",
            address=Address(country="DE"),
            tax_ids=[TaxId("eu_vat", "DE1")],
            credit_min=-50,
            metadata={"b": "2"},
        )
        assert (updated.name, updated.email, updated.phone) == (
            "Acme GmbH",
            "billing@acme.test",
            "+1 555",
        )
        assert updated.address == Address(country="DE")
        assert updated.tax_ids == (TaxId("eu_vat", "DE1"),)
        assert (updated.credit_min, updated.metadata) == (-50, {"b": "2"})
        assert updated.updated_at == clock.now
        assert accounts.update(created.id, address=None).address is None
        with pytest.raises(ValueError, match="cannot update"):
            accounts.update(created.id, state="disabled")
        with pytest.raises(ValueError, match="due_in_days"):
            accounts.update(created.id, due_in_days=-1)
        with pytest.raises(NotFoundError):
            accounts.update("acct_missing", name="x")


def test_currency_is_fixed_once_set(store: Store) -> None:
    with store.session() as session:
        accounts = AccountRepository(session)
        unset = _create(accounts, currency=None)
        assert accounts.update(unset.id, currency="USD").currency == "usd"
        assert accounts.update(unset.id, currency="usd").currency == "usd"  # same: fine
        with pytest.raises(ConflictError, match="cannot change") as refused:
            accounts.update(unset.id, currency="eur")
        assert refused.value.code == "failed_precondition"
        with pytest.raises(ConflictError):
            accounts.update(unset.id, currency=None)
        with pytest.raises(ValueError, match="currency"):
            _create(accounts, "org-2", currency="dollars")
    with store.session() as session:
        assert AccountRepository(session).get(unset.id).currency == "usd"  # type: ignore[union-attr]


def test_stripe_customer_link_and_last_applied(store: Store) -> None:
    with store.session() as session:
        accounts = AccountRepository(session)
        first = _create(accounts)
        second = _create(accounts, "org-2")
        linked = accounts.set_stripe_customer(first.id, "cus_1")
        assert linked.stripe_customer_id == "cus_1"
        assert accounts.by_stripe_customer("cus_1") == linked
        assert accounts.by_stripe_customer("cus_2") is None
        with pytest.raises(ConflictError, match="another account"):
            accounts.set_stripe_customer(second.id, "cus_1")
        assert accounts.get(second.id).stripe_customer_id is None  # type: ignore[union-attr]
        fields: dict[str, object] = {"name": "Acme", "email": "b@acme.test", "tax_ids": []}
        assert accounts.set_last_applied(first.id, fields).last_applied == fields
    with store.session() as session:
        account = AccountRepository(session).get(first.id)
    assert account is not None
    assert (account.stripe_customer_id, account.last_applied) == ("cus_1", fields)


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


def test_link_created_customer_links_and_records_last_applied_in_one_statement(
    store: Store, clock: FakeClock
) -> None:
    with store.session() as session:
        created = _create(AccountRepository(session), "org-1")
    clock.advance(timedelta(minutes=5))
    fields: dict[str, object] = {"name": "Acme", "email": None, "tax_ids": []}
    with store.session() as session, _statements(store) as executed:
        accounts = AccountRepository(session, clock=clock)
        assert accounts.link_created_customer("org-1", "cus_1", fields) == created.id
    assert [s for s in executed if not s.startswith("BEGIN")] == [executed[-1]]
    assert executed[-1].startswith("UPDATE billing_accounts")
    with store.session() as session:
        account = AccountRepository(session).get(created.id)
    assert account is not None
    assert (account.stripe_customer_id, account.last_applied) == ("cus_1", fields)
    assert account.updated_at == clock.now
    # A replay (the create step's record run again) writes the same values.
    with store.session() as session:
        accounts = AccountRepository(session, clock=clock)
        assert accounts.link_created_customer("org-1", "cus_1", fields) == created.id
        assert accounts.by_stripe_customer("cus_1") == account


def test_link_created_customer_refuses_another_accounts_customer_and_keeps_going(
    store: Store,
) -> None:
    with store.session() as session:
        accounts = AccountRepository(session)
        first = _create(accounts, "org-1")
        second = _create(accounts, "org-2")
        accounts.set_stripe_customer(first.id, "cus_1")
        with pytest.raises(ConflictError, match=r"'cus_1' belongs to another account") as refused:
            accounts.link_created_customer("org-2", "cus_1", {"name": "x"})
        assert refused.value.code == "already_exists"
        # Nothing was written and the transaction is still usable (no failed statement).
        untouched = accounts.get(second.id)
        assert untouched is not None
        assert (untouched.stripe_customer_id, untouched.last_applied) == (None, {})
        assert accounts.link_created_customer("org-2", "cus_2", {"name": "y"}) == second.id
    with store.session() as session:
        linked = AccountRepository(session).get(second.id)
    assert linked is not None
    assert (linked.stripe_customer_id, linked.last_applied) == ("cus_2", {"name": "y"})


def test_link_created_customer_needs_the_orgs_active_account(store: Store) -> None:
    with store.session() as session:
        accounts = AccountRepository(session)
        old = _create(accounts, "org-1")
        accounts.set_state(old.id, "disabled", reason="customer deleted in Stripe")
        assert accounts.link_created_customer("org-1", "cus_1", {}) is None
        assert accounts.link_created_customer("org-unknown", "cus_1", {}) is None
        assert accounts.get(old.id).stripe_customer_id is None  # type: ignore[union-attr]
        current = _create(accounts, "org-1")
        assert accounts.link_created_customer("org-1", "cus_1", {}) == current.id


def test_list_active_pages_by_id(store: Store) -> None:
    with store.session() as session:
        accounts = AccountRepository(session)
        ids = [_create(accounts, f"org-{index}").id for index in range(7)]
        accounts.set_state(ids[3], "disabled")
        active = sorted(ids[:3] + ids[4:])
        seen: list[str] = []
        after: str | None = None
        while page := accounts.list_active(after_id=after, limit=2):
            seen += [account.id for account in page]
            after = page[-1].id
        assert seen == active
        assert accounts.count_by_state() == {"active": 6, "disabled": 1}

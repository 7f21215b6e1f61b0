"""Usage under real concurrent clients: a uvicorn server on PostgreSQL, threads each with its own
`BillingClient` (HTTP connection), all starting together (DESIGN §17: balances exact under
concurrent writers, never below `credit_min`)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest

from billing_reconciler.client import BillingAPIError, BillingClient, UsageIn
from billing_reconciler.store import AccountRepository, LedgerRepository, LedgerTransaction, Store
from tests.integration.api.conftest import ADMIN_TOKEN, APP_TOKEN, Settings, build_app
from tests.integration.runtime.live_server import LiveServer

T = TypeVar("T")


@pytest.fixture
def pg(postgres_database_url: str) -> Iterator[Store]:
    store = Store.open(postgres_database_url)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def server(pg: Store) -> Iterator[str]:
    live = LiveServer()
    live.start(build_app(pg, Settings()))
    try:
        yield live.url
    finally:
        live.stop()


def _open(server: str, org: str, *, balance: int, credit_min: int = 0) -> None:
    with (
        BillingClient(server, token=APP_TOKEN) as app,
        BillingClient(server, token=ADMIN_TOKEN) as admin,
    ):
        app.put_organization(org, title=org)
        app.create_account(org, {"currency": "usd"})
        if balance:
            admin.grant_credits(org, id=f"start:{org}", amount=balance)
        if credit_min:
            admin.put_details(org, credit_min=credit_min)


def _together(
    server: str,
    workers: int,
    tasks: int,
    task: Callable[[BillingClient, int], T],
    *,
    token: str = APP_TOKEN,
) -> list[T]:
    """`tasks` calls of `task` on `workers` threads, each with its own client (connected
    first), all starting at once; results in task order."""
    barrier = threading.Barrier(workers)
    results: dict[int, T] = {}

    def worker(offset: int) -> None:
        with BillingClient(server, token=token, timeout=60) as client:
            client.list_plans()  # connected before the start line
            barrier.wait(timeout=60)
            for index in range(offset, tasks, workers):
                results[index] = task(client, index)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done in [pool.submit(worker, n) for n in range(workers)]:
            done.result()
    return [results[index] for index in range(tasks)]


def _balance(server: str, org: str) -> int:
    with BillingClient(server, token=APP_TOKEN) as client:
        return client.get_balance(org)["amount"]


def test_20_concurrent_debits_of_2_on_10_end_at_start_less_2_per_success(
    server: str, pg: Store
) -> None:
    _open(server, "acme", balance=10)

    def debit(client: BillingClient, index: int) -> str:
        try:
            client.record_usages("acme", [{"id": f"u{index}", "amount": 2}])
        except BillingAPIError as error:
            return error.code
        return "ok"

    results = _together(server, 20, 20, debit)
    successes = results.count("ok")
    assert successes == 5
    assert set(results) == {"ok", "insufficient_credits"}
    assert _balance(server, "acme") == 10 - 2 * successes == 0
    with pg.session() as session:
        assert LedgerRepository(session).verify() == []


def test_one_usage_sent_by_10_clients_at_once_is_recorded_once(server: str, pg: Store) -> None:
    _open(server, "acme", balance=100)

    def send(client: BillingClient, index: int) -> list[str]:
        return client.record_usages("acme", [{"id": "same", "amount": 7}])["created"]

    created = _together(server, 10, 10, send)
    assert sorted(created) == [[]] * 9 + [["same"]]
    assert _balance(server, "acme") == 93


def test_30_concurrent_reverts_of_1_never_exceed_the_usage(server: str, pg: Store) -> None:
    _open(server, "acme", balance=100)
    with BillingClient(server, token=APP_TOKEN) as app:
        app.record_usages("acme", [{"id": "u1", "amount": 10}])

    def revert(client: BillingClient, index: int) -> str:
        try:
            client.revert_usage("acme", "u1", 1)
        except BillingAPIError as error:
            return error.code
        return "ok"

    results = _together(server, 30, 30, revert, token=ADMIN_TOKEN)
    assert results.count("ok") == 10
    assert set(results) == {"ok", "invalid_argument"}
    assert _balance(server, "acme") == 100
    with pg.session() as session:
        assert LedgerRepository(session).verify() == []


@pytest.mark.slow
def test_1000_concurrent_batches_with_random_duplicates_are_exact(server: str, pg: Store) -> None:
    """1,000 batches of 1..10 usages drawn (with repeats across batches) from a pool whose
    total is more than the orgs may spend: every recorded usage is debited once, balances
    equal the sum of their entries and the expected value, never below credit_min, and every
    refusal is insufficient_credits."""
    rng = random.Random(12)
    orgs = ("acme", "beta")
    for org in orgs:
        _open(server, org, balance=5_000, credit_min=-1_000)
    pool = {f"p{n}": 1 + n % 9 for n in range(3_000)}  # 15,000: more than 6,000 per org
    names = sorted(pool)
    batches = []
    for _ in range(1_000):
        org = rng.choice(orgs)
        ids = rng.sample(names, rng.randint(1, 10))
        batches.append((org, [UsageIn(id=f"{org}:{i}", amount=pool[i]) for i in ids]))

    def send(client: BillingClient, index: int) -> tuple[str, list[str]]:
        org, usages = batches[index]
        try:
            return "ok", client.record_usages(org, usages)["created"]
        except BillingAPIError as error:
            return error.code, []

    results = _together(server, 16, len(batches), send)
    assert {code for code, _ in results} == {"ok", "insufficient_credits"}
    assert sum(code == "ok" for code, _ in results) > 100
    created = [usage_id for _, ids in results for usage_id in ids]
    assert len(created) == len(set(created)), "a usage was recorded twice"
    with pg.session() as session:
        ledger = LedgerRepository(session)
        assert ledger.verify() == []
        for org in orgs:
            mine = [i for i in created if i.startswith(f"{org}:")]
            spent = sum(pool[i.split(":", 1)[1]] for i in mine)
            balance = _balance(server, org)
            assert balance == 5_000 - spent
            assert balance >= -1_000
            stored = {
                t.id for t in _all_transactions(ledger, _account_id(pg, org)) if t.type == "debit"
            }
            assert stored == set(mine)


def _account_id(store: Store, org: str) -> str:
    with store.session() as session:
        account = AccountRepository(session).active_for_org(org)
        assert account is not None
        return account.id


def _all_transactions(ledger: LedgerRepository, account_id: str) -> list[LedgerTransaction]:
    found: list[LedgerTransaction] = []
    cursor = None
    while True:
        page, cursor = ledger.transactions(account_id, limit=500, cursor=cursor)
        found.extend(page)
        if cursor is None:
            return found


def test_the_client_records_checks_and_reverts(server: str) -> None:
    _open(server, "acme", balance=10)
    with (
        BillingClient(server, token=APP_TOKEN) as app,
        BillingClient(server, token=ADMIN_TOKEN) as admin,
    ):
        recorded = app.record_usages("acme", [{"id": "u1", "amount": 4, "source": "Search"}])
        assert (recorded["created"], recorded["balance"]) == (["u1"], 6)
        assert app.record_usage("acme", {"id": "u1", "amount": 4, "source": "Search"})["id"] == "u1"
        assert app.check_credits("acme", 6) == {"allowed": True, "balance": 6, "credit_min": 0}
        assert app.check_credits("acme", 7)["allowed"] is False
        revert = admin.revert_usage("acme", "u1", 3)
        assert (revert["reverted"], revert["remaining"]) == (3, 1)
        assert revert["transaction"]["reverts"] == "u1"
        with pytest.raises(BillingAPIError) as over:
            admin.revert_usage("acme", "u1", 2)
        assert (over.value.status, over.value.code) == (422, "invalid_argument")
        with pytest.raises(BillingAPIError) as forbidden:
            app.revert_usage("acme", "u1", 1)
        assert (forbidden.value.status, forbidden.value.code) == (403, "forbidden")
        with pytest.raises(BillingAPIError) as short:
            app.record_usages("acme", [{"id": "u2", "amount": 10}])
        assert short.value.code == "insufficient_credits"
        assert short.value.details["usage_id"] == "u2"

"""A crash at every mutating request of a 200-account cold apply, then a rerun: exactly 200
customers and 200 onboard grants (issue 10, Tests; DESIGN §7).

The 200 accounts: 100 the host created through the API (their onboard grants made with them)
and 100 contract customers of `desired/customers/` (opened, with their grants, by the apply:
store-only steps). The cold apply's mutating requests are the 200 customer creates. For each
position one run crashes exactly there, as the emulator's fault controls make it:
`drop_after_commit` (Stripe committed, the connection died: the customer exists, the journal
says failed) or `500` (nothing committed), with no retries, so the apply stops; a fresh
controller on the same store (as after a restart) then converges.

400 positions in all (200 requests x 2 kinds). CI runs a seeded sample (seed printed) as
many small runs on one emulator and store: the first run crashes at the first sampled
position, the rerun at the next (each run a restart on the store the last one left), ... and
the last rerun converges: 50 positions on SQLite, 10 on PostgreSQL, about one cold apply's
cost. `make crash-all` (BILLING_CRASH_ALL=1) runs every position on its own, from a cold
store, on both (slow: minutes).
"""

from __future__ import annotations

import os
import random
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from billing_reconciler.apply import ApplyError
from billing_reconciler.controller import Controller
from billing_reconciler.desired import load_desired
from billing_reconciler.desired.state import DesiredState
from billing_reconciler.registry import CUSTOMERS
from billing_reconciler.store import (
    AccountRepository,
    LedgerRepository,
    Store,
    grant_onboard_credits,
    onboard_grant_id,
)
from billing_reconciler.stripe_gateway import NO_RETRY, RetryPolicy, StripeGateway
from tests.fixtures.emulator import EmulatorHandle, make_client
from tests.integration.customers.conftest import BILLING

pytestmark = pytest.mark.slow

API_ACCOUNTS = 100
CONTRACTS = 100
ACCOUNTS = API_ACCOUNTS + CONTRACTS
ONBOARD = 50  # BILLING's customer.onboard_credits_with_org
KINDS = ("drop_after_commit", "500")
SEED = 20261202
FULL = os.environ.get("BILLING_CRASH_ALL") == "1"
FAST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.0, max_delay=0.0)

API_ORGS = [f"api{n:03d}" for n in range(API_ACCOUNTS)]
CONTRACT_ORGS = [f"contract{n:03d}" for n in range(CONTRACTS)]


def _positions(backend: str) -> list[Any]:
    every = [(kind, nth) for kind in KINDS for nth in range(1, ACCOUNTS + 1)]
    return [
        pytest.param(
            backend,
            kind,
            nth,
            id=f"{backend}-{kind}-post{nth}",
            marks=[pytest.mark.postgres] if backend == "postgresql" else [],
        )
        for kind, nth in (every if FULL else ())
    ]


def _chain(sample: int) -> list[tuple[str, int]]:
    """`sample` positions (kind, n-th customer create of the cold apply), seeded, ascending."""
    chooser = random.Random(f"{SEED}:{sample}")
    creates = sorted(chooser.sample(range(1, ACCOUNTS + 1), sample))
    return [(chooser.choice(KINDS), n) for n in creates]


POSITIONS = _positions("sqlite") + _positions("postgresql")
CHAINS = [
    pytest.param("sqlite", 50, id="sqlite-50"),
    pytest.param("postgresql", 10, id="postgresql-10", marks=[pytest.mark.postgres]),
]


def _contracts_yaml() -> str:
    lines = ["customers:\n"]
    for org in CONTRACT_ORGS:
        lines.append(f"  - org_id: {org}\n    name: Contract {org}\n    currency: eur\n")
    return "".join(lines)


@pytest.fixture(scope="module")
def desired(tmp_path_factory: pytest.TempPathFactory) -> DesiredState:
    directory = tmp_path_factory.mktemp("crash") / "desired"
    (directory / "plans").mkdir(parents=True)
    (directory / "customers").mkdir()
    # One request at a time: the n-th create of the cold apply is the n-th POST, exactly.
    config = BILLING.replace("reconcile:\n", "reconcile:\n  apply_concurrency: 1\n")
    (directory / "billing.yaml").write_text(config)
    (directory / "customers" / "contracts.yaml").write_text(_contracts_yaml())
    result = load_desired(directory)
    assert result.state is not None, [str(d) for d in result.diagnostics]
    return result.state


def _host_accounts(store: Store) -> None:
    """What the API leaves: active accounts, each with its onboard grant."""
    with store.session() as session:
        accounts = AccountRepository(session)
        for org in API_ORGS:
            account = accounts.create(org, name=f"Org {org}", email=None, currency="eur")
            grant_onboard_credits(session, account_id=account.id, org_id=org, amount=ONBOARD)


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite store with the host's accounts, copied for each position."""
    path = tmp_path_factory.mktemp("template") / "state.db"
    store = Store.open(f"sqlite:///{path}")
    try:
        _host_accounts(store)
    finally:
        store.close()
    return path


@pytest.fixture
def store(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> Iterator[Store]:
    backend = request.node.callspec.params["backend"]
    if backend == "postgresql":
        opened = Store.open(request.getfixturevalue("postgres_database_url"))
        _host_accounts(opened)
    else:
        shutil.copy(sqlite_template, tmp_path / "state.db")
        opened = Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        yield opened
    finally:
        opened.close()


def _controller(
    state: DesiredState, store: Store, emulator: EmulatorHandle, retry: RetryPolicy
) -> Controller:
    return Controller(
        registration=CUSTOMERS,
        state=state,
        gateway=StripeGateway(
            api_key="sk_test_crash",
            api_base=emulator.url,
            rate_limit_per_second=10_000,
            retry=retry,
            timeout_seconds=10,
        ),
        store=store,
    )


def _assert_exactly_once(emulator: EmulatorHandle, store: Store) -> None:
    client = make_client(emulator.url)
    customers = list(client.v1.customers.list({"limit": 100}).auto_paging_iter())
    keys = Counter(c.to_dict()["metadata"].get("br_key") for c in customers)
    assert len(customers) == ACCOUNTS, len(customers)
    assert [k for k, n in keys.items() if n > 1] == []
    assert set(keys) == {f"customer/{org}" for org in (*API_ORGS, *CONTRACT_ORGS)}
    live = {c.id for c in customers}
    with store.session() as session:
        accounts = AccountRepository(session)
        linked = [accounts.active_for_org(org) for org in (*API_ORGS, *CONTRACT_ORGS)]
        ledger = LedgerRepository(session)
        grants = [ledger.get(onboard_grant_id(org)) for org in (*API_ORGS, *CONTRACT_ORGS)]
        assert ledger.verify() == []
        assert ledger.total_balance() == ACCOUNTS * ONBOARD
    ids = [a.stripe_customer_id if a is not None else None for a in linked]
    assert set(ids) == live  # every account linked, each to its own live customer
    assert len(set(ids)) == ACCOUNTS
    assert [g.amount if g is not None else None for g in grants] == [ONBOARD] * ACCOUNTS


def test_the_cold_apply_makes_200_customer_creates(
    desired: DesiredState, emulator: EmulatorHandle, tmp_path: Path, sqlite_template: Path
) -> None:
    """Guards the matrix: its positions are every mutating request of the cold apply."""
    shutil.copy(sqlite_template, tmp_path / "state.db")
    store = Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        controller = _controller(desired, store, emulator, FAST_RETRY)
        _, _, residual = controller.apply(controller.plan())
        assert residual.converged, residual
        posts = [r.path for r in emulator.control.requests(method="POST")]
        assert posts == ["/v1/customers"] * ACCOUNTS
        _assert_exactly_once(emulator, store)
    finally:
        store.close()


def _crash_at_a_mutating_request_of_a_200_account_cold_apply_then_rerun(
    desired: DesiredState,
    emulator: EmulatorHandle,
    store: Store,
    backend: str,
    kind: str,
    nth: int,
) -> None:
    del backend
    emulator.control.add_fault(method="POST", path_prefix="/v1/", nth=nth, kind=kind)
    crashing = _controller(desired, store, emulator, NO_RETRY)
    with pytest.raises(ApplyError):
        crashing.apply(crashing.plan())
    assert emulator.control.faults()[0]["fired"]

    rerun = _controller(desired, store, emulator, FAST_RETRY)  # a restart
    _, _, residual = rerun.apply(rerun.plan())
    assert residual.converged, [(s.action, s.key) for s in residual.steps]
    _assert_exactly_once(emulator, store)


if FULL:
    # `make crash-all`: every position on its own, from a cold store. Defined only then, so
    # the CI run (the seeded chains below) collects no empty, skipped parameter set.
    test_crash_at_a_mutating_request_of_a_200_account_cold_apply_then_rerun = (
        pytest.mark.parametrize(("backend", "kind", "nth"), POSITIONS)(
            _crash_at_a_mutating_request_of_a_200_account_cold_apply_then_rerun
        )
    )


@pytest.mark.parametrize(("backend", "sample"), CHAINS)
def test_crashes_at_sampled_requests_of_a_200_account_cold_apply_then_rerun(
    desired: DesiredState,
    emulator: EmulatorHandle,
    store: Store,
    backend: str,
    sample: int,
) -> None:
    chain = _chain(sample)
    print(f"crash chain on {backend}: seed {SEED}, positions {chain}")
    client = make_client(emulator.url)
    for kind, position in chain:
        committed = len(list(client.v1.customers.list({"limit": 100}).auto_paging_iter()))
        nth = position - committed
        assert nth >= 1, (position, committed)
        emulator.control.clear_faults()
        emulator.control.add_fault(method="POST", path_prefix="/v1/", nth=nth, kind=kind)
        crashing = _controller(desired, store, emulator, NO_RETRY)  # a restart, then a crash
        with pytest.raises(ApplyError):
            crashing.apply(crashing.plan())
        assert emulator.control.faults()[0]["fired"], (kind, position)
    emulator.control.clear_faults()
    rerun = _controller(desired, store, emulator, FAST_RETRY)
    _, _, residual = rerun.apply(rerun.plan())
    assert residual.converged, [(s.action, s.key) for s in residual.steps]
    _assert_exactly_once(emulator, store)

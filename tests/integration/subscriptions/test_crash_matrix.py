"""A crash at every mutating request of a 100-subscription cold apply, then a rerun: exactly
100 subscriptions, no duplicate schedule, no double charge (issue 11, Tests; DESIGN §7, §16).

The 100 accounts (a `World`, conftest), each with 1 to 3 members and a card, their customers
already in Stripe: 10 left on the default plan `free_monthly` (a default plan is free: the
desired state refuses a paid one), 70 that an admin subscribed to the per-seat
`team_monthly` (its on-start credits 100), 20 to the per-seat `team_yearly`. They are on a
test clock frozen at the wall clock's second, so their events are within Stripe's retention
and every pass after the first full resync follows the events cursor (as a restart does in
production). The subscriptions domain's cold apply makes 100 `POST /v1/subscriptions` (each
paid one invoices and charges the card at once) and nothing else that writes to Stripe. For
each position one run crashes exactly there, as the emulator's fault controls make it:
`drop_after_commit` (Stripe committed the subscription, its invoice and its charge; the
connection died) or `500` (nothing committed), with no retries, so the apply stops; a fresh
controller on the same store (as after a restart) then converges, and the pass after it
mirrors what it made (the on-start credits with it).

After the rerun: exactly 100 subscriptions in Stripe (`status=all`), one per account, each
on the plan its current intent asks for (its `br_intent`), with the seats; no schedule at all
(the cold apply makes none, so none can be duplicated); per customer exactly the invoices and
charges (the emulator's payment intents) of a run without a crash: one invoice each, one
succeeded charge of the first invoice's amount each paid one (no double charge); the store's
mirror equal to Stripe's subscriptions; the on-start credits granted once per account on
`team_monthly` and nothing else in the ledger.

200 positions in all (100 requests x 2 kinds). CI runs a seeded sample (seed printed) as many
small runs on one emulator and store, as the customers matrix does: the first run crashes at
the first sampled position, the rerun at the next (each run a restart on the store the last
one left), ... and the last rerun converges: 50 positions on SQLite, 10 on PostgreSQL.
`make crash-all` (BILLING_CRASH_ALL=1) runs every position on its own, from a cold start
(new accounts, customers and cards), on both stores (slow: about 15 s a position).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from typing import Any

import pytest

from billing_reconciler.apply import ApplyError
from billing_reconciler.controller import Controller, PlanOptions
from billing_reconciler.desired import load_desired
from billing_reconciler.model_subscriptions import on_start_grant_id
from billing_reconciler.registry import CATALOG, CUSTOMERS, SUBSCRIPTIONS
from billing_reconciler.store import (
    AccountRepository,
    IntentRepository,
    LedgerRepository,
)
from billing_reconciler.stripe_gateway import NO_RETRY, RetryPolicy, StripeGateway
from stripe_emulator.control import FaultKind

from .conftest import BILLING, World
from .mirrors import assert_mirror_is_stripe

pytestmark = pytest.mark.slow

ACCOUNTS = 100
ON_START = 100  # CATALOG_YAML's team_monthly on_start_credits
KINDS: tuple[FaultKind, ...] = ("drop_after_commit", "500")
SEED = 20261203
FULL = os.environ.get("BILLING_CRASH_ALL") == "1"
FAST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.0, max_delay=0.0)
CREATE = "/v1/subscriptions"

ORGS = [f"org{n:03d}" for n in range(ACCOUNTS)]
FREE_ORGS = ORGS[:10]  # on the default plan
MONTHLY_ORGS = ORGS[10:80]  # admin-subscribed to team_monthly
YEARLY_ORGS = ORGS[80:]  # admin-subscribed to team_yearly


def _plan_of(org: str) -> str:
    if org in FREE_ORGS:
        return "free_monthly"
    return "team_yearly" if org in YEARLY_ORGS else "team_monthly"


def _seats_of(org: str) -> int:
    return 1 + int(org[3:]) % 3


def _chain(sample: int) -> list[tuple[FaultKind, int]]:
    """`sample` positions (kind, n-th subscription create of the cold apply), seeded,
    ascending."""
    chooser = random.Random(f"{SEED}:{sample}")
    creates = sorted(chooser.sample(range(1, ACCOUNTS + 1), sample))
    return [(chooser.choice(KINDS), n) for n in creates]


def _configure(world: World) -> None:
    """The free default plan; one request at a time, so the n-th create of the cold
    apply is the n-th POST, exactly."""
    config = BILLING.format(default_plan="free_monthly", auto_tax="false", seat_change="exact")
    config = config.replace("reconcile:\n", "reconcile:\n  apply_concurrency: 1\n")
    (world.directory / "billing.yaml").write_text(config)


def _cold_world(world: World) -> None:
    """The catalog and the 100 customers applied, every customer with a card; no
    subscription yet (the subscriptions domain has not run). On a test clock frozen at the
    wall clock's second: the events it makes are then within Stripe's retention, so a pass
    after the first full resync follows the events cursor, as a restart in production does."""
    _configure(world)
    now = int(time.time())
    world.test_clock = world.stripe.v1.test_helpers.test_clocks.create({"frozen_time": now}).id
    world.clock[0] = float(now)
    for org in ORGS:
        world.open(org, members=_seats_of(org))
    for registration in (CATALOG, CUSTOMERS):
        controller = world.controller(registration)
        _, _, residual = controller.apply(controller.plan())
        assert residual.converged, (registration.name, residual)
    for org in ORGS:
        world.add_card(org)
    for org in (*MONTHLY_ORGS, *YEARLY_ORGS):
        world.subscribe(org, _plan_of(org))
    world.emulator.control.clear_requests()


def _subscriptions(world: World, gateway_retry: RetryPolicy) -> Controller:
    """The subscriptions domain's controller of one run (a process start)."""
    result = load_desired(world.directory)
    assert result.state is not None, [str(d) for d in result.diagnostics]
    return Controller(
        registration=SUBSCRIPTIONS,
        state=result.state,
        gateway=StripeGateway(
            api_key="sk_test_crash",
            api_base=world.emulator.url,
            rate_limit_per_second=10_000,
            retry=gateway_retry,
            timeout_seconds=10,
        ),
        store=world.store,
        clock=world.now,
    )


def _converge(world: World) -> None:
    """A restart, then passes until there is nothing left to do: the first makes what is
    missing, the next mirrors it."""
    for _ in range(4):
        controller = _subscriptions(world, FAST_RETRY)
        planned = controller.plan(PlanOptions())
        if not planned.plan.has_work:
            return
        _, _, residual = controller.apply(planned)
        assert residual.converged, [(s.action, s.key) for s in residual.steps]
    raise AssertionError("the subscriptions domain did not settle in 4 passes")


def _listed(world: World, resource: str) -> list[Any]:
    return list(getattr(world.stripe.v1, resource).list({"limit": 100}).auto_paging_iter())


def _per_customer(world: World, resource: str) -> Counter[str]:
    return Counter(str(obj.customer) for obj in _listed(world, resource))


def _first_invoice(org: str) -> int:
    """What the subscription's first invoice charges (CATALOG_YAML's prices)."""
    if org in YEARLY_ORGS:
        return 49000 + _seats_of(org) * 9000
    return 4900 + _seats_of(org) * 900


def _assert_exactly_once(world: World) -> None:
    subscriptions = world.subscriptions()
    assert len(subscriptions) == ACCOUNTS, len(subscriptions)
    with world.store.session() as session:
        accounts = AccountRepository(session)
        customers = {org: accounts.active_for_org(org) for org in ORGS}
    customer_of = {
        org: record.stripe_customer_id for org, record in customers.items() if record is not None
    }
    assert len(set(customer_of.values())) == ACCOUNTS
    by_customer = Counter(str(s.customer) for s in subscriptions)
    assert by_customer == Counter(customer_of.values())  # one per account
    plans = {str(s.customer): (s.status, s.metadata["plan"]) for s in subscriptions}
    assert plans == {customer_of[org]: ("active", _plan_of(org)) for org in ORGS}
    seats = {str(s.customer): sorted(i.quantity for i in s["items"].data) for s in subscriptions}
    assert seats == {
        customer_of[org]: [1] if org in FREE_ORGS else sorted([1, _seats_of(org)]) for org in ORGS
    }

    schedules = list(world.stripe.v1.subscription_schedules.list({"limit": 100}).auto_paging_iter())
    assert schedules == []  # the cold apply makes none: none duplicated

    # No double charge: per customer the invoices and charges of a run without a crash.
    assert _per_customer(world, "invoices") == Counter(customer_of.values())
    paid = Counter(customer_of[org] for org in ORGS if org not in FREE_ORGS)
    assert _per_customer(world, "payment_intents") == paid
    assert {str(c.customer): (c.amount, c.status) for c in _listed(world, "payment_intents")} == {
        customer_of[org]: (_first_invoice(org), "succeeded") for org in ORGS if org not in FREE_ORGS
    }

    # The store's mirror is Stripe's subscriptions; on-start credits once per account.
    assert_mirror_is_stripe(world, subscriptions)
    account_of = {org: record.id for org, record in customers.items() if record is not None}
    with world.store.session() as session:
        ledger = LedgerRepository(session)
        assert ledger.verify() == []
        grants = {
            org: ledger.get(on_start_grant_id(account_of[org], "team_monthly")) for org in ORGS
        }
        assert ledger.total_balance() == len(MONTHLY_ORGS) * ON_START
        intents = IntentRepository(session)
        current = {org: intents.current(account_of[org]) for org in ORGS}
    assert {org: g is not None for org, g in grants.items()} == {
        org: org in MONTHLY_ORGS for org in ORGS
    }
    assert all(g.amount == ON_START for g in grants.values() if g is not None)
    # Every subscription made under its account's current intent (the create's key).
    intent_of = {customer_of[org]: i.id for org, i in current.items() if i is not None}
    assert {str(s.customer): s.metadata["br_intent"] for s in subscriptions} == intent_of


@pytest.mark.parametrize("world", ["sqlite"], indirect=True)
def test_the_cold_apply_makes_100_subscription_creates_and_one_charge_each(world: World) -> None:
    """Guards the matrix: its positions are every mutating request of the cold apply, and
    without a crash each customer is invoiced and charged once."""
    _cold_world(world)
    _converge(world)
    posts = [r.path for r in world.emulator.control.requests(method="POST")]
    assert posts == [CREATE] * ACCOUNTS
    _assert_exactly_once(world)


def _crash_then_rerun(world: World, kind: FaultKind, nth: int) -> None:
    _cold_world(world)
    world.emulator.control.add_fault(method="POST", path_prefix="/v1/", nth=nth, kind=kind)
    crashing = _subscriptions(world, NO_RETRY)
    with pytest.raises(ApplyError):
        crashing.apply(crashing.plan())
    assert world.emulator.control.faults()[0]["fired"]
    world.emulator.control.clear_faults()
    _converge(world)
    _assert_exactly_once(world)


def _positions() -> list[Any]:
    """Every position of the full matrix, on both stores (`make crash-all`)."""
    return [
        pytest.param(
            backend,
            kind,
            nth,
            id=f"{backend}-{kind}-post{nth}",
            marks=[pytest.mark.postgres] if backend == "postgresql" else [],
        )
        for backend in ("sqlite", "postgresql")
        for kind in KINDS
        for nth in range(1, ACCOUNTS + 1)
    ]


if FULL:
    # `make crash-all`: every position on its own, from a cold start. Defined only then, so
    # the CI run (the seeded chains below) collects no empty, skipped parameter set.
    @pytest.mark.parametrize(("world", "kind", "nth"), _positions(), indirect=["world"])
    def test_a_crash_at_a_mutating_request_of_a_100_subscription_cold_apply_then_rerun(
        world: World, kind: FaultKind, nth: int
    ) -> None:
        _crash_then_rerun(world, kind, nth)


@pytest.mark.parametrize(
    ("world", "sample"),
    [
        pytest.param("sqlite", 50, id="sqlite-50"),
        pytest.param("postgresql", 10, id="postgresql-10", marks=[pytest.mark.postgres]),
    ],
    indirect=["world"],
)
def test_crashes_at_sampled_requests_of_a_100_subscription_cold_apply_then_rerun(
    world: World, sample: int
) -> None:
    chain = _chain(sample)
    print(f"subscriptions crash chain: seed {SEED}, positions {chain}")
    _cold_world(world)
    for kind, position in chain:
        committed = len(world.subscriptions())
        nth = position - committed
        assert nth >= 1, (position, committed)
        world.emulator.control.clear_faults()
        world.emulator.control.add_fault(method="POST", path_prefix="/v1/", nth=nth, kind=kind)
        crashing = _subscriptions(world, NO_RETRY)  # a restart, then a crash
        with pytest.raises(ApplyError):
            crashing.apply(crashing.plan())
        assert world.emulator.control.faults()[0]["fired"], (kind, position)
    world.emulator.control.clear_faults()
    _converge(world)
    _assert_exactly_once(world)

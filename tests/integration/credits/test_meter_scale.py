"""10,000 usages -> exactly 10,000 meter events (or the aggregated count), and two replicas
sending the same outbox at once on PostgreSQL -> each event sent by one of them, once
(issue 12, Tests)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from billing_reconciler.apply import Applier
from billing_reconciler.registry import CREDITS
from billing_reconciler.store import RunMode, RunRepository, Store
from tests.integration.credits.conftest import MeterWorld

pytestmark = pytest.mark.slow

ORGS = [f"org{n:02d}" for n in range(20)]
PER_ORG = 500
USAGES = len(ORGS) * PER_ORG


def _fill(meters: MeterWorld, *, windows: int = 1) -> set[str]:
    meters.open(ORGS)
    base = int(time.time()) // 60 * 60 - 3600
    ids: set[str] = set()
    per_window = PER_ORG // windows
    for org in ORGS:
        for w in range(windows):
            ids.update(meters.usages(org, per_window, at=base + w * 60, prefix=f"w{w}"))
    return ids


def test_10000_usages_are_exactly_10000_meter_events(meters: MeterWorld) -> None:
    ids = _fill(meters)
    plan = meters.send()
    assert len(plan.steps) == len(ORGS)
    events = meters.events()
    assert len(events) == USAGES
    assert {e["identifier"] for e in events} == ids
    posts = meters.sends()
    assert len(posts) == USAGES
    assert all(r.status == 200 and not r.replayed for r in posts)
    assert meters.depth() == (0, 0)
    assert meters.plan().steps == ()


def test_10000_usages_aggregated_are_one_event_per_customer_and_window(
    meters: MeterWorld,
) -> None:
    meters.configure(aggregate=True)
    _fill(meters, windows=5)
    meters.send()
    events = meters.events()
    assert len(events) == len(ORGS) * 5
    assert sum(int(e["payload"]["requests"]) for e in events) == USAGES
    assert len(meters.sends()) == len(ORGS) * 5
    assert meters.depth() == (0, 0)


# Replicas share a PostgreSQL store (SQLite has one writer, the leader): PostgreSQL only.
@pytest.mark.parametrize(
    "meters", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_two_replicas_sending_at_once_send_each_event_once(meters: MeterWorld) -> None:
    """Each replica is its own store (connection pool) and gateway on one PostgreSQL
    database; both plan every customer and apply at once (16 steps at a time each). The rows
    each claims (`FOR UPDATE SKIP LOCKED`) the other skips: no event is sent twice, so the
    emulator answers exactly 10,000 sends, none a duplicate or a replay."""
    assert meters.backend == "postgresql"
    ids = _fill(meters)
    meters.emulator.control.set_latency(2)  # both replicas are mid-send at the same time
    stores = [Store.open(meters.url) for _ in range(2)]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def replica(store: Store) -> None:
        # What a replica's apply runs (its run recorded, the plan's steps through the
        # applier); the controller's run bookkeeping assumes one writer (the leader), so
        # two controllers would close each other's runs.
        try:
            controller = meters.controller(CREDITS, store=store)
            plan = controller.plan().plan
            with store.session() as session:
                run_id = RunRepository(session).start(
                    domain="credits",
                    mode=RunMode.APPLY,
                    actor="replica",
                    git_revision=None,
                    desired_revision=plan.desired_revision,
                    plan_fingerprint=plan.fingerprint,
                )
            applier = Applier(
                gateway=controller.gateway,
                store=store,
                run_id=run_id,
                desired_fields={},
                executors=CREDITS.executors,
                concurrency=16,
            )
            start.wait()
            applier.apply(plan)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=replica, args=(s,)) for s in stores]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
    finally:
        for store in stores:
            store.close()
    assert errors == []
    events = meters.events()
    assert len(events) == USAGES
    assert {e["identifier"] for e in events} == ids
    posts = meters.sends()
    assert Counter(r.status for r in posts) == {200: USAGES}
    assert not [r for r in posts if r.replayed]
    assert meters.depth() == (0, 0)

"""A crash at every meter-event send of a 200-usage outbox, then a rerun: exactly 200 meter
events, each usage's once (issue 12, Tests; DESIGN §7, §17).

The crash is the emulator's fault at the n-th `POST /v1/billing/meter_events`:
`drop_after_commit` (Stripe recorded the event, the answer was lost: the row stays pending,
its resend replays the key) or `500` (nothing recorded), with no retries, so the pass stops;
a fresh controller on the same store (a restart) then sends the rest.

CI runs seeded chains (each run a restart that crashes at the next sampled position, the last
one converging): 40 positions on SQLite, 10 on PostgreSQL, and an aggregated outbox on both.
`BILLING_CRASH_ALL=1` (`make crash-all`) runs every position on its own (slow).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from typing import Any

import pytest

from billing_reconciler.apply import ApplyError
from billing_reconciler.registry import CREDITS
from billing_reconciler.stripe_gateway import NO_RETRY
from tests.integration.credits.conftest import MeterWorld

pytestmark = pytest.mark.slow

ORGS = ("a0", "a1", "a2", "a3")
PER_ORG = 50
USAGES = len(ORGS) * PER_ORG
KINDS = ("drop_after_commit", "500")
SEED = 20261203
FULL = os.environ.get("BILLING_CRASH_ALL") == "1"
PATH = "/v1/billing/meter_events"


def _fill(meters: MeterWorld, *, aggregate: bool) -> set[str]:
    meters.configure(aggregate=aggregate, concurrency=1)
    meters.open(list(ORGS))
    base = int(time.time()) // 60 * 60 - 3600
    ids: set[str] = set()
    for org in ORGS:
        # With aggregation, 50 windows of one usage each: 200 aggregates to send.
        for n in range(PER_ORG):
            at = base + n * 60 if aggregate else base
            ids.update(meters.usages(org, 1, at=at, prefix=f"n{n}"))
    return ids


def _assert_exactly_once(meters: MeterWorld, ids: set[str], *, aggregate: bool) -> None:
    events = meters.events()
    counts = Counter(e["identifier"] for e in events)
    assert len(events) == USAGES, len(events)
    assert [i for i, n in counts.items() if n > 1] == []
    if not aggregate:
        assert set(counts) == ids
    assert sum(int(e["payload"]["requests"]) for e in events) == USAGES
    assert meters.depth() == (0, 0)
    assert meters.plan().steps == ()


def _crash(meters: MeterWorld, kind: str, nth: int) -> None:
    meters.emulator.control.clear_faults()
    meters.emulator.control.add_fault(method="POST", path_prefix=PATH, nth=nth, kind=kind)
    crashing = meters.controller(CREDITS, retry=NO_RETRY)
    with pytest.raises(ApplyError):
        crashing.apply(crashing.plan())
    assert meters.emulator.control.faults()[0]["fired"], (kind, nth)
    meters.emulator.control.clear_faults()


def _chain(sample: int) -> list[tuple[str, int]]:
    chooser = random.Random(f"{SEED}:{sample}")
    positions = sorted(chooser.sample(range(1, USAGES + 1), sample))
    return [(chooser.choice(KINDS), n) for n in positions]


#: Positions per chain, by backend: (per usage, aggregated).
SAMPLES = {"sqlite": (40, 10), "postgresql": (10, 5)}


@pytest.mark.parametrize("aggregate", [False, True], ids=["per-usage", "aggregated"])
def test_crashes_at_sampled_sends_then_a_rerun_send_each_usage_once(
    meters: MeterWorld, aggregate: bool
) -> None:
    ids = _fill(meters, aggregate=aggregate)
    chain = _chain(SAMPLES[meters.backend][int(aggregate)])
    print(f"meter crash chain on {meters.backend}: seed {SEED}, positions {chain}")
    for kind, position in chain:
        committed = len(meters.events())
        _crash(meters, kind, max(position - committed, 1))
    meters.send()
    _assert_exactly_once(meters, ids, aggregate=aggregate)


def _positions() -> list[Any]:
    every = [(kind, nth) for kind in KINDS for nth in range(1, USAGES + 1)]
    return [pytest.param(kind, nth, id=f"{kind}-post{nth}") for kind, nth in every]


if FULL:

    @pytest.mark.parametrize(("kind", "nth"), _positions())
    def test_a_crash_at_every_send_then_a_rerun_sends_each_usage_once(
        meters: MeterWorld, kind: str, nth: int
    ) -> None:
        ids = _fill(meters, aggregate=False)
        _crash(meters, kind, nth)
        meters.send()
        _assert_exactly_once(meters, ids, aggregate=False)

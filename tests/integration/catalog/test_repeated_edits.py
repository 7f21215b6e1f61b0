"""A write intended again after it completed gets a new idempotency key (issue 8, defect 1).

Stripe replays the stored response for a key it has seen within 24 hours. A key derived from
the step alone repeats when the same edit is made twice (4900 -> 5900 -> 4900 -> 5900): the
second archive of the old price replayed the first one and archived nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import stripe

from billing_reconciler.controller import Controller
from billing_reconciler.store import Store

from .conftest import MakeController, write_desired

CATALOG = """\
products:
  - name: team
    title: Team
    prices:
      - name: monthly
        interval: month
        amount: {amount}
        currency: usd
"""


def apply(controller: Controller) -> list[Any]:
    planned = controller.plan()
    assert not planned.plan.refused, planned.plan.refusals
    _, outcomes, residual = controller.apply(planned)
    assert residual.steps == (), [(s.action.value, s.key) for s in residual.steps]
    return outcomes


def test_the_same_edit_twice_is_applied_twice(
    tmp_path: Path,
    emulator: Any,
    stripe_client: stripe.StripeClient,
    make_controller: MakeController,
) -> None:
    for amount in (4900, 5900, 4900, 5900, 4900):
        state = write_desired(tmp_path, CATALOG.format(amount=amount))
        outcomes = apply(make_controller(state))
        assert not any(o.replayed for o in outcomes), amount
        live = stripe_client.v1.prices.list({"active": True}).data
        assert [p.unit_amount for p in live] == [amount]
    # Every mutating request was a fresh write: none was answered from Stripe's key store.
    posts = emulator.control.requests(method="POST")
    assert posts
    assert not any(entry.replayed for entry in posts)


def test_a_new_store_never_replays_a_lost_stores_writes(
    tmp_path: Path,
    emulator: Any,
    stripe_client: stripe.StripeClient,
    make_controller: MakeController,
) -> None:
    """The journal of a lost store took its spent keys with it; the successor's keys are
    salted with its own identity, so the same edit made again is still a fresh write."""
    lost = Store.open(f"sqlite:///{tmp_path / 'lost.db'}")
    for amount in (4900, 5900, 4900):
        apply(make_controller(write_desired(tmp_path, CATALOG.format(amount=amount)), store=lost))
    lost.close()

    fresh = Store.open(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        state = write_desired(tmp_path, CATALOG.format(amount=5900))
        outcomes = apply(make_controller(state, store=fresh))
        assert outcomes
        assert not any(o.replayed for o in outcomes)
    finally:
        fresh.close()
    live = stripe_client.v1.prices.list({"active": True}).data
    assert [p.unit_amount for p in live] == [5900]


def test_a_converged_apply_settles_the_steps_a_killed_run_left_pending(
    tmp_path: Path, emulator: Any, store: Store, make_controller: MakeController
) -> None:
    """Found by a fresh-user test of issue 8: `status` kept listing a killed apply's pending
    steps (and its run as running) after later applies had converged."""
    from billing_reconciler.store import (
        JournalEntry,
        JournalRepository,
        JournalState,
        RunMode,
        RunRepository,
        RunResult,
    )

    with store.session() as session:
        killed = RunRepository(session).start(
            domain="catalog", mode=RunMode.APPLY, actor="someone@host pid 1"
        )
        JournalRepository(session).begin(
            JournalEntry(killed, "default", "fp", 0, "product/team", "update", "k-killed")
        )
    apply(make_controller(write_desired(tmp_path, CATALOG.format(amount=4900))))
    with store.session() as session:
        [row] = JournalRepository(session).for_run(killed)
        run = RunRepository(session).get(killed)
        pending = JournalRepository(session).pending("default")
    assert row.state is JournalState.FAILED
    assert row.error is not None
    assert row.error.startswith("abandoned")
    assert run is not None
    assert run.result is RunResult.FAILED
    assert pending == []

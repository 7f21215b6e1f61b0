"""Two replicas (two controllers, each with its own connection pool) invoicing the same
PostgreSQL store at once, and `generate` style reruns: still one invoice per window."""

from __future__ import annotations

import threading

import pytest

from billing_reconciler.registry import CREDITS
from billing_reconciler.store import Store
from billing_reconciler.store.errors import ConflictError
from tests.integration.credits.overdraft_world import OverdraftWorld, at, overdraft

__all__ = ["overdraft"]

INVOICE_DAY = at("2027-01-01T01:00:00")


@pytest.mark.postgres
@pytest.mark.parametrize("overdraft", ["postgresql"], indirect=True)
def test_two_replicas_applying_at_once_make_one_invoice_per_window(
    overdraft: OverdraftWorld,
) -> None:
    world = overdraft
    world.set_clock(INVOICE_DAY)
    orgs = [f"org{n}" for n in range(5)]
    for org in orgs:
        world.open(org)
        world.debit(org, 100 * (int(org[-1]) + 1), id=f"u-{org}")
    stores = [Store.open(world.url) for _ in range(2)]
    try:
        controllers = [world.controller(CREDITS, store=store) for store in stores]
        # Both plan before either applies: each believes every window is its to invoice.
        plans = [controller.plan() for controller in controllers]
        assert all(len(p.plan.steps) == len(orgs) for p in plans)
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def run(index: int) -> None:
            try:
                barrier.wait()
                controllers[index].apply(plans[index])
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        # The replica whose re-plan converges first marks the other's run abandoned (the
        # controller assumes one writer: serve's leader); the other's run then ends with a
        # ConflictError on its run row. That is bookkeeping: what reached Stripe is below.
        assert all(
            isinstance(e, ConflictError) and "has already finished" in str(e) for e in errors
        ), errors
    finally:
        for store in stores:
            store.close()
    invoices = world.invoices()
    assert len(invoices) == len(orgs)
    assert len(world.invoice_items()) == len(orgs)
    assert sorted(i.lines.data[0].quantity for i in invoices) == [100, 200, 300, 400, 500]
    assert {i.status for i in invoices} == {"open"}
    # A third pass, on either store, plans nothing more for the window.
    assert world.reconcile().steps == ()
    assert len(world.invoices()) == len(orgs)

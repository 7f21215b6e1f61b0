"""Settling abandoned work is per domain: a domain's converged apply closes only its own
runs' pending journal steps and running applies, never another domain's that may be applying
at the same time (the work queue runs several domains at once)."""

from __future__ import annotations

from billing_reconciler.store import (
    JournalEntry,
    JournalRepository,
    JournalState,
    RunMode,
    RunRepository,
    RunResult,
    Store,
)
from billing_reconciler.store.journal import ABANDONED


def _start(store: Store, domain: str, *, installation: str = "prod", steps: int = 2) -> str:
    with store.session() as session:
        run_id = RunRepository(session).start(domain=domain, mode=RunMode.APPLY, actor="t@h")
        journal = JournalRepository(session)
        for index in range(steps):
            journal.begin(
                JournalEntry(
                    run_id=run_id,
                    installation_id=installation,
                    plan_fingerprint="fp",
                    step_index=index,
                    object_key=f"{domain}/o{index}",
                    action="create",
                    idempotency_key=f"{run_id}-{index}",
                )
            )
    return run_id


def _settle(store: Store, domain: str, run_id: str, *, installation: str = "prod") -> int:
    with store.session() as session:
        steps = JournalRepository(session).abandon_pending(
            installation, domain=domain, except_run=run_id
        )
        runs = RunRepository(session).abandon_running_applies(
            installation, domain=domain, except_run=run_id
        )
    return steps + runs


def test_a_converged_domain_settles_only_its_own_runs(store: Store) -> None:
    dead_catalog = _start(store, "catalog")
    live_customers = _start(store, "customers")
    converged = _start(store, "catalog", steps=1)

    assert _settle(store, "catalog", converged) == 3  # 2 steps and 1 run of the dead catalog

    with store.session() as session:
        journal = JournalRepository(session)
        runs = RunRepository(session)
        dead_steps = journal.for_run(dead_catalog)
        assert {s.state for s in dead_steps} == {JournalState.FAILED}
        assert {s.error for s in dead_steps} == {ABANDONED}
        dead = runs.get(dead_catalog)
        assert dead is not None
        assert dead.result is RunResult.FAILED
        assert dead.error is not None
        assert dead.error.startswith("abandoned")
        # The other domain, possibly applying right now, is untouched.
        assert {s.state for s in journal.for_run(live_customers)} == {JournalState.PENDING}
        other = runs.get(live_customers)
        assert other is not None
        assert other.result is RunResult.RUNNING
        # The converging run's own steps are its to finish.
        assert {s.state for s in journal.for_run(converged)} == {JournalState.PENDING}
        own = runs.get(converged)
        assert own is not None
        assert own.result is RunResult.RUNNING
        assert [s.run_id for s in journal.pending("prod", domain="customers")] == [
            live_customers,
            live_customers,
        ]
        assert set(journal.pending_by_domain("prod")) == {"catalog", "customers"}

    # Settling again changes nothing; the other domain converging settles its own only.
    assert _settle(store, "catalog", converged) == 0
    later_customers = _start(store, "customers", steps=0)
    assert _settle(store, "customers", later_customers) == 3  # the dead run and its two steps
    with store.session() as session:
        assert {s.state for s in JournalRepository(session).for_run(converged)} == {
            JournalState.PENDING
        }
        customers_run = RunRepository(session).get(live_customers)
        assert customers_run is not None
        assert customers_run.result is RunResult.FAILED


def test_settling_stays_within_the_installation(store: Store) -> None:
    elsewhere = _start(store, "catalog", installation="staging")
    converged = _start(store, "catalog", steps=0)

    assert _settle(store, "catalog", converged) == 0

    with store.session() as session:
        assert {s.state for s in JournalRepository(session).for_run(elsewhere)} == {
            JournalState.PENDING
        }
        run = RunRepository(session).get(elsewhere)
        assert run is not None
        assert run.result is RunResult.RUNNING

"""A domain whose apply converges settles only its own abandoned work (the controller passes
its domain): the pending journal steps and running applies another domain left, which may be
applying at this very moment on the other queue worker, stay as they are."""

from __future__ import annotations

from pathlib import Path

import pytest

from billing_reconciler.controller import Registration
from billing_reconciler.runtime.domains import DomainRunner
from billing_reconciler.runtime.events import ReconcileRequest
from billing_reconciler.store import (
    JournalEntry,
    JournalRepository,
    JournalState,
    RunMode,
    RunRepository,
    RunResult,
    Store,
)
from billing_reconciler.stripe_gateway import StripeGateway
from tests.integration.catalog.conftest import write_desired
from tests.integration.runtime.test_toy_domain import TOY, GreetingExecutor, ToyDomain, ToyWorld


def _interrupted_run(store: Store, domain: str) -> str:
    """An apply of `domain` that began a step and never finished (or is still going)."""
    with store.session() as session:
        run_id = RunRepository(session).start(domain=domain, mode=RunMode.APPLY, actor="t@h")
        JournalRepository(session).begin(
            JournalEntry(
                run_id=run_id,
                installation_id="default",
                plan_fingerprint="fp",
                step_index=0,
                object_key=f"{domain}/thing",
                action="create",
                idempotency_key=f"{run_id}-0",
            )
        )
    return run_id


def test_a_converged_apply_settles_its_domain_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLING_DATABASE_URL", f"sqlite:///{tmp_path / 'state.db'}")
    directory = tmp_path / "desired"
    initial = write_desired(directory)
    world = ToyWorld()
    toy = Registration(
        domain=ToyDomain(),
        open_reader=lambda gateway, store: world,
        executors={"greeting": GreetingExecutor(world)},
    )
    store = Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        dead_toy = _interrupted_run(store, TOY)
        busy_catalog = _interrupted_run(store, "catalog")
        runner = DomainRunner(
            registration=toy,
            directory=directory,
            initial=initial,
            store=store,
            gateway=StripeGateway(api_key="sk_test_unused", api_base="http://127.0.0.1:9"),
            actor="tester pid 1",
        )
        outcome = runner.reconcile(ReconcileRequest(TOY, None, "start"), may_write=lambda: True)
        assert outcome.result == "applied"

        with store.session() as session:
            journal = JournalRepository(session)
            runs = RunRepository(session)
            assert [s.state for s in journal.for_run(dead_toy)] == [JournalState.FAILED]
            dead = runs.get(dead_toy)
            assert dead is not None
            assert dead.result is RunResult.FAILED
            assert [s.state for s in journal.for_run(busy_catalog)] == [JournalState.PENDING]
            busy = runs.get(busy_catalog)
            assert busy is not None
            assert busy.result is RunResult.RUNNING
            assert [s.run_id for s in journal.pending("default")] == [busy_catalog]
    finally:
        store.close()

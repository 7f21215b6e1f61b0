"""Reconcile runs: start/finish audit records, latest per domain, recent across domains."""

from __future__ import annotations

from datetime import timedelta

import pytest

from billing_reconciler.store import (
    ConflictError,
    NotFoundError,
    RunMode,
    RunRepository,
    RunResult,
    Store,
    default_actor,
)
from tests.integration.store.conftest import FakeClock


def test_start_then_finish(store: Store, clock: FakeClock) -> None:
    with store.session() as session:
        runs = RunRepository(session, clock=clock)
        run_id = runs.start(
            domain="catalog",
            mode=RunMode.DRY_RUN,
            actor="ada@laptop",
            git_revision="abc123",
            desired_revision="sha256:ff",
        )
        running = runs.get(run_id)
        assert running is not None
        assert (running.result, running.finished_at, running.summary) == (
            RunResult.RUNNING,
            None,
            {},
        )
        clock.advance(timedelta(seconds=2))
        finished = runs.finish(
            run_id, RunResult.CHANGES_PENDING, {"create": 3, "update": 1}, plan_fingerprint="fp"
        )
    assert finished.result is RunResult.CHANGES_PENDING
    assert finished.summary == {"create": 3, "update": 1}
    assert finished.plan_fingerprint == "fp"
    assert (finished.git_revision, finished.desired_revision) == ("abc123", "sha256:ff")
    assert finished.finished_at == clock.now
    assert finished.started_at == clock.now - timedelta(seconds=2)
    assert finished.mode is RunMode.DRY_RUN
    assert finished.actor == "ada@laptop"


def test_finish_rules(store: Store) -> None:
    with store.session() as session:
        runs = RunRepository(session)
        run_id = runs.start(domain="catalog", mode=RunMode.APPLY, actor="a@b", run_id="r-1")
        assert run_id == "r-1"
        with pytest.raises(ValueError, match="final result"):
            runs.finish(run_id, RunResult.RUNNING, {})
        runs.finish(run_id, RunResult.FAILED, {}, "stripe said no (req_1)")
        assert runs.get(run_id).error == "stripe said no (req_1)"  # type: ignore[union-attr]
        with pytest.raises(ConflictError):
            runs.finish(run_id, RunResult.APPLIED, {})
        with pytest.raises(NotFoundError):
            runs.finish("missing", RunResult.APPLIED, {})


def test_latest_and_recent(store: Store, clock: FakeClock) -> None:
    with store.session() as session:
        runs = RunRepository(session, clock=clock)
        started = []
        for domain in ("catalog", "customers", "catalog"):
            started.append(runs.start(domain=domain, mode=RunMode.APPLY, actor=default_actor()))
            clock.advance(timedelta(minutes=1))
        assert runs.latest("catalog").run_id == started[2]  # type: ignore[union-attr]
        assert runs.latest("customers").run_id == started[1]  # type: ignore[union-attr]
        assert runs.latest("invoices") is None
        assert [run.run_id for run in runs.recent(2)] == [started[2], started[1]]
        assert len(runs.recent()) == 3
    assert "@" in default_actor()

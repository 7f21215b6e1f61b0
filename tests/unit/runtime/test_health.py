"""`/readyz`'s `reconcile:<domain>` verdicts: a domain that keeps failing is reported as such
(tester T1 finding 2: every subscriptions pass failed while `/readyz` said `ok`), and the
replica stays ready (the API keeps serving)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from billing_reconciler.runtime.desired_source import DesiredStatus
from billing_reconciler.runtime.domains import DomainRunResult, MayWrite
from billing_reconciler.runtime.events import ReconcileRequest
from billing_reconciler.runtime.health import ReconcileHealth, health_router
from billing_reconciler.runtime.metrics import Metrics
from billing_reconciler.runtime.service import Runtime, ServeSettings, StripeAccess
from billing_reconciler.store import RunMode

STEP_ERROR = "step 1 (create subscription_schedule/org4) failed: A schedule cannot be created"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_no_run_and_a_success_are_ok() -> None:
    health = ReconcileHealth(Clock())
    assert health.verdict("subscriptions", grace_seconds=180) == "ok"
    health.succeeded("subscriptions", None)
    assert health.verdict("subscriptions", grace_seconds=180) == "ok"


def test_a_whole_domain_failure_is_retrying_then_failing_and_counts_its_runs() -> None:
    clock = Clock()
    health = ReconcileHealth(clock)
    health.failed("subscriptions", None, "first error")
    assert health.verdict("subscriptions", grace_seconds=180) == (
        "retrying for 0 s (1 run, whole domain): first error"
    )
    clock.now += 60
    health.failed("subscriptions", None, STEP_ERROR)
    clock.now += 200
    assert health.verdict("subscriptions", grace_seconds=180) == (
        f"failing for 260 s (2 runs, whole domain): {STEP_ERROR}"
    )
    assert health.verdict("catalog", grace_seconds=180) == "ok"


def test_a_targeted_success_does_not_clear_a_whole_domain_failure() -> None:
    health = ReconcileHealth(Clock())
    health.failed("subscriptions", None, STEP_ERROR)
    health.succeeded("subscriptions", frozenset({"customer/org5"}))  # a member change elsewhere
    assert health.verdict("subscriptions", grace_seconds=0).startswith("failing for 0 s")
    health.succeeded("subscriptions", None)
    assert health.verdict("subscriptions", grace_seconds=0) == "ok"


def test_a_targeted_failure_stays_until_a_run_covering_its_key_succeeds() -> None:
    clock = Clock()
    health = ReconcileHealth(clock)
    health.failed("subscriptions", frozenset({"customer/org4", "customer/org5"}), STEP_ERROR)
    clock.now += 5
    health.succeeded("subscriptions", frozenset({"customer/org5"}))  # the batch, one by one
    health.failed("subscriptions", frozenset({"customer/org4"}), STEP_ERROR)
    assert health.verdict("subscriptions", grace_seconds=60) == (
        f"retrying for 5 s (2 runs, customer/org4): {STEP_ERROR}"
    )
    health.succeeded("subscriptions", frozenset({"customer/org6"}))
    assert health.verdict("subscriptions", grace_seconds=60) != "ok"
    health.succeeded("subscriptions", frozenset({"customer/org4", "customer/org6"}))
    assert health.verdict("subscriptions", grace_seconds=60) == "ok"


def test_the_oldest_failure_is_named_and_the_others_counted() -> None:
    clock = Clock()
    health = ReconcileHealth(clock)
    health.failed("subscriptions", frozenset({"customer/org4"}), "org4 refused")
    clock.now += 10
    health.failed("subscriptions", None, "whole pass refused")
    assert health.verdict("subscriptions", grace_seconds=0) == (
        "failing for 10 s (1 run, customer/org4; 1 more failing): org4 refused"
    )


def test_a_long_error_is_cut() -> None:
    health = ReconcileHealth(Clock())
    health.failed("catalog", None, "x" * 1000)
    assert health.verdict("catalog", grace_seconds=0).endswith(": " + "x" * 300)


# --- through the runtime: what `/readyz` answers ---------------------------------------------


@dataclass
class _Store:
    def ping(self) -> bool:
        return True


@dataclass
class _Desired:
    status: DesiredStatus = field(default_factory=lambda: DesiredStatus(True, "rev"))


class _Domain:
    """Whole-domain passes fail (a step Stripe refuses); targeted runs succeed."""

    name = "subscriptions"
    refresh_seconds = 60

    def reconcile(self, request: ReconcileRequest, *, may_write: MayWrite) -> DomainRunResult:
        del may_write
        if request.scope is None:
            raise RuntimeError(STEP_ERROR + " (key sk_test_abcdefgh12345678)")
        return DomainRunResult(self.name, "run-1", "applied", RunMode.APPLY, whole_domain=False)


def _runtime(clock: Clock, tmp_path: Path) -> Runtime:
    runtime = Runtime(
        directory=tmp_path,
        state=None,  # type: ignore[arg-type]  # never started: parts are set below
        stripe=StripeAccess("sk_test_x", "http://127.0.0.1:9", ()),
        database_url="sqlite://",
        actor="test",
        settings=ServeSettings(failing_intervals=3),
        clock=clock,
    )
    runtime.store = _Store()  # type: ignore[assignment]
    runtime.desired = _Desired()  # type: ignore[assignment]
    runtime.metrics = Metrics(clock=clock)
    runtime.domains = {"subscriptions": _Domain()}
    return runtime


def test_readiness_reports_a_domain_whose_every_pass_fails_and_stays_ready(
    tmp_path: Path,
) -> None:
    clock = Clock()
    runtime = _runtime(clock, tmp_path)
    for minute in range(5):  # a scheduled pass each minute, a member change's run between
        with pytest.raises(RuntimeError):
            runtime._handle(ReconcileRequest("subscriptions", None, "schedule"))
        clock.now += 30
        runtime._handle(ReconcileRequest("subscriptions", frozenset({"customer/org5"}), "member"))
        clock.now += 30
        del minute
    app = FastAPI()
    app.include_router(health_router(runtime.readiness))
    with TestClient(app) as client:
        response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True
    assert body["checks"]["store"] == "ok"
    assert body["checks"]["desired"] == "ok"
    verdict = body["checks"]["reconcile:subscriptions"]
    assert verdict.startswith("failing for 300 s (5 runs, whole domain): step 1 (create ")
    assert "sk_test_abcdefgh12345678" not in verdict


def test_readiness_still_fails_on_an_invalid_desired_state(tmp_path: Path) -> None:
    runtime = _runtime(Clock(), tmp_path)
    runtime.desired = _Desired(DesiredStatus(False, "rev", ("plans.yaml:1:1: bad",)))  # type: ignore[assignment]
    answer = runtime.readiness()
    assert answer.ready is False
    assert answer.checks["reconcile:subscriptions"] == "ok"

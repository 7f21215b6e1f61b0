"""The controller's metrics: each recorder moves the series docs/serve.md promises."""

from __future__ import annotations

from billing_reconciler.runtime.metrics import Metrics
from billing_reconciler.stripe_gateway import RequestOutcome

P = "billing_reconciler"


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(f"{P}_{name}", labels)


def outcome(status: int | None, retries: int = 0, rate_limited: int = 0) -> RequestOutcome:
    return RequestOutcome(
        method="POST",
        endpoint="/v1/prices/{id}",
        status=status,
        error=None if status == 200 else "TransientStripeError",
        retries=retries,
        duration_seconds=0.01,
        rate_limited=rate_limited,
    )


def test_reconcile_runs_errors_duration_and_last_success() -> None:
    metrics = Metrics(clock=lambda: 1_700_000_000.0)
    metrics.reconcile_finished("catalog", "applied", 1.5)
    metrics.reconcile_finished("catalog", "failed", 0.2)
    metrics.reconcile_finished("customer", "no_changes", 0.1)
    assert value(metrics, "reconcile_runs_total", domain="catalog", result="applied") == 1
    assert value(metrics, "reconcile_runs_total", domain="catalog", result="failed") == 1
    assert value(metrics, "reconcile_errors_total", domain="catalog") == 1
    assert value(metrics, "reconcile_errors_total", domain="customer") is None
    assert value(metrics, "reconcile_duration_seconds_count", domain="catalog") == 2
    assert value(metrics, "reconcile_duration_seconds_sum", domain="catalog") == 1.7
    assert (
        value(metrics, "reconcile_last_success_timestamp_seconds", domain="catalog")
        == 1_700_000_000.0
    )


def test_failed_and_interrupted_runs_do_not_move_the_last_success() -> None:
    now = [100.0]
    metrics = Metrics(clock=lambda: now[0])
    metrics.reconcile_finished("catalog", "no_changes", 0.1)
    now[0] = 200.0
    metrics.reconcile_finished("catalog", "failed", 0.1)
    metrics.reconcile_finished("catalog", "interrupted", 0.1)  # a shutdown mid-apply
    assert value(metrics, "reconcile_last_success_timestamp_seconds", domain="catalog") == 100.0
    assert value(metrics, "reconcile_errors_total", domain="catalog") == 1
    assert value(metrics, "reconcile_runs_total", domain="catalog", result="interrupted") == 1


def test_stripe_requests_retries_and_rate_limits() -> None:
    metrics = Metrics()
    metrics.observe_stripe_request(outcome(200, retries=2, rate_limited=1))  # absorbed
    metrics.observe_stripe_request(outcome(429, retries=3, rate_limited=4))  # gave up
    metrics.observe_stripe_request(outcome(None))
    labels = {"method": "POST", "endpoint": "/v1/prices/{id}"}
    assert value(metrics, "stripe_requests_total", status="200", **labels) == 1
    assert value(metrics, "stripe_requests_total", status="429", **labels) == 1
    assert value(metrics, "stripe_requests_total", status="error", **labels) == 1
    assert value(metrics, "stripe_retries_total", endpoint="/v1/prices/{id}") == 5
    assert value(metrics, "stripe_rate_limited_total", endpoint="/v1/prices/{id}") == 5


def test_webhooks_count_by_outcome_and_reason_from_zero() -> None:
    metrics = Metrics()
    assert value(metrics, "webhooks_total", outcome="received") == 0
    assert value(metrics, "webhook_rejections_total", reason="stale") == 0
    metrics.webhook("received")
    metrics.webhook("rejected", "stale")
    assert value(metrics, "webhooks_total", outcome="received") == 1
    assert value(metrics, "webhooks_total", outcome="rejected") == 1
    assert value(metrics, "webhook_rejections_total", reason="stale") == 1


def test_gauges() -> None:
    metrics = Metrics()
    metrics.set_queue_depth(7)
    metrics.set_leader(True)
    metrics.set_drift("catalog", 3)
    assert value(metrics, "queue_depth") == 7
    assert value(metrics, "leader") == 1
    assert value(metrics, "drift_objects", domain="catalog") == 3
    metrics.set_leader(False)
    assert value(metrics, "leader") == 0


def test_two_instances_do_not_share_a_registry() -> None:
    first, second = Metrics(), Metrics()
    first.webhook("duplicate")
    assert value(first, "webhooks_total", outcome="duplicate") == 1
    assert value(second, "webhooks_total", outcome="duplicate") == 0

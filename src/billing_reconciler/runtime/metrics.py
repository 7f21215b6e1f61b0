"""Prometheus metrics of the controller, and the `/metrics` route that exposes them.

`Metrics` owns its own `CollectorRegistry` rather than the process-global one, so two apps in
one process (tests, the benchmark) never collide over metric names. Every name starts with
`billing_reconciler_` but a domain's facts (`Registration.facts`), gauges named by the
domain (`billing_meter_outbox_depth`); docs/serve.md lists each metric with its labels.

Label values are bounded on purpose: domains are the few configured ones, Stripe endpoints
are templates (`/v1/prices/{id}`, never an id), webhook outcomes and rejection reasons are
closed vocabularies below.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Final, Literal

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from billing_reconciler.planning.plan import DomainFact
from billing_reconciler.store import RunResult
from billing_reconciler.stripe_gateway import RequestOutcome

_log = structlog.get_logger(__name__)

PREFIX: Final = "billing_reconciler"

# received: stored (first time); duplicate: stored before; rejected: 4xx, nothing stored;
# failed: 5xx on our side (store down, no secret configured), Stripe will retry.
WebhookOutcome = Literal["received", "duplicate", "rejected", "failed"]
WEBHOOK_OUTCOMES: Final[tuple[WebhookOutcome, ...]] = (
    "received",
    "duplicate",
    "rejected",
    "failed",
)

RejectReason = Literal["too_large", "missing_signature", "bad_signature", "stale", "bad_payload"]
REJECT_REASONS: Final[tuple[RejectReason, ...]] = (
    "too_large",
    "missing_signature",
    "bad_signature",
    "stale",
    "bad_payload",
)

# Run results (the store's RunResult values) that count as an error, and as a success; any
# other (e.g. `interrupted` by a shutdown) is neither.
FAILED_RESULT: Final = RunResult.FAILED.value
SUCCESSFUL_RESULTS: Final = frozenset(
    {RunResult.NO_CHANGES.value, RunResult.CHANGES_PENDING.value, RunResult.APPLIED.value}
)

# Reconciles take from tens of milliseconds (nothing changed, small catalog) to minutes (a
# first apply paced at 25 req/s).
_DURATION_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """The controller's metrics; the `observe_*`/`set_*` methods are safe from any thread."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._clock = clock
        r = self.registry
        self.reconcile_runs = Counter(
            f"{PREFIX}_reconcile_runs", "Reconcile runs finished.", ["domain", "result"], registry=r
        )
        self.reconcile_duration = Histogram(
            f"{PREFIX}_reconcile_duration_seconds",
            "Wall time of a reconcile run.",
            ["domain"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.reconcile_errors = Counter(
            f"{PREFIX}_reconcile_errors", "Reconcile runs that failed.", ["domain"], registry=r
        )
        self.last_success = Gauge(
            f"{PREFIX}_reconcile_last_success_timestamp_seconds",
            "Unix time of the last reconcile run that did not fail.",
            ["domain"],
            registry=r,
        )
        self.drift = Gauge(
            f"{PREFIX}_drift_objects",
            "Objects whose live state drifted from what we applied, at the last plan.",
            ["domain"],
            registry=r,
        )
        self.stripe_requests = Counter(
            f"{PREFIX}_stripe_requests",
            "Logical Stripe API calls by final HTTP status (`error`: no response).",
            ["method", "endpoint", "status"],
            registry=r,
        )
        self.stripe_retries = Counter(
            f"{PREFIX}_stripe_retries",
            "Extra attempts the gateway made after transient failures.",
            ["endpoint"],
            registry=r,
        )
        self.stripe_rate_limited = Counter(
            f"{PREFIX}_stripe_rate_limited",
            "Stripe answers of 429 Too Many Requests, including ones a retry absorbed.",
            ["endpoint"],
            registry=r,
        )
        self.webhooks = Counter(
            f"{PREFIX}_webhooks",
            "Webhook deliveries by outcome: received (stored), duplicate, rejected, failed.",
            ["outcome"],
            registry=r,
        )
        self.webhook_rejections = Counter(
            f"{PREFIX}_webhook_rejections",
            "Rejected webhook deliveries by reason.",
            ["reason"],
            registry=r,
        )
        self.queue_depth = Gauge(
            f"{PREFIX}_queue_depth", "Reconcile requests waiting in the work queue.", registry=r
        )
        self.leader = Gauge(
            f"{PREFIX}_leader", "1 while this replica holds the leader lock, else 0.", registry=r
        )
        # Known label values start at zero, so rate() and absent() work from the first scrape.
        for outcome in WEBHOOK_OUTCOMES:
            self.webhooks.labels(outcome=outcome)
        for reason in REJECT_REASONS:
            self.webhook_rejections.labels(reason=reason)

    def reconcile_finished(self, domain: str, result: str, seconds: float) -> None:
        """Record one finished run; `result` is a `store.RunResult` value (`failed`, ...)."""
        self.reconcile_runs.labels(domain=domain, result=str(result)).inc()
        self.reconcile_duration.labels(domain=domain).observe(seconds)
        if result == FAILED_RESULT:
            self.reconcile_errors.labels(domain=domain).inc()
        elif result in SUCCESSFUL_RESULTS:
            self.last_success.labels(domain=domain).set(self._clock())

    def observe_stripe_request(self, outcome: RequestOutcome) -> None:
        """The gateway's `on_request` hook: one call per logical Stripe request."""
        status = "error" if outcome.status is None else str(outcome.status)
        self.stripe_requests.labels(
            method=outcome.method, endpoint=outcome.endpoint, status=status
        ).inc()
        if outcome.retries:
            self.stripe_retries.labels(endpoint=outcome.endpoint).inc(outcome.retries)
        if outcome.rate_limited:
            self.stripe_rate_limited.labels(endpoint=outcome.endpoint).inc(outcome.rate_limited)

    def webhook(self, outcome: WebhookOutcome, reason: RejectReason | None = None) -> None:
        """Count one webhook delivery; rejections say why."""
        self.webhooks.labels(outcome=outcome).inc()
        if reason is not None:
            self.webhook_rejections.labels(reason=reason).inc()

    def set_queue_depth(self, depth: int) -> None:
        self.queue_depth.set(depth)

    def set_leader(self, is_leader: bool) -> None:
        self.leader.set(1 if is_leader else 0)

    def set_drift(self, domain: str, count: int) -> None:
        self.drift.labels(domain=domain).set(count)

    def watch_facts(self, source: Callable[[], Sequence[DomainFact]]) -> None:
        """Export a domain's facts (`Registration.facts`, e.g. bound to the store) as gauges
        read at scrape time: each scrape calls `source` and shows each fact as the gauge it
        names. Not set after a pass: a pass can take minutes (the leader's long send of a
        backlog), and a gauge set after it would show the state before it all along."""
        self.registry.register(_FactsCollector(source))


class _FactsCollector(Collector):
    """A scrape-time collector of one facts source; an unreadable source (store down) is
    logged and left out of that scrape, never an error of `/metrics`."""

    def __init__(self, source: Callable[[], Sequence[DomainFact]]) -> None:
        self._source = source

    def describe(self) -> list[Metric]:
        # Nothing up front: registering must not read the store (the names come with it).
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            facts = list(self._source())
        except Exception as error:
            _log.warning("domain facts unreadable", error=str(error))
            return
        for fact in facts:
            family = GaugeMetricFamily(fact.metric, fact.help)
            family.add_metric([], fact.value)
            yield family


def metrics_router(metrics: Metrics) -> APIRouter:
    """`GET /metrics`: the text exposition format (OpenMetrics when the scraper asks for it)."""
    router = APIRouter()

    @router.get("/metrics")
    def scrape(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(content=encoder(metrics.registry), media_type=content_type)

    return router

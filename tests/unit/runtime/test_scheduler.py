"""The refresh schedule: a first run per domain at start, then one interval job per enabled
domain, with jitter, coalescing and one instance at a time. No test waits for a timer."""

from __future__ import annotations

from billing_reconciler.runtime.events import ReconcileRequest
from billing_reconciler.runtime.scheduler import (
    RefreshScheduler,
    ScheduledDomain,
    jitter_for,
)


def test_every_domain_runs_at_start_and_enabled_ones_get_an_interval_job() -> None:
    enqueued: list[ReconcileRequest] = []
    scheduler = RefreshScheduler(
        [ScheduledDomain("catalog", 300), ScheduledDomain("invoice", 0)],
        enqueue=enqueued.append,
    )
    scheduler.start()
    try:
        assert enqueued == [
            ReconcileRequest("catalog", None, "start"),
            ReconcileRequest("invoice", None, "start"),
        ]
        assert scheduler.job_intervals() == {"refresh/catalog": 300.0}
        [job] = scheduler.jobs()
        assert job.coalesce is True
        assert job.max_instances == 1
        assert job.trigger.jitter == 30
        assert list(job.args) == [ReconcileRequest("catalog", None, "schedule")]
    finally:
        scheduler.stop()


def test_jitter_is_a_tenth_of_the_interval_up_to_a_minute() -> None:
    assert jitter_for(60) == 6
    assert jitter_for(300) == 30
    assert jitter_for(3600) == 60

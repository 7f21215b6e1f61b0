"""The refresh schedule: every domain reconciles once at start, then every `refresh_interval`.

APScheduler 3.x `BackgroundScheduler`, one interval job per domain. A job only enqueues a
whole-domain `ReconcileRequest`: the work queue runs it, coalesces it with whatever is already
waiting, and backs it off when it fails, so the job itself never blocks and never overlaps
(`coalesce=True`, `max_instances=1` are belt and braces). Jitter spreads replicas and domains
apart, as Flux does, so a fleet restarted together does not hit Stripe in lockstep. An
interval of 0 disables a domain's schedule; it still runs once at start and on webhooks.

Intervals are read when `serve` starts: changing `refresh_interval` needs a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from billing_reconciler.runtime.events import ReconcileRequest

SCHEDULE_REASON = "schedule"
START_REASON = "start"

# At most this share of an interval (and never more than a minute) of random shift per run.
JITTER_FRACTION = 0.1
MAX_JITTER_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class ScheduledDomain:
    name: str
    refresh_seconds: int


def jitter_for(refresh_seconds: int) -> float:
    return min(refresh_seconds * JITTER_FRACTION, MAX_JITTER_SECONDS)


class RefreshScheduler:
    """Owns the `BackgroundScheduler`; `start()` also enqueues each domain's first run."""

    def __init__(
        self,
        domains: Iterable[ScheduledDomain],
        *,
        enqueue: Callable[[ReconcileRequest], object],
    ) -> None:
        self._domains = tuple(domains)
        self._enqueue = enqueue
        self._scheduler = BackgroundScheduler(timezone=UTC)
        # APScheduler logs every job run at INFO through stdlib logging: noise every interval.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)

    def start(self) -> None:
        for domain in self._domains:
            self._enqueue(ReconcileRequest(domain.name, None, START_REASON))
            if domain.refresh_seconds > 0:
                self._scheduler.add_job(
                    self._enqueue,
                    trigger=IntervalTrigger(
                        seconds=domain.refresh_seconds, jitter=jitter_for(domain.refresh_seconds)
                    ),
                    args=[ReconcileRequest(domain.name, None, SCHEDULE_REASON)],
                    id=f"refresh/{domain.name}",
                    name=f"refresh {domain.name}",
                    coalesce=True,
                    max_instances=1,
                    # A late fire (machine suspended, GIL-bound apply) still runs, once.
                    misfire_grace_time=None,
                )
        self._scheduler.start()

    def jobs(self) -> list[Any]:
        """APScheduler's jobs (for tests and diagnostics)."""
        return list(self._scheduler.get_jobs())

    def job_intervals(self) -> dict[str, float]:
        """Seconds between runs of each scheduled job."""
        return {job.id: float(job.trigger.interval.total_seconds()) for job in self.jobs()}

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

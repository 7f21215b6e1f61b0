"""The outbox's depth and oldest unsent age in `reconcile status` and as Prometheus gauges
(issue 12 item 2: "the plan and status show the outbox depth and the oldest unsent event's
age; a metric too")."""

from __future__ import annotations

import functools
import time

from prometheus_client import generate_latest

from billing_reconciler.cli.status_cmd import DesiredReport, collect_status, render_status_text
from billing_reconciler.effects import credits as credits_effects
from billing_reconciler.planning.plan import DomainFact
from billing_reconciler.registry import CREDITS
from billing_reconciler.runtime.metrics import Metrics
from tests.integration.credits.conftest import MeterWorld


def test_status_and_metrics_show_the_outbox_depth_and_oldest_age(meters: MeterWorld) -> None:
    meters.open(["acme"])
    meters.usages("acme", 3, at=time.time() - 60)
    meters.usages("acme", 1, at=time.time() - 40 * 86400, prefix="old")
    time.sleep(1.1)  # the oldest row is then at least a second old
    desired = DesiredReport(True, "test", "rev", ())
    report = collect_status(meters.store, desired)
    facts = report["domains"]["credits"]["facts"]
    assert facts["meter_outbox_depth"] == 4
    assert facts["meter_outbox_oldest_age_seconds"] >= 1
    assert facts["meter_events_refused"] == 0
    assert "meter outbox depth: 4" in render_status_text(report)
    assert "facts" not in report["domains"]["customers"]

    meters.send()  # three sent, the 40-day-old one refused
    metrics = Metrics()
    metrics.watch_facts(functools.partial(credits_effects.facts, meters.store))
    text = generate_latest(metrics.registry).decode()
    assert "billing_meter_outbox_depth 0.0" in text
    assert "billing_meter_outbox_oldest_age_seconds 0.0" in text
    assert "billing_meter_events_refused 1.0" in text
    after = collect_status(meters.store, desired)["domains"]["credits"]["facts"]
    assert after == {
        "meter_outbox_depth": 0,
        "meter_outbox_oldest_age_seconds": 0.0,
        "meter_events_refused": 1,
        "meter_events_failing": 0,
        "meter_events_undeliverable": 0,
    }
    assert "billing_meter_events_failing 0.0" in text


def test_the_gauges_are_read_at_scrape_time_not_after_a_pass(meters: MeterWorld) -> None:
    """Tester T1 F5: the leader's gauges were set after its credits pass, and its pass is
    the long send of the backlog, so the leader showed depth 0 while thousands waited. The
    gauges now read the store at each scrape, whatever pass is (or is not) running."""
    metrics = Metrics()
    assert CREDITS.facts is not None
    metrics.watch_facts(functools.partial(CREDITS.facts, meters.store))
    meters.open(["acme"])
    meters.usages("acme", 3, at=time.time() - 60)
    assert "billing_meter_outbox_depth 3.0" in generate_latest(metrics.registry).decode()
    meters.usages("acme", 2, at=time.time() - 30, prefix="more")
    text = generate_latest(metrics.registry).decode()  # no pass ran in between
    assert "billing_meter_outbox_depth 5.0" in text
    meters.send()
    assert "billing_meter_outbox_depth 0.0" in generate_latest(metrics.registry).decode()


def test_an_unreadable_facts_source_leaves_the_scrape_working() -> None:
    def broken() -> list[DomainFact]:
        raise ConnectionError("store down")

    metrics = Metrics()
    metrics.watch_facts(broken)
    text = generate_latest(metrics.registry).decode()
    assert "billing_reconciler_leader" in text
    assert "billing_meter_outbox_depth" not in text

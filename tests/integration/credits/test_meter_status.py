"""The outbox's depth and oldest unsent age in `reconcile status` and as Prometheus gauges
(issue 12 item 2: "the plan and status show the outbox depth and the oldest unsent event's
age; a metric too")."""

from __future__ import annotations

import time

from prometheus_client import generate_latest

from billing_reconciler.cli.status_cmd import DesiredReport, collect_status, render_status_text
from billing_reconciler.effects import credits as credits_effects
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
    assert CREDITS.facts is not None
    metrics.set_facts(CREDITS.facts(meters.store))
    metrics.set_facts(credits_effects.facts(meters.store))  # a second pass: same gauges
    text = generate_latest(metrics.registry).decode()
    assert "billing_meter_outbox_depth 0.0" in text
    assert "billing_meter_outbox_oldest_age_seconds 0.0" in text
    assert "billing_meter_events_refused 1.0" in text
    after = collect_status(meters.store, desired)["domains"]["credits"]["facts"]
    assert after == {
        "meter_outbox_depth": 0,
        "meter_outbox_oldest_age_seconds": 0.0,
        "meter_events_refused": 1,
    }

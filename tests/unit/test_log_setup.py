"""Logs: JSON lines off a terminal, tracebacks included, secrets scrubbed everywhere."""

from __future__ import annotations

import json

import pytest
import structlog

from billing_reconciler.log_setup import configure_logging

KEY = "sk_live_" + "Q" * 20 + "wxyz"


def test_json_logs_carry_tracebacks_and_never_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json=True)
    log = structlog.get_logger("test")
    try:
        raise RuntimeError(f"Stripe said no to {KEY}")
    except RuntimeError:
        log.exception("apply failed", api_key=KEY)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["event"] == "apply failed"
    assert "Traceback" in record["exception"]
    assert "RuntimeError" in record["exception"]
    assert KEY not in line
    assert record["api_key"].startswith("sk_live_")

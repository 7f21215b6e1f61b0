"""Logs: JSON lines off a terminal, tracebacks included, secrets scrubbed everywhere."""

from __future__ import annotations

import io
import json
import sys

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


def test_debug_lines_show_only_at_debug(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BILLING_LOG_LEVEL", raising=False)
    configure_logging(json=True)
    structlog.get_logger("test").debug("hidden")
    assert "hidden" not in capsys.readouterr().err
    configure_logging(json=True, level_name="DEBUG")
    structlog.get_logger("test").debug("shown")
    assert json.loads(capsys.readouterr().err.strip())["event"] == "shown"


def test_environment_sets_the_level_and_the_option_wins(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLING_LOG_LEVEL", "warning")
    configure_logging(json=True)
    structlog.get_logger("test").info("quiet")
    assert "quiet" not in capsys.readouterr().err
    configure_logging(json=True, level_name="info")
    structlog.get_logger("test").info("loud")
    assert "loud" in capsys.readouterr().err


def test_an_invalid_environment_level_names_the_variable_and_the_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BILLING_LOG_LEVEL", "verbose")
    with pytest.raises(ValueError, match=r"BILLING_LOG_LEVEL must be one of debug\|info\|warning"):
        configure_logging(json=True)


def test_an_invalid_option_level_is_refused() -> None:
    with pytest.raises(ValueError, match=r"debug\|info\|warning.*'loud'"):
        configure_logging(json=True, level_name="loud")


def test_lines_go_to_the_current_stderr_even_after_it_was_swapped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure_logging(json=True, level_name="info")
    swapped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", swapped)
    structlog.get_logger("t").info("after the swap")
    assert "after the swap" in swapped.getvalue()


def test_a_terminal_gets_no_traceback_unless_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    for level, shown in (("info", False), ("debug", True)):
        out = io.StringIO()
        monkeypatch.setattr(sys, "stderr", out)
        configure_logging(json=False, level_name=level)
        try:
            raise ZeroDivisionError("boom")
        except ZeroDivisionError:
            structlog.get_logger("t").exception("internal error")
        assert ("Traceback (most recent call last)" in out.getvalue()) is shown, level
        assert "internal error" in out.getvalue()

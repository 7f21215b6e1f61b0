"""The root cause of a connection failure, dug out of the SDK/requests/urllib3 wrappers."""

from __future__ import annotations

import socket

from billing_reconciler.stripe_gateway.errors import connection_failure_reason


class ConnectTimeoutError(Exception):
    """Named like urllib3's, whose NewConnectionError subclasses it even when refused."""


def wrapped(inner: BaseException, outer: BaseException) -> BaseException:
    outer.__cause__ = inner
    return outer


def test_the_innermost_os_error_wins_over_a_timeout_named_wrapper() -> None:
    refused = wrapped(ConnectionRefusedError(111, "Connection refused"), ConnectTimeoutError())
    outer = wrapped(refused, RuntimeError("outer"))
    assert connection_failure_reason(outer) == "connection refused"


def test_dns_failures_and_timeouts_have_short_reasons() -> None:
    dns = socket.gaierror(-2, "Name or service not known")
    assert connection_failure_reason(RuntimeError("x", dns)) == "name or service not known"
    timeout = wrapped(TimeoutError("timed out"), OSError())
    assert connection_failure_reason(timeout) == "timed out"


def test_an_unknown_failure_falls_back_to_its_class_name() -> None:
    assert connection_failure_reason(ValueError("odd")) == "ValueError"

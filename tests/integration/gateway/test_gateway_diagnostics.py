"""What the gateway tells a user over real HTTP: debug request lines, a rejected key, an
unreachable API base. Logs are captured from stderr exactly as the CLI writes them."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from billing_reconciler.log_setup import configure_logging
from billing_reconciler.model import Kind
from billing_reconciler.stripe_gateway import (
    Operation,
    PermanentStripeError,
    RetryPolicy,
    StripeGateway,
    TransientStripeError,
    observe_catalog,
    write,
)
from tests.fixtures.emulator import EmulatorHandle

from .conftest import API_KEY, fast_retry

BODY_TEXT = "Confidential Product Title"


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def log_lines(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_debug_logs_every_attempt_without_body_or_key(
    emu: EmulatorHandle, gateway: StripeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(json=True, level_name="debug")
    emu.control.add_fault(method="POST", path_prefix="/v1/products", nth=1, kind="500")

    write(
        gateway,
        kind=Kind.PRODUCT,
        operation=Operation.CREATE,
        params={"name": BODY_TEXT, "metadata": {"br_key": "product/team"}},
        idempotency_key="diag-product-team",
    )
    observe_catalog(gateway)

    err = capsys.readouterr().err
    requests = [r for r in log_lines(err) if r["event"] == "stripe request"]
    posts = [r for r in requests if r["method"] == "POST"]
    assert [(p["path"], p["status"], p["retries"]) for p in posts] == [
        ("/v1/products", 500, 0),
        ("/v1/products", 200, 1),
    ]
    served = emu.control.requests(method="POST", path_prefix="/v1/products")
    assert [p["request_id"] for p in posts] == [r.request_id for r in served]
    assert all(p["idempotency_key"] == "diag-product-team" for p in posts)
    assert all(isinstance(r["latency_ms"], float) and r["level"] == "debug" for r in requests)
    gets = [r for r in requests if r["method"] == "GET"]
    assert gets
    assert all("?" not in r["path"] and r["status"] == 200 for r in gets)
    assert API_KEY not in err
    assert BODY_TEXT not in err


def test_requests_are_not_logged_at_info(
    gateway: StripeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(json=True, level_name="info")
    observe_catalog(gateway)
    assert "stripe request" not in capsys.readouterr().err


def test_a_rejected_key_says_so_with_the_masked_key(emu: EmulatorHandle) -> None:
    # The emulator is test mode only: it answers a live key with 401, as Stripe answers a
    # revoked or mistyped one.
    key = "sk_live_" + "R3j" * 8 + "wxyz"
    gateway = StripeGateway(api_key=key, api_base=emu.url, retry=fast_retry())

    with pytest.raises(PermanentStripeError) as raised:
        observe_catalog(gateway)

    assert str(raised.value) == (
        "Stripe rejected the API key (401): check STRIPE_API_KEY (sk_live_…wxyz)"
    )
    assert raised.value.http_status == 401
    assert key not in repr(raised.value)
    # One attempt: a refused key stays refused.
    assert len(emu.control.requests()) == 1


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens once the probe is closed


def test_an_unreachable_base_warns_at_once_and_ends_naming_the_url(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(json=True)  # the default level: the warning must show without debug
    base = f"http://127.0.0.1:{closed_port()}"
    seen_before_first_sleep: list[tuple[float, str]] = []
    started = time.monotonic()

    def sleep(_seconds: float) -> None:
        # The default backoff, not slept: what matters is what the user sees before it.
        if not seen_before_first_sleep:
            seen_before_first_sleep.append((time.monotonic() - started, capsys.readouterr().err))

    gateway = StripeGateway(api_key=API_KEY, api_base=base, retry=RetryPolicy(sleep=sleep))
    with pytest.raises(TransientStripeError) as raised:
        observe_catalog(gateway)

    assert str(raised.value) == f"cannot reach {base}: connection refused"
    assert "support@stripe.com" not in str(raised.value)
    [(elapsed, early_err)] = seen_before_first_sleep
    assert elapsed < 1.0
    [warning] = log_lines(early_err)
    assert warning["level"] == "warning"
    assert warning["event"] == "stripe unreachable, retrying"
    assert (warning["base_url"], warning["reason"]) == (base, "connection refused")
    later = log_lines(capsys.readouterr().err)
    assert [w["attempt"] for w in later] == [2, 3, 4]

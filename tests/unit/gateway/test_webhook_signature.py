"""Webhook signatures: Stripe's scheme via the SDK, any configured secret, a two-sided window."""

from __future__ import annotations

import pytest
import stripe

from billing_reconciler.config import Secret
from billing_reconciler.stripe_gateway import (
    WebhookSignatureError,
    sign_webhook_payload,
    signature_timestamp,
    verify_webhook_signature,
)

NEW, OLD = Secret("whsec_new0000000000000000"), Secret("whsec_old0000000000000000")
NOW = 1_800_000_000
PAYLOAD = '{"id": "evt_1", "type": "product.updated"}'


def signed(secret: Secret = NEW, timestamp: int = NOW, payload: str = PAYLOAD) -> str:
    return sign_webhook_payload(payload=payload, secret=secret, timestamp=timestamp)


def verify(header: str | None, *, payload: str = PAYLOAD, now: float = NOW) -> int:
    return verify_webhook_signature(
        payload=payload, header=header, secrets=[NEW, OLD], tolerance_seconds=300, now=now
    )


def reason(header: str | None, **kwargs: object) -> str:
    with pytest.raises(WebhookSignatureError) as caught:
        verify(header, **kwargs)  # type: ignore[arg-type]
    return caught.value.reason


def test_the_header_is_stripes_own() -> None:
    header = signed()
    assert header.startswith(f"t={NOW},v1=")
    event = stripe.Webhook.construct_event(PAYLOAD, header, NEW.reveal(), tolerance=None)  # type: ignore[arg-type]
    assert event.id == "evt_1"


def test_any_configured_secret_verifies() -> None:
    assert verify(signed(NEW)) == NOW
    assert verify(signed(OLD)) == NOW
    assert reason(signed(Secret("whsec_other000000000000"))) == "mismatch"


def test_a_header_with_signatures_of_both_secrets_verifies() -> None:
    # Stripe sends one v1 per active secret while a rolled secret is still valid.
    other = signed(Secret("whsec_gone0000000000000")).split(",")[1]
    assert verify(f"{signed(OLD)},{other}") == NOW


def test_the_window_is_two_sided() -> None:
    assert verify(signed(timestamp=NOW - 300)) == NOW - 300
    assert verify(signed(timestamp=NOW + 300)) == NOW + 300
    assert reason(signed(timestamp=NOW - 301)) == "stale"
    assert reason(signed(timestamp=NOW + 301)) == "stale"


def test_zero_tolerance_disables_the_window() -> None:
    header = signed(timestamp=1)
    assert (
        verify_webhook_signature(
            payload=PAYLOAD, header=header, secrets=[NEW], tolerance_seconds=0, now=NOW
        )
        == 1
    )


def test_missing_malformed_and_foreign_headers() -> None:
    assert reason(None) == "missing"
    assert reason("") == "missing"
    assert reason("garbage") == "mismatch"
    assert reason(f"t={NOW}") == "mismatch"
    assert reason(signed().replace("v1=", "v0=")) == "mismatch"


def test_another_body_does_not_verify() -> None:
    assert reason(signed(payload='{"id": "evt_2"}')) == "mismatch"


def test_a_stale_forgery_is_a_mismatch_not_stale() -> None:
    assert reason(signed(Secret("whsec_other000000000000"), timestamp=1)) == "mismatch"


def test_no_secret_verifies_nothing() -> None:
    with pytest.raises(WebhookSignatureError):
        verify_webhook_signature(payload=PAYLOAD, header=signed(), secrets=[], now=NOW)


def test_errors_never_show_a_secret() -> None:
    with pytest.raises(WebhookSignatureError) as caught:
        verify(signed(Secret("whsec_other000000000000")))
    assert "whsec_" not in str(caught.value)


def test_signature_timestamp_reads_the_first_t() -> None:
    assert signature_timestamp("t=5,v1=ab,t=6") == 5
    assert signature_timestamp("v1=ab") is None
    assert signature_timestamp("t=x,v1=ab") is None

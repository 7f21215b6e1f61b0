"""Stripe webhook signatures, checked by the SDK's own `WebhookSignature.verify_header`.

The scheme is Stripe's (`Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`),
so we let the SDK compute and compare it rather than re-implement it; this module only adds
what the receiver needs around it:

- **rotation**: a delivery is authentic when it verifies against *any* configured secret
  (Stripe signs with the new and, during a roll, the old secret; operators list both);
- **an injected clock** and a **two-sided** tolerance: the SDK compares with `time.time()` and
  only rejects old timestamps; we also reject timestamps from the future (a replay window
  that stays open for as long as the sender's clock is ahead is still a replay window);
- error reasons a receiver can count without ever seeing a secret.

The timestamp is checked after the signature, so only an authentic delivery learns that it
was too old.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

import stripe

from billing_reconciler.config import Secret

SignatureFailure = Literal["missing", "mismatch", "stale"]

SIGNATURE_HEADER = "Stripe-Signature"
DEFAULT_TOLERANCE_SECONDS = 300


class WebhookSignatureError(Exception):
    """The delivery is not authentic (or too old); `reason` is safe to log and count."""

    def __init__(self, reason: SignatureFailure, message: str) -> None:
        super().__init__(message)
        self.reason: SignatureFailure = reason


def signature_timestamp(header: str) -> int | None:
    """The header's `t=` value, read exactly as the SDK reads it (the first `t`)."""
    for item in header.split(","):
        name, _, value = item.partition("=")
        if name == "t":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def verify_webhook_signature(
    *,
    payload: str,
    header: str | None,
    secrets: Sequence[Secret],
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> int:
    """Check `header` against every secret; return the signed timestamp, or raise.

    `payload` is the raw body decoded as UTF-8, unchanged (re-serialized JSON would not
    verify). `tolerance_seconds=0` disables the timestamp check, as in the SDK.
    """
    if not header:
        raise WebhookSignatureError("missing", f"no {SIGNATURE_HEADER} header")
    if not any(_verifies(payload, header, secret) for secret in secrets):
        raise WebhookSignatureError("mismatch", "signature does not match any webhook secret")
    timestamp = signature_timestamp(header)
    assert timestamp is not None, "the SDK verified a header without a timestamp"
    current = time.time() if now is None else now
    if tolerance_seconds and abs(current - timestamp) > tolerance_seconds:
        raise WebhookSignatureError(
            "stale", f"timestamp outside the {tolerance_seconds} s tolerance"
        )
    return timestamp


def _verifies(payload: str, header: str, secret: Secret) -> bool:
    try:
        # tolerance=None: the SDK's check is one-sided and reads the wall clock; ours is above.
        stripe.WebhookSignature.verify_header(payload, header, secret.reveal(), None)
    except stripe.SignatureVerificationError:
        return False
    return True


def sign_webhook_payload(*, payload: str, secret: Secret, timestamp: int) -> str:
    """A `Stripe-Signature` header for `payload`, as Stripe would send it (tests, benchmarks)."""
    header: str = stripe.WebhookSignature.generate_signature_header(
        payload, secret.reveal(), timestamp=timestamp
    )
    return header

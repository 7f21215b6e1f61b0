"""What every contract test shares: the recording mode, the vcrpy recorder, and where the
suite talks to (nothing in replay mode, the emulator or Stripe test mode when recording)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import vcr

CASSETTES = Path(__file__).parent / "cassettes"
RECORDING = os.environ.get("BILLING_VCR_RECORD") == "all"
REAL_KEY = os.environ.get("STRIPE_API_KEY", "")
AGAINST_STRIPE = RECORDING and REAL_KEY.startswith("sk_test_")
# Nothing listens here: in replay mode every request must be answered by the cassette.
UNREACHABLE = "http://127.0.0.1:9"


def recorder() -> vcr.VCR:
    return vcr.VCR(
        cassette_library_dir=str(CASSETTES),
        record_mode="all" if RECORDING else "none",
        match_on=["method", "path", "query", "body"],
        filter_headers=["authorization", "x-stripe-client-user-agent", "user-agent"],
        decode_compressed_response=True,
    )


def api_for(request: pytest.FixtureRequest, cassette: Path) -> Iterator[tuple[str, str]]:
    """(api_base, api_key) of the server the suite talks to in this mode."""
    if not RECORDING:
        if not cassette.exists():
            pytest.fail(f"{cassette} is missing: record it with BILLING_VCR_RECORD=all")
        yield UNREACHABLE, "sk_test_replay"
        return
    if AGAINST_STRIPE:
        yield "https://api.stripe.com", REAL_KEY
        return
    emulator = request.getfixturevalue("emulator")
    yield emulator.url, "sk_test_contract"

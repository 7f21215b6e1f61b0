"""Gateway integration fixtures: a fresh emulator account and a gateway pointed at it."""

from __future__ import annotations

import random

import pytest

from billing_reconciler.stripe_gateway import RetryPolicy, StripeGateway
from tests.fixtures.emulator import EmulatorHandle

API_KEY = "sk_test_gateway_integration_0000"


def fast_retry(max_attempts: int = 6) -> RetryPolicy:
    """Real sleeps, but tiny: the suite stays fast while still exercising the backoff path."""
    return RetryPolicy(
        max_attempts=max_attempts, base_delay=0.02, max_delay=0.2, rng=random.Random(4)
    )


@pytest.fixture
def emu(emulator: EmulatorHandle) -> EmulatorHandle:
    """The shared emulator fixture (already reset for each test)."""
    return emulator


@pytest.fixture
def gateway(emu: EmulatorHandle) -> StripeGateway:
    """A gateway at the emulator, paced far above what tests need unless they say otherwise."""
    return StripeGateway(
        api_key=API_KEY,
        api_base=emu.url,
        rate_limit_per_second=1000,
        retry=fast_retry(),
        timeout_seconds=5,
    )

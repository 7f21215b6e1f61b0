"""Contract suite (DESIGN §12): exactly which Stripe calls a fresh reconcile and a no-op make.

Design: **replay, not re-run.** CI replays `cassettes/fresh_apply.yaml` with vcrpy
`record_mode="none"`: no server at all, every response comes from the cassette, and a request
the cassette does not hold (method + path + query + body) fails the test. The ids we send
(`product=prod_…` in a price body, `/v1/products/prod_…` in a repoint path) are the ids the
recorded responses gave us, so exact matching works without an id-blind matcher — and a
changed body (a new parameter, another metadata value, another order of steps) is caught, which
an "ignore ids" comparison against a fresh emulator run would let through. When the cassette was
recorded against Stripe test mode, replay checks our client against real Stripe responses.

Three checks: the live sequence of calls (method, endpoint template, from the gateway's
`on_request` hook) equals `EXPECTED`; the cassette's recorded sequence equals it too; and every
recorded interaction was played (nothing recorded went unasked).

Re-recording: `BILLING_VCR_RECORD=all pytest tests/integration/contract` (`make record`)
records against the emulator, or against Stripe test mode when `STRIPE_API_KEY` starts with
`sk_test_`. The Authorization header is never written to the cassette.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from billing_reconciler.controller import Controller
from billing_reconciler.registry import CATALOG
from billing_reconciler.store import Store
from billing_reconciler.stripe_gateway import RequestOutcome, RetryPolicy, StripeGateway
from tests.integration.catalog.conftest import CATALOG_YAML, converge, write_desired
from tests.integration.contract.recording import (
    CASSETTES,
    RECORDING,
    api_for,
    recorder,
)

CASSETTE = CASSETTES / "fresh_apply.yaml"

LISTS_OF_A_PLAN = [
    ("GET", "/v1/products"),
    ("GET", "/v1/billing/meters"),
    ("GET", "/v1/entitlements/features"),  # no `archived` filter: active and archived
    ("GET", "/v1/prices"),
]
EXPECTED: list[tuple[str, str]] = [
    # plan: observe an empty account (no product has features yet, so none are listed)
    *LISTS_OF_A_PLAN,
    # apply, in the plan's order
    ("POST", "/v1/entitlements/features"),
    ("POST", "/v1/products"),
    ("POST", "/v1/products"),
    ("POST", "/v1/products"),
    ("POST", "/v1/prices"),
    ("POST", "/v1/prices"),
    ("POST", "/v1/prices"),
    ("POST", "/v1/prices"),
    ("POST", "/v1/prices"),
    ("POST", "/v1/products/{product}/features"),
    # default-price repoints; the product with a feature also records it in its
    # `br_features` metadata (after attaching)
    ("POST", "/v1/products/{id}"),
    ("POST", "/v1/products/{id}"),
    ("POST", "/v1/products/{id}"),
    # convergence check: re-observe; the product's record matches, so its features are not
    # listed (ceil(N/100) list calls per type, nothing per product)
    *LISTS_OF_A_PLAN,
    # the second run: a no-op plan, lists only
    *LISTS_OF_A_PLAN,
]

_ID = re.compile(r"/(?:prod|price|feat|mtr|prodft)_[A-Za-z0-9]+")


def _template(method: str, path: str) -> tuple[str, str]:
    """`/v1/products/prod_x/features` -> `/v1/products/{product}/features`, as the gateway
    names endpoints."""
    if path.endswith("/features") and path.startswith("/v1/products/"):
        return method, "/v1/products/{product}/features"
    return method, _ID.sub("/{id}", path)


def _cassette_sequence() -> list[tuple[str, str]]:
    data = yaml.safe_load(CASSETTE.read_text())
    return [
        _template(i["request"]["method"], re.sub(r"^https?://[^/]+|\?.*$", "", i["request"]["uri"]))
        for i in data["interactions"]
    ]


@pytest.fixture
def api(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(api_base, api_key) of the server the suite talks to in this mode."""
    yield from api_for(request, CASSETTE)


def test_fresh_reconcile_then_no_op_makes_exactly_the_recorded_calls(
    tmp_path: Path, api: tuple[str, str]
) -> None:
    base, key = api
    calls: list[RequestOutcome] = []
    gateway = StripeGateway(
        api_key=key,
        api_base=None if base.startswith("https://api.stripe.com") else base,
        rate_limit_per_second=20,
        retry=RetryPolicy(max_attempts=1),  # a retry would be an unrecorded request
        timeout_seconds=30,
        on_request=calls.append,
    )
    # One step at a time: the recorded sequence is then the exact order apply sends requests
    # in (concurrent steps of one batch would complete in any order).
    state = write_desired(
        tmp_path / "desired", CATALOG_YAML, installation="contract", concurrency=1
    )
    store = Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    if RECORDING:
        CASSETTE.unlink(missing_ok=True)  # vcrpy's "all" would append to the old recording
    try:
        with recorder().use_cassette(CASSETTE.name) as cassette:
            controller = Controller(registration=CATALOG, state=state, gateway=gateway, store=store)
            converge(controller)
            assert controller.plan().plan.steps == ()
            if not RECORDING:
                assert cassette.all_played, "recorded calls the reconciler no longer makes"
    finally:
        store.close()

    assert [(c.method, c.endpoint) for c in calls] == EXPECTED
    assert all(c.error is None and c.retries == 0 for c in calls)
    assert _cassette_sequence() == EXPECTED
    assert "authorization" not in CASSETTE.read_text().lower()

"""Contract suite (DESIGN §12, issue 9): one full subscription lifecycle through the real SDK.

A customer on a test clock with `pm_card_visa` as its default payment method; a monthly
subscription (first invoice charged at once); the clock advanced one month (the renewal
invoice drafted, finalized about an hour later and paid); a quantity change with proration at
mid-period (Stripe's documented example: 1000 -> 2000 at half the period gives -500 and
+1000, pending until the next invoice); cancel at period end; the clock advanced past the end.

Same design as `test_fresh_apply_contract.py`: **replay, not re-run.** CI replays
`cassettes/subscription_lifecycle.yaml` with vcrpy `record_mode="none"` and no server; a
request the cassette does not hold (method + path + query + body) fails the test. The ids we
send (`customer=cus_…`, `/v1/subscriptions/sub_…`, `items[0][id]=si_…`) are the ids the
recorded responses gave us, and every timestamp we send is a constant (the test clock starts
at a fixed `frozen_time` and is advanced to fixed times), so exact matching works although the
emulator mints random ids. The outcomes asserted (statuses, invoice totals, proration amounts)
come from the recorded responses, so replay checks what the SDK parses out of them.

Checks: the live sequence of (method, endpoint template) equals `EXPECTED`; the cassette's
recorded sequence equals it too; every recorded interaction was played; key outcomes.

Re-recording: `BILLING_VCR_RECORD=all pytest tests/integration/contract` records against the
emulator, or against Stripe test mode when `STRIPE_API_KEY` starts with `sk_test_`. The
Authorization header is never written to the cassette.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import pytest
import stripe
import yaml

from tests.integration.contract.recording import (
    CASSETTES,
    RECORDING,
    api_for,
    recorder,
)

CASSETTE = CASSETTES / "subscription_lifecycle.yaml"

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, the clock's frozen_time
FEB_1 = 1_769_904_000  # the first renewal
MAR_1 = 1_772_323_200  # the second period's end (February has 28 days in 2026)
HOUR = 3600
MID_FEB = FEB_1 + (MAR_1 - FEB_1) // 2  # 2026-02-15T00:00:00Z: half of the second period
UNIT = 1000

EXPECTED: list[tuple[str, str]] = [
    ("POST", "/v1/test_helpers/test_clocks"),
    ("POST", "/v1/prices"),
    ("POST", "/v1/customers"),
    ("POST", "/v1/payment_methods/{payment_method}/attach"),
    ("POST", "/v1/customers/{id}"),
    ("POST", "/v1/subscriptions"),
    ("GET", "/v1/invoices/{id}"),
    # one month (+ the hour before a renewal invoice is finalized and charged)
    ("POST", "/v1/test_helpers/test_clocks/{id}/advance"),
    ("GET", "/v1/subscriptions/{id}"),
    ("GET", "/v1/invoices/{id}"),
    # mid-period quantity change, prorated
    ("POST", "/v1/test_helpers/test_clocks/{id}/advance"),
    ("POST", "/v1/subscriptions/{id}"),
    ("GET", "/v1/invoiceitems"),
    # cancel at period end, then past the end
    ("POST", "/v1/subscriptions/{id}"),
    ("POST", "/v1/test_helpers/test_clocks/{id}/advance"),
    ("GET", "/v1/subscriptions/{id}"),
    ("GET", "/v1/invoices"),
]

_ID = re.compile(r"/(?:clock|cus|pm|sub|si|in|ii|il|price|prod)_[A-Za-z0-9]+")


def _template(method: str, url: str) -> tuple[str, str]:
    path = urlsplit(url).path
    if path.startswith("/v1/payment_methods/") and path.endswith("/attach"):
        return method, "/v1/payment_methods/{payment_method}/attach"
    return method, _ID.sub("/{id}", path)


def _cassette_sequence() -> list[tuple[str, str]]:
    data = yaml.safe_load(CASSETTE.read_text())
    return [_template(i["request"]["method"], i["request"]["uri"]) for i in data["interactions"]]


class _Recording(stripe.RequestsClient):
    """The SDK's own HTTP client, noting each request it sends (vcrpy patches below it)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
    ) -> tuple[bytes, int, Mapping[str, str]]:
        self.calls.append(_template(method.upper(), url))
        return super().request(method, url, headers, post_data)


@pytest.fixture
def api(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(api_base, api_key) of the server the suite talks to in this mode."""
    yield from api_for(request, CASSETTE)


def _lifecycle(client: stripe.StripeClient) -> dict[str, Any]:
    """The lifecycle; returns what the assertions look at."""
    out: dict[str, Any] = {}
    clock = client.v1.test_helpers.test_clocks.create(
        {"frozen_time": T0, "name": "contract lifecycle"}
    ).id
    price = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": UNIT,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Contract plan"},
        }
    ).id
    customer = client.v1.customers.create(
        {"email": "lifecycle@example.com", "test_clock": clock}
    ).id
    pm = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer})
    updated = client.v1.customers.update(
        customer, {"invoice_settings": {"default_payment_method": pm.id}}
    )
    out["default_pm_is_attached"] = updated.invoice_settings is not None and (
        updated.invoice_settings.default_payment_method == pm.id
    )

    sub = client.v1.subscriptions.create({"customer": customer, "items": [{"price": price}]})
    out["created"] = (sub.status, sub["items"].data[0].current_period_end)
    first = client.v1.invoices.retrieve(str(sub.latest_invoice))
    out["first_invoice"] = (first.status, first.billing_reason, first.total, first.amount_paid)

    advanced = client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": FEB_1 + HOUR})
    out["advanced_1"] = (advanced.status, advanced.frozen_time)
    renewed = client.v1.subscriptions.retrieve(sub.id)
    out["renewed"] = (renewed.status, renewed["items"].data[0].current_period_start)
    renewal = client.v1.invoices.retrieve(str(renewed.latest_invoice))
    out["renewal_invoice"] = (
        renewal.status,
        renewal.billing_reason,
        renewal.total,
        renewal.amount_paid,
        renewal.period_end,
    )

    client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": MID_FEB})
    item = renewed["items"].data[0].id
    changed = client.v1.subscriptions.update(
        sub.id,
        {"items": [{"id": item, "quantity": 2}], "proration_behavior": "create_prorations"},
    )
    out["changed_quantity"] = changed["items"].data[0].quantity
    pending = client.v1.invoice_items.list({"customer": customer, "pending": True})
    out["prorations"] = sorted(
        (ii.amount, ii.proration, ii.period.start, ii.period.end) for ii in pending.data
    )

    canceling = client.v1.subscriptions.update(sub.id, {"cancel_at_period_end": True})
    out["canceling"] = (
        canceling.status,
        canceling.cancel_at_period_end,
        canceling.cancel_at,
        canceling.canceled_at,
    )

    client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": MAR_1 + 2 * HOUR})
    ended = client.v1.subscriptions.retrieve(sub.id)
    out["ended"] = (ended.status, ended.ended_at)
    invoices = client.v1.invoices.list({"subscription": sub.id})
    out["invoices"] = [
        (i.billing_reason, i.status, i.total, i.amount_paid) for i in reversed(invoices.data)
    ]
    return out


def test_subscription_lifecycle_makes_exactly_the_recorded_calls(
    api: tuple[str, str],
) -> None:
    base, key = api
    http = _Recording()
    client = stripe.StripeClient(
        key,
        base_addresses={"api": base},
        http_client=http,
        max_network_retries=0,  # a retry would be an unrecorded request
    )
    if RECORDING:
        CASSETTE.unlink(missing_ok=True)  # vcrpy's "all" would append to the old recording
    with recorder().use_cassette(CASSETTE.name) as cassette:
        out = _lifecycle(client)
        if not RECORDING:
            assert cassette.all_played, "recorded calls the lifecycle no longer makes"

    assert http.calls == EXPECTED
    assert _cassette_sequence() == EXPECTED
    assert "authorization" not in CASSETTE.read_text().lower()

    assert out["default_pm_is_attached"]
    assert out["created"] == ("active", FEB_1)
    assert out["first_invoice"] == ("paid", "subscription_create", UNIT, UNIT)
    assert out["advanced_1"] == ("ready", FEB_1 + HOUR)
    assert out["renewed"] == ("active", FEB_1)
    assert out["renewal_invoice"] == ("paid", "subscription_cycle", UNIT, UNIT, FEB_1)
    assert out["changed_quantity"] == 2
    # "Unused time" on 1 × 1000 and "Remaining time" on 2 × 1000 for half the period
    assert out["prorations"] == [(-UNIT // 2, True, MID_FEB, MAR_1), (UNIT, True, MID_FEB, MAR_1)]
    # `canceled_at` is the time of the update that set `cancel_at_period_end` (Stripe's
    # `Subscription.canceled_at` docs), the test clock's frozen time then.
    assert out["canceling"] == ("active", True, MAR_1, MID_FEB)
    assert out["ended"] == ("canceled", MAR_1)
    # At the end no new period is billed, but the pending prorations are: "If you've set the
    # subscription to cancel at the end of the period, any pending prorations are also left
    # in place and collected at the end of the period" (Stripe's cancel-subscription docs).
    # -500 + 1000 = 500, on one final invoice.
    assert out["invoices"] == [
        ("subscription_create", "paid", UNIT, UNIT),
        ("subscription_cycle", "paid", UNIT, UNIT),
        ("subscription_cycle", "paid", UNIT // 2, UNIT // 2),
    ]

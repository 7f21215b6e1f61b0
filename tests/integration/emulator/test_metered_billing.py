"""Metered subscription items through the real SDK over HTTP with a test clock: usage
recorded with meter events (`/v1/billing/meter_events`) is billed in arrears on the next
renewal invoice, aggregated per the meter's formula (sum, count, last) and priced per unit,
through graduated tiers or through volume tiers, as a line whose `quantity` is the usage;
`create_preview` shows the usage so far; the served shapes (tests/sdk_shapes.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import stripe

from tests.fixtures.emulator import TEST_API_KEY, EmulatorHandle
from tests.sdk_shapes import shape_problems

Client = stripe.StripeClient

T0 = 1768435200  # 2026-01-15T00:00:00Z
DAY = 86400
FEB_15 = T0 + 31 * DAY
MAR_15 = FEB_15 + 28 * DAY


def _meter(client: Client, event_name: str, formula: str) -> str:
    return client.v1.billing.meters.create(
        {
            "display_name": event_name,
            "event_name": event_name,
            "default_aggregation": {"formula": formula},  # type: ignore[typeddict-item]
        }
    ).id


def _metered_price(client: Client, meter: str, **pricing: Any) -> str:
    product = client.v1.products.create({"name": f"Usage {meter[-4:]}"})
    params: dict[str, Any] = {
        "product": product.id,
        "currency": "usd",
        "recurring": {"interval": "month", "usage_type": "metered", "meter": meter},
        **pricing,
    }
    return client.v1.prices.create(params).id  # type: ignore[arg-type]


def _use(client: Client, event_name: str, customer: str, at: int, value: int = 1) -> None:
    client.v1.billing.meter_events.create(
        {
            "event_name": event_name,
            "payload": {"stripe_customer_id": customer, "value": str(value)},
            "timestamp": at,
        }
    )


def _customer(client: Client, clock: str) -> str:
    customer = client.v1.customers.create({"email": "usage@example.com", "test_clock": clock}).id
    pm = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer})
    client.v1.customers.update(customer, {"invoice_settings": {"default_payment_method": pm.id}})
    return customer


def _lines(invoice: stripe.Invoice) -> dict[str, tuple[int | None, int, int, int]]:
    out: dict[str, tuple[int | None, int, int, int]] = {}
    for line in invoice.lines.data:
        details = line.pricing.price_details if line.pricing else None
        assert details is not None
        out[str(details.price)] = (line.quantity, line.amount, line.period.start, line.period.end)
    return out


@pytest.fixture
def metered(stripe_client: Client) -> dict[str, str]:
    calls = _meter(stripe_client, "api_calls", "sum")
    logins = _meter(stripe_client, "logins", "count")
    storage = _meter(stripe_client, "storage_gb", "last")
    product = stripe_client.v1.products.create({"name": "Base"})
    return {
        "base": stripe_client.v1.prices.create(
            {
                "product": product.id,
                "currency": "usd",
                "unit_amount": 1000,
                "recurring": {"interval": "month"},
            }
        ).id,
        # 25 cents a call.
        "per_unit": _metered_price(stripe_client, calls, unit_amount=25),
        # Graduated: the first 2 logins at 100 each plus a flat 50, then 40 each.
        "graduated": _metered_price(
            stripe_client,
            logins,
            billing_scheme="tiered",
            tiers_mode="graduated",
            tiers=[
                {"up_to": 2, "unit_amount": 100, "flat_amount": 50},
                {"up_to": "inf", "unit_amount": 40},
            ],
        ),
        # Volume: every GB at 100 up to 10 GB, every GB at 80 beyond.
        "volume": _metered_price(
            stripe_client,
            storage,
            billing_scheme="tiered",
            tiers_mode="volume",
            tiers=[{"up_to": 10, "unit_amount": 100}, {"up_to": "inf", "unit_amount": 80}],
        ),
    }


def test_usage_is_billed_on_the_next_invoice(
    stripe_client: Client, emulator: EmulatorHandle, metered: dict[str, str]
) -> None:
    clock = stripe_client.v1.test_helpers.test_clocks.create({"frozen_time": T0})
    customer = _customer(stripe_client, clock.id)
    other = _customer(stripe_client, clock.id)
    sub = stripe_client.v1.subscriptions.create(
        {
            "customer": customer,
            "items": [
                {"price": metered["base"]},
                {"price": metered["per_unit"]},
                {"price": metered["graduated"]},
                {"price": metered["volume"]},
            ],
        }
    )
    assert sub.status == "active"
    assert [i.quantity for i in sub["items"].data] == [1, None, None, None]
    first = stripe_client.v1.invoices.retrieve(str(sub.latest_invoice))
    # In arrears: nothing is used yet, so the metered lines are 0 × ... at 0.
    assert {p: (q, a) for p, (q, a, _, _) in _lines(first).items()} == {
        metered["base"]: (1, 1000),
        metered["per_unit"]: (0, 0),
        metered["graduated"]: (0, 0),
        metered["volume"]: (0, 0),
    }
    assert (first.total, first.status) == (1000, "paid")
    _use(stripe_client, "api_calls", customer, T0 + DAY, 30)
    _use(stripe_client, "api_calls", customer, T0 + 10 * DAY, 45)
    _use(stripe_client, "api_calls", other, T0 + 2 * DAY, 1000)  # another customer's
    for day in range(1, 6):
        _use(stripe_client, "logins", customer, T0 + day * DAY)
    _use(stripe_client, "storage_gb", customer, T0 + 3 * DAY, 4)
    _use(stripe_client, "storage_gb", customer, T0 + 12 * DAY, 12)
    _use(stripe_client, "api_calls", customer, FEB_15 + 3600, 10)  # next period's
    stripe_client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": T0 + 20 * DAY})
    preview = stripe_client.v1.invoices.create_preview({"subscription": sub.id})
    assert {p: (q, a) for p, (q, a, _, _) in _lines(preview).items()} == {
        metered["base"]: (1, 1000),
        metered["per_unit"]: (75, 1875),  # 30 + 45 calls × 25
        metered["graduated"]: (5, 370),  # 2 × 100 + 50, then 3 × 40
        metered["volume"]: (12, 960),  # the last value, 12 GB, all at 80
    }
    assert preview.total == 4205
    stripe_client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": FEB_15 + 7200})
    renewal = stripe_client.v1.invoices.retrieve(
        str(stripe_client.v1.subscriptions.retrieve(sub.id).latest_invoice)
    )
    assert (renewal.billing_reason, renewal.status) == ("subscription_cycle", "paid")
    lines = _lines(renewal)
    assert lines == {
        metered["base"]: (1, 1000, FEB_15, MAR_15),
        metered["per_unit"]: (75, 1875, T0, FEB_15),
        metered["graduated"]: (5, 370, T0, FEB_15),
        metered["volume"]: (12, 960, T0, FEB_15),
    }
    assert (renewal.subtotal, renewal.total, renewal.amount_paid) == (4205, 4205, 4205)
    stripe_client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": MAR_15 + 7200})
    second = stripe_client.v1.invoices.retrieve(
        str(stripe_client.v1.subscriptions.retrieve(sub.id).latest_invoice)
    )
    assert {p: (q, a) for p, (q, a, _, _) in _lines(second).items()} == {
        metered["base"]: (1, 1000),
        metered["per_unit"]: (10, 250),
        metered["graduated"]: (0, 0),
        metered["volume"]: (0, 0),
    }
    raw = httpx.Client(base_url=emulator.url, auth=(TEST_API_KEY, ""))
    sub_body = raw.get(f"/v1/subscriptions/{sub.id}").json()
    assert "_usage_windows" not in sub_body
    problems = (
        shape_problems(sub_body, stripe.Subscription)
        + shape_problems(raw.get(f"/v1/invoices/{second.id}").json(), stripe.Invoice)
        + shape_problems(
            raw.get(f"/v1/invoices/{renewal.id}/lines").json(),
            stripe.InvoiceLineItem,
            listed=True,
        )
        + shape_problems(
            raw.post("/v1/invoices/create_preview", data={"subscription": sub.id}).json(),
            stripe.Invoice,
        )
    )
    assert problems == []


def test_metered_items_take_no_quantity(stripe_client: Client, metered: dict[str, str]) -> None:
    customer = stripe_client.v1.customers.create({"email": "q@example.com"}).id
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.subscriptions.create(
            {"customer": customer, "items": [{"price": metered["per_unit"], "quantity": 2}]}
        )
    assert refused.value.param == "items[0][quantity]"

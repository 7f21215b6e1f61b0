"""A metered plan's next invoice bills the quantity the usage outbox recorded (issue 12
item 2: "metered prices of the customer's plan then bill the usage on Stripe's invoices").

The account's customer is on a test clock and subscribed to the catalog's metered price
(3 cents per API request, meter `api_requests` with payload keys `customer`/`requests`);
usages in the period are sent by the credits domain (one per usage, then aggregated); the
renewal invoice the clock's advance makes bills their sum."""

from __future__ import annotations

import time

import pytest

from tests.integration.credits.conftest import COUNT, SUM, MeterWorld, make_client

DAY = 86_400


@pytest.mark.parametrize("aggregate", [False, True], ids=["per-usage", "aggregated"])
def test_the_renewal_invoice_bills_the_recorded_quantity(
    meters: MeterWorld, aggregate: bool
) -> None:
    meters.configure(aggregate=aggregate)
    sdk = make_client(meters.emulator.url)
    start = int(time.time()) // 60 * 60 - 30 * 60
    clock = sdk.v1.test_helpers.test_clocks.create({"frozen_time": start}).id
    meters.open(["acme"], clock=clock)
    customer = meters.customer("acme")
    pm = sdk.v1.payment_methods.attach("pm_card_visa", {"customer": customer})
    sdk.v1.customers.update(customer, {"invoice_settings": {"default_payment_method": pm.id}})
    meter = next(m for m in sdk.v1.billing.meters.list({"limit": 100}).data if m.event_name == SUM)
    price = next(
        p
        for p in sdk.v1.prices.list({"limit": 100, "active": True}).data
        if p.recurring is not None and p.recurring.meter == meter.id
    )
    sub = sdk.v1.subscriptions.create({"customer": customer, "items": [{"price": price.id}]})
    # 120 requests in 40 usages over three minutes of the period, and logins on another meter.
    for minute in range(3):
        meters.usages(
            "acme",
            40 // 3 + (minute == 0),
            value=3,
            at=start + 60 + minute * 60,
            prefix=f"m{minute}",
        )
    meters.usages("acme", 2, event_name=COUNT, at=start + 90, prefix="login")
    meters.send()
    sent = [e for e in meters.events() if e["event_name"] == SUM]
    assert sum(int(e["payload"]["requests"]) for e in sent) == 120
    assert len(sent) == (3 if aggregate else 40)

    sdk.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": start + 32 * DAY})
    renewal = sdk.v1.invoices.retrieve(str(sdk.v1.subscriptions.retrieve(sub.id).latest_invoice))
    assert renewal.billing_reason == "subscription_cycle"
    (line,) = renewal.lines.data
    assert (line.quantity, line.amount) == (120, 360)
    assert renewal.total == 360

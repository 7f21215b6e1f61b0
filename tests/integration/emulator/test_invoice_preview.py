"""`POST /v1/invoices/create_preview` with `subscription_details.proration_date`, as the SDK's
`InvoiceCreatePreviewParamsSubscriptionDetails.proration_date` docstring states it: it needs
`subscription` and `subscription_details.items`, not with `proration_behavior=none`, within
the current period; a preview prorates as of that date (and writes nothing)."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from tests.fixtures.emulator import EmulatorHandle

Client = stripe.StripeClient

T0 = 1768435200  # 2026-01-15T00:00:00Z
FEB_15 = T0 + 31 * 86400
HALF = T0 + (FEB_15 - T0) // 2


def _subscription(client: Client) -> tuple[stripe.Subscription, str]:
    """A 10.00 monthly subscription from T0 on a test clock; a 20.00 price to move to."""
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": T0})
    customer = client.v1.customers.create({"email": "p@example.com", "test_clock": clock.id})
    pm = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    client.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": pm.id}})
    product = client.v1.products.create({"name": "Gold"})
    cheap, dear = (
        client.v1.prices.create(
            {
                "product": product.id,
                "currency": "usd",
                "unit_amount": amount,
                "recurring": {"interval": "month"},
            }
        )
        for amount in (1000, 2000)
    )
    sub = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": cheap.id}]})
    return sub, dear.id


def _refused(client: Client, params: dict[str, Any]) -> stripe.InvalidRequestError:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.invoices.create_preview(params)  # type: ignore[arg-type]
    assert caught.value.http_status == 400
    return caught.value


def test_a_proration_date_prorates_the_preview_as_of_that_date(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    sub, dear = _subscription(stripe_client)
    item = sub["items"].data[0]
    emulator.control.clear_requests()
    preview = stripe_client.v1.invoices.create_preview(
        {
            "subscription": sub.id,
            "subscription_details": {
                "items": [{"id": item.id, "price": dear}],
                "proration_behavior": "create_prorations",
                "proration_date": HALF,
            },
        }
    )
    prorations = sorted(
        (li.amount, li.period.start, li.period.end)
        for li in preview.lines.data
        if li.parent is not None and li.parent.invoice_item_details is not None
    )
    assert prorations == [(-500, HALF, FEB_15), (1000, HALF, FEB_15)]
    parent = preview.parent
    assert parent is not None
    assert parent.subscription_details is not None
    assert parent.subscription_details.subscription_proration_date == HALF
    assert [r.path for r in emulator.control.requests(method="POST")] == [
        "/v1/invoices/create_preview"
    ]
    assert stripe_client.v1.invoice_items.list({"customer": str(sub.customer)}).data == []


def test_a_proration_date_needs_the_subscription_and_items_and_a_proration(
    stripe_client: Client,
) -> None:
    sub, dear = _subscription(stripe_client)
    item = sub["items"].data[0]
    where = "subscription_details[proration_date]"
    without_items = _refused(
        stripe_client,
        {"subscription": sub.id, "subscription_details": {"proration_date": HALF}},
    )
    assert without_items.param == where
    without_subscription = _refused(
        stripe_client,
        {
            "customer": str(sub.customer),
            "subscription_details": {"items": [{"price": dear}], "proration_date": HALF},
        },
    )
    assert without_subscription.param == where
    no_proration = _refused(
        stripe_client,
        {
            "subscription": sub.id,
            "subscription_details": {
                "items": [{"id": item.id, "price": dear}],
                "proration_behavior": "none",
                "proration_date": HALF,
            },
        },
    )
    assert no_proration.param == where
    for outside in (T0 - 1, FEB_15 + 1):
        error = _refused(
            stripe_client,
            {
                "subscription": sub.id,
                "subscription_details": {
                    "items": [{"id": item.id, "price": dear}],
                    "proration_date": outside,
                },
            },
        )
        assert error.param == where
        assert "current subscription period" in str(error.user_message)


def test_an_always_invoice_preview_takes_the_pending_items_as_the_update_does(
    stripe_client: Client,
) -> None:
    client = stripe_client
    sub, dear = _subscription(client)
    item = sub["items"].data[0]
    clock = client.v1.customers.retrieve(str(sub.customer)).test_clock
    client.v1.test_helpers.test_clocks.advance(str(clock), {"frozen_time": HALF})
    # A second seat with create_prorations: two pending proration items.
    client.v1.subscriptions.update(
        sub.id,
        {"items": [{"id": item.id, "quantity": 2}], "proration_behavior": "create_prorations"},
    )
    change: dict[str, Any] = {
        "items": [{"id": item.id, "price": dear}],
        "proration_behavior": "always_invoice",
    }
    preview = client.v1.invoices.create_preview(
        {"subscription": sub.id, "subscription_details": change}  # type: ignore[arg-type]
    )
    updated = client.v1.subscriptions.update(sub.id, change)  # type: ignore[arg-type]
    invoice = client.v1.invoices.retrieve(str(updated.latest_invoice))
    assert sorted((li.description, li.amount) for li in preview.lines.data) == sorted(
        (li.description, li.amount) for li in invoice.lines.data
    )
    assert sorted(li.amount for li in invoice.lines.data) == [-1000, -500, 1000, 2000]
    assert preview.amount_due == invoice.amount_due == 1500

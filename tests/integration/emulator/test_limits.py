"""Limits Stripe enforces that a fresh user hit: duplicate prices in one subscription, test
clock times out of range, amount and string bounds, invoice items on another customer's
subscription (docs/emulator.md, "Parameter limits")."""

from __future__ import annotations

import pytest
import stripe

DAY = 86400


def _monthly(client: stripe.StripeClient, amount: int = 1000) -> str:
    product = client.v1.products.create({"name": "Gold"})
    price = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": amount,
            "recurring": {"interval": "month"},
        }
    )
    return price.id


def _customer(client: stripe.StripeClient) -> str:
    customer = client.v1.customers.create({"email": "l@example.test"})
    card = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    client.v1.customers.update(
        customer.id, {"invoice_settings": {"default_payment_method": card.id}}
    )
    return customer.id


def _refused(error: pytest.ExceptionInfo[stripe.InvalidRequestError], param: str) -> str:
    assert error.value.http_status == 400
    assert error.value.param == param
    return str(error.value.user_message)


def test_the_same_price_twice_in_one_subscription_is_refused(
    stripe_client: stripe.StripeClient,
) -> None:
    price, other = _monthly(stripe_client), _monthly(stripe_client, 2000)
    customer = _customer(stripe_client)
    with pytest.raises(stripe.InvalidRequestError) as error:
        stripe_client.v1.subscriptions.create(
            {"customer": customer, "items": [{"price": price}, {"price": price}]}
        )
    message = _refused(error, "plan")
    assert message == f"Cannot add multiple subscription items with the same plan: {price}"
    sub = stripe_client.v1.subscriptions.create({"customer": customer, "items": [{"price": price}]})
    with pytest.raises(stripe.InvalidRequestError) as error:
        stripe_client.v1.subscriptions.update(sub.id, {"items": [{"price": price}]})
    _refused(error, "plan")
    with pytest.raises(stripe.InvalidRequestError) as error:
        stripe_client.v1.subscription_items.create({"subscription": sub.id, "price": price})
    _refused(error, "plan")
    added = stripe_client.v1.subscription_items.create({"subscription": sub.id, "price": other})
    with pytest.raises(stripe.InvalidRequestError) as error:
        stripe_client.v1.subscription_items.update(added.id, {"price": price})
    _refused(error, "plan")
    items = stripe_client.v1.subscriptions.retrieve(sub.id)["items"].data
    assert sorted(i.price.id for i in items) == sorted([price, other])


@pytest.mark.parametrize("frozen_time", [-1, 253402300800, 10**15])
def test_a_test_clock_out_of_range_is_refused(
    stripe_client: stripe.StripeClient, frozen_time: int
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as error:
        stripe_client.v1.test_helpers.test_clocks.create({"frozen_time": frozen_time})
    _refused(error, "frozen_time")


def test_a_subscription_ending_after_year_9999_is_a_400(
    stripe_client: stripe.StripeClient,
) -> None:
    clock = stripe_client.v1.test_helpers.test_clocks.create({"frozen_time": 253402300799})
    customer = stripe_client.v1.customers.create({"test_clock": clock.id})
    stripe_client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    price = _monthly(stripe_client)
    with pytest.raises(stripe.InvalidRequestError) as error:
        stripe_client.v1.subscriptions.create(
            {"customer": customer.id, "items": [{"price": price}]}
        )
    assert error.value.http_status == 400


def test_amounts_above_twelve_digits_are_refused(stripe_client: stripe.StripeClient) -> None:
    product = stripe_client.v1.products.create({"name": "Big"})
    with pytest.raises(stripe.InvalidRequestError) as error:
        stripe_client.v1.prices.create(
            {"product": product.id, "currency": "usd", "unit_amount": 10**12}
        )
    _refused(error, "unit_amount")
    kept = stripe_client.v1.prices.create(
        {"product": product.id, "currency": "usd", "unit_amount": 999_999_999_999}
    )
    assert kept.unit_amount == 999_999_999_999
    customer = _customer(stripe_client)
    with pytest.raises(stripe.InvalidRequestError) as error:
        stripe_client.v1.invoice_items.create(
            {"customer": customer, "amount": 10**30, "currency": "usd"}
        )
    _refused(error, "amount")
    with pytest.raises(stripe.InvalidRequestError) as error:
        stripe_client.v1.customers.update(customer, {"balance": -(10**39)})
    _refused(error, "balance")


def test_strings_longer_than_5000_characters_are_refused(
    stripe_client: stripe.StripeClient,
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as error:
        stripe_client.v1.products.create({"name": "Long", "description": "x" * 5001})
    assert "must be at most 5000 characters" in _refused(error, "description")
    kept = stripe_client.v1.products.create({"name": "Long", "description": "x" * 5000})
    assert len(kept.description or "") == 5000


def test_an_invoice_item_on_another_customers_subscription_is_refused(
    stripe_client: stripe.StripeClient,
) -> None:
    owner, other = _customer(stripe_client), _customer(stripe_client)
    sub = stripe_client.v1.subscriptions.create(
        {"customer": owner, "items": [{"price": _monthly(stripe_client)}]}
    )
    with pytest.raises(stripe.InvalidRequestError) as error:
        stripe_client.v1.invoice_items.create(
            {"customer": other, "amount": 100, "currency": "usd", "subscription": sub.id}
        )
    message = _refused(error, "subscription")
    assert message == f"Customer {other} does not have a subscription with ID {sub.id}"
    item = stripe_client.v1.invoice_items.create(
        {"customer": owner, "amount": 100, "currency": "usd", "subscription": sub.id}
    )
    assert item.customer == owner


def test_a_test_payment_method_token_is_the_default_it_attaches_on_customer_create(
    stripe_client: stripe.StripeClient,
) -> None:
    """Stripe's invoicing docs create a test clock customer with `payment_method=pm_card_visa`
    and `invoice_settings[default_payment_method]=pm_card_visa`: one card, attached, the
    default."""
    clock = stripe_client.v1.test_helpers.test_clocks.create({"frozen_time": 1_900_000_000})
    customer = stripe_client.v1.customers.create(
        {
            "test_clock": clock.id,
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    (card,) = stripe_client.v1.payment_methods.list({"customer": customer.id}).data
    assert card.id.startswith("pm_")
    assert card.id != "pm_card_visa"
    assert customer.invoice_settings.default_payment_method == card.id
    sub = stripe_client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": _monthly(stripe_client)}]}
    )
    assert sub.status == "active"
    # A token as a subscription's default is not attached to the customer: refused.
    with pytest.raises(stripe.InvalidRequestError) as error:
        stripe_client.v1.subscriptions.update(sub.id, {"default_payment_method": "pm_card_visa"})
    _refused(error, "default_payment_method")


def test_events_list_newest_created_first_with_test_clocks(
    stripe_client: stripe.StripeClient,
) -> None:
    """A test clock's walk emits events at the clock's time, behind events emitted before
    it: Stripe lists events by `created`, newest first, and cursors page that order."""
    now = stripe_client.v1.products.create({"name": "Now"}).created
    clock = stripe_client.v1.test_helpers.test_clocks.create({"frozen_time": now - 40 * DAY})
    customer = stripe_client.v1.customers.create({"test_clock": clock.id})
    stripe_client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    stripe_client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": _monthly(stripe_client)}]}
    )
    stripe_client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": now - 5 * DAY})
    stripe_client.v1.products.create({"name": "Later"})
    listed = list(stripe_client.v1.events.list({"limit": 100}).auto_paging_iter())
    created = [e.created for e in listed]
    assert created == sorted(created, reverse=True)
    assert min(created) < now - 30 * DAY
    # Cursors walk the same order, both ways, a page of 3 at a time.
    forward: list[str] = []
    page = stripe_client.v1.events.list({"limit": 3})
    while True:
        forward += [e.id for e in page.data]
        if not page.has_more:
            break
        page = stripe_client.v1.events.list({"limit": 3, "starting_after": page.data[-1].id})
    assert forward == [e.id for e in listed]
    backward: list[str] = []
    page = stripe_client.v1.events.list({"limit": 3, "ending_before": listed[-1].id})
    while page.data:
        backward = [e.id for e in page.data] + backward
        if not page.has_more:
            break
        page = stripe_client.v1.events.list({"limit": 3, "ending_before": page.data[0].id})
    assert backward == [e.id for e in listed[:-1]]

"""Stripe's length limits on a customer's text fields (phone 20, name 256, email 512): the
emulator refuses a longer value as Stripe does, naming the parameter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import stripe


@pytest.mark.parametrize(("field", "limit"), [("phone", 20), ("name", 256), ("email", 512)])
def test_a_too_long_customer_field_is_refused(
    stripe_client: stripe.StripeClient, field: str, limit: int
) -> None:
    customers: Any = stripe_client.v1.customers
    ok = customers.create({field: "x" * limit})
    assert ok[field] == "x" * limit
    too_long = {field: "y" * (limit + 1)}
    sends: list[Callable[[], object]] = [
        lambda: customers.create(too_long),
        lambda: customers.update(ok.id, too_long),
    ]
    for send in sends:
        with pytest.raises(stripe.InvalidRequestError) as refused:
            send()
        assert refused.value.http_status == 400
        assert refused.value.param == field
        assert f"must be at most {limit} characters" in str(refused.value.user_message)
    assert customers.retrieve(ok.id)[field] == "x" * limit


def test_a_phone_with_an_extension_past_20_characters_is_refused(
    stripe_client: stripe.StripeClient,
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.customers.create({"phone": "+1 780-459-5656 ext. 725"})
    assert refused.value.param == "phone"
    assert str(refused.value.user_message) == (
        "Invalid string: +1 780-459...6 ext. 725; must be at most 20 characters"
    )

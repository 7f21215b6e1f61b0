"""Stripe's catalog rules, table-driven, through the real SDK over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import stripe

Call = Callable[[stripe.StripeClient, dict[str, str]], Any]


@pytest.fixture
def catalog(stripe_client: stripe.StripeClient) -> dict[str, str]:
    """A product with a default monthly price (lookup key `team_monthly`) and a second price."""
    product = stripe_client.v1.products.create(
        {
            "name": "Team",
            "default_price_data": {
                "currency": "usd",
                "unit_amount": 1000,
                "recurring": {"interval": "month"},
            },
        }
    )
    assert isinstance(product.default_price, str)
    stripe_client.v1.prices.update(product.default_price, {"lookup_key": "team_monthly"})
    other = stripe_client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 10000,
            "recurring": {"interval": "year"},
        }
    )
    return {"product": product.id, "price": product.default_price, "other": other.id}


RULES: list[tuple[str, Call, str | None, str]] = [
    (
        "unit_amount is immutable",
        lambda c, ids: c.v1.prices.update(ids["price"], {"unit_amount": 5}),  # type: ignore[typeddict-unknown-key]
        "unit_amount",
        "Received unknown parameter: unit_amount",
    ),
    (
        "currency is immutable",
        lambda c, ids: c.v1.prices.update(ids["price"], {"currency": "eur"}),  # type: ignore[typeddict-unknown-key]
        "currency",
        "Received unknown parameter: currency",
    ),
    (
        "recurring is immutable",
        lambda c, ids: c.v1.prices.update(ids["price"], {"recurring": {"interval": "year"}}),  # type: ignore[typeddict-unknown-key]
        "recurring",
        "Received unknown parameter: recurring",
    ),
    (
        "lookup key collision",
        lambda c, ids: c.v1.prices.update(ids["other"], {"lookup_key": "team_monthly"}),
        "lookup_key",
        "already uses that lookup key",
    ),
    (
        "default price cannot be archived",
        lambda c, ids: c.v1.prices.update(ids["price"], {"active": False}),
        "active",
        "default price of its product",
    ),
    (
        "product with prices cannot be deleted",
        lambda c, ids: c.v1.products.delete(ids["product"]),
        None,
        "has one or more user-created prices",
    ),
    (
        "metadata key longer than 40 characters",
        lambda c, ids: c.v1.products.update(ids["product"], {"metadata": {"k" * 41: "v"}}),
        "metadata[" + "k" * 41 + "]",
        "maximum length of 40",
    ),
    (
        "metadata value longer than 500 characters",
        lambda c, ids: c.v1.products.update(ids["product"], {"metadata": {"k": "v" * 501}}),
        "metadata[k]",
        "maximum length of 500",
    ),
    (
        "more than 50 metadata keys",
        lambda c, ids: c.v1.products.update(
            ids["product"], {"metadata": {f"k{i}": "v" for i in range(51)}}
        ),
        "metadata",
        "maximum of 50 keys",
    ),
    (
        "lookup key longer than 200 characters",
        lambda c, ids: c.v1.prices.update(ids["other"], {"lookup_key": "x" * 201}),
        "lookup_key",
        "at most 200",
    ),
    (
        "enum Stripe enforces",
        lambda c, ids: c.v1.prices.create(
            {
                "product": ids["product"],
                "currency": "usd",
                "unit_amount": 1,
                "recurring": {"interval": "fortnight"},
            }
        ),
        "recurring[interval]",
        "must be one of",
    ),
    (
        "missing required parameter",
        lambda c, ids: c.v1.prices.create({"product": ids["product"], "unit_amount": 1}),  # type: ignore[typeddict-item]
        "currency",
        "Missing required param: currency",
    ),
    (
        "unknown price",
        lambda c, ids: c.v1.prices.retrieve("price_nope"),
        "id",
        "No such price: 'price_nope'",
    ),
    (
        "default price from another product",
        lambda c, ids: c.v1.products.update(
            c.v1.products.create({"name": "Other"}).id, {"default_price": ids["price"]}
        ),
        "default_price",
        "does not belong",
    ),
    (
        "limit above 100",
        lambda c, ids: c.v1.prices.list({"limit": 101}),
        "limit",
        "between 1 and 100",
    ),
    (
        "limit below 1",
        lambda c, ids: c.v1.prices.list({"limit": 0}),
        "limit",
        "between 1 and 100",
    ),
]


@pytest.mark.parametrize(("rule", "call", "param", "message"), RULES, ids=[r[0] for r in RULES])
def test_stripe_rule_is_enforced(
    stripe_client: stripe.StripeClient,
    catalog: dict[str, str],
    rule: str,
    call: Call,
    param: str | None,
    message: str,
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        call(stripe_client, catalog)
    assert message in str(raised.value.user_message), rule
    assert raised.value.param == param


def test_transfer_lookup_key_moves_the_key(
    stripe_client: stripe.StripeClient, catalog: dict[str, str]
) -> None:
    new = stripe_client.v1.prices.create(
        {
            "product": catalog["product"],
            "currency": "usd",
            "unit_amount": 1200,
            "recurring": {"interval": "month"},
            "lookup_key": "team_monthly",
            "transfer_lookup_key": True,
        }
    )
    assert new.lookup_key == "team_monthly"
    assert stripe_client.v1.prices.retrieve(catalog["price"]).lookup_key is None
    found = stripe_client.v1.prices.list({"lookup_keys": ["team_monthly"]}).data
    assert [p.id for p in found] == [new.id]
    updated = stripe_client.v1.events.list({"type": "price.updated"}).data[0]
    assert updated.data.object["id"] == catalog["price"]
    assert updated.data.previous_attributes.to_dict() == {"lookup_key": "team_monthly"}


def test_supersede_sequence_repoints_then_archives(
    stripe_client: stripe.StripeClient, catalog: dict[str, str]
) -> None:
    """DESIGN §5's supersede: create (transfer key), repoint default, archive old."""
    new = stripe_client.v1.prices.create(
        {
            "product": catalog["product"],
            "currency": "usd",
            "unit_amount": 1500,
            "recurring": {"interval": "month"},
            "lookup_key": "team_monthly",
            "transfer_lookup_key": True,
        }
    )
    stripe_client.v1.products.update(catalog["product"], {"default_price": new.id})
    old = stripe_client.v1.prices.update(catalog["price"], {"active": False})
    assert old.active is False
    active = stripe_client.v1.prices.list({"product": catalog["product"], "active": True}).data
    assert {p.id for p in active} == {new.id, catalog["other"]}


def test_metadata_empty_string_unsets_keys(stripe_client: stripe.StripeClient) -> None:
    product = stripe_client.v1.products.create({"name": "M", "metadata": {"a": "1", "b": "2"}})
    one = stripe_client.v1.products.update(product.id, {"metadata": {"a": ""}})
    assert one.metadata.to_dict() == {"b": "2"}
    none = stripe_client.v1.products.update(product.id, {"metadata": ""})
    assert none.metadata.to_dict() == {}


def test_product_without_prices_can_be_deleted(stripe_client: stripe.StripeClient) -> None:
    product = stripe_client.v1.products.create({"name": "Gone"})
    deleted = stripe_client.v1.products.delete(product.id)
    assert deleted.deleted is True
    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe_client.v1.products.retrieve(product.id)
    assert raised.value.http_status == 404
    assert raised.value.code == "resource_missing"
    assert [e.type for e in stripe_client.v1.events.list({"type": "product.*"}).data] == [
        "product.deleted",
        "product.created",
    ]

"""Subscription items as records: the price's catalog key read from its marker."""

from __future__ import annotations

from typing import Any

from billing_reconciler.stripe_gateway import map_item, map_subscription


def _price(**metadata: str) -> dict[str, Any]:
    return {
        "id": "price_old",
        "object": "price",
        "recurring": {"interval": "month", "usage_type": "licensed"},
        "metadata": metadata,
    }


OURS = {
    "managed_by": "billing-reconciler",
    "br_installation": "prod",
    "br_key": "price/team_seat/monthly",
}


def _item(price: dict[str, Any]) -> dict[str, Any]:
    return {"id": "si_1", "object": "subscription_item", "quantity": 3, "price": price}


def test_an_items_price_of_ours_gives_its_key() -> None:
    item = map_item(_item(_price(**OURS)), installation_id="prod")
    assert (item.price_id, item.quantity, item.item_id) == ("price_old", 3, "si_1")
    assert item.price_key == "price/team_seat/monthly"
    assert map_item(_item(_price(**OURS))).price_key == "price/team_seat/monthly"


def test_an_unmarked_or_another_installations_price_gives_no_key() -> None:
    assert map_item(_item(_price(br_key="price/x/y"))).price_key is None
    assert map_item(_item(_price(**OURS)), installation_id="staging").price_key is None
    assert map_item({"id": "si_2", "quantity": 1, "price": "price_unexpanded"}).price_key is None


def test_a_subscription_maps_its_items_keys_for_its_installation() -> None:
    sub = map_subscription(
        {
            "id": "sub_1",
            "customer": "cus_1",
            "status": "active",
            "currency": "usd",
            "items": {"data": [_item(_price(**OURS))]},
            "metadata": {},
        },
        installation_id="prod",
    )
    assert [i.price_key for i in sub.items] == ["price/team_seat/monthly"]

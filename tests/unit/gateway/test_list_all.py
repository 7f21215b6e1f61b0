"""Pagination over a fake page source: `limit=100`, `starting_after` cursors, nothing else."""

from __future__ import annotations

from typing import Any

import stripe

from billing_reconciler.stripe_gateway import StripeGateway, list_all


def fake_pages(total: int) -> tuple[list[dict[str, Any]], Any]:
    """A page fetcher over `total` prices, and the list of params it was called with."""
    objects = [{"id": f"price_{i:04d}", "object": "price"} for i in range(total)]
    calls: list[dict[str, Any]] = []

    def fetch(params: dict[str, Any]) -> stripe.ListObject[Any]:
        calls.append(params)
        start = 0
        if "starting_after" in params:
            start = (
                next(i for i, o in enumerate(objects) if o["id"] == params["starting_after"]) + 1
            )
        page = objects[start : start + params["limit"]]
        body = {
            "object": "list",
            "url": "/v1/prices",
            "data": page,
            "has_more": start + len(page) < total,
        }
        return stripe.ListObject.construct_from(body, "sk_test_x")

    return calls, fetch


def gateway() -> StripeGateway:
    return StripeGateway(api_key="sk_test_x", rate_limit_per_second=1000)


def test_walks_every_page_with_cursors() -> None:
    calls, fetch = fake_pages(250)
    ids = [o["id"] for o in list_all(gateway(), endpoint="/v1/prices", fetch_page=fetch)]
    assert ids == [f"price_{i:04d}" for i in range(250)]
    assert [c.get("starting_after") for c in calls] == [None, "price_0099", "price_0199"]
    assert {c["limit"] for c in calls} == {100}


def test_extra_params_ride_on_every_page() -> None:
    calls, fetch = fake_pages(101)
    params = {"expand": ["data.tiers"]}
    assert len(list(list_all(gateway(), endpoint="/v1/prices", fetch_page=fetch, params=params)))
    assert [c["expand"] for c in calls] == [["data.tiers"], ["data.tiers"]]


def test_an_empty_list_is_one_call() -> None:
    calls, fetch = fake_pages(0)
    assert list(list_all(gateway(), endpoint="/v1/prices", fetch_page=fetch)) == []
    assert len(calls) == 1


def test_exactly_one_full_page_stops_on_has_more() -> None:
    calls, fetch = fake_pages(100)
    assert len(list(list_all(gateway(), endpoint="/v1/prices", fetch_page=fetch))) == 100
    assert len(calls) == 1

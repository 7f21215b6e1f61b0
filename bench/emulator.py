"""Benchmark of the Stripe emulator (not a test): requests/s with the real SDK as client on
loopback, and list/filter latency as the store grows to 100k objects (seeded directly into the
state, then timed over HTTP). Prints one JSON document.

    .venv/bin/python bench/emulator.py [--requests 500] [--sizes 1000,10000,100000]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import stripe

from stripe_emulator.core import Emulator
from stripe_emulator.ids import new_id
from stripe_emulator.server import EmbeddedEmulator


def _client(url: str) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_bench", base_addresses={"api": url}, max_network_retries=0)


def _rate(count: int, call: Callable[[int], object]) -> float:
    started = time.perf_counter()
    for i in range(count):
        call(i)
    return round(count / (time.perf_counter() - started), 1)


def throughput(url: str, count: int) -> dict[str, float]:
    """Sequential requests/s for simple GETs and POSTs through the SDK."""
    client = _client(url)
    product = client.v1.products.create({"name": "bench"})
    return {
        "get_retrieve_per_s": _rate(count, lambda _: client.v1.products.retrieve(product.id)),
        "get_list_10_per_s": _rate(count, lambda _: client.v1.products.list({"limit": 10})),
        "post_create_per_s": _rate(count, lambda i: client.v1.products.create({"name": f"b{i}"})),
        "post_update_per_s": _rate(
            count, lambda i: client.v1.products.update(product.id, {"metadata": {"i": str(i)}})
        ),
    }


def seed(emulator: Emulator, total: int) -> dict[str, str]:
    """Grow the store to `total` products, each with one price; returns probe ids."""
    products = emulator.store.collection("product")
    now = emulator.clock.now()
    template_product: dict[str, Any] = {
        "object": "product",
        "active": True,
        "created": now,
        "default_price": None,
        "description": None,
        "images": [],
        "livemode": False,
        "marketing_features": [],
        "metadata": {},
        "name": "seeded",
        "package_dimensions": None,
        "shippable": None,
        "statement_descriptor": None,
        "tax_code": None,
        "type": "service",
        "unit_label": None,
        "updated": now,
        "url": None,
    }
    template_price: dict[str, Any] = {
        "object": "price",
        "active": True,
        "billing_scheme": "per_unit",
        "created": now,
        "currency": "usd",
        "custom_unit_amount": None,
        "livemode": False,
        "metadata": {},
        "nickname": None,
        "recurring": None,
        "tax_behavior": "unspecified",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "one_time",
        "unit_amount": 100,
        "unit_amount_decimal": "100",
        "currency_options": {},
    }
    probe: dict[str, str] = {}  # the last seeded product: the oldest page of a newest-first list
    with emulator.lock:
        for i in range(len(products), total):
            product = copy.deepcopy(template_product)
            product["id"] = new_id("prod")
            product["active"] = i % 2 == 0
            emulator.store.insert("product", product)
            price = copy.deepcopy(template_price)
            price["id"] = new_id("price")
            price["product"] = product["id"]
            price["lookup_key"] = f"key_{i}"
            emulator.store.insert("price", price)
            probe = {"product": product["id"], "lookup_key": f"key_{i}"}
    return probe


def _ms_per_call(count: int, call: Callable[[], object]) -> float:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return round(statistics.median(samples) * 1000, 3)


def flatness(server: EmbeddedEmulator, sizes: list[int], calls: int) -> list[dict[str, Any]]:
    """Median ms per list/filter call at each store size."""
    client = _client(server.url)
    rows = []
    for size in sizes:
        probe = seed(server.emulator, size)
        rows.append({"products": size, "prices": size, **_measure(client, probe, calls)})
    return rows


def _measure(client: stripe.StripeClient, probe: dict[str, str], calls: int) -> dict[str, float]:
    product, key = probe["product"], probe["lookup_key"]
    return {
        "ms_retrieve_by_id": _ms_per_call(calls, lambda: client.v1.products.retrieve(product)),
        "ms_list_products_limit_100": _ms_per_call(
            calls, lambda: client.v1.products.list({"limit": 100})
        ),
        "ms_list_products_active_limit_100": _ms_per_call(
            calls, lambda: client.v1.products.list({"active": True, "limit": 100})
        ),
        "ms_list_prices_by_product": _ms_per_call(
            calls, lambda: client.v1.prices.list({"product": product})
        ),
        "ms_list_prices_by_lookup_key": _ms_per_call(
            calls, lambda: client.v1.prices.list({"lookup_keys": [key]})
        ),
    }


def main() -> None:
    """Run both benchmarks and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with EmbeddedEmulator() as server:
        result = {
            "benchmark": "stripe_emulator",
            "python": platform.python_version(),
            "client": f"stripe-python {stripe.VERSION} (requests), sequential, loopback",
            "throughput": throughput(server.url, args.requests),
            "flatness": flatness(server, sizes, args.calls),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

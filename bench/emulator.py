"""Benchmark of the Stripe emulator (not a test): requests/s with the real SDK as client on
loopback, and list/filter latency as the store grows to 100k objects (seeded directly into the
state, then timed over HTTP). Prints one JSON document.

    .venv/bin/python bench/emulator.py [--requests 500] [--sizes 1000,10000,100000]

The billing scenario (`--scenario billing`, or `all` for both) measures, through the SDK:
- subscription create throughput, sequential and from `--threads` client threads;
- renewals: `--renewals` subscriptions (default 1,000) on one test clock advanced by one
  month: the advance's wall time, the invoices it created and the events it emitted;
- list flatness as the store grows (`--list-sizes`, default 1,000 and 10,000; add 100,000 to
  opt in): a `limit=100` page and a `starting_after` page of subscriptions and of invoices.
  The store is grown in-process: one subscription (and its first invoice) is made by the
  emulator's own `subscriptions.create` handler, then cloned under new ids straight into the
  store (its indexes are kept by `Store.insert`); no events are emitted for the clones.

    .venv/bin/python bench/emulator.py --scenario billing [--subscriptions 300] [--threads 4]
        [--renewals 1000] [--list-sizes 1000,10000,100000]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import stripe

from stripe_emulator.core import Emulator, RequestContext
from stripe_emulator.ids import new_id
from stripe_emulator.resources import subscriptions as subscription_handlers
from stripe_emulator.server import EmbeddedEmulator

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z: the renewal clock's frozen_time
MONTH_LATER = 1_769_904_000  # 2026-02-01T00:00:00Z


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


# --- billing ---------------------------------------------------------------------------------


def _monthly_price(client: stripe.StripeClient) -> str:
    price = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 1500,
            "recurring": {"interval": "month"},
            "product_data": {"name": "bench plan"},
        }
    )
    return price.id


def _paying_customer(client: stripe.StripeClient, clock: str | None = None) -> str:
    """A customer with an attached pm_card_visa as the invoices' default payment method."""
    params: dict[str, Any] = {"email": "bench@example.com"}
    if clock is not None:
        params["test_clock"] = clock
    customer = client.v1.customers.create(params)  # type: ignore[arg-type]
    pm = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    client.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": pm.id}})
    return customer.id


def subscription_throughput(url: str, count: int, threads: int) -> dict[str, Any]:
    """Subscriptions created per second (each one: first invoice finalized and charged),
    sequential and from `threads` client threads (one SDK client per thread)."""
    client = _client(url)
    price = _monthly_price(client)
    customers = [_paying_customer(client) for _ in range(2 * count)]

    def create(cl: stripe.StripeClient, customer: str) -> None:
        sub = cl.v1.subscriptions.create({"customer": customer, "items": [{"price": price}]})
        assert sub.status == "active", sub.status

    sequential = _rate(count, lambda i: create(client, customers[i]))
    clients = [_client(url) for _ in range(threads)]
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: create(clients[i % threads], customers[count + i]), range(count)))
    threaded = round(count / (time.perf_counter() - started), 1)
    return {
        "subscriptions": count,
        "sequential_per_s": sequential,
        "threads": threads,
        "threaded_per_s": threaded,
    }


def renewals(server: EmbeddedEmulator, count: int) -> dict[str, Any]:
    """`count` monthly subscriptions on one test clock, advanced by one month (renewal
    invoices drafted), then by two hours more (finalized and paid)."""
    client = _client(server.url)
    store = server.emulator.store
    price = _monthly_price(client)
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": T0}).id
    started = time.perf_counter()
    for _ in range(count):
        customer = _paying_customer(client, clock)
        client.v1.subscriptions.create({"customer": customer, "items": [{"price": price}]})
    setup_s = time.perf_counter() - started
    invoices, events = len(store.collection("invoice")), len(store.collection("event"))
    started = time.perf_counter()
    advanced = client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": MONTH_LATER})
    wall = time.perf_counter() - started
    assert advanced.status == "ready"
    drafted = len(store.collection("invoice")) - invoices
    events_month = len(store.collection("event")) - events
    # Renewal invoices are drafted at the period end and finalized about an hour later, then
    # charged (Stripe's timing): a second advance of two hours finalizes and pays them.
    started = time.perf_counter()
    client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": MONTH_LATER + 7200})
    wall_finalize = time.perf_counter() - started
    renewed = [
        i
        for i in store.collection("invoice").objects.values()
        if i.get("billing_reason") == "subscription_cycle"
    ]
    return {
        "subscriptions_on_clock": count,
        "setup_s_via_sdk": round(setup_s, 2),
        "advance_one_month_wall_s": round(wall, 3),
        "target_s": 10,
        "target_met": wall < 10,
        "invoices_created": drafted,
        "events_emitted": events_month,
        "subscriptions_per_s_renewed": round(count / wall, 1),
        "then_advance_2h_finalize_and_pay_wall_s": round(wall_finalize, 3),
        "renewal_invoices_paid": sum(1 for i in renewed if i["status"] == "paid"),
        "events_emitted_by_both_advances": len(store.collection("event")) - events,
    }


_CLONED_ID = re.compile(r'"((?:sub|si|in|il)_[A-Za-z0-9]+)"')


def _template_subscription(server: EmbeddedEmulator) -> tuple[str, str]:
    """One subscription and its first invoice, made by the emulator's own create handler
    in-process; returned as JSON text to clone."""
    client = _client(server.url)
    price, customer = _monthly_price(client), _paying_customer(client)
    emulator = server.emulator
    with emulator.lock:
        ctx = RequestContext(emulator, "req_bench_seed", None, "/v1/subscriptions")
        sub = subscription_handlers.create(
            ctx, {"customer": customer, "items": [{"price": price}]}, {}
        )
        stored_sub = emulator.store.get("subscription", sub["id"])
        stored_invoice = emulator.store.get("invoice", sub["latest_invoice"])
    assert stored_sub is not None
    assert stored_invoice is not None
    return json.dumps(stored_sub), json.dumps(stored_invoice)


def grow_billing(emulator: Emulator, templates: tuple[str, str], total: int) -> dict[str, str]:
    """Clone the template subscription and invoice under new ids until each collection holds
    `total`; returns the id of the middle subscription and invoice (for `starting_after`)."""
    store = emulator.store
    sub_text, invoice_text = templates
    ids = sorted(set(_CLONED_ID.findall(sub_text + invoice_text)))
    with emulator.lock:
        for _ in range(len(store.collection("subscription")), total):
            fresh = {old: new_id(old.split("_", 1)[0]) for old in ids}

            def swap(text: str, fresh: dict[str, str] = fresh) -> str:
                return _CLONED_ID.sub(lambda m: f'"{fresh[m.group(1)]}"', text)

            store.insert("subscription", json.loads(swap(sub_text)))
            store.insert("invoice", json.loads(swap(invoice_text)))
        middle: dict[str, str] = {}
        for kind in ("subscription", "invoice"):
            collection = store.collection(kind)
            order = list(collection.objects)
            middle[kind] = order[len(order) // 2]
    return middle


def billing_flatness(server: EmbeddedEmulator, sizes: list[int], calls: int) -> dict[str, Any]:
    """Median ms of a first `limit=100` page and a `starting_after` page (from the middle of
    the store) of subscriptions and invoices, at each store size."""
    client = _client(server.url)
    templates = _template_subscription(server)
    rows = []
    for size in sizes:
        started = time.perf_counter()
        middle = grow_billing(server.emulator, templates, size)
        grown = time.perf_counter() - started
        sub_after, inv_after = middle["subscription"], middle["invoice"]
        page = client.v1.subscriptions.list({"limit": 100, "starting_after": sub_after})
        assert len(page.data) == 100
        rows.append(
            {
                "subscriptions": len(server.emulator.store.collection("subscription")),
                "invoices": len(server.emulator.store.collection("invoice")),
                "populate_s": round(grown, 2),
                "ms_list_subscriptions_limit_100": _ms_per_call(
                    calls, lambda: client.v1.subscriptions.list({"limit": 100})
                ),
                "ms_list_subscriptions_starting_after": _ms_per_call(
                    calls,
                    lambda after=sub_after: client.v1.subscriptions.list(
                        {"limit": 100, "starting_after": after}
                    ),
                ),
                "ms_list_subscriptions_status_all_limit_100": _ms_per_call(
                    calls, lambda: client.v1.subscriptions.list({"limit": 100, "status": "all"})
                ),
                "ms_list_invoices_limit_100": _ms_per_call(
                    calls, lambda: client.v1.invoices.list({"limit": 100})
                ),
                "ms_list_invoices_starting_after": _ms_per_call(
                    calls,
                    lambda after=inv_after: client.v1.invoices.list(
                        {"limit": 100, "starting_after": after}
                    ),
                ),
            }
        )
    return {
        "populated": "one subscription + first invoice made in-process by the emulator's "
        "subscriptions.create handler, cloned under new ids (sub_, si_, in_, il_) via "
        "Store.insert; clones emit no events",
        "calls_per_median": calls,
        "rows": rows,
    }


def main() -> None:
    """Run the chosen benchmarks and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenario", choices=("catalog", "billing", "all"), default="catalog")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--subscriptions", type=int, default=300)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--renewals", type=int, default=1000)
    parser.add_argument("--list-sizes", default="1000,10000")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "benchmark": "stripe_emulator",
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "client": f"stripe-python {stripe.VERSION} (requests), loopback",
    }
    if args.scenario in ("catalog", "all"):
        sizes = [int(s) for s in args.sizes.split(",")]
        with EmbeddedEmulator() as server:
            result["throughput"] = throughput(server.url, args.requests)
            result["flatness"] = flatness(server, sizes, args.calls)
    if args.scenario in ("billing", "all"):
        with EmbeddedEmulator() as server:
            result["subscription_create"] = subscription_throughput(
                server.url, args.subscriptions, args.threads
            )
        with EmbeddedEmulator() as server:
            result["renewal"] = renewals(server, args.renewals)
        with EmbeddedEmulator() as server:
            list_sizes = [int(s) for s in args.list_sizes.split(",")]
            result["billing_flatness"] = billing_flatness(server, list_sizes, args.calls)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

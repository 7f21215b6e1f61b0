"""Apply under faults: a crash at every mutating request, 429 storms, 5xx, a permanent 400,
and saved plans that no longer hold.

The crash matrix is the evidence for DESIGN §7's promise ("a rerun after any crash converges
with zero duplicates"): for every POST of a 30+-step apply, one run crashes exactly there and a
second run (a fresh controller on the same store, as after a process restart) must converge with
exactly one Stripe object per desired key.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe

from billing_reconciler.apply import ApplyError
from billing_reconciler.controller import Controller, ReconcileError
from billing_reconciler.desired.state import DesiredState
from billing_reconciler.planning.serialize import plan_from_json, plan_to_json
from billing_reconciler.store import JournalRepository, JournalState, RunRepository, Store
from billing_reconciler.stripe_gateway import NO_RETRY, RetryPolicy

from .conftest import MakeController, converge, write_desired

# --- a catalog big enough for a 30+-step apply -----------------------------------------------

FEATURES = ("export", "sso", "audit_log")
PRODUCTS = 5
PRICES_PER_PRODUCT = 4


def _price_yaml(product: int, price: int) -> str:
    interval = ("month", "year", "week", None)[price]
    lines = [
        f"      - name: p{price}",
        f"        amount: {100 * (product + 1) + price}",
        "        currency: usd",
    ]
    if interval:
        lines.insert(1, f"        interval: {interval}")
    if price == 0:
        lines += ["        currency_options:", f"          eur: {{amount: {90 * (product + 1)}}}"]
    return "\n".join(lines) + "\n"


def big_catalog() -> str:
    """5 products x 4 prices, 3 features, one feature per product, one plan."""
    out = ["features:\n"]
    out += [f"  - name: {name}\n    title: {name.title()}\n" for name in FEATURES]
    out.append("products:\n")
    for product in range(PRODUCTS):
        out.append(f"  - name: product{product}\n    title: Product {product}\n    prices:\n")
        out += [_price_yaml(product, price) for price in range(PRICES_PER_PRODUCT)]
        out.append(f"    features:\n      - name: {FEATURES[product % len(FEATURES)]}\n")
    out.append(
        "plans:\n  - name: everything\n    title: Everything\n    interval: month\n"
        "    products:\n" + "".join(f"      - name: product{p}\n" for p in range(PRODUCTS))
    )
    return "".join(out)


# Mutating requests of a fresh apply of `big_catalog()`: features, products, prices, feature
# attachments, and one default-price repoint per product, which also records the product's
# attachments in its `br_features` metadata (plans live in the store only).
EXPECTED_POSTS = len(FEATURES) + PRODUCTS + PRODUCTS * PRICES_PER_PRODUCT + PRODUCTS + PRODUCTS
EXPECTED_COUNTS = {
    "feature": len(FEATURES),
    "product": PRODUCTS,
    "price": PRODUCTS * PRICES_PER_PRODUCT,
    "product_feature": PRODUCTS,
}


def sdk(emulator: Any) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_auditor", base_addresses={"api": emulator.url})


def _all(page: Any) -> Iterator[Any]:
    return iter(page.auto_paging_iter())


def stripe_objects(emulator: Any) -> dict[str, list[str]]:
    """Every object in the emulator account by kind, as `br_key`s (unmarked ones as `?id`)."""
    client = sdk(emulator)

    def key(obj: Any) -> str:
        return str(obj.to_dict().get("metadata", {}).get("br_key") or f"?{obj.id}")

    products = list(_all(client.v1.products.list({"limit": 100})))
    attached = [
        f"{key(product)}:{pf.entitlement_feature.lookup_key}"
        for product in products
        for pf in _all(client.v1.products.features.list(product.id, {"limit": 100}))
    ]
    return {
        "feature": [key(f) for f in _all(client.v1.entitlements.features.list({"limit": 100}))],
        "product": [key(p) for p in products],
        "price": [key(p) for p in _all(client.v1.prices.list({"limit": 100}))],
        "product_feature": attached,
    }


def assert_exactly_once(emulator: Any) -> None:
    objects = stripe_objects(emulator)
    assert {kind: len(keys) for kind, keys in objects.items()} == EXPECTED_COUNTS, objects
    for kind, keys in objects.items():
        duplicated = [k for k, n in Counter(keys).items() if n > 1]
        assert duplicated == [], f"duplicate {kind}s: {duplicated}"


def mutating(emulator: Any) -> list[Any]:
    return [r for r in emulator.control.requests(method="POST") if r.path.startswith("/v1/")]


def assert_converged_from_scratch(controller: Controller) -> None:
    """A fresh pass (as after a restart) converges, and planning once more finds nothing."""
    converge(controller)
    again = controller.plan().plan
    assert again.steps == (), [(s.action, s.key) for s in again.steps]


# --- the crash matrix ---------------------------------------------------------------------


def test_big_catalog_gives_a_30_step_apply(
    tmp_path: Path, emulator: Any, make_controller: MakeController
) -> None:
    """Guards the matrix below: it must cover every mutating request of a 30+-step apply."""
    controller = make_controller(write_desired(tmp_path, big_catalog()))
    planned = controller.plan()
    assert len(planned.plan.steps) >= 30
    converge(controller)
    assert len(mutating(emulator)) == EXPECTED_POSTS
    assert_exactly_once(emulator)


# `drop_after_commit` with no retry: Stripe committed, the client saw a dead connection and
# stopped; the journal says failed, the object exists. `500` with no retry: nothing committed.
# Both at every POST. `drop_after_commit` with retries: the gateway resends the same
# idempotency key and Stripe replays the first response, so the first run already succeeds;
# that path is the same for every request, so every fifth POST (and the last) keeps the file
# under a minute.
EVERY_POST = range(1, EXPECTED_POSTS + 1)
SAMPLED_POSTS = sorted({*range(1, EXPECTED_POSTS + 1, 5), EXPECTED_POSTS})
CRASHES = [
    pytest.param(kind, retry, n, id=f"{kind}-{label}-post{n}")
    for kind, retry, label, posts in (
        ("drop_after_commit", NO_RETRY, "noretry", EVERY_POST),
        ("500", NO_RETRY, "noretry", EVERY_POST),
        ("drop_after_commit", None, "retry", SAMPLED_POSTS),
    )
    for n in posts
]


@pytest.mark.parametrize(("kind", "retry", "nth"), CRASHES)
def test_crash_at_every_mutating_request_then_rerun_converges_without_duplicates(
    tmp_path: Path,
    emulator: Any,
    make_controller: MakeController,
    kind: str,
    retry: RetryPolicy | None,
    nth: int,
) -> None:
    state = write_desired(tmp_path, big_catalog())
    emulator.control.add_fault(method="POST", path_prefix="/v1/", nth=nth, kind=kind)
    crashing = make_controller(state, **({"retry": retry} if retry else {}))
    try:
        crashing.apply(crashing.plan())
        crashed = False
    except ApplyError:
        crashed = True
    assert crashed is (retry is NO_RETRY), "a fault without retries must surface"
    assert emulator.control.faults()[0]["fired"]

    assert_converged_from_scratch(make_controller(state))
    assert_exactly_once(emulator)


# --- retries: 429 storm, 5xx, timeouts ------------------------------------------------------


class CeilingJitter(random.Random):
    """Backoff at the top of each jitter range, so the retry budget is a known sum of delays."""

    def uniform(self, a: float, b: float) -> float:
        return b


def journal_of(store: Store, run_id: str) -> list[tuple[str, JournalState]]:
    with store.session() as session:
        return [(r.object_key, r.state) for r in JournalRepository(session).for_run(run_id)]


def test_429_storm_converges_within_the_retry_budget(
    tmp_path: Path, emulator: Any, make_controller: MakeController, store: Store
) -> None:
    # The emulator answers 429 past 20 requests per second; our limiter is set far above it,
    # so the account's limit is what paces us. Backoff sums to 0.05+0.1+0.2+0.4*6 = 2.75 s
    # over nine retries, more than the one-second window a 429 can last.
    emulator.control.set_rate_limit(20)
    budget = RetryPolicy(max_attempts=10, base_delay=0.05, max_delay=0.4, rng=CeilingJitter())
    controller = make_controller(write_desired(tmp_path, big_catalog()), retry=budget)
    run_id, outcomes, residual = controller.apply(controller.plan())

    assert residual.steps == ()
    log = emulator.control.requests()
    assert sum(1 for r in log if r.status == 429) > 0, "the storm never happened"
    states = journal_of(store, run_id)
    assert len(states) == len(outcomes)
    assert {state for _, state in states} == {JournalState.DONE}
    emulator.control.set_rate_limit(None)
    assert_exactly_once(emulator)


def test_5xx_and_timeouts_are_retried_with_zero_failed_steps(
    tmp_path: Path, emulator: Any, make_controller: MakeController, store: Store
) -> None:
    control = emulator.control
    for nth in (1, 4, 9, 17, 30):
        control.add_fault(method="POST", path_prefix="/v1/", nth=nth, kind="500")
    control.add_fault(method="POST", path_prefix="/v1/prices", nth=3, kind="drop_after_commit")
    control.add_fault(method="GET", path_prefix="/v1/prices", nth=1, kind="500")
    control.set_hang_seconds(2)
    control.add_fault(method="POST", path_prefix="/v1/products", nth=2, kind="timeout")

    controller = make_controller(write_desired(tmp_path, big_catalog()), timeout=0.5)
    run_id, _, residual = controller.apply(controller.plan())

    assert residual.steps == ()
    assert all(f["fired"] for f in control.faults())
    assert {state for _, state in journal_of(store, run_id)} == {JournalState.DONE}
    statuses = Counter(r.status for r in control.requests())
    assert statuses[500] >= 6
    assert_exactly_once(emulator)


# --- a permanent error mid-apply --------------------------------------------------------------


def test_permanent_400_stops_with_step_message_and_request_id_then_rerun_resumes(
    tmp_path: Path, emulator: Any, make_controller: MakeController, store: Store
) -> None:
    """Someone deletes a product (it has no prices yet) between our product and price steps:
    the first price on it gets Stripe's 400 `No such product`."""
    state = write_desired(tmp_path, big_catalog())
    client = sdk(emulator)
    controller = make_controller(state)
    planned = controller.plan()
    keys = [s.key for s in planned.plan.steps]
    victim_step = keys.index("product/product2")
    failing_key = "price/product2/p0"

    def delete_product_after_it_is_created(outcome: Any) -> None:
        if outcome.index == victim_step:
            client.v1.products.delete(outcome.stripe_id)

    with pytest.raises(ApplyError) as raised:
        controller.apply(planned, on_step=delete_product_after_it_is_created)
    error = raised.value
    assert error.step.key == failing_key
    assert error.request_id
    assert error.request_id.startswith("req_")
    message = str(error)
    assert failing_key in message
    assert "No such product" in message
    assert error.request_id in message

    with store.session() as session:
        run = RunRepository(session).latest("catalog")
        assert run is not None
        entries = JournalRepository(session).for_run(run.run_id)
    failed_at = keys.index(failing_key)
    by_index = {e.step_index: e for e in entries}
    # Everything before the failing step is done; the failing step is failed; steps of its
    # batch (sent concurrently) may have run too, but no later batch started.
    assert all(by_index[i].state is JournalState.DONE for i in range(failed_at))
    failed = by_index[failed_at]
    assert failed.state is JournalState.FAILED
    assert failed.request_id == error.request_id
    assert "No such product" in (failed.error or "")
    batch = planned.plan.steps[failed_at].batch
    assert all(planned.plan.steps[i].batch == batch for i in by_index if i > failed_at)

    emulator.control.clear_requests()
    assert_converged_from_scratch(make_controller(state))
    # The rerun resumed: nothing done before the failure was created again.
    created = [r.path for r in mutating(emulator) if r.path.count("/") == 2]
    assert "/v1/entitlements/features" not in created
    assert created.count("/v1/products") == 1  # only the deleted one
    assert_exactly_once(emulator)


# --- saved plans -----------------------------------------------------------------------------


def saved(controller: Controller) -> str:
    return plan_to_json(controller.plan().plan)


def test_saved_plan_applies_when_nothing_changed(
    tmp_path: Path, emulator: Any, make_controller: MakeController
) -> None:
    controller = make_controller(write_desired(tmp_path, big_catalog()))
    text = saved(controller)
    planned = controller.check_saved_plan(plan_from_json(text))
    _, _, residual = controller.apply(planned)
    assert residual.steps == ()


def test_saved_plan_is_refused_after_stripe_changed(
    tmp_path: Path, emulator: Any, make_controller: MakeController
) -> None:
    state = write_desired(tmp_path, big_catalog())
    converge(make_controller(state))
    edited = big_catalog().replace("amount: 100\n", "amount: 150\n", 1)
    controller = make_controller(write_desired(tmp_path, edited))
    text = saved(controller)

    # Someone renames a managed product in the dashboard after the plan was reviewed.
    client = sdk(emulator)
    [product] = [
        p
        for p in _all(client.v1.products.list({"limit": 100}))
        if p.to_dict()["metadata"].get("br_key") == "product/product0"
    ]
    client.v1.products.update(product.id, {"name": "Renamed by hand"})

    with pytest.raises(ReconcileError, match="fingerprint"):
        controller.check_saved_plan(plan_from_json(text))
    assert mutating(emulator)[-1].path == f"/v1/products/{product.id}"  # we wrote nothing


def test_saved_plan_older_than_24_hours_is_refused(
    tmp_path: Path, emulator: Any, make_controller: MakeController
) -> None:
    state: DesiredState = write_desired(tmp_path, big_catalog())
    made_at = time.time()
    text = saved(make_controller(state, clock=lambda: made_at))

    almost = make_controller(state, clock=lambda: made_at + 24 * 3600 - 60)
    almost.check_saved_plan(plan_from_json(text))  # 23h59m: still good

    later = make_controller(state, clock=lambda: made_at + 24 * 3600 + 60)
    emulator.control.clear_requests()
    with pytest.raises(ReconcileError, match="older than 24 h"):
        later.check_saved_plan(plan_from_json(text))
    assert emulator.control.requests() == []  # refused before observing anything


def test_missing_object_in_a_parameter_is_stripes_400(emulator: Any) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        sdk(emulator).v1.prices.create(
            {"product": "prod_missing", "currency": "usd", "unit_amount": 100}
        )
    assert raised.value.code == "resource_missing"
    assert raised.value.http_status == 400

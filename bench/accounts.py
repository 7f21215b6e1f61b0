"""Benchmark of the customers domain (not a test): observing, planning and creating the Stripe
customers of N billing accounts, against the Stripe emulator. Prints one JSON document.

    .venv/bin/python bench/accounts.py [--accounts 100000] [--scenario observe|plan|create|all]
        [--create-accounts 2000] [--rate 100] [--retrieve-sample 300]
        [--database-url sqlite:///...|postgresql+psycopg://...]

The emulator (`EmbeddedEmulator`) runs in a child process, so the reconciler's CPU time, peak
memory and GIL are measured alone; calls are counted from the emulator's request log
(`EmulatorControl.counters()`). The store is SQLite in a temporary directory unless
`--database-url` names one (it must be empty: the benchmark creates its accounts there).

Scenarios (issue 10, "Performance"):
- `observe` (and `plan`, measured on the same pass): N customers of ours are seeded straight
  into the emulator's state (one made over HTTP, so there is a `customer.created` event, then
  cloned under new ids through `Store.insert`; clones emit no events), and N matching active
  accounts into the store through `AccountRepository`, in batches of one transaction, each
  linked to its customer with its last-applied fields (a converged fleet). Then:
  - a full resync (`full_resync_interval` due): list calls (target: ceil(N/100)), wall;
  - the plan of the customers domain from those observed records: `time.process_time` of
    `CustomersDomain.plan` (target: under 5 s at 100k) and its peak Python memory
    (tracemalloc, a second run), and the process's peak RSS (`ru_maxrss`; target: under 1 GB);
  - the cursor recorded by an apply of the bookkeeping restore, then an events-cursor refresh
    with no changes: its calls (target: at most 2) and wall;
  - the alternative, one retrieve per customer per interval (Frontier's customer syncer:
    100,000 calls per minute): N calls; `--retrieve-sample` retrieves through the gateway's
    `customers_by_id` (unpaced) are timed and extrapolated to N, and N is set against the
    rate budget.
- `create`: `--create-accounts` accounts (default 2,000; 10,000 for the record) without a
  customer; a cold apply of the customers domain creates them, paced by the gateway's budget
  (`reconcile.rate_limit_per_second` = `--rate`), with the emulator's own rate limit set to the
  same budget. Reported: POSTs/s of the apply phase against the budget (target: >= 90%), failed
  requests and 429s (target: 0), the convergence re-plan's calls, the client's CPU and SQL
  statements per step. With `--profile`, first `--profile-creates` (400) creates applied one
  at a time, unpaced, under cProfile (`--profile-dump PATH` keeps the pstats): the
  machine-independent cost of one create step.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import pstats
import re
import sys
import tempfile
import threading
import time
import tracemalloc
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import harness
from harness import EmulatorProcess
from sqlalchemy import event, insert
from sqlalchemy.engine import Engine

from billing_reconciler.controller import Controller, PlanOptions
from billing_reconciler.desired import load_desired
from billing_reconciler.domains.customer_merge import last_applied_to_json
from billing_reconciler.domains.customer_types import CustomersObserved, LiveCustomers
from billing_reconciler.model_customers import CustomerFields
from billing_reconciler.registry import CUSTOMERS
from billing_reconciler.store import AccountRepository, Store
from billing_reconciler.store.accounts import new_account_id
from billing_reconciler.store.tables import BillingAccountModel, LedgerBalanceModel
from billing_reconciler.stripe_gateway import RetryPolicy, StripeGateway, customers_by_id
from stripe_emulator.control import EmulatorControl

INSTALLATION = "bench"
FRONTIER_CALLS_PER_MINUTE = 100_000
PLAN_CPU_TARGET_S = 5.0
PEAK_MEMORY_TARGET_MB = 1024
STORE_BATCH = 1000
CUSTOMER_PATH = re.compile(r"^/v1/customers/cus_[A-Za-z0-9]+$")


def org_id(index: int) -> str:
    return f"org-{index:06d}"


def fields_of(index: int) -> CustomerFields:
    return CustomerFields(
        name=f"Org {index}", email=f"billing+{index}@example.com", phone=None
    ).canonical()


# --- the emulator in its own process ----------------------------------------------------------


_CUSTOMER_ID = re.compile(r'"(cus_[A-Za-z0-9]+)"')


def _seed_customers(server: Any, total: int, installation: str) -> list[tuple[str, str]]:
    """`total` customers of ours, org ids `org-000000`...: the first created over HTTP (so a
    `customer.created` event exists for the cursor), the others cloned into the store."""
    import stripe

    from billing_reconciler.model_customers import CustomerOwner, customer_key
    from stripe_emulator.ids import new_id

    def marker(index: int) -> dict[str, str]:
        org = org_id(index)
        owner = CustomerOwner(installation_id=installation, key=customer_key(org), org_id=org)
        return owner.as_metadata()

    client = stripe.StripeClient(
        "sk_test_bench", base_addresses={"api": server.url}, max_network_retries=0
    )
    first = fields_of(0)
    made = client.v1.customers.create(
        {"name": first.name or "", "email": first.email or "", "metadata": marker(0)}
    )
    pairs = [(org_id(0), made.id)]
    emulator = server.emulator
    with emulator.lock:
        template = json.dumps(emulator.store.get("customer", made.id))
        for index in range(1, total):
            customer_id = new_id("cus")
            clone = json.loads(_CUSTOMER_ID.sub(f'"{customer_id}"', template))
            fields = fields_of(index)
            clone["name"], clone["email"] = fields.name, fields.email
            clone["metadata"] = marker(index)
            clone["invoice_prefix"] = f"{index:08X}"[-8:]
            emulator.store.insert("customer", clone)
            pairs.append((org_id(index), customer_id))
    return pairs


def emulator_process() -> AbstractContextManager[EmulatorProcess]:
    """The emulator in its own process, seeding customers in-process on request."""
    return harness.emulator_process(_seed_customers)


def seed(emulator: EmulatorProcess, total: int) -> tuple[list[tuple[str, str]], float]:
    """`total` customers of ours in the emulator (`_seed_customers`): (org, customer) pairs."""
    pairs, seconds = emulator.call(total, INSTALLATION)
    return pairs, seconds


# --- the reconciler's side ----------------------------------------------------------------------


def write_desired(root: Path, rate: int, concurrency: int | None = None) -> Path:
    (root / "plans").mkdir(parents=True, exist_ok=True)
    threads = "" if concurrency is None else f"  apply_concurrency: {concurrency}\n"
    (root / "billing.yaml").write_text(
        "billing:\n  default_currency: usd\n"
        f"reconcile:\n  installation_id: {INSTALLATION}\n  rate_limit_per_second: {rate}\n"
        + threads
    )
    return root


def controller_for(desired: Path, store: Store, url: str) -> Controller:
    result = load_desired(desired)
    if result.state is None:
        raise SystemExit("\n".join(str(d) for d in result.diagnostics))
    state = result.state
    gateway = StripeGateway(
        api_key="sk_test_bench",
        api_base=url,
        # As the CLI builds it: the budget is the config's.
        rate_limit_per_second=state.config.reconcile.rate_limit_per_second,
        retry=RetryPolicy(max_attempts=6, base_delay=0.05, max_delay=1.0),
        timeout_seconds=300,
    )
    return Controller(registration=CUSTOMERS, state=state, gateway=gateway, store=store)


def seed_accounts(store: Store, pairs: list[tuple[str, str | None]]) -> float:
    """Active accounts of the orgs, through `AccountRepository`, `STORE_BATCH` per
    transaction; linked to their customer (with last-applied fields) when one is given."""
    started = time.perf_counter()
    for start in range(0, len(pairs), STORE_BATCH):
        with store.session() as session:
            accounts = AccountRepository(session)
            for index, (org, customer) in enumerate(pairs[start : start + STORE_BATCH], start):
                fields = fields_of(index)
                account = accounts.create(org, name=fields.name, email=fields.email, currency=None)
                if customer is not None:
                    accounts.set_stripe_customer(account.id, customer)
                    accounts.set_last_applied(account.id, last_applied_to_json(fields))
    return time.perf_counter() - started


def seed_accounts_bulk(store: Store, pairs: list[tuple[str, str]]) -> float:
    """The same linked accounts (and their zero balance rows) as `seed_accounts`, written
    with one multi-row INSERT per `STORE_BATCH` into the store's own tables: the repository
    path costs ~7 ms per account here (two lookups, savepoints, three flushes), 12 minutes for
    100k. Checked afterwards with `AccountRepository.count_by_state`."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    for start in range(0, len(pairs), STORE_BATCH):
        accounts, balances = [], []
        for index, (org, customer) in enumerate(pairs[start : start + STORE_BATCH], start):
            fields = fields_of(index)
            account_id = new_account_id()
            accounts.append(
                {
                    "id": account_id,
                    "org_id": org,
                    "stripe_customer_id": customer,
                    "state": "active",
                    "offline": False,
                    "name": fields.name,
                    "email": fields.email,
                    "phone": None,
                    "address": None,
                    "tax_ids": [],
                    "currency": None,
                    "credit_min": 0,
                    "due_in_days": 30,
                    "test_clock": None,
                    "metadata_": {},
                    "contract": False,
                    "disabled_reason": None,
                    "last_applied": last_applied_to_json(fields),
                    "created_at": now,
                    "updated_at": now,
                }
            )
            balances.append({"account_id": account_id, "amount": 0, "updated_at": None})
        with store.session() as session:
            session.execute(insert(BillingAccountModel), accounts)
            session.execute(insert(LedgerBalanceModel), balances)
    with store.session() as session:
        active = AccountRepository(session).count_by_state()["active"]
    if active != len(pairs):
        raise SystemExit(f"seeded {active} active accounts, wanted {len(pairs)}")
    return time.perf_counter() - started


def _template(path: str) -> str:
    return "/v1/customers/{id}" if CUSTOMER_PATH.match(path) else path


# --- observe / plan -------------------------------------------------------------------------------


def observe_and_plan(
    emulator: EmulatorProcess, root: Path, url: str, size: int, args: argparse.Namespace
) -> dict[str, Any]:
    control = emulator.control
    control.reset()
    requests = harness.Requests(control, _template)
    result: dict[str, Any] = {"accounts": size}
    pairs, seed_s = seed(emulator, size)
    result["seed_emulator_s"] = round(seed_s, 2)
    store = Store.open(url)
    try:
        if args.seed == "repository":
            result["seed_store_s"] = round(seed_accounts(store, list(pairs)), 2)
        else:
            result["seed_store_s"] = round(seed_accounts_bulk(store, pairs), 2)
        result["seed_store_via"] = args.seed
        print(f"# seeded {size} customers and accounts", file=sys.stderr, flush=True)
        controller = controller_for(write_desired(root / "desired", args.rate), store, control.url)
        domain = controller.domain
        rss_before = harness.peak_rss_mb()

        # 1. Full resync: no cursor yet, so it is due.
        context = controller._context(PlanOptions())
        desired = domain.desired(controller.state, context)
        reader = controller.registration.open_reader(controller.gateway, store)
        requests.start()
        started = time.perf_counter()
        observed = domain.observe(reader, desired, context)
        observe_wall = time.perf_counter() - started
        calls = requests.counts()
        limit = max(1, math.ceil(size / 100))
        lists = calls["by_endpoint"].get("GET /v1/customers", 0)
        result["full_resync"] = {
            "wall_s": round(observe_wall, 2),
            "calls": calls,
            "customer_list_calls": lists,
            "limit_ceil_n_over_100": limit,
            "customers_observed": len(observed.live.customers),
            "accounts_observed": len(observed.accounts),
            "peak_rss_mb_before": rss_before,
            "peak_rss_mb_after": harness.peak_rss_mb(),
            "pass": lists <= limit and calls["total"] <= limit + 1,
        }
        print(f"# full resync: {lists} list calls, {observe_wall:.1f} s", file=sys.stderr)

        # 2. Plan from the observed records: first K accounts (and their customers), then all.
        subsets = [int(k) for k in args.plan_subsets.split(",") if k and int(k) < size]
        rows = []
        for k in [*subsets, size]:
            if k > args.max_plan_accounts:
                break
            part = _first(observed, k)
            row = _plan_cost(domain, desired, part, context, profile=args.profile)
            rows.append(row)
            print(f"# plan of {k}: {row['cpu_s']:.2f} s CPU", file=sys.stderr, flush=True)
        result["plan"] = _plan_summary(rows, size)
        result["plan"]["peak_rss_mb_after_observe_and_plan"] = harness.peak_rss_mb()
        result["plan"]["target_memory_mb"] = PEAK_MEMORY_TARGET_MB
        result["plan"]["pass_memory"] = harness.peak_rss_mb() < PEAK_MEMORY_TARGET_MB

        # 3. Record the cursor: apply the bookkeeping restore of a plan of this resync (the
        # accounts left out, which changes nothing else: the full plan has no steps); the
        # apply's convergence re-plan is already an incremental one. Then an events refresh
        # with no changes.
        bookkeeping = domain.plan(desired, _first(observed, 0), context)
        del observed
        result["record_cursor"], result["events_refresh"] = harness.record_cursor_and_refresh(
            controller, bookkeeping, domain.desired_fields(desired), requests, restores_allowed=True
        )
        result["one_retrieve_per_customer"] = retrieve_comparison(
            control, pairs, size, args, lists, observe_wall
        )
    finally:
        store.close()
    return result


def _first(observed: CustomersObserved, k: int) -> CustomersObserved:
    """The resync's first `k` accounts and their customers (still a complete listing of
    them, so the plan of the part is the plan of a fleet of `k`)."""
    accounts = observed.accounts[:k]
    ids = {a.stripe_id for a in accounts}
    customers = tuple(c for c in observed.live.customers if c.stripe_id in ids)
    return replace(observed, accounts=accounts, live=LiveCustomers(customers=customers))


def _plan_cost(
    domain: Any, desired: Any, observed: CustomersObserved, context: Any, *, profile: bool
) -> dict[str, Any]:
    cpu_started = time.process_time()
    plan = domain.plan(desired, observed, context)
    cpu = time.process_time() - cpu_started
    row: dict[str, Any] = {
        "accounts": len(observed.accounts),
        "customers": len(observed.live.customers),
        "cpu_s": round(cpu, 3),
        "steps": len(plan.steps),
        "restores": [r.kind for r in plan.restores],
    }
    if len(observed.accounts) <= 10_000:
        tracemalloc.start()
        domain.plan(desired, observed, context)
        row["tracemalloc_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        tracemalloc.stop()
        if profile:
            row["profile"] = harness.profile(
                lambda: domain.plan(desired, observed, context), top=12
            )
    return row


def _plan_summary(rows: list[dict[str, Any]], size: int) -> dict[str, Any]:
    """The plan's CPU at `size`: measured, or (when the whole plan was not run) extrapolated
    from the two largest parts as a*k + b*k^2."""
    summary: dict[str, Any] = {"rows": rows, "target_cpu_s": PLAN_CPU_TARGET_S}
    last = rows[-1] if rows else None
    if last is not None and last["accounts"] == size:
        summary |= {"cpu_s": last["cpu_s"], "measured": True}
    elif len(rows) >= 2:
        (k1, t1), (k2, t2) = [(r["accounts"], r["cpu_s"]) for r in rows[-2:]]
        b = (t2 / k2 - t1 / k1) / (k2 - k1)
        a = t1 / k1 - b * k1
        summary |= {
            "cpu_s": round(a * size + b * size * size, 1),
            "measured": False,
            "extrapolated_from": [k1, k2],
            "fit_s": {"linear_per_account": a, "quadratic_per_account_squared": b},
            "growth_last_two": round(t2 / t1, 2) if t1 else None,
        }
    else:
        summary |= {"cpu_s": None, "measured": False}
    cpu = summary.get("cpu_s")
    summary["pass_cpu"] = cpu is not None and cpu < PLAN_CPU_TARGET_S
    return summary


def retrieve_comparison(
    control: EmulatorControl,
    pairs: list[tuple[str, str]],
    size: int,
    args: argparse.Namespace,
    list_calls: int,
    list_wall: float,
) -> dict[str, Any]:
    """Frontier's syncer: one retrieve per customer per interval. A sample through the
    gateway's `customers_by_id` (an unpaced gateway: the emulator's speed, not the budget's)."""
    step = max(1, size // args.retrieve_sample)
    sample = [customer for _, customer in pairs[::step]][: args.retrieve_sample]
    gateway = StripeGateway(
        api_key="sk_test_bench", api_base=control.url, rate_limit_per_second=10_000
    )
    requests = harness.Requests(control, _template)
    requests.start()
    started = time.perf_counter()
    found = customers_by_id(gateway, sample, installation_id=INSTALLATION)
    wall = time.perf_counter() - started
    calls = requests.counts()
    per_call = wall / len(sample)
    return {
        "calls_per_interval": size,
        "frontier_calls_per_minute": FRONTIER_CALLS_PER_MINUTE,
        "frontier_requests_per_second": round(FRONTIER_CALLS_PER_MINUTE / 60, 1),
        "sample": len(sample),
        "sample_found": len(found.customers),
        "sample_calls": calls["total"],
        "sample_wall_s": round(wall, 3),
        "ms_per_retrieve": round(per_call * 1000, 2),
        "extrapolated_wall_s_unpaced": round(per_call * size, 1),
        "wall_s_at_budget": round(size / args.rate, 1),
        "rate_budget_per_second": args.rate,
        "calls_ratio_vs_full_resync": round(size / max(1, list_calls), 1),
        "wall_ratio_vs_full_resync_unpaced": round(per_call * size / max(list_wall, 1e-9), 1),
    }


# --- cold creation ------------------------------------------------------------------------------


def record_releases(gateway: StripeGateway) -> list[float]:
    """Times (monotonic) at which the gateway's rate limiter lets each request through."""
    released: list[float] = []
    acquire = gateway.limiter.acquire

    def recorded() -> float:
        waited = acquire()
        released.append(time.monotonic())
        return waited

    gateway.limiter.acquire = recorded  # type: ignore[method-assign]
    return released


def max_in_any_window(timestamps: list[float], window: float = 1.0) -> int:
    ordered = sorted(timestamps)
    most, start = 0, 0
    for end, moment in enumerate(ordered):
        while ordered[start] <= moment - window:
            start += 1
        most = max(most, end - start + 1)
    return most


class Statements:
    """SQL statements executed by every engine of this process while counting."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self.counting = False
        event.listen(Engine, "before_cursor_execute", self._seen)

    def _seen(self, *_: object) -> None:
        if self.counting:
            with self._lock:
                self.count += 1

    def start(self) -> None:
        with self._lock:
            self.count = 0
        self.counting = True

    def stop(self) -> int:
        self.counting = False
        return self.count

    def close(self) -> None:
        event.remove(Engine, "before_cursor_execute", self._seen)


def profile_creates(
    emulator: EmulatorProcess, root: Path, url: str, size: int, *, dump: str | None = None
) -> dict[str, Any]:
    """`size` creates applied one at a time (`apply_concurrency: 1`, no pacing) under
    cProfile: the client's CPU and SQL statements per create step, and where the CPU goes."""
    control = emulator.control
    control.reset()
    control.set_rate_limit(None)
    store = Store.open(url)
    statements = Statements()
    try:
        seed_accounts(store, [(org_id(i), None) for i in range(size)])
        desired = write_desired(root / "desired", 10_000, concurrency=1)
        controller = controller_for(desired, store, control.url)
        planned = controller.plan()
        total = len(planned.plan.steps)
        profiler = cProfile.Profile()
        done: list[float] = []

        def on_step(_: object) -> None:
            # Steps only: the convergence re-plan after the last one is not a step's cost.
            done.append(time.process_time())
            if len(done) == total:
                profiler.disable()
                statements.stop()

        statements.start()
        cpu_started = time.process_time()
        profiler.enable()
        _, outcomes, _ = controller.apply(planned, on_step=on_step)
        profiler.disable()
        cpu = (done[-1] if done else time.process_time()) - cpu_started
        executed = statements.count
    finally:
        statements.close()
        store.close()
    if dump:
        profiler.dump_stats(dump)
    steps = max(1, len(outcomes))
    report: dict[str, Any] = {
        "creates": len(outcomes),
        "client_cpu_ms_per_create_profiled": round(1000 * cpu / steps, 2),
        "sql_statements_per_create": round(executed / steps, 2),
    }
    for sort in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(sort).print_stats(25)
        lines = [line.rstrip() for line in out.getvalue().splitlines() if line.strip()]
        report[f"top_{sort}"] = lines[-25:]
    return report


def cold_create(
    emulator: EmulatorProcess, root: Path, url: str, size: int, args: argparse.Namespace
) -> dict[str, Any]:
    control = emulator.control
    control.reset()
    requests = harness.Requests(control, _template)
    store = Store.open(url)
    try:
        seed_s = seed_accounts(store, [(org_id(i), None) for i in range(size)])
        controller = controller_for(write_desired(root / "desired", args.rate), store, control.url)
        rate = int(controller.state.config.reconcile.rate_limit_per_second or args.rate)
        control.set_rate_limit(rate)
        released = record_releases(controller.gateway)
        requests.start()
        started = time.perf_counter()
        cpu_started = time.process_time()
        planned = controller.plan()
        plan_cpu = time.process_time() - cpu_started
        planned_at = time.perf_counter()
        plan_calls = requests.counts()
        print(f"# create: planned {len(planned.plan.steps)} steps", file=sys.stderr, flush=True)
        steps_done: list[float] = []
        total = len(planned.plan.steps)
        statements = Statements()

        def on_step(_: object) -> None:
            steps_done.append(time.perf_counter())
            if len(steps_done) == total:
                statements.stop()

        statements.start()
        requests.start()
        first_release = len(released)
        cpu_started, emulator_cpu_started = time.process_time(), emulator.cpu_seconds()
        try:
            _, outcomes, residual = controller.apply(planned, on_step=on_step)
        finally:
            statements.close()
        finished = time.perf_counter()
        apply_cpu = time.process_time() - cpu_started
        emulator_cpu = emulator.cpu_seconds() - emulator_cpu_started
        calls = requests.counts()
        control.set_rate_limit(None)
        applied_until = steps_done[-1] if steps_done else planned_at
        apply_s = applied_until - planned_at
        posts = calls["by_endpoint"].get("POST /v1/customers", 0)
        achieved = posts / apply_s if apply_s > 0 else 0.0
        created = sum(1 for o in outcomes if o.step.kind == "customer" and o.stripe_id)
    finally:
        store.close()
    fraction = achieved / rate
    return {
        "accounts": size,
        "seed_store_s": round(seed_s, 2),
        "rate_budget_per_second": rate,
        "emulator_rate_limit_per_second": rate,
        "plan_wall_s": round(planned_at - started, 2),
        "plan_cpu_s": round(plan_cpu, 3),
        "plan_calls": plan_calls,
        "steps": len(planned.plan.steps),
        "outcomes": len(outcomes),
        "customers_created_by_apply": created,
        "apply_phase_s": round(apply_s, 2),
        "verify_replan_s": round(finished - applied_until, 2),
        # CPU seconds per wall second of apply + re-plan (1.0 = one core busy): the client
        # (16 apply threads under one GIL, the journal) and the emulator's process.
        "client_cpu_per_wall_s": round(apply_cpu / (finished - planned_at), 2),
        "emulator_cpu_per_wall_s": round(emulator_cpu / (finished - planned_at), 2),
        "client_cpu_ms_per_create": round(1000 * apply_cpu / max(1, len(outcomes)), 2),
        "emulator_cpu_ms_per_create": round(1000 * emulator_cpu / max(1, len(outcomes)), 2),
        "sql_statements_per_step": round(statements.count / max(1, len(outcomes)), 2),
        "wall_s": round(finished - started, 2),
        "calls_apply_and_replan": calls,
        "customer_creates": posts,
        "achieved_posts_per_second": round(achieved, 1),
        "fraction_of_budget": round(fraction, 3),
        "max_released_in_any_1s_window": max_in_any_window(released[first_release:]),
        "converged": residual.converged,
        "residual_steps": len(residual.steps),
        "pass": fraction >= 0.9 and calls["failed"] == 0 and calls["rate_limited"] == 0,
    }


# --- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=100_000, help="observe/plan size")
    parser.add_argument("--scenario", choices=("observe", "plan", "create", "all"), default="all")
    parser.add_argument(
        "--create-accounts", type=int, default=2_000, help="cold creation size (10000: record)"
    )
    parser.add_argument("--rate", type=int, default=100, help="reconcile.rate_limit_per_second")
    parser.add_argument("--retrieve-sample", type=int, default=300)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile the plan (top lines); create: also profile --profile-creates sequential"
        " creates (SQL statements and client CPU per create step)",
    )
    parser.add_argument("--profile-creates", type=int, default=400)
    parser.add_argument("--profile-dump", default=None, help="create: write the pstats here")
    parser.add_argument(
        "--seed",
        choices=("bulk", "repository"),
        default="bulk",
        help="observe: accounts by multi-row INSERT (bulk) or AccountRepository calls",
    )
    parser.add_argument(
        "--plan-subsets",
        default="2500,5000,10000,20000",
        help="observe: also plan the first K accounts (and their customers) of the resync",
    )
    parser.add_argument(
        "--max-plan-accounts",
        type=int,
        default=100_000,
        help="observe: plan the whole resync only up to this many accounts",
    )
    args = parser.parse_args(argv)
    report: dict[str, Any] = {
        "benchmark": "accounts",
        "command": "bench/accounts.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": harness.machine(),
    }
    began = time.perf_counter()
    with emulator_process() as emulator, tempfile.TemporaryDirectory(prefix="br-acct-") as tmp:
        root = Path(tmp)

        def database(name: str) -> str:
            return args.database_url or f"sqlite:///{root / name}"

        if args.scenario in ("observe", "plan", "all"):
            report["observe_and_plan"] = observe_and_plan(
                emulator, root / "o", database("observe.db"), args.accounts, args
            )
        if args.scenario in ("create", "all"):
            if args.database_url and args.scenario == "all":
                raise SystemExit("--database-url with --scenario all: run each on its own")
            if args.profile:
                if args.database_url:
                    raise SystemExit("--database-url with --profile: run the profile on its own")
                report["create_profile"] = profile_creates(
                    emulator,
                    root / "p",
                    database("profile.db"),
                    args.profile_creates,
                    dump=args.profile_dump,
                )
            report["cold_create"] = cold_create(
                emulator, root / "c", database("create.db"), args.create_accounts, args
            )
    report["machine"]["load_average_end"] = harness.load_average()
    report["total_wall_s"] = round(time.perf_counter() - began, 1)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

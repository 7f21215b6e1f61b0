"""Benchmark of the subscriptions domain (not a test): seats following members in `reconcile
serve`, and observing and planning a fleet of N subscriptions, against the Stripe emulator.
Prints one JSON document.

    .venv/bin/python bench/subscriptions.py [--scenario latency|observe|all]
        [--subscriptions 100000] [--plan-subsets 10000,50000] [--rate 100]
        [--orgs 20] [--adds 200] [--database-url sqlite:///...|postgresql+psycopg://...]
        [--profile]

The emulator (`EmbeddedEmulator`) runs in a child process, so the reconciler's CPU time, peak
memory and GIL are measured alone; calls are counted from the emulator's request log
(`EmulatorControl.counters()`). The store is SQLite in a temporary directory unless
`--database-url` names one (it must be empty).

Scenarios (issue 11, "Performance"):
- `latency`: `reconcile serve` as deployed (its own process, the emulator delivering signed
  webhooks to it, every refresh interval at its default of one minute). `--orgs` orgs, each
  opened with `PUT /organizations/{org}`, given one member and a card, and subscribed to the
  per-seat plan by the admin subscribe. Then `--adds` members added (`PUT .../members/{user}`)
  in two modes:
  - `sequential`: one at a time, round-robin over the orgs, each waiting for its quantity in
    Stripe before the next PUT;
  - `concurrent`: one thread per org, each adding its share back to back (each PUT after the
    previous one's quantity is in Stripe), all orgs at once.
  Latency = from just before the PUT is sent to the first observation of the seat item's
  quantity at (or above) the member count in Stripe. One observer polls
  `GET /v1/subscriptions?limit=100` (all the orgs' subscriptions in one call) every 20 ms, so
  the measurement adds about 50 requests/s to the emulator whatever the mode. Reported: p50,
  p90, p99 and max against the target (p99 < 2 s; Frontier's syncer waits for its next
  one-minute tick), the PUT's own response time, and the `reconcile failed; retrying`
  warnings in serve's log.
- `observe`: N subscriptions of ours (one org, customer and subscription made for real:
  catalog, customers and subscriptions domains applied, then mirrored; then cloned N-1 times
  under new ids: the Stripe customers and subscriptions straight into the emulator's state,
  in-process; the store's accounts, balances, intents and plan history by multi-row INSERT,
  the mirror by `SubscriptionMirrorRepository.upsert_many`; clones emit no events): a
  converged fleet. Then:
  - a full resync (no cursor yet, so it is due): list calls per type (target: ceil(N/100)
    subscriptions and ceil(M/100) schedules, M = 0 here: one call), wall and CPU;
  - the plan from those observed records: `time.process_time` of `SubscriptionsDomain.plan`
    (target: under 5 s at 100k) at `--plan-subsets` and at N; tracemalloc's peak at the
    smallest; the process's peak RSS (`ru_maxrss`);
  - the cursor recorded by an apply of the bookkeeping restore, then an events-cursor refresh
    with no changes: its calls (target: at most 2), steps, wall and CPU (it reads every
    account and its mirror from the store).
  `--profile` adds cProfile's top lines of the plan at the smallest subset and of the
  events refresh.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import harness
import httpx
import stripe
from harness import EmulatorProcess
from sqlalchemy import insert, select

from billing_reconciler.controller import Controller, PlanOptions, Registration
from billing_reconciler.desired import load_desired
from billing_reconciler.domains.subscriptions import (
    CURSOR_STEP,
    SubscriptionsObservation,
    record_from_json,
    record_to_json,
)
from billing_reconciler.registry import CATALOG, CUSTOMERS, SUBSCRIPTIONS
from billing_reconciler.store import (
    AccountRepository,
    IntentRepository,
    RunMode,
    RunRepository,
    RunResult,
    Store,
)
from billing_reconciler.store.accounts import new_account_id
from billing_reconciler.store.subscriptions import (
    MirrorEntry,
    SubscriptionMirrorRepository,
    new_intent_id,
)
from billing_reconciler.store.tables import (
    BillingAccountModel,
    LedgerBalanceModel,
    OrganizationModel,
    PlanHistoryModel,
    SubscriptionIntentModel,
    SubscriptionModel,
)
from billing_reconciler.stripe_gateway import RetryPolicy, StripeGateway
from stripe_emulator.ids import new_id

INSTALLATION = "bench"
API_KEY = "sk_test_benchsubscriptions"
APP_TOKEN = "bench-app-token-0123456789"
ADMIN_TOKEN = "bench-admin-token-0123456789"
PLAN_CPU_TARGET_S = 5.0
LATENCY_P99_TARGET_S = 2.0
STORE_BATCH = 1000
SEAT_PRICE = "price/team_seat/monthly"
POLL_S = 0.02

CATALOG_YAML = """\
products:
  - name: free_base
    title: Free
    prices:
      - name: monthly
        interval: month
        amount: 0
        currency: usd
  - name: team_base
    title: Team platform fee
    prices:
      - name: monthly
        interval: month
        amount: 4900
        currency: usd
  - name: team_seat
    title: Team seat
    behavior: per_seat
    prices:
      - name: monthly
        interval: month
        amount: 900
        currency: usd
plans:
  - name: free_monthly
    title: Free
    interval: month
    products:
      - name: free_base
  - name: team_monthly
    title: Team (monthly)
    interval: month
    products:
      - name: team_base
      - name: team_seat
"""


def org_id(index: int) -> str:
    return f"org-{index:06d}"


def write_desired(root: Path, rate: int, subscription_refresh: str = "1m") -> Path:
    """A free plan and a per-seat team plan; no default plan (the orgs subscribe)."""
    (root / "plans").mkdir(parents=True, exist_ok=True)
    (root / "plans" / "catalog.yaml").write_text(CATALOG_YAML)
    (root / "billing.yaml").write_text(
        "billing:\n"
        "  default_currency: usd\n"
        "  customer:\n"
        "    auto_create_with_org: true\n"
        '    default_plan: ""\n'
        "  product:\n"
        "    seat_change_behavior: exact\n"
        "  refresh_interval:\n"
        f"    subscription: {subscription_refresh}\n"
        "reconcile:\n"
        f"  installation_id: {INSTALLATION}\n"
        f"  rate_limit_per_second: {rate}\n"
    )
    return root


# --- the emulator in its own process ----------------------------------------------------------


def _clone_in_emulator(
    server: Any, customer_id: str, sub_id: str, template: dict[str, str], clones: list[Any]
) -> None:
    """Each clone (a mapping of the template's ids and org id to its own) of the template
    customer and its subscription, inserted straight into the emulator's state. A clone's
    subscription shares the template's nested objects it does not own (prices, settings):
    read-only here, and 100k deep copies would not fit the emulator's memory budget."""

    def swap(value: Any, ids: dict[str, str]) -> Any:
        if isinstance(value, str):
            for old, new in ids.items():
                if old in value:
                    value = value.replace(old, new)
            return value
        return value

    emulator = server.emulator
    with emulator.lock:
        store = emulator.store
        customer = json.dumps(store.get("customer", customer_id))
        sub = store.get("subscription", sub_id)
        items = sub["items"]
        for number, clone in enumerate(clones, 1):
            ids = {template[k]: clone[k] for k in template}
            made = json.loads(swap(customer, ids))
            made["invoice_prefix"] = f"{number:08X}"[-8:]
            store.insert("customer", made)
            copy = dict(sub)
            copy["id"] = clone["sub"]
            copy["customer"] = clone["customer"]
            copy["metadata"] = {k: swap(v, ids) for k, v in sub["metadata"].items()}
            copy["items"] = {
                **items,
                "url": swap(items["url"], ids),
                "data": [
                    {**item, "id": clone["items"][n], "subscription": clone["sub"]}
                    for n, item in enumerate(items["data"])
                ],
            }
            if number == 1:
                text = json.dumps(copy)
                left = [old for old in template.values() if old in text]
                if left:
                    raise SystemExit(f"a clone still names the template's {left}")
            store.insert("subscription", copy)


def emulator_process() -> AbstractContextManager[EmulatorProcess]:
    """The emulator in its own process, cloning subscriptions in-process on request."""
    return harness.emulator_process(_clone_in_emulator)


def sdk(url: str) -> stripe.StripeClient:
    return stripe.StripeClient(
        API_KEY,
        base_addresses={"api": url, "files": url, "connect": url, "meter_events": url},
        max_network_retries=0,
    )


def add_card(client: stripe.StripeClient, customer: str) -> None:
    card = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer})
    client.v1.customers.update(customer, {"invoice_settings": {"default_payment_method": card.id}})


# --- measuring helpers --------------------------------------------------------------------------


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def _summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_s": round(statistics.median(values), 3),
        "p90_s": round(_percentile(values, 0.90), 3),
        "p99_s": round(_percentile(values, 0.99), 3),
        "max_s": round(max(values), 3),
        "mean_s": round(statistics.fmean(values), 3),
    }


# --- observe / plan at fleet scale ---------------------------------------------------------------


def controller_for(registration: Registration, desired: Path, store: Store, url: str) -> Controller:
    result = load_desired(desired)
    if result.state is None:
        raise SystemExit("\n".join(str(d) for d in result.diagnostics))
    state = result.state
    gateway = StripeGateway(
        api_key=API_KEY,
        api_base=url,
        rate_limit_per_second=state.config.reconcile.rate_limit_per_second,
        retry=RetryPolicy(max_attempts=6, base_delay=0.05, max_delay=1.0),
        timeout_seconds=300,
    )
    return Controller(registration=registration, state=state, gateway=gateway, store=store)


def converge(controller: Controller, passes: int = 4) -> int:
    """Plan and apply until a plan has no work; the passes that applied something."""
    for applied in range(passes):
        planned = controller.plan()
        if not planned.plan.has_work:
            return applied
        _, _, residual = controller.apply(planned)
        if not residual.converged:
            raise SystemExit(f"{controller.domain.name} did not converge: {residual}")
    raise SystemExit(f"{controller.domain.name} still has work after {passes} passes")


@dataclasses.dataclass
class Template:
    account: dict[str, Any]
    balance: dict[str, Any]
    intent: dict[str, Any]
    history: list[dict[str, Any]]
    mirror: dict[str, Any]  # record_to_json of the mirrored record
    seats: int | None
    plan: str | None
    observed_at: Any
    ids: dict[str, str]  # "org", "account", "customer", "sub", "intent", "item0"...


def _row(model: Any) -> dict[str, Any]:
    return {c.key: getattr(model, c.key) for c in model.__mapper__.column_attrs}


def make_template(emulator: EmulatorProcess, desired: Path, store: Store) -> Template:
    """One org on the team plan, for real: catalog, customer, card, subscription, mirror."""
    url = emulator.url
    org = org_id(0)
    with store.session() as session:
        account = AccountRepository(session).create(
            org, name=f"Org {org}", email=f"billing@{org}.example.com", currency=None
        )
        IntentRepository(session).replace(
            account.id, plan="team_monthly", source="subscribe", skip_trial=True
        )
    converge(controller_for(CATALOG, desired, store, url))
    converge(controller_for(CUSTOMERS, desired, store, url))
    with store.session() as session:
        linked = AccountRepository(session).get(account.id)
    assert linked is not None
    assert linked.stripe_customer_id
    add_card(sdk(url), linked.stripe_customer_id)
    converge(controller_for(SUBSCRIPTIONS, desired, store, url))
    with store.session() as session:
        account_row = _row(session.get(BillingAccountModel, account.id))
        balance = session.scalars(
            select(LedgerBalanceModel).where(LedgerBalanceModel.account_id == account.id)
        ).one()
        intent = session.scalars(
            select(SubscriptionIntentModel).where(SubscriptionIntentModel.account_id == account.id)
        ).one()
        history = session.scalars(
            select(PlanHistoryModel).where(PlanHistoryModel.account_id == account.id)
        ).all()
        [mirrored] = SubscriptionMirrorRepository(session).for_account(account.id)
        mirror_row = session.get(SubscriptionModel, mirrored.stripe_id)
        assert mirror_row is not None
        return Template(
            account=account_row,
            balance=_row(balance),
            intent=_row(intent),
            history=[{k: v for k, v in _row(h).items() if k != "id"} for h in history],
            mirror=record_to_json(mirrored.record),
            seats=mirrored.seats,
            plan=mirrored.plan,
            observed_at=mirror_row.observed_at,
            ids={
                "org": org,
                "account": account.id,
                "customer": str(linked.stripe_customer_id),
                "sub": mirrored.stripe_id,
                "intent": intent.id,
                **{f"item{n}": str(item.item_id) for n, item in enumerate(mirrored.record.items)},
            },
        )


def _swap(value: Any, ids: dict[str, str]) -> Any:
    """`value` with every template id (and the org id) replaced, in strings, lists, dicts."""
    if isinstance(value, str):
        for old, new in ids.items():
            if old in value:
                value = value.replace(old, new)
        return value
    if isinstance(value, list):
        return [_swap(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _swap(v, ids) for k, v in value.items()}
    return value


def seed_emulator(
    emulator: EmulatorProcess, template: Template, size: int
) -> tuple[float, list[dict[str, Any]]]:
    """The ids of N-1 clones of the template (`org`, `account`, ... as `Template.ids`, and
    `items`: the item ids in order), and the seconds the emulator took to insert them."""
    item_keys = [k for k in template.ids if k.startswith("item")]
    clones = []
    for index in range(1, size):
        ids = {
            "org": org_id(index),
            "account": new_account_id(),
            "customer": new_id("cus"),
            "sub": new_id("sub"),
            "intent": new_intent_id(),
            **{k: new_id("si") for k in item_keys},
        }
        clones.append(ids | {"items": [ids[k] for k in item_keys]})
    _, seconds = emulator.call(template.ids["customer"], template.ids["sub"], template.ids, clones)
    return seconds, clones


def seed_store(store: Store, template: Template, clones: list[dict[str, Any]]) -> float:
    """The clones' accounts, balances, intents, plan history (multi-row INSERTs) and mirror
    (`upsert_many`), `STORE_BATCH` accounts per transaction."""
    started = time.perf_counter()
    keys = list(template.ids)
    for start in range(0, len(clones), STORE_BATCH):
        accounts: list[dict[str, Any]] = []
        balances: list[dict[str, Any]] = []
        intents: list[dict[str, Any]] = []
        history: list[dict[str, Any]] = []
        mirrors: list[MirrorEntry] = []
        for clone in clones[start : start + STORE_BATCH]:
            ids = {template.ids[k]: clone[k] for k in keys}
            accounts.append(_swap(template.account, ids))
            balances.append(_swap(template.balance, ids))
            intents.append(_swap(template.intent, ids))
            history.extend(_swap(h, ids) for h in template.history)
            record = record_from_json(_swap(template.mirror, ids))
            mirrors.append(
                MirrorEntry(
                    record,
                    account_id=clone["account"],
                    org_id=clone["org"],
                    seats=template.seats,
                    plan=template.plan,
                )
            )
        with store.session() as session:
            session.execute(insert(BillingAccountModel), accounts)
            session.execute(insert(LedgerBalanceModel), balances)
            session.execute(insert(SubscriptionIntentModel), intents)
            if history:
                session.execute(insert(PlanHistoryModel), history)
            SubscriptionMirrorRepository(session).upsert_many(
                mirrors, observed_at=template.observed_at
            )
    with store.session() as session:
        active = AccountRepository(session).count_by_state()["active"]
        current = IntentRepository(session).count_current()
    wanted = len(clones) + 1
    if (active, current) != (wanted, wanted):
        raise SystemExit(f"seeded {active} accounts and {current} intents, wanted {wanted}")
    return time.perf_counter() - started


def _first(observation: SubscriptionsObservation, k: int) -> SubscriptionsObservation:
    """The pass's first `k` accounts (each bundle holds its own subscriptions)."""
    observed = observation.observed
    part = dataclasses.replace(observed, accounts=observed.accounts[:k])
    return dataclasses.replace(observation, observed=part)


def _plan_cost(
    domain: Any, observation: SubscriptionsObservation, context: Any, *, memory: bool
) -> dict[str, Any]:
    cpu_started = time.process_time()
    plan = domain.plan(None, observation, context)
    cpu = time.process_time() - cpu_started
    row: dict[str, Any] = {
        "accounts": len(observation.observed.accounts),
        "cpu_s": round(cpu, 3),
        "steps": len(plan.steps),
        "restores": dict(Counter(r.kind for r in plan.restores)),
    }
    if memory:
        tracemalloc.start()
        domain.plan(None, observation, context)
        row["tracemalloc_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        tracemalloc.stop()
    return row


def observe_and_plan(
    emulator: EmulatorProcess, root: Path, url: str, size: int, args: argparse.Namespace
) -> dict[str, Any]:
    control = emulator.control
    requests = harness.Requests(control)
    result: dict[str, Any] = {"subscriptions": size}
    desired = write_desired(root / "desired", args.rate)
    store = Store.open(url)
    try:
        started = time.perf_counter()
        template = make_template(emulator, desired, store)
        result["template_s"] = round(time.perf_counter() - started, 2)
        emulator_s, clones = seed_emulator(emulator, template, size)
        result["seed_emulator_s"] = round(emulator_s, 2)
        result["seed_store_s"] = round(seed_store(store, template, clones), 2)
        del clones
        print(f"# seeded {size} subscriptions", file=sys.stderr, flush=True)
        controller = controller_for(SUBSCRIPTIONS, desired, store, control.url)
        domain = controller.domain
        rss_before = harness.peak_rss_mb()

        # 1. Full resync (due: see `_full_resync`).
        result["full_resync"] = _full_resync(
            controller, requests, size, rss_before, profile=args.profile_resync
        )
        observation: SubscriptionsObservation = result["full_resync"].pop("_observation")
        context = result["full_resync"].pop("_context")

        # 2. The plan from the observed records.
        subsets = sorted(int(k) for k in args.plan_subsets.split(",") if k and int(k) < size)
        rows = []
        for n, k in enumerate([*subsets, size]):
            row = _plan_cost(domain, _first(observation, k), context, memory=n == 0)
            rows.append(row)
            print(f"# plan of {k}: {row['cpu_s']:.2f} s CPU", file=sys.stderr, flush=True)
        if args.profile:
            smallest = subsets[0] if subsets else size
            part = _first(observation, smallest)
            result["plan_profile"] = {
                "accounts": smallest,
                "top_cumulative": harness.profile(lambda: domain.plan(None, part, context)),
            }
            del part
        full = rows[-1]
        result["plan"] = {
            "rows": rows,
            "cpu_s": full["cpu_s"],
            "target_cpu_s": PLAN_CPU_TARGET_S,
            "pass_cpu": full["cpu_s"] < PLAN_CPU_TARGET_S,
            # A converged fleet: nothing to write, only the cursor's bookkeeping.
            "converged_fleet": full["steps"] == 0 and set(full["restores"]) <= {CURSOR_STEP},
            "peak_rss_mb_after_observe_and_plan": harness.peak_rss_mb(),
        }

        # 3. Record the cursor (apply the bookkeeping restore of the plan of no accounts: the
        # full plan has no steps), then an events refresh with no changes.
        bookkeeping = domain.plan(None, _first(observation, 0), context)
        del observation
        result["record_cursor"], result["events_refresh"] = harness.record_cursor_and_refresh(
            controller, bookkeeping, domain.desired_fields(None), requests
        )
        if args.profile:
            result["events_refresh"]["top_cumulative"] = harness.profile(lambda: controller.plan())
        result["peak_rss_mb_end"] = harness.peak_rss_mb()
    finally:
        store.close()
    return result


def _full_resync(
    controller: Controller,
    requests: harness.Requests,
    size: int,
    rss_before: float,
    *,
    profile: bool,
) -> dict[str, Any]:
    """Observe with the cursor's full resync due (the template's passes recorded one an
    instant ago: the pass is run as of `full_resync_interval` later)."""
    interval = int(controller.state.config.reconcile.full_resync_interval)
    later = time.time() + interval + 1
    controller.clock = lambda: later
    context = controller._context(PlanOptions())
    controller.clock = time.time
    reader = controller.registration.open_reader(controller.gateway, controller.store)
    requests.start()
    started, cpu_started = time.perf_counter(), time.process_time()
    observation = controller.domain.observe(reader, None, context)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    calls = requests.counts()
    subs = calls["by_endpoint"].get("GET /v1/subscriptions", 0)
    schedules = calls["by_endpoint"].get("GET /v1/subscription_schedules", 0)
    limit = max(1, math.ceil(size / 100))
    bundles = observation.observed.accounts
    report: dict[str, Any] = {
        "_observation": observation,
        "_context": context,
        "resynced": observation.resynced,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "calls": calls,
        "subscription_list_calls": subs,
        "schedule_list_calls": schedules,
        "limit_subscriptions_ceil_n_over_100": limit,
        "limit_schedules_ceil_m_over_100": 1,
        "accounts_observed": len(bundles),
        "subscriptions_observed": sum(len(b.subscriptions) for b in bundles),
        "peak_rss_mb_before": rss_before,
        "peak_rss_mb_after": harness.peak_rss_mb(),
        "pass": observation.resynced and subs <= limit and schedules <= 1,
    }
    if profile:
        report["top_cumulative"] = harness.profile(
            lambda: controller.domain.observe(reader, None, context), top=40
        )
        report["top_tottime"] = harness.profile(
            lambda: controller.domain.observe(reader, None, context), top=30, sort="tottime"
        )
    return report


# --- member added -> quantity in Stripe, through `reconcile serve` -----------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _wait(probe: Callable[[], Any], *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Observer(threading.Thread):
    """Polls every org's subscription (one list call) and records, per subscription, when
    each seat quantity was first seen."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
        )
        self.first_seen: dict[str, dict[int, float]] = {}
        self.polls = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            body = self.http.get("/v1/subscriptions", params={"limit": 100}).json()
            now = time.perf_counter()
            with self.lock:
                self.polls += 1
                for sub in body["data"]:
                    for item in sub["items"]["data"]:
                        metadata = item["price"].get("metadata") or {}
                        if metadata.get("br_key") == SEAT_PRICE:
                            seen = self.first_seen.setdefault(sub["id"], {})
                            seen.setdefault(int(item["quantity"]), now)
            time.sleep(POLL_S)

    def landed(self, sub_id: str, quantity: int) -> float | None:
        """When a quantity of at least `quantity` was first seen."""
        with self.lock:
            times = [t for q, t in self.first_seen.get(sub_id, {}).items() if q >= quantity]
        return min(times) if times else None

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)
        self.http.close()


def _start_serve(
    root: Path, emulator: EmulatorProcess, database_url: str
) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    endpoint = sdk(emulator.url).v1.webhook_endpoints.create(
        {"url": f"{url}/v1beta1/webhooks/stripe", "enabled_events": ["*"]}
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "BILLING_"))}
    env.update(
        STRIPE_API_KEY=API_KEY,
        STRIPE_API_BASE=emulator.url,
        BILLING_WEBHOOK_SECRETS=str(endpoint.secret),
        BILLING_DATABASE_URL=database_url,
        BILLING_API_TOKENS=APP_TOKEN,
        BILLING_ADMIN_TOKENS=ADMIN_TOKEN,
    )
    log_path = root / "serve.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "billing_reconciler",
            "serve",
            "--desired",
            str(root / "desired"),
            "--port",
            str(port),
        ],
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
    )

    def healthy() -> bool:
        if process.poll() is not None:
            raise SystemExit(f"serve exited:\n{log_path.read_text()[-4000:]}")
        try:
            return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    _wait(healthy, timeout=60, what="serve to answer /healthz")
    return process, url, log_path


def _catalog_applied(store: Store) -> bool:
    with store.session() as session:
        history = RunRepository(session).recent(1000)
    return any(
        r.domain == "catalog" and r.mode is RunMode.APPLY and r.result is RunResult.APPLIED
        for r in history
    )


def _quiet(store: Store, seconds: float) -> bool:
    with store.session() as session:
        history = RunRepository(session).recent(1000)
    if any(r.result is RunResult.RUNNING for r in history):
        return False
    last = max((r.started_at for r in history), default=None)
    if last is None:
        return False
    if last.tzinfo is None:  # SQLite hands back naive UTC
        last = last.replace(tzinfo=UTC)
    return time.time() - last.timestamp() > seconds


def _finished_since(store: Store, domain: str, moment: float) -> bool:
    with store.session() as session:
        history = RunRepository(session).recent(1000)
    for run in history:
        started = run.started_at
        if started.tzinfo is None:
            started = started.replace(tzinfo=UTC)
        if run.domain == domain and started.timestamp() >= moment and run.finished_at:
            return True
    return False


def _seed_serve_fleet(
    emulator: EmulatorProcess,
    desired: Path,
    store: Store,
    args: argparse.Namespace,
    result: dict[str, Any],
) -> list[Org]:
    """`--fleet` subscriptions (as `observe` seeds them, with an organization row per org)
    before serve starts; the orgs measured are the newest `--orgs` of them (the observer's
    one list call shows the newest 100)."""
    started = time.perf_counter()
    template = make_template(emulator, desired, store)
    seconds, clones = seed_emulator(emulator, template, args.fleet)
    result["seed_emulator_s"] = round(seconds, 2)
    result["seed_store_s"] = round(seed_store(store, template, clones), 2)
    now = datetime.now(UTC)
    orgs = [template.ids["org"], *(c["org"] for c in clones)]
    for start in range(0, len(orgs), STORE_BATCH):
        rows = [
            {
                "org_id": org,
                "title": f"Org {org}",
                "owner_email": None,
                "metadata_": {},
                "created_at": now,
                "updated_at": now,
                "deleted_at": None,
            }
            for org in orgs[start : start + STORE_BATCH]
        ]
        with store.session() as session:
            session.execute(insert(OrganizationModel), rows)
    result["seed_s"] = round(time.perf_counter() - started, 1)
    print(f"# seeded a fleet of {args.fleet}", file=sys.stderr, flush=True)
    return [Org(c["org"], c["customer"], c["sub"], members=0) for c in clones[-args.orgs :]]


def _owners(url: str, fleet: list[Org]) -> list[Org]:
    """One member each (the seat quantity stays 1): the measured adds then change it."""
    app = {"Authorization": f"Bearer {APP_TOKEN}"}
    with httpx.Client(base_url=f"{url}/v1beta1", timeout=30) as http:
        for org in fleet:
            answer = http.put(f"/organizations/{org.org}/members/owner", json={}, headers=app)
            if answer.status_code not in (200, 201):
                raise SystemExit(f"PUT member {org.org}: {answer.status_code} {answer.text}")
            org.members = 1
    return fleet


@dataclasses.dataclass
class Org:
    org: str
    customer: str
    sub: str
    members: int


def _open_orgs(url: str, emulator: EmulatorProcess, count: int) -> list[Org]:
    client = sdk(emulator.url)
    app = {"Authorization": f"Bearer {APP_TOKEN}"}
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    orgs = []
    with httpx.Client(base_url=f"{url}/v1beta1", timeout=30) as http:
        for index in range(count):
            org = org_id(index)
            put = http.put(f"/organizations/{org}", json={"title": f"Org {index}"}, headers=app)
            if put.status_code != 201:
                raise SystemExit(f"PUT {org}: {put.status_code} {put.text}")
            member = http.put(f"/organizations/{org}/members/owner", json={}, headers=app)
            if member.status_code not in (200, 201):
                raise SystemExit(f"PUT member: {member.status_code} {member.text}")
            customer = http.get(f"/organizations/{org}/billing", headers=app).json()
            customer_id = customer["stripe_customer_id"]
            if not customer_id:
                raise SystemExit(f"{org}: no Stripe customer after the PUT: {customer}")
            add_card(client, customer_id)
            subscribed = http.post(
                f"/organizations/{org}/billing/subscriptions",
                json={"plan": "team_monthly", "skip_trial": True},
                headers=admin,
            )
            if subscribed.status_code not in (201, 202):
                raise SystemExit(f"subscribe {org}: {subscribed.status_code} {subscribed.text}")

            def live(customer_id: str = customer_id) -> str | None:
                listed = client.v1.subscriptions.list({"customer": customer_id, "limit": 10})
                return listed.data[0].id if listed.data else None

            sub = _wait(live, timeout=30, what=f"{org}'s subscription")
            orgs.append(Org(org, customer_id, sub, members=1))
    return orgs


def _add(
    http: httpx.Client, org: Org, observer: Observer, user: int, timeout: float = 120
) -> tuple[float, float]:
    """PUT one member; (latency to the quantity in Stripe, the PUT's response time)."""
    app = {"Authorization": f"Bearer {APP_TOKEN}"}
    started = time.perf_counter()
    answer = http.put(f"/organizations/{org.org}/members/user-{user}", json={}, headers=app)
    answered = time.perf_counter()
    if answer.status_code not in (200, 201):
        raise SystemExit(f"PUT member {org.org}: {answer.status_code} {answer.text}")
    org.members += 1
    deadline = answered + timeout
    while (landed := observer.landed(org.sub, org.members)) is None:
        if time.perf_counter() > deadline:
            raise SystemExit(f"{org.org}: quantity {org.members} not in Stripe in {timeout} s")
        time.sleep(0.005)
    return max(0.0, landed - started), answered - started


def member_latency(
    emulator: EmulatorProcess, root: Path, database_url: str, args: argparse.Namespace
) -> dict[str, Any]:
    desired = write_desired(root / "desired", args.rate, args.subscription_refresh)
    store = Store.open(database_url)
    result: dict[str, Any] = {"orgs": args.orgs, "adds_per_mode": args.adds, "fleet": args.fleet}
    fleet: list[Org] = []
    if args.fleet:
        fleet = _seed_serve_fleet(emulator, desired, store, args, result)
    launched = time.time()
    process, url, log_path = _start_serve(root, emulator, database_url)
    try:
        _wait(lambda: _catalog_applied(store), timeout=120, what="the catalog applied")
        if fleet:
            _wait(
                lambda: _finished_since(store, "subscriptions", launched),
                timeout=1200,
                what="serve's first subscriptions pass over the fleet",
            )
            result["serve_start_subscriptions_pass_s"] = round(time.time() - launched, 1)
        _wait(lambda: _quiet(store, 1.0), timeout=600, what="the start runs to end")
        orgs = _owners(url, fleet) if fleet else _open_orgs(url, emulator, args.orgs)
        _wait(lambda: _quiet(store, 1.5), timeout=120, what="the subscribes' runs to end")
        observer = Observer(emulator.url)
        observer.start()
        user = 0
        with httpx.Client(base_url=f"{url}/v1beta1", timeout=60) as http:
            # Sequential: round-robin over the orgs, one add in flight.
            latencies, puts, samples = [], [], []
            warned = _retries(log_path)
            began, wall_began = time.perf_counter(), time.time()
            for n in range(args.adds):
                user += 1
                sent = time.perf_counter() - began
                latency, put = _add(http, orgs[n % len(orgs)], observer, user)
                latencies.append(latency)
                puts.append(put)
                samples.append((round(sent, 2), round(latency, 3)))
            result["sequential"] = _mode_report(latencies, puts, _retries(log_path) - warned)
            result["sequential"]["samples_sent_at_latency"] = samples
            result["sequential"]["serve_log"] = _log_stats(log_path, wall_began, time.time())
            print(f"# sequential: {result['sequential']['latency']}", file=sys.stderr)
        _wait(lambda: _quiet(store, 1.5), timeout=120, what="the runs to end")

        # Concurrent: one thread per org, each adding its share back to back.
        share = max(1, args.adds // len(orgs))
        lock = threading.Lock()
        latencies, puts, samples = [], [], []
        counter = [user]
        warned = _retries(log_path)

        def one_org(org: Org) -> None:
            with httpx.Client(base_url=f"{url}/v1beta1", timeout=60) as http:
                for _ in range(share):
                    with lock:
                        counter[0] += 1
                        mine = counter[0]
                    sent = time.perf_counter() - began
                    latency, put = _add(http, org, observer, mine)
                    with lock:
                        latencies.append(latency)
                        puts.append(put)
                        samples.append((round(sent, 2), round(latency, 3)))

        threads = [threading.Thread(target=one_org, args=(o,)) for o in orgs]
        began, wall_began = time.perf_counter(), time.time()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - began
        result["concurrent"] = _mode_report(latencies, puts, _retries(log_path) - warned)
        result["concurrent"]["wall_s"] = round(wall, 2)
        result["concurrent"]["samples_sent_at_latency"] = sorted(samples)
        result["concurrent"]["serve_log"] = _log_stats(log_path, wall_began, time.time())
        print(f"# concurrent: {result['concurrent']['latency']}", file=sys.stderr)
        observer.stop()
        result["observer_polls"] = observer.polls
        # Every org's final quantity is its member count (exact), in Stripe.
        wrong = []
        with httpx.Client(
            base_url=emulator.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
        ) as stripe_http:
            for org in orgs:
                sub = stripe_http.get(f"/v1/subscriptions/{org.sub}").json()
                seats = [
                    i["quantity"]
                    for i in sub["items"]["data"]
                    if (i["price"].get("metadata") or {}).get("br_key") == SEAT_PRICE
                ]
                if seats != [org.members]:
                    wrong.append((org.org, seats, org.members))
        result["final_quantities_wrong"] = wrong
        result["target_p99_s"] = LATENCY_P99_TARGET_S
        result["pass"] = (
            not wrong
            and result["sequential"]["latency"]["p99_s"] < LATENCY_P99_TARGET_S
            and result["concurrent"]["latency"]["p99_s"] < LATENCY_P99_TARGET_S
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        store.close()
        if args.keep_log:
            shutil.copyfile(log_path, args.keep_log)
    return result


def _log_stats(log_path: Path, since: float, until: float) -> dict[str, Any]:
    """What serve's log says about the subscriptions runs started in [since, until] (wall
    clock): how many, targeted or whole-domain (the scheduled refresh), and the retries."""
    runs: Counter[str] = Counter()
    retries: Counter[str] = Counter()
    for line in log_path.read_text().splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("domain") != "subscriptions":
            continue
        at = datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00")).timestamp()
        if not since <= at <= until:
            continue
        if entry.get("event") == "reconcile started":
            runs["whole_domain" if entry.get("scope") is None else "targeted"] += 1
        elif entry.get("event") == "reconcile failed; retrying":
            scope = "whole_domain" if entry.get("reason") == "schedule" else "targeted"
            retries[
                f"{scope}: {entry.get('error')} (retry in {entry.get('retry_in_seconds')} s)"
            ] += 1
    return {"subscriptions_runs_started": dict(runs), "subscriptions_retries": dict(retries)}


def _retries(log_path: Path) -> int:
    """`reconcile failed; retrying` warnings in serve's log so far (and their errors)."""
    return sum(
        1 for line in log_path.read_text().splitlines() if '"reconcile failed; retrying"' in line
    )


def _mode_report(latencies: list[float], puts: list[float], retries: int) -> dict[str, Any]:
    summary = _summary(latencies)
    return {
        "latency": summary,
        "put_response": _summary(puts),
        "over_1s": sum(1 for x in latencies if x > 1.0),
        "over_2s": sum(1 for x in latencies if x > 2.0),
        "serve_retry_warnings": retries,
        "pass": bool(latencies) and summary["p99_s"] < LATENCY_P99_TARGET_S,
    }


# --- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--scenario", choices=("latency", "observe", "all"), default="all")
    parser.add_argument("--subscriptions", type=int, default=100_000, help="observe: N")
    parser.add_argument("--plan-subsets", default="10000,50000", help="observe: also plan K")
    parser.add_argument("--rate", type=int, default=100, help="reconcile.rate_limit_per_second")
    parser.add_argument("--orgs", type=int, default=20, help="latency: orgs")
    parser.add_argument("--adds", type=int, default=200, help="latency: member adds per mode")
    parser.add_argument(
        "--fleet",
        type=int,
        default=0,
        help="latency: first seed this many subscriptions (as observe does) and measure the"
        " newest --orgs of them while serve also refreshes the fleet",
    )
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    parser.add_argument("--profile", action="store_true", help="observe: cProfile top lines")
    parser.add_argument(
        "--subscription-refresh",
        default="1m",
        help="latency: billing.refresh_interval.subscription (1m, the default; 1h: none runs)",
    )
    parser.add_argument(
        "--profile-resync",
        action="store_true",
        help="observe: cProfile a second full resync (as long again as the first, and more)",
    )
    parser.add_argument("--keep-log", default=None, help="latency: copy serve's log here")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {
        "benchmark": "subscriptions",
        "command": "bench/subscriptions.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": harness.machine(),
    }
    if args.database_url and args.scenario == "all":
        raise SystemExit("--database-url with --scenario all: run each on its own")
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="br-subs-") as tmp:
        root = Path(tmp)

        def database(name: str) -> str:
            return args.database_url or f"sqlite:///{root / name}"

        if args.scenario in ("latency", "all"):
            (root / "l").mkdir()
            with emulator_process() as emulator:
                report["member_latency"] = member_latency(
                    emulator, root / "l", database("latency.db"), args
                )
            report["machine"]["load_average_after_latency"] = harness.load_average()
        if args.scenario in ("observe", "all"):
            with emulator_process() as emulator:
                report["observe_and_plan"] = observe_and_plan(
                    emulator, root / "o", database("observe.db"), args.subscriptions, args
                )
    report["machine"]["load_average_end"] = harness.load_average()
    report["total_wall_s"] = round(time.perf_counter() - began, 1)
    print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

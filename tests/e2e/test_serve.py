"""`reconcile serve` as it is deployed: real processes, real HTTP, real PostgreSQL, and the
Stripe emulator delivering real signed webhooks to each process's webhook endpoint.

The catalog's refresh interval is set to an hour, so anything that happens within these
tests' few seconds happened because of a webhook (or a process start), never the schedule.
Every wait is bounded; everything listens on loopback.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import IO, TypeVar

import httpx
import pytest
import stripe
from sqlalchemy import select

from billing_reconciler.model import Kind
from billing_reconciler.store import (
    ControllerStateRepository,
    JournalState,
    LeaseRepository,
    RunMode,
    RunRecord,
    RunRepository,
    RunResult,
    Store,
)
from billing_reconciler.store.tables import InboxModel, JournalModel
from tests.fixtures.emulator import TEST_API_KEY, EmulatorHandle

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "desired"
INSTALLATION = "acme-prod"  # the example's reconcile.installation_id
START_TIMEOUT = 20.0
T = TypeVar("T")

pytestmark = pytest.mark.timeout(120)


def eventually(probe: Callable[[], T | None], *, timeout: float, what: str) -> T:
    """`probe()`'s first truthy value, polling every 20 ms for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Serve:
    """One `python -m billing_reconciler serve` process and its log."""

    def __init__(
        self,
        *,
        workdir: Path,
        name: str,
        database_url: str,
        emulator: EmulatorHandle,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        client = sdk(emulator)
        endpoint = client.v1.webhook_endpoints.create(
            {"url": f"{self.url}/v1beta1/webhooks/stripe", "enabled_events": ["*"]}
        )
        assert endpoint.secret
        self.secret = endpoint.secret
        self.endpoint_id = endpoint.id
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "BILLING_"))}
        env.update(
            STRIPE_API_KEY=TEST_API_KEY,
            STRIPE_API_BASE=emulator.url,
            BILLING_WEBHOOK_SECRETS=self.secret,
            BILLING_DATABASE_URL=database_url,
        )
        env.update(extra_env or {})
        self.env = env
        self.log_path = workdir / f"{name}.log"
        self._log: IO[str] = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "billing_reconciler",
                "serve",
                "--desired",
                str(workdir / "desired"),
                "--port",
                str(self.port),
                "--grace-seconds",
                "20",
            ],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def actor_pid(self) -> str:
        return f"pid {self.process.pid}"

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=5)

    def wait_healthy(self) -> None:
        def healthy() -> bool:
            assert self.process.poll() is None, f"{self.name} exited:\n{self.logs()}"
            try:
                return self.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        eventually(healthy, timeout=START_TIMEOUT, what=f"{self.name} to answer /healthz")

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text()[-6000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLE, tmp_path / "desired")
    billing = tmp_path / "desired" / "billing.yaml"
    text = billing.read_text()
    assert "catalog: 5m" in text
    billing.write_text(text.replace("catalog: 5m", "catalog: 1h"))
    return tmp_path


@pytest.fixture
def launch(workdir: Path, emulator: EmulatorHandle) -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def start(
        database_url: str, name: str = "serve", extra_env: dict[str, str] | None = None
    ) -> Serve:
        serve = Serve(
            workdir=workdir,
            name=name,
            database_url=database_url,
            emulator=emulator,
            extra_env=extra_env,
        )
        started.append(serve)
        return serve

    yield start
    for serve in started:
        serve.stop()


def sdk(emulator: EmulatorHandle) -> stripe.StripeClient:
    url = emulator.url
    return stripe.StripeClient(
        TEST_API_KEY,
        base_addresses={"api": url, "files": url, "connect": url, "meter_events": url},
        max_network_retries=0,
    )


def runs(store: Store) -> list[RunRecord]:
    with store.session() as session:
        return list(reversed(RunRepository(session).recent(10_000)))


@dataclass(frozen=True)
class Step:
    object_key: str
    action: str
    state: JournalState


def journal(store: Store) -> list[Step]:
    """Every journaled step of every run, oldest first."""
    with store.session() as session:
        rows = session.execute(
            select(JournalModel.object_key, JournalModel.action, JournalModel.state).order_by(
                JournalModel.id
            )
        ).all()
    return [Step(key, action, JournalState(state)) for key, action, state in rows]


def applied_run(store: Store, domain: str = "catalog") -> RunRecord | None:
    """The domain's first applied run (each domain applies in its own run)."""
    return next(
        (
            r
            for r in runs(store)
            if r.domain == domain and r.mode is RunMode.APPLY and r.result is RunResult.APPLIED
        ),
        None,
    )


def lease_pid(store: Store) -> int | None:
    with store.session() as session:
        lease = LeaseRepository(session).current(f"leader/{INSTALLATION}")
    match = re.search(r"pid (\d+)$", lease.holder) if lease else None
    return int(match.group(1)) if match else None


def marker(obj: stripe.StripeObject, name: str) -> str | None:
    value = obj.to_dict().get("metadata", {}).get(name)
    return value if isinstance(value, str) else None


def managed_product(client: stripe.StripeClient, key: str) -> stripe.Product:
    for product in client.v1.products.list({"limit": 100}).auto_paging_iter():
        if marker(product, "br_key") == key:
            return product
    raise AssertionError(f"no product {key}")


def inbox_settled(store: Store) -> bool:
    with store.session() as session:
        pending = session.scalar(
            select(InboxModel.id).where(InboxModel.processed_at.is_(None)).limit(1)
        )
    return pending is None


def quiet(store: Store, *, seconds: float) -> bool:
    """No run is running and none started in the last `seconds`."""
    history = runs(store)
    if any(r.result is RunResult.RUNNING for r in history):
        return False
    last = max((r.started_at for r in history), default=None)
    if last is None:
        return False
    if last.tzinfo is None:  # SQLite hands back naive UTC
        last = last.replace(tzinfo=UTC)
    return time.time() - last.timestamp() > seconds


def sign(payload: str, secret: str) -> str:
    timestamp = int(time.time())
    mac = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def deliver(serve: Serve, payloads: list[str], *, concurrency: int = 8) -> list[int]:
    """POST signed events to `serve`, `concurrency` at a time; the status codes."""
    nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]

    def post_all(share: list[str]) -> list[int]:
        transport = httpx.HTTPTransport(socket_options=nodelay)
        with httpx.Client(transport=transport, timeout=10) as http:
            return [
                http.post(
                    f"{serve.url}/v1beta1/webhooks/stripe",
                    content=payload,
                    headers={"Stripe-Signature": sign(payload, serve.secret)},
                ).status_code
                for payload in share
            ]

    with ThreadPoolExecutor(concurrency) as pool:
        shares = [payloads[n::concurrency] for n in range(concurrency)]
        return [code for codes in pool.map(post_all, shares) for code in codes]


@pytest.mark.postgres
def test_a_dashboard_edit_is_reverted_by_its_webhook_long_before_the_refresh(
    launch: Callable[..., Serve],
    postgres_database_url: str,
    pg_store: Store,
    emulator: EmulatorHandle,
) -> None:
    serve = launch(postgres_database_url)
    serve.wait_healthy()
    eventually(lambda: applied_run(pg_store), timeout=START_TIMEOUT, what="the first apply")
    client = sdk(emulator)
    product = managed_product(client, "product/team_base")
    eventually(lambda: quiet(pg_store, seconds=0.5), timeout=15, what="the echo runs to end")

    edited_at = time.monotonic()
    client.v1.products.update(product.id, {"name": "Edited in the dashboard"})
    eventually(
        lambda: client.v1.products.retrieve(product.id).name == product.name,
        timeout=10,
        what="the drift to be reverted",
    )
    latency = time.monotonic() - edited_at
    print(f"drift reverted {latency:.2f} s after the edit (refresh interval: 1 h)")

    def last_apply_finished() -> RunRecord | None:
        last = [r for r in runs(pg_store) if r.mode is RunMode.APPLY][-1]
        return last if last.finished_at else None

    reverting = eventually(last_apply_finished, timeout=10, what="the reverting run to finish")
    assert reverting.result is RunResult.APPLIED
    assert reverting.summary.get("drift") == 1
    assert reverting.actor.endswith(serve.actor_pid)
    assert serve.get("/readyz").json()["ready"] is True
    metrics = serve.get("/metrics").text
    assert 'billing_reconciler_reconcile_runs_total{domain="catalog",result="applied"}' in metrics
    assert "billing_reconciler_leader 1.0" in metrics


@pytest.mark.postgres
def test_a_burst_of_1000_events_makes_a_handful_of_runs_and_duplicates_count_once(
    launch: Callable[..., Serve],
    postgres_database_url: str,
    pg_store: Store,
    emulator: EmulatorHandle,
) -> None:
    serve = launch(postgres_database_url)
    serve.wait_healthy()
    eventually(lambda: applied_run(pg_store), timeout=START_TIMEOUT, what="the first apply")
    client = sdk(emulator)
    product = managed_product(client, "product/team_seat")
    emulator.control.wait_webhooks_idle(timeout=10)
    eventually(lambda: inbox_settled(pg_store), timeout=15, what="the inbox to settle")
    eventually(lambda: quiet(pg_store, seconds=0.5), timeout=15, what="the echo runs to end")
    before = len(runs(pg_store))
    burst_started = time.time()

    # 1,000 real events for one product: an edit we do not own (a metadata key we never
    # set), so no run has anything to revert. The emulator delivers one event at a time and
    # its client waits out Nagle + delayed ACK (~40 ms) on each, so the burst is delivered
    # here instead, eight at a time, signed as Stripe signs.
    client.v1.webhook_endpoints.update(serve.endpoint_id, {"disabled": True})
    for n in range(1000):
        client.v1.products.update(product.id, {"metadata": {"touched": str(n)}})
    events = [
        e.to_dict()
        for e in client.v1.events.list({"type": "product.updated", "limit": 100}).auto_paging_iter()
        if e.data.object.id == product.id and e.created >= int(burst_started) - 1
    ][:1000]
    assert len(events) == 1000
    delivered_at = time.monotonic()
    answers = deliver(serve, [json.dumps(event) for event in events])
    delivery_seconds = time.monotonic() - delivered_at
    assert collections.Counter(answers) == {200: 1000}
    eventually(lambda: inbox_settled(pg_store), timeout=20, what="every event to be processed")
    eventually(lambda: quiet(pg_store, seconds=0.5), timeout=15, what="the runs to end")

    with pg_store.session() as session:
        stored = session.scalars(
            select(InboxModel.event_id).where(
                InboxModel.object_id == product.id,
                InboxModel.event_id.in_([event["id"] for event in events]),
            )
        ).all()
    assert len(stored) == 1000
    burst_runs = runs(pg_store)[before:]
    print(
        f"1000 product.updated events delivered in {delivery_seconds:.2f} s "
        f"-> {len(burst_runs)} reconcile run(s)"
    )
    assert 1 <= len(burst_runs) <= 5
    assert all(r.result is RunResult.NO_CHANGES for r in burst_runs)

    # The same event id twice: acknowledged both times, stored and processed once.
    event = client.v1.events.list({"type": "product.updated", "limit": 1}).data[0]
    payload = json.dumps({**event.to_dict(), "id": "evt_duplicate_delivery_test"})
    answers = [
        httpx.post(
            f"{serve.url}/v1beta1/webhooks/stripe",
            content=payload,
            headers={"Stripe-Signature": sign(payload, serve.secret)},
            timeout=5,
        )
        for _ in range(2)
    ]
    assert [a.status_code for a in answers] == [200, 200]
    assert [a.json()["duplicate"] for a in answers] == [False, True]
    eventually(lambda: inbox_settled(pg_store), timeout=10, what="the duplicate to be processed")
    with pg_store.session() as session:
        row = session.scalars(
            select(InboxModel).where(InboxModel.event_id == "evt_duplicate_delivery_test")
        ).one()
        assert row.processed_at is not None
        assert row.attempts == 1


@pytest.mark.postgres
def test_two_replicas_one_writer_and_a_killed_leader_hands_over_without_double_writes(
    launch: Callable[..., Serve],
    postgres_database_url: str,
    pg_store: Store,
    emulator: EmulatorHandle,
) -> None:
    # Slow Stripe down so the first apply (39 steps) is still running when its writer dies.
    emulator.control.set_latency(80)
    first = launch(postgres_database_url, "first")
    second = launch(postgres_database_url, "second")
    by_pid = {first.process.pid: first, second.process.pid: second}
    first.wait_healthy()
    second.wait_healthy()

    leader = by_pid[eventually(lambda: lease_pid(pg_store), timeout=START_TIMEOUT, what="a lease")]
    follower = second if leader is first else first
    eventually(
        lambda: sum(r.state is JournalState.DONE for r in journal(pg_store)) >= 5,
        timeout=START_TIMEOUT,
        what="the leader to apply a few steps",
    )
    leader.process.kill()
    assert applied_run(pg_store) is None, "killed mid-apply"
    killed_at = time.monotonic()
    leader.process.wait(timeout=10)

    eventually(
        lambda: lease_pid(pg_store) == follower.process.pid,
        timeout=15,
        what=f"the follower to take over\n{follower.logs()}",
    )
    failover = time.monotonic() - killed_at
    eventually(
        lambda: any(
            r.actor.endswith(follower.actor_pid)
            and r.result is RunResult.APPLIED
            and r.domain == "catalog"
            for r in runs(pg_store)
        ),
        timeout=30,
        what=f"the new leader to finish the apply\n{follower.logs()}",
    )
    print(f"leader SIGKILLed; follower leads {failover:.2f} s later")

    # Exactly one writer at a time: the old leader's applies, then the new one's; the
    # follower only planned while it followed.
    applies = [r for r in runs(pg_store) if r.mode is RunMode.APPLY]
    old = [r for r in applies if r.actor.endswith(leader.actor_pid)]
    new = [r for r in applies if r.actor.endswith(follower.actor_pid)]
    assert old
    assert new
    assert len(old) + len(new) == len(applies)
    assert max(r.started_at for r in old) < min(r.started_at for r in new)
    follower_first = next(r for r in runs(pg_store) if r.actor.endswith(follower.actor_pid))
    assert follower_first.mode is RunMode.DRY_RUN

    # No step applied twice: each idempotency key created something at most once ...
    emulator.control.set_latency(0)
    originals = collections.Counter(
        entry.idempotency_key
        for entry in emulator.control.requests(method="POST")
        if entry.idempotency_key and entry.status == 200 and not entry.replayed
    )
    assert [key for key, count in originals.items() if count > 1] == []
    # ... and Stripe holds one object per managed key.
    client = sdk(emulator)
    keys = [marker(p, "br_key") for p in client.v1.products.list({"limit": 100}).data]
    keys += [
        marker(p, "br_key")
        for p in client.v1.prices.list({"limit": 100}).auto_paging_iter()
        if marker(p, "managed_by") == "billing-reconciler"
    ]
    assert len(keys) == len(set(keys)) > 0
    # (The customers domain's events cursor is bookkeeping, recorded again by every pass.)
    done = collections.Counter(
        (r.object_key, r.action)
        for r in journal(pg_store)
        if r.state is JournalState.DONE and not r.object_key.startswith("customer_cursor/")
    )
    assert [step for step, count in done.items() if count > 1] == []


@pytest.mark.postgres
def test_sigterm_during_an_apply_finishes_the_step_and_exits_0(
    launch: Callable[..., Serve],
    postgres_database_url: str,
    pg_store: Store,
    emulator: EmulatorHandle,
) -> None:
    emulator.control.set_latency(80)
    serve = launch(postgres_database_url)
    serve.wait_healthy()
    # The catalog's steps: the customers domain (the example's contract customer) applies
    # beside it, and its steps alone must not count as the catalog's apply under way.
    catalog_kinds = tuple(f"{kind.value}/" for kind in Kind)
    eventually(
        lambda: (
            sum(
                r.state is JournalState.DONE and r.object_key.startswith(catalog_kinds)
                for r in journal(pg_store)
            )
            >= 3
        ),
        timeout=START_TIMEOUT,
        what="the catalog's apply to be under way",
    )
    serve.process.send_signal(signal.SIGTERM)
    signalled_at = time.monotonic()
    code = serve.process.wait(timeout=25)
    took = time.monotonic() - signalled_at
    print(f"SIGTERM mid-apply: exited {code} after {took:.2f} s")
    assert code == 0, serve.logs()

    steps = journal(pg_store)
    assert [r for r in steps if r.state is JournalState.PENDING] == []
    assert 3 <= len(steps) < 39, "the apply stopped between steps, before the end"
    # The catalog's apply (the customers domain applies after it, if at all).
    [interrupted] = [r for r in runs(pg_store) if r.mode is RunMode.APPLY and r.domain == "catalog"]
    assert interrupted.result is RunResult.FAILED
    assert interrupted.error is not None
    assert "stopped writing after" in interrupted.error
    assert lease_pid(pg_store) is None, "the lease is released on the way out"


def test_an_invalid_desired_state_is_reported_and_the_last_valid_one_still_enforced(
    launch: Callable[..., Serve],
    workdir: Path,
    emulator: EmulatorHandle,
) -> None:
    database_url = f"sqlite:///{workdir}/.billing/state.db"
    serve = launch(database_url)
    serve.wait_healthy()
    store = Store.open(database_url)
    try:
        eventually(lambda: applied_run(store), timeout=START_TIMEOUT, what="the first apply")
        client = sdk(emulator)
        product = managed_product(client, "product/team_base")
        eventually(lambda: quiet(store, seconds=0.5), timeout=15, what="the echo runs to end")

        # Broken YAML: read as "no products", it would ask to archive everything.
        (workdir / "desired" / "plans" / "catalog.yaml").write_text("products: [\n")
        client.v1.products.update(product.id, {"name": "Edited while desired/ is broken"})
        # A run already queued may still have read the valid files; wait until one has read
        # the broken ones (readiness says so), then edit again.
        eventually(
            lambda: serve.get("/readyz").status_code == 503,
            timeout=10,
            what="readiness to report the invalid desired state",
        )
        assert "invalid" in serve.get("/readyz").json()["checks"]["desired"]
        client.v1.products.update(product.id, {"name": "Edited again while desired/ is broken"})
        eventually(
            lambda: client.v1.products.retrieve(product.id).name == product.name,
            timeout=10,
            what="the drift to be reverted from the last valid state",
        )
        assert serve.get("/readyz").status_code == 503

        status = subprocess.run(
            [sys.executable, "-m", "billing_reconciler", "status", "--format", "json"],
            cwd=workdir,
            env=serve.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["desired"]["valid"] is False
        assert any("catalog.yaml" in error for error in report["desired"]["errors"])
        assert report["leader"]["holder"].endswith(serve.actor_pid)

        # Nothing archived: every product and price is still active.
        assert all(p.active for p in client.v1.products.list({"limit": 100}).data)
        assert all(p.active for p in client.v1.prices.list({"limit": 100}).data)
    finally:
        store.close()


def cli(serve: Serve, workdir: Path, *args: str) -> None:
    """`reconcile <args>` in another process on `serve`'s store, as an operator's shell."""
    done = subprocess.run(
        [sys.executable, "-m", "billing_reconciler", *args, "--desired", str(workdir / "desired")],
        cwd=workdir,
        env=serve.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def runs_since(store: Store, moment: float) -> list[RunRecord]:
    """The runs started after `moment` (unix seconds), oldest first."""

    def started(run: RunRecord) -> float:
        at = run.started_at if run.started_at.tzinfo else run.started_at.replace(tzinfo=UTC)
        return at.timestamp()

    return [r for r in runs(store) if started(r) > moment]


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_resume_in_another_shell_applies_at_once_and_suspend_holds_back_the_next_apply(
    backend: str,
    launch: Callable[..., Serve],
    workdir: Path,
    emulator: EmulatorHandle,
    request: pytest.FixtureRequest,
) -> None:
    # Every refresh an hour away: only the resume (or a webhook) can start a run here.
    billing = workdir / "desired" / "billing.yaml"
    text = billing.read_text()
    for domain in ("customer", "subscription", "checkout", "invoice"):
        text, replaced = re.subn(rf"^    {domain}: \d+m$", f"    {domain}: 1h", text, flags=re.M)
        assert replaced == 1, domain
    billing.write_text(text)
    if backend == "postgres":
        database_url: str = request.getfixturevalue("postgres_database_url")
    else:
        database_url = f"sqlite:///{workdir}/.billing/state.db"
        (workdir / ".billing").mkdir()
    store = Store.open(database_url)
    try:
        with store.session() as session:
            ControllerStateRepository(session).suspend("incident 12", "oncall")
        serve = launch(database_url)
        serve.wait_healthy()

        # Suspended from the start: the first catalog run plans everything, writes nothing.
        def planned_only() -> RunRecord | None:
            done = [r for r in runs(store) if r.domain == "catalog" and r.finished_at]
            return done[0] if done else None

        first = eventually(planned_only, timeout=START_TIMEOUT, what="the first catalog run")
        assert (first.mode, first.result) == (RunMode.DRY_RUN, RunResult.CHANGES_PENDING)
        assert sdk(emulator).v1.products.list({"limit": 100}).data == []

        cli(serve, workdir, "resume")
        resumed_at = time.monotonic()
        eventually(lambda: applied_run(store), timeout=5, what=f"the apply\n{serve.logs()}")
        print(f"applied {time.monotonic() - resumed_at:.2f} s after the resume (refresh: 1 h)")
        assert "applying resumed" in serve.log_path.read_text()
        client = sdk(emulator)
        product = managed_product(client, "product/team_base")
        eventually(lambda: quiet(store, seconds=0.5), timeout=15, what="the echo runs to end")

        # Suspending again holds back the next apply: a dashboard edit's webhook run only
        # plans the revert.
        cli(serve, workdir, "suspend", "--reason", "incident 13")
        edited = time.time()
        client.v1.products.update(product.id, {"name": "Edited while suspended"})

        def drift_planned() -> RunRecord | None:
            return next(
                (
                    r
                    for r in runs_since(store, edited)
                    if r.domain == "catalog" and r.finished_at and r.summary.get("drift")
                ),
                None,
            )

        held = eventually(drift_planned, timeout=10, what=f"the webhook's run\n{serve.logs()}")
        assert (held.mode, held.result) == (RunMode.DRY_RUN, RunResult.CHANGES_PENDING)
        assert client.v1.products.retrieve(product.id).name == "Edited while suspended"
        assert [r for r in runs_since(store, edited) if r.mode is RunMode.APPLY] == []

        cli(serve, workdir, "resume")
        eventually(
            lambda: client.v1.products.retrieve(product.id).name == product.name,
            timeout=5,
            what=f"the revert after the resume\n{serve.logs()}",
        )
    finally:
        store.close()

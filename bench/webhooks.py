"""Benchmark of the webhook receiver (not a test): verified events stored per second and
receipt→enqueue latency, over loopback HTTP, on SQLite and (optionally) PostgreSQL. Prints one
JSON document.

    .venv/bin/python bench/webhooks.py [--events 3000] [--concurrency 16] [--time-limit 60]
        [--backends sqlite,postgres] [--postgres-url URL] [--results bench/RESULTS.md]

The server (the real app from `create_app`, under uvicorn, with JSON logs written to
/dev/null as in production) runs in a child process pinned to one core, so the numbers are
"on one core" and the sender's CPU does not count against it. The sender (httpx, asyncio,
`--concurrency` requests in flight, loopback only) posts N distinct `product.updated` events
for the same product, each signed as Stripe signs, and records `time.perf_counter()` just
before each send; the app's `enqueue` callback records `time.perf_counter()` when it is
called (CLOCK_MONOTONIC: comparable across processes on one host). Reported:

- `stored_per_s`: events answered 200 (and found in the inbox afterwards) per second of the
  sending window;
- `receipt_to_enqueue_ms` p50/p99: send → enqueue callback (the verification, the committed
  inbox row, the routing); the reconcile itself starts when the work queue picks the request
  up, which is the runtime core's latency, not measured here;
- `round_trip_ms` p50/p99: send → 200 received;
- the targets (issue 5): p99 < 250 ms, ≥ 500 verified events/s stored.

Counts and time are bounded (`--events` ≤ 50,000, `--time-limit` ≤ 300 s); the server binds
127.0.0.1 only. `--results` replaces the `## Webhooks` section of that Markdown file (other
sections are kept).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypedDict

from billing_reconciler.config import Secret
from billing_reconciler.runtime.events import ReconcileRequest
from billing_reconciler.runtime.webhooks import WEBHOOK_PATH

MAX_EVENTS = 50_000
MAX_SECONDS = 300
SECRET = Secret("whsec_BenchmarkSecretNotARealOne0001")
OLD_SECRET = Secret("whsec_BenchmarkOldSecretRotation0002")
TARGET_P99_MS = 250.0
TARGET_STORED_PER_S = 500.0
DEFAULT_POSTGRES_URL = os.environ.get(
    "BILLING_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
SECTION = "## Webhooks"
NOTES = (
    "Events: distinct `product.updated` events for one product, half signed with the new and",
    "half with the old secret (rotation), verified, stored, routed. The inbox also holds the",
    "warm-up events (one per connection). *server CPU*: the server's CPU seconds per second of",
    "the window (1.0 = its core is the bottleneck). *load before*: the 1-minute load average",
    "when the run started; the machine is shared, so runs vary. On PostgreSQL the database's",
    'backends share the second core with the sender, so that row is not "one core": the',
    "server waits on commits (`synchronous_commit=on`) while its own core is partly idle.",
    "receipt→enqueue ends when the app calls `enqueue` (the runtime's queue takes it from",
    "there); round trip ends when the sender has the 200.",
)


# --------------------------------------------------------------------------------------------
# The server (child process)
# --------------------------------------------------------------------------------------------


def _pin_to_one_core() -> int | None:
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def _serve(conn: Connection, database_url: str) -> None:
    """Run the app until told to stop; then send back the enqueue times and the inbox count."""
    import uvicorn

    from billing_reconciler.log_setup import configure_logging
    from billing_reconciler.runtime.app import create_app
    from billing_reconciler.runtime.health import Readiness
    from billing_reconciler.runtime.metrics import Metrics
    from billing_reconciler.store import InboxRepository, Store

    cpu = _pin_to_one_core()
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - production logs, minus the terminal
    configure_logging(json=True)
    store = Store.open(database_url)
    enqueued_at: dict[str, float] = {}

    def enqueue(request: ReconcileRequest) -> None:
        # The reason ends with the event id (events.route_event).
        enqueued_at[request.reason.rsplit(" ", 1)[-1]] = time.perf_counter()

    app = create_app(
        store=store,
        webhook_secrets=(SECRET, OLD_SECRET),
        enqueue=enqueue,
        readiness=lambda: Readiness(ready=True, checks={}),
        metrics=Metrics(),
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # asyncio sets TCP_NODELAY only on sockets created with proto=IPPROTO_TCP (what uvicorn's
    # own bind gets from getaddrinfo); a plain socket() has proto 0, and Nagle + delayed ACK
    # would add ~40 ms to each response.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.005)
    conn.send({"port": sock.getsockname()[1], "cpu": cpu})
    while conn.recv() == "cpu":
        conn.send(time.process_time())
    server.should_exit = True
    thread.join(timeout=10)
    with store.session() as session:
        inbox = InboxRepository(session).count()
    store.close()
    conn.send({"enqueued_at": enqueued_at, "inbox": inbox})


@contextmanager
def served(database_url: str) -> Iterator[tuple[int, Connection, int | None]]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_serve, args=(child, database_url), daemon=True)
    process.start()
    try:
        hello = parent.recv()
        yield hello["port"], parent, hello["cpu"]
    finally:
        process.join(timeout=30)
        if process.is_alive():
            process.kill()


# --------------------------------------------------------------------------------------------
# The sender
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sent:
    event_id: str
    sent_at: float
    answered_at: float
    status: int


def signed_events(count: int, run: str) -> list[tuple[str, bytes, str]]:
    """`count` distinct product.updated events for one product, signed now (as Stripe does)."""
    from billing_reconciler.stripe_gateway import sign_webhook_payload

    product = {
        "id": "prod_Bench",
        "object": "product",
        "name": "Team",
        "active": True,
        "metadata": {"managed_by": "billing-reconciler", "br_key": "product/team"},
    }
    events = []
    now = int(time.time())
    for n in range(count):
        event_id = f"evt_{run}_{n:06d}"
        body = json.dumps(
            {
                "id": event_id,
                "object": "event",
                "type": "product.updated",
                "api_version": "2026-10-28.endive",
                "created": now,
                "livemode": False,
                "pending_webhooks": 1,
                "data": {"object": {**product, "description": f"edit {n}"}},
            }
        )
        secret = SECRET if n % 2 == 0 else OLD_SECRET  # rotation: both verify
        header = sign_webhook_payload(payload=body, secret=secret, timestamp=now)
        events.append((event_id, body.encode(), header))
    return events


class _Connection:
    """One keep-alive HTTP/1.1 connection with pre-encoded requests.

    A hand-rolled client because the sender shares a two-core machine with the server: httpx
    costs more CPU per request than the server does, and would measure itself.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> _Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def post(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def http_request(port: int, body: bytes, signature: str) -> bytes:
    head = (
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "User-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Stripe-Signature: {signature}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def send_all(
    port: int, events: list[tuple[str, bytes, str]], *, concurrency: int, time_limit: float
) -> tuple[list[Sent], float]:
    """Post every event with `concurrency` in flight; stop starting new ones at `time_limit`."""
    requests = [(event_id, http_request(port, body, sig)) for event_id, body, sig in events]
    pending = iter(requests)
    results: list[Sent] = []
    connections = [await _Connection.open(port) for _ in range(concurrency)]
    started = time.perf_counter()
    deadline = started + time_limit

    async def worker(connection: _Connection) -> None:
        for event_id, request in pending:
            sent_at = time.perf_counter()
            status = await connection.post(request)
            results.append(Sent(event_id, sent_at, time.perf_counter(), status))
            if time.perf_counter() >= deadline:
                return

    await asyncio.gather(*(worker(c) for c in connections))
    seconds = time.perf_counter() - started
    for connection in connections:
        await connection.close()
    return results, seconds


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[int(fraction * 1000) - 1]


class Options(TypedDict):
    events: int
    concurrency: int
    time_limit: float


def run_backend(
    name: str, database_url: str, *, events: int, concurrency: int, time_limit: float
) -> dict[str, Any]:
    batch = signed_events(events, uuid.uuid4().hex[:8])
    # Other work on the machine skews the numbers; record how busy it was.
    load_before = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    with served(database_url) as (port, conn, cpu):
        # Warm up the first-request paths, outside the timed window.
        warm = signed_events(concurrency, "warm" + uuid.uuid4().hex[:6])
        asyncio.run(send_all(port, warm, concurrency=concurrency, time_limit=30))
        conn.send("cpu")
        cpu_before = conn.recv()
        results, seconds = asyncio.run(
            send_all(port, batch, concurrency=concurrency, time_limit=time_limit)
        )
        conn.send("cpu")
        server_cpu_seconds = conn.recv() - cpu_before
        conn.send("stop")
        report = conn.recv()
    enqueued_at: dict[str, float] = report["enqueued_at"]
    ok = [r for r in results if r.status == 200]
    to_enqueue = sorted(
        (enqueued_at[r.event_id] - r.sent_at) * 1000 for r in ok if r.event_id in enqueued_at
    )
    round_trip = sorted((r.answered_at - r.sent_at) * 1000 for r in ok)
    stored_per_s = len(ok) / seconds if seconds else 0.0
    p99 = percentile(to_enqueue, 0.99)
    return {
        "backend": name,
        "server_cpu": cpu,
        "load_average_1m_before": load_before,
        "events_sent": len(results),
        "answered_200": len(ok),
        "other_statuses": sorted({r.status for r in results if r.status != 200}),
        "inbox_rows": report["inbox"],
        "inbox_rows_expected": len(ok) + len(warm),
        "enqueued": len([r for r in ok if r.event_id in enqueued_at]),
        "seconds": round(seconds, 3),
        # Near 1.0: the server's one core is the bottleneck; well below: the sender or I/O.
        "server_cpu_utilization": round(server_cpu_seconds / seconds, 2) if seconds else None,
        "stored_per_s": round(stored_per_s, 1),
        "receipt_to_enqueue_ms": {
            "p50": round(percentile(to_enqueue, 0.50), 2),
            "p99": round(p99, 2),
            "max": round(max(to_enqueue, default=float("nan")), 2),
        },
        "round_trip_ms": {
            "p50": round(percentile(round_trip, 0.50), 2),
            "p99": round(percentile(round_trip, 0.99), 2),
        },
        "targets": {
            "p99_under_250_ms": p99 < TARGET_P99_MS,
            "at_least_500_stored_per_s": stored_per_s >= TARGET_STORED_PER_S,
        },
    }


# --------------------------------------------------------------------------------------------
# Stores
# --------------------------------------------------------------------------------------------


@contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as directory:
        yield f"sqlite:///{directory}/.billing/state.db"


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh database on the server at `admin_url`, dropped afterwards."""
    import psycopg

    name = f"br_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------------------------
# Results file
# --------------------------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    lines = [
        SECTION,
        "",
        f"`bench/webhooks.py --events {report['events']} --concurrency {report['concurrency']}`"
        f" — {report['date']}, {report['machine']}, Python {report['python']}; server pinned"
        " to one core, sender on loopback in another process.",
        "",
        "| store | events | stored/s | receipt→enqueue p50 | p99 | round trip p50 | p99 |"
        " server CPU | load before | targets (p99 < 250 ms, ≥ 500/s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in report["runs"]:
        if "error" in run:
            lines.append(f"| {run['backend']} | — | — | — | — | — | — | — | — | {run['error']} |")
            continue
        latency, trip, targets = run["receipt_to_enqueue_ms"], run["round_trip_ms"], run["targets"]
        verdict = (
            "met"
            if all(targets.values())
            else "MISSED " + ", ".join(k for k, v in targets.items() if not v)
        )
        lines.append(
            f"| {run['backend']} | {run['answered_200']} (inbox {run['inbox_rows']}) "
            f"| {run['stored_per_s']} | {latency['p50']} ms | {latency['p99']} ms "
            f"| {trip['p50']} ms | {trip['p99']} ms | {run['server_cpu_utilization']} "
            f"| {run['load_average_1m_before']} | {verdict} |"
        )
    lines += ["", *NOTES]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace the `## Webhooks` section of `path` (or append it), keeping every other one."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == SECTION), None)
    if start is None:
        joined = text if text.endswith("\n") else text + "\n"
        path.write_text(joined + "\n" + section, encoding="utf-8")
        return
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    after = "".join(lines[end:])
    path.write_text(
        "".join(lines[:start]) + section + ("\n" + after if after else ""), encoding="utf-8"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args()
    events = max(1, min(args.events, MAX_EVENTS))
    time_limit = max(1.0, min(args.time_limit, MAX_SECONDS))
    concurrency = max(1, min(args.concurrency, 256))
    runs: list[dict[str, Any]] = []
    options = Options(events=events, concurrency=concurrency, time_limit=time_limit)
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        if backend == "sqlite":
            with sqlite_database() as url:
                runs.append(run_backend("sqlite", url, **options))
        elif backend == "postgres":
            try:
                with postgres_database(args.postgres_url) as url:
                    runs.append(run_backend("postgresql", url, **options))
            except Exception as error:  # optional: an unreachable server is reported, not fatal
                runs.append({"backend": "postgresql", "error": f"skipped: {type(error).__name__}"})
        else:
            parser.error(f"unknown backend {backend!r} (sqlite, postgres)")
    report = {
        "benchmark": "webhooks",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}",
        "python": platform.python_version(),
        "events": events,
        "concurrency": concurrency,
        "runs": runs,
    }
    print(json.dumps(report, indent=2))
    if args.results is not None:
        write_section(args.results, markdown(report))


if __name__ == "__main__":
    main()

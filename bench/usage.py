"""Benchmark of usage ingest through the HTTP API on PostgreSQL (not a test). Prints one JSON
document.

    .venv/bin/python bench/usage.py [--scenario ingest|meters|all] [--servers 1]
        [--processes 2] [--connections 8] [--batches 500] [--singles 5000] [--hot 2000]
        [--accounts 100] [--admin-url postgresql://...] [--profile]

`ingest` (issue 12, "Performance"): the API app (the routes `reconcile serve` mounts: FastAPI
under uvicorn) in `--servers` child processes listening on one port with SO_REUSEPORT, as
`reconcile serve --reuse-port` replicas on one host run it, on a new, empty database (created
on `--admin-url`'s server, dropped afterwards), `--accounts` orgs with an active account and
plenty of credits seeded through the store. `--processes` client processes of
`--connections` keep-alive connections each (plain sockets driven by one selector per process,
the request bytes made beforehand: the clients share the server's 2 cores), all starting
together, send:
- `batch100`: `--batches` requests of 100 usages each, round robin over the accounts
  (target >= 5,000 usage events/s);
- `single`: `--singles` one-usage requests round robin over the accounts (>= 1,000/s);
- `hot`: `--hot` one-usage requests on one account (>= 300/s; every request waits for that
  account's balance row lock);
then checks exactness: every balance equals its start less the usages sent to it, the
transaction count is right, `LedgerRepository.verify()` finds nothing, and no request
failed. Reported per case: wall, requests/s, usage events/s, client-side latency p50/p99,
CPU per request of the server processes, of PostgreSQL's processes and of the clients, and
the load average (the machine is shared: read the numbers next to it). `--profile` runs the
servers under cProfile and prints the first one's top lines.

`meters`: the meter-event sender's calls per 1,000,000 usages from 1,000 customers, with and
without aggregation (`bench/meters.py`: the real sender against the emulator on a scaled run,
then the exact formula; its options `--customers`, `--per-customer`, `--duration`,
`--flush-window`).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing
import os
import platform
import pstats
import re
import selectors
import socket
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import meters as meter_bench
from ledger import DEFAULT_ADMIN_URL, fresh_database
from sqlalchemy import text

from billing_reconciler.store import (
    AccountRepository,
    LedgerRepository,
    OrganizationRepository,
    Store,
)

APP_TOKEN = "bench-app-token-0123456789"
ADMIN_TOKEN = "bench-admin-token-0123456789"
START_BALANCE = 10**12
TARGETS = {"batch100": 5_000, "single": 1_000, "hot": 300}
"""Usage events/s each case must reach (issue 12)."""


# --- the server ---------------------------------------------------------------------------


def _serve(url: str, sock: socket.socket, ready: Any, stop: Any, profile_path: str | None) -> None:
    """The API app on `sock`, in this (child) process, until `stop` is set."""
    import uvicorn
    from fastapi import FastAPI

    from billing_reconciler.api import ApiContext, ApiTokens, api_router, install_error_handlers
    from billing_reconciler.config import Secret

    if profile_path:
        # Sync routes run on a thread pool, which cProfile (per thread) does not see: for a
        # profile they run on the event loop's thread instead (serialized; CPU is the same).
        import fastapi.dependencies.utils
        import fastapi.routing

        async def direct(func: Any, *args: Any, **kwargs: Any) -> Any:
            return func(*args, **kwargs)

        fastapi.routing.run_in_threadpool = direct  # type: ignore[assignment]
        fastapi.dependencies.utils.run_in_threadpool = direct  # type: ignore[assignment]
    store = Store.open(url)
    context = ApiContext(
        store=store,
        tokens=ApiTokens(app=(Secret(APP_TOKEN),), admin=(Secret(ADMIN_TOKEN),)),
    )
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(api_router(context))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    profiler = cProfile.Profile() if profile_path else None

    def stopper() -> None:
        stop.wait()
        server.should_exit = True

    threading.Thread(target=stopper, daemon=True).start()
    ready.set()
    if profiler is not None:
        profiler.enable()
    try:
        server.run(sockets=[sock])
    finally:
        if profiler is not None and profile_path:
            profiler.disable()
            profiler.dump_stats(profile_path)


class ServerProcess:
    """`servers` processes serving the API app on one port, as replicas of `reconcile serve`
    on one store behind a load balancer: each process listens on its own socket bound with
    SO_REUSEPORT, and the kernel spreads the connections over them (one shared socket would
    let whichever process accepts first take most connections)."""

    def __init__(self, url: str, profile_path: str | None, servers: int = 1) -> None:
        self._sockets: list[socket.socket] = []
        port = 0
        for _ in range(servers):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            listener.bind(("127.0.0.1", port))
            port = listener.getsockname()[1]
            self._sockets.append(listener)
        for listener in self._sockets:
            listener.listen(1024)
        self.url = f"http://127.0.0.1:{port}"
        context = multiprocessing.get_context("fork")
        self._stop = context.Event()
        self._processes = []
        for n, listener in enumerate(self._sockets):
            ready = context.Event()
            process = context.Process(
                target=_serve,
                args=(
                    url,
                    listener,
                    ready,
                    self._stop,
                    f"{profile_path}.{n}" if profile_path else None,
                ),
            )
            process.start()
            if not ready.wait(60):
                raise RuntimeError("the API server did not start")
            self._processes.append(process)
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{self.url}/v1beta1/billing/plans", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) of every server process so far."""
        total = 0.0
        for process in self._processes:
            stat = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def stop(self) -> None:
        self._stop.set()
        for process in self._processes:
            process.join(timeout=60)
        for listener in self._sockets:
            listener.close()


def _postgres_cpu_seconds() -> float:
    """CPU seconds of every `postgres` process on this machine so far (backends come and
    go: a rough figure, good enough to say where the cores went)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(stat[11]) + int(stat[12])) / tick
    return total


# --- the clients --------------------------------------------------------------------------

# A request: (org, [(usage id, amount), ...]).
Request = tuple[str, list[tuple[str, int]]]


def _request_bytes(host: str, org: str, usages: list[tuple[str, int]]) -> bytes:
    body = json.dumps({"usages": [{"id": i, "amount": a} for i, a in usages]}).encode()
    head = (
        f"POST /v1beta1/organizations/{org}/billing/usages HTTP/1.1\r\n"
        f"Host: {host}\r\nAuthorization: Bearer {APP_TOKEN}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Connection:
    """One keep-alive connection of a client process: its requests (bytes made beforehand),
    sent one after the other, each as soon as the previous answer is read."""

    def __init__(self, host: str, port: int, requests: list[bytes]) -> None:
        self.socket = socket.create_connection((host, port), timeout=120)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.socket.setblocking(False)
        self.requests = requests
        self.next = 0
        self.pending = bytearray()
        self.began = 0.0

    def send_next(self) -> bool:
        if self.next >= len(self.requests):
            return False
        self.began = time.perf_counter()
        self.socket.sendall(self.requests[self.next])  # small: fits the socket buffer
        self.next += 1
        return True

    def answer(self) -> tuple[int, bytes] | None:
        """The answer read so far, if whole (`Content-Length` framed, as uvicorn answers
        JSON): (status, body)."""
        end = self.pending.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self.pending[: end + 4]).decode("latin-1")
        match = re.search(r"(?im)^content-length:\s*(\d+)", head)
        length = int(match.group(1)) if match else 0
        if len(self.pending) < end + 4 + length:
            return None
        body = bytes(self.pending[end + 4 : end + 4 + length])
        del self.pending[: end + 4 + length]
        return int(head.split(" ", 2)[1]), body


def _client_process(
    url: str, per_connection: list[list[Request]], barrier: Any, results: Any
) -> None:
    """The connections of one client process, driven by one thread over a selector (no
    threads: the clients share the server's 2 cores, and a thread per connection would
    spend them on the GIL; an HTTP client library would spend ~0.5 ms per request)."""
    host, port = url.removeprefix("http://").split(":")
    connections = [
        _Connection(host, int(port), [_request_bytes(host, org, u) for org, u in mine])
        for mine in per_connection
    ]
    latencies: list[float] = []
    errors: list[str] = []
    selector = selectors.DefaultSelector()
    barrier.wait(timeout=300)
    cpu_began = time.process_time()
    for connection in connections:
        if connection.send_next():
            selector.register(connection.socket, selectors.EVENT_READ, connection)
    while selector.get_map():
        for key, _ in selector.select(timeout=120):
            connection = key.data
            chunk = connection.socket.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            connection.pending += chunk
            answered = connection.answer()
            if answered is None:
                continue
            latencies.append(time.perf_counter() - connection.began)
            status, body = answered
            if status != 201:
                errors.append(f"{status} {body[:200]!r}")
            if not connection.send_next():
                selector.unregister(connection.socket)
                connection.socket.close()
    results.put((latencies, errors, time.process_time() - cpu_began))


def run_requests(
    url: str, requests: list[Request], *, processes: int, connections: int
) -> dict[str, Any]:
    """`requests` spread round robin over `processes` x `connections` keep-alive
    connections, every process starting at once; wall time, latencies, errors and the
    clients' CPU seconds while sending."""
    clients = processes * connections
    per_client = [requests[c::clients] for c in range(clients)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes + 1)
    results = context.Queue()
    children = [
        context.Process(
            target=_client_process,
            args=(url, per_client[p * connections : (p + 1) * connections], barrier, results),
        )
        for p in range(processes)
    ]
    for child in children:
        child.start()
    barrier.wait(timeout=300)
    began = time.perf_counter()
    gathered = [results.get(timeout=1800) for _ in children]
    wall = time.perf_counter() - began
    for child in children:
        child.join(timeout=60)
    latencies = sorted(x for lat, _, _ in gathered for x in lat)
    errors = [e for _, err, _ in gathered for e in err]
    client_cpu = sum(cpu for _, _, cpu in gathered)
    return {"wall": wall, "latencies": latencies, "errors": errors, "client_cpu": client_cpu}


# --- the benchmark --------------------------------------------------------------------------


def _seed(url: str, accounts: int) -> dict[str, str]:
    """`accounts` orgs, each with an active account holding START_BALANCE credits: org ->
    account id."""
    ids: dict[str, str] = {}
    with Store.open(url) as store, store.session() as session:
        orgs = OrganizationRepository(session)
        repository = AccountRepository(session)
        ledger = LedgerRepository(session)
        for n in range(accounts):
            org = f"org-{n}"
            orgs.upsert(org, title=org)
            account = repository.create(org, name=None, email=None, currency="usd")
            ledger.credit(account.id, id=f"start:{org}", amount=START_BALANCE, source="bench")
            ids[org] = account.id
    return ids


def _case(
    name: str,
    url: str,
    server: ServerProcess,
    requests: list[Request],
    *,
    processes: int,
    connections: int,
) -> dict[str, Any]:
    cpu_before = server.cpu_seconds()
    postgres_before = _postgres_cpu_seconds()
    load_before = os.getloadavg()
    measured = run_requests(server.url, requests, processes=processes, connections=connections)
    cpu = server.cpu_seconds() - cpu_before
    postgres_cpu = _postgres_cpu_seconds() - postgres_before
    wall = measured["wall"]
    events = sum(len(usages) for _, usages in requests)
    latencies = measured["latencies"]
    rate = events / wall
    return {
        "case": name,
        "requests": len(requests),
        "usages": events,
        "clients": f"{processes} processes x {connections} connections",
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(requests) / wall),
        "usage_events_per_s": round(rate),
        "target_events_per_s": TARGETS[name],
        "meets_target": rate >= TARGETS[name] and not measured["errors"],
        "latency_ms_p50": round(1000 * statistics.median(latencies), 2) if latencies else None,
        "latency_ms_p99": (
            round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 2) if latencies else None
        ),
        "server_cpu_s": round(cpu, 2),
        "server_cpu_ms_per_request": round(1000 * cpu / len(requests), 3),
        "postgres_cpu_ms_per_request": round(1000 * postgres_cpu / len(requests), 3),
        "client_cpu_ms_per_request": round(1000 * measured["client_cpu"] / len(requests), 3),
        "failed_requests": len(measured["errors"]),
        "first_errors": measured["errors"][:3],
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def _exactness(url: str, accounts: dict[str, str], sent: dict[str, int], count: int) -> Any:
    with Store.open(url) as store, store.session() as session:
        ledger = LedgerRepository(session)
        wrong = [
            org
            for org, account_id in accounts.items()
            if ledger.balance(account_id)[0] != START_BALANCE - sent.get(org, 0)
        ]
        debits = int(
            session.execute(
                text("SELECT count(*) FROM ledger_transactions WHERE type = 'debit'")
            ).scalar_one()
        )
        problems = ledger.verify()
    return {
        "exact": not wrong and debits == count and not problems,
        "balances_wrong": len(wrong),
        "debits": debits,
        "expected_debits": count,
        "verify_problems": problems[:10],
    }


def ingest(args: argparse.Namespace) -> dict[str, Any]:
    with fresh_database(args.admin_url) as url:
        with Store.open(url):
            pass  # migrated before the server and the clients
        accounts = _seed(url, args.accounts)
        orgs = sorted(accounts)
        cases: dict[str, list[Request]] = {
            "batch100": [
                (orgs[b % len(orgs)], [(f"b{b}-{i}", 1 + i % 3) for i in range(100)])
                for b in range(args.batches)
            ],
            "single": [(orgs[n % len(orgs)], [(f"s{n}", 2)]) for n in range(args.singles)],
            "hot": [(orgs[0], [(f"h{n}", 1)]) for n in range(args.hot)],
        }
        sent: dict[str, int] = {}
        count = 0
        profile_path = f"/tmp/bench_usage_{os.getpid()}.pstats" if args.profile else None
        server = ServerProcess(url, profile_path, args.servers)
        results = []
        try:
            for name, requests in cases.items():
                if name not in args.cases.split(","):
                    continue
                results.append(
                    _case(
                        name,
                        url,
                        server,
                        requests,
                        processes=args.processes,
                        connections=args.connections,
                    )
                )
                for org, usages in requests:
                    sent[org] = sent.get(org, 0) + sum(a for _, a in usages)
                    count += len(usages)
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        finally:
            server.stop()
        exactness = _exactness(url, accounts, sent, count)
    answer: dict[str, Any] = {"cases": results, **exactness}
    profile_path = f"{profile_path}.0" if profile_path else None
    if profile_path and os.path.exists(profile_path):
        out = io.StringIO()
        pstats.Stats(profile_path, stream=out).sort_stats("tottime").print_stats(45)
        answer["profile_top"] = out.getvalue().splitlines()[:80]
        os.unlink(profile_path)
    return answer


def meters(args: argparse.Namespace) -> dict[str, Any]:
    """Meter events: calls sent per 1,000,000 usages from 1,000 customers, with and without
    aggregation (target >= 100x fewer with): `bench/meters.py`."""
    return meter_bench.meters(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=("ingest", "meters", "all"), default="ingest")
    parser.add_argument("--cases", default="batch100,single,hot")
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument(
        "--servers", type=int, default=1, help="API server processes sharing the port"
    )
    parser.add_argument(
        "--connections", type=int, default=8, help="keep-alive connections per client process"
    )
    parser.add_argument("--batches", type=int, default=500, help="requests of 100 usages")
    parser.add_argument("--singles", type=int, default=5_000)
    parser.add_argument("--hot", type=int, default=2_000)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument("--profile", action="store_true", help="the server under cProfile")
    meter_bench.add_arguments(parser)
    args = parser.parse_args(argv)
    document: dict[str, Any] = {
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }
    }
    if args.scenario in ("ingest", "all"):
        document["ingest"] = ingest(args)
    if args.scenario in ("meters", "all"):
        document["meters"] = meters(args)
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of usage ingest through the HTTP API on PostgreSQL (not a test). Prints one JSON
document.

    .venv/bin/python bench/usage.py [--scenario ingest|meters|all] [--processes 2]
        [--threads 8] [--batches 500] [--singles 5000] [--hot 2000] [--accounts 100]
        [--admin-url postgresql://...] [--profile]

`ingest` (issue 12, "Performance"): the API app (the routes `reconcile serve` mounts: FastAPI
under one uvicorn, one process, as `serve` runs it) in a child process on a new, empty
database (created on `--admin-url`'s server, dropped afterwards), `--accounts` orgs with an
active account and plenty of credits seeded through the store. `--processes` client
processes of `--threads` threads, each thread with its own keep-alive httpx connection,
all starting together, send:
- `batch100`: `--batches` requests of 100 usages each, round robin over the accounts
  (target >= 5,000 usage events/s);
- `single`: `--singles` one-usage requests round robin over the accounts (>= 1,000/s);
- `hot`: `--hot` one-usage requests on one account (>= 300/s; every request waits for that
  account's balance row lock);
then checks exactness: every balance equals its start less the usages sent to it, the
transaction count is right, `LedgerRepository.verify()` finds nothing, and no request
failed. Reported per case: wall, requests/s, usage events/s, client-side latency p50/p99,
the server process's CPU seconds, and the load average (the machine is shared: read the
numbers next to it). `--profile` runs the server under cProfile and prints its top lines.

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
    def __init__(self, url: str, profile_path: str | None) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(1024)
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        context = multiprocessing.get_context("fork")
        ready = context.Event()
        self._stop = context.Event()
        self._process = context.Process(
            target=_serve, args=(url, self._socket, ready, self._stop, profile_path)
        )
        self._process.start()
        if not ready.wait(60):
            raise RuntimeError("the API server did not start")
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
        fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self._stop.set()
        self._process.join(timeout=60)
        self._socket.close()


# --- the clients --------------------------------------------------------------------------

# A request: (org, [(usage id, amount), ...]).
Request = tuple[str, list[tuple[str, int]]]


def _client_thread(
    url: str, requests: list[Request], barrier: Any, latencies: list[float], errors: list[str]
) -> None:
    headers = {"Authorization": f"Bearer {APP_TOKEN}"}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
        http.get("/v1beta1/billing/plans")  # connected before the start line
        barrier.wait(timeout=300)
        for org, usages in requests:
            body = {"usages": [{"id": i, "amount": a} for i, a in usages]}
            began = time.perf_counter()
            response = http.post(f"/v1beta1/organizations/{org}/billing/usages", json=body)
            latencies.append(time.perf_counter() - began)
            if response.status_code != 201:
                errors.append(f"{response.status_code} {response.text[:200]}")


def _client_process(url: str, per_thread: list[list[Request]], barrier: Any, results: Any) -> None:
    latencies: list[float] = []
    errors: list[str] = []
    threads = [
        threading.Thread(target=_client_thread, args=(url, mine, barrier, latencies, errors))
        for mine in per_thread
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put((latencies, errors))


def run_requests(
    url: str, requests: list[Request], *, processes: int, threads: int
) -> dict[str, Any]:
    clients = processes * threads
    per_client = [requests[c::clients] for c in range(clients)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(clients + 1)
    results = context.Queue()
    children = [
        context.Process(
            target=_client_process,
            args=(url, per_client[p * threads : (p + 1) * threads], barrier, results),
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
    latencies = sorted(x for lat, _ in gathered for x in lat)
    errors = [e for _, err in gathered for e in err]
    return {"wall": wall, "latencies": latencies, "errors": errors}


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
    threads: int,
) -> dict[str, Any]:
    cpu_before = server.cpu_seconds()
    load_before = os.getloadavg()
    measured = run_requests(server.url, requests, processes=processes, threads=threads)
    cpu = server.cpu_seconds() - cpu_before
    wall = measured["wall"]
    events = sum(len(usages) for _, usages in requests)
    latencies = measured["latencies"]
    rate = events / wall
    return {
        "case": name,
        "requests": len(requests),
        "usages": events,
        "clients": f"{processes} processes x {threads} threads",
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
        server = ServerProcess(url, profile_path)
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
                        threads=args.threads,
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
    parser.add_argument("--threads", type=int, default=8, help="threads per client process")
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

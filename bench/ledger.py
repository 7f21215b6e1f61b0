"""Benchmark of the credits ledger on PostgreSQL (not a test): concurrent grants across
accounts from P client processes of N threads, each thread with its own store (engine,
connection). Prints one JSON document.

    .venv/bin/python bench/ledger.py [--processes 1,2] [--threads 1,4,8] [--grants 10000]
        [--accounts 100] [--batch 1,100] [--admin-url postgresql://...]

Each case runs on a new, empty database (created on the server of `--admin-url`, dropped
afterwards). A grant is `LedgerRepository.credit` of 1..5 credits to one of `--accounts`
accounts (round robin): one transaction row, two entries (the account's side and the
platform's), the account's balance row updated under `SELECT ... FOR UPDATE`. `--batch` grants
go in one database transaction (1: every grant commits on its own, like single API calls; 100:
like a usage batch); a batch takes its balance locks in account order, so writers never
deadlock. Reported per (processes, threads, batch): wall time, the clients' CPU time per
grant, transactions/s and entries/s (2 per
transaction; the target of issue 10 is >= 2,000 entries/s), and whether the result is exact:
every balance equals the sum granted to it, the counts of transactions and entries are right,
and `LedgerRepository.verify()` finds nothing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import text

from billing_reconciler.store import AccountRepository, LedgerRepository, Store

DEFAULT_ADMIN_URL = os.environ.get(
    "BILLING_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
TARGET_ENTRIES_PER_SECOND = 2_000


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A SQLAlchemy URL of a new database on the admin URL's server, dropped afterwards."""
    name = f"br_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def grant_amount(index: int) -> int:
    return 1 + index % 5


def _grant_all(
    url: str,
    account_ids: list[str],
    indexes: list[int],
    batch: int,
    barrier: Any,
) -> None:
    """One client: its own store (engine, connection); `batch` grants per transaction."""
    accounts = len(account_ids)
    with Store.open(url) as own:
        with own.session() as session:  # connected before the start line
            session.execute(text("SELECT 1"))
        barrier.wait(timeout=300)
        for start in range(0, len(indexes), batch):
            # One lock order for every writer: by account.
            chunk = sorted(indexes[start : start + batch], key=lambda i: i % accounts)
            with own.session() as session:
                ledger = LedgerRepository(session)
                for index in chunk:
                    ledger.credit(
                        account_ids[index % accounts],
                        id=f"grant:{index}",
                        amount=grant_amount(index),
                        source="system.awarded",
                    )


def _process_main(
    url: str,
    account_ids: list[str],
    per_thread: list[list[int]],
    batch: int,
    barrier: Any,
    cpu: Any,
) -> None:
    """A client process of `len(per_thread)` threads (its own GIL)."""
    began = time.process_time()
    threads = [
        threading.Thread(target=_grant_all, args=(url, account_ids, mine, batch, barrier))
        for mine in per_thread
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu.put(time.process_time() - began)


def run_case(
    admin_url: str, *, processes: int, threads: int, grants: int, accounts: int, batch: int
) -> Any:
    with fresh_database(admin_url) as url:
        with Store.open(url) as store, store.session() as session:
            repository = AccountRepository(session)
            account_ids = [
                repository.create(f"org-{n}", name=None, email=None, currency="usd").id
                for n in range(accounts)
            ]
        expected = dict.fromkeys(account_ids, 0)
        for index in range(grants):
            expected[account_ids[index % accounts]] += grant_amount(index)

        clients = processes * threads
        per_client = [list(range(client, grants, clients)) for client in range(clients)]
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(clients + 1)
        cpu = context.Queue()
        children = [
            context.Process(
                target=_process_main,
                args=(
                    url,
                    account_ids,
                    per_client[p * threads : (p + 1) * threads],
                    batch,
                    barrier,
                    cpu,
                ),
            )
            for p in range(processes)
        ]
        for child in children:
            child.start()
        barrier.wait(timeout=300)
        began = time.perf_counter()
        client_cpu = sum(cpu.get(timeout=600) for _ in children)
        wall = time.perf_counter() - began
        for child in children:
            child.join(timeout=60)
        failed = [child.exitcode for child in children if child.exitcode != 0]
        done = grants if not failed else 0

        with Store.open(url) as store, store.session() as session:
            ledger = LedgerRepository(session)
            wrong = [a for a in account_ids if ledger.balance(a)[0] != expected[a]]
            transactions = session.execute(text("SELECT count(*) FROM ledger_transactions"))
            entries = session.execute(text("SELECT count(*) FROM ledger_entries"))
            counts = (int(transactions.scalar_one()), int(entries.scalar_one()))
            problems = ledger.verify()
    exact = not wrong and counts == (grants, 2 * grants) and not problems and done == grants
    return {
        "processes": processes,
        "threads": threads,
        "batch": batch,
        "accounts": accounts,
        "grants": grants,
        "wall_s": round(wall, 3),
        "transactions_per_s": round(grants / wall),
        "entries_per_s": round(2 * grants / wall),
        "target_entries_per_s": TARGET_ENTRIES_PER_SECOND,
        "meets_target": 2 * grants / wall >= TARGET_ENTRIES_PER_SECOND,
        "client_cpu_ms_per_grant": round(1000 * client_cpu / grants, 3),
        "failed_client_processes": failed,
        "exact": exact,
        "balances_wrong": len(wrong),
        "transactions": counts[0],
        "entries": counts[1],
        "verify_problems": problems[:10],
        "load_average_after": [round(load, 2) for load in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,4,8", help="client threads per process")
    parser.add_argument("--processes", default="1", help="client processes (each has its own GIL)")
    parser.add_argument("--grants", type=int, default=10_000)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--batch", default="1,100", help="grants per database transaction")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    args = parser.parse_args(argv)
    cases = []
    for batch in [int(b) for b in args.batch.split(",")]:
        for processes in [int(p) for p in args.processes.split(",")]:
            for threads in [int(t) for t in args.threads.split(",")]:
                print(
                    f"# {processes} x {threads} clients, batch {batch} ...",
                    file=sys.stderr,
                    flush=True,
                )
                cases.append(
                    run_case(
                        args.admin_url,
                        processes=processes,
                        threads=threads,
                        grants=args.grants,
                        accounts=args.accounts,
                        batch=batch,
                    )
                )
    with psycopg.connect(args.admin_url, connect_timeout=5) as admin:
        server = admin.execute("SHOW server_version").fetchone()
    report = {
        "benchmark": "ledger",
        "command": "bench/ledger.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "postgresql": None if server is None else server[0],
        },
        "cases": cases,
        "all_exact": all(case["exact"] for case in cases),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of the credits ledger on PostgreSQL (not a test): concurrent grants across
accounts, N client threads, each with its own store (engine, connection). Prints one JSON
document.

    .venv/bin/python bench/ledger.py [--threads 1,4,8] [--grants 10000] [--accounts 100]
                                     [--batch 1,100] [--admin-url postgresql://...]

Each case runs on a new, empty database (created on the server of `--admin-url`, dropped
afterwards). A grant is `LedgerRepository.credit` of 1..5 credits to one of `--accounts`
accounts (round robin): one transaction row, two entries (the account's side and the
platform's), the account's balance row updated under `SELECT ... FOR UPDATE`. `--batch` grants
go in one database transaction (1: every grant commits on its own, like single API calls; 100:
like a usage batch); a batch takes its balance locks in account order, so writers never
deadlock. Reported per (threads, batch): wall time, transactions/s and entries/s (2 per
transaction; the target of issue 10 is >= 2,000 entries/s), and whether the result is exact:
every balance equals the sum granted to it, the counts of transactions and entries are right,
and `LedgerRepository.verify()` finds nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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


def run_case(admin_url: str, *, threads: int, grants: int, accounts: int, batch: int) -> Any:
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

        barrier = threading.Barrier(threads + 1)

        def worker(worker_index: int) -> int:
            mine = list(range(worker_index, grants, threads))
            with Store.open(url) as own:
                with own.session() as session:  # connected before the start line
                    session.execute(text("SELECT 1"))
                barrier.wait(timeout=120)
                for start in range(0, len(mine), batch):
                    # One lock order for every writer: by account.
                    chunk = sorted(mine[start : start + batch], key=lambda i: i % accounts)
                    with own.session() as session:
                        ledger = LedgerRepository(session)
                        for index in chunk:
                            ledger.credit(
                                account_ids[index % accounts],
                                id=f"grant:{index}",
                                amount=grant_amount(index),
                                source="system.awarded",
                            )
            return len(mine)

        with ThreadPoolExecutor(max_workers=threads) as pool:
            futures = [pool.submit(worker, n) for n in range(threads)]
            barrier.wait(timeout=120)
            began = time.perf_counter()
            done = sum(future.result() for future in futures)
            wall = time.perf_counter() - began

        with Store.open(url) as store, store.session() as session:
            ledger = LedgerRepository(session)
            wrong = [a for a in account_ids if ledger.balance(a)[0] != expected[a]]
            transactions = session.execute(text("SELECT count(*) FROM ledger_transactions"))
            entries = session.execute(text("SELECT count(*) FROM ledger_entries"))
            counts = (int(transactions.scalar_one()), int(entries.scalar_one()))
            problems = ledger.verify()
    exact = not wrong and counts == (grants, 2 * grants) and not problems and done == grants
    return {
        "threads": threads,
        "batch": batch,
        "accounts": accounts,
        "grants": grants,
        "wall_s": round(wall, 3),
        "transactions_per_s": round(grants / wall),
        "entries_per_s": round(2 * grants / wall),
        "target_entries_per_s": TARGET_ENTRIES_PER_SECOND,
        "meets_target": 2 * grants / wall >= TARGET_ENTRIES_PER_SECOND,
        "exact": exact,
        "balances_wrong": len(wrong),
        "transactions": counts[0],
        "entries": counts[1],
        "verify_problems": problems[:10],
        "load_average_after": [round(load, 2) for load in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,4,8")
    parser.add_argument("--grants", type=int, default=10_000)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--batch", default="1,100", help="grants per database transaction")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    args = parser.parse_args(argv)
    cases = []
    for batch in [int(b) for b in args.batch.split(",")]:
        for threads in [int(t) for t in args.threads.split(",")]:
            print(f"# {threads} threads, batch {batch} ...", file=sys.stderr, flush=True)
            cases.append(
                run_case(
                    args.admin_url,
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

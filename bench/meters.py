"""The meter-event sender's Stripe calls per usage, with and without aggregation (issue 12,
"Performance": calls sent per 1,000,000 usages from 1,000 customers; target >= 100x fewer
with aggregation). Run through `bench/usage.py --scenario meters` (or alone, here).

Method: the real sender (the credits domain's controller: plan, apply) against the embedded
emulator over HTTP, on a scaled-down outbox in a fresh SQLite store: `--customers`
customers x `--per-customer` usages of one `sum` meter, their event times spread evenly
over `--duration` seconds (the time the usages take to arrive; the default, 200 s, is
1,000,000 usages at the ingest target of 5,000 usage events/s). The emulator's request log
counts the `POST /v1/billing/meter_events` calls of one pass without aggregation and one
with `reconcile.usage.aggregate: true` (`--flush-window` seconds). The count for the full
size is then the exact formula, checked first against the scaled run:
- without aggregation: one call per usage;
- with: one call per (customer, flush window its usages fall in): `customers x windows`,
  windows = the flush windows `[start, start + duration)` meets (usages arriving late for a
  closed window would add a part each; none do here).

    .venv/bin/python bench/meters.py [--customers 100] [--per-customer 100]
        [--duration 200] [--flush-window 60]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from billing_reconciler.controller import Controller, Registration
from billing_reconciler.desired import load_desired
from billing_reconciler.registry import CATALOG, CREDITS, CUSTOMERS
from billing_reconciler.store import AccountRepository, Store
from billing_reconciler.store.meter_outbox import OutboxRow, record
from billing_reconciler.stripe_gateway import RetryPolicy, StripeGateway
from stripe_emulator.server import EmbeddedEmulator

FULL_USAGES = 1_000_000
FULL_CUSTOMERS = 1_000
TARGET_RATIO = 100

CATALOG_YAML = """\
products:
  - name: api_usage
    title: API requests
    prices:
      - name: monthly
        interval: month
        usage_type: metered
        amount: 1
        currency: usd
        meter:
          event_name: api_requests
          display_name: API requests
          aggregation: sum
"""

BILLING = """\
billing:
  default_currency: usd
reconcile:
  installation_id: bench
  rate_limit_per_second: 10000
  apply_concurrency: 16
  usage:
    aggregate: {aggregate}
    flush_window: {window}s
"""


def _controller(directory: Path, registration: Registration, store: Store, url: str) -> Controller:
    result = load_desired(directory)
    assert result.state is not None, [str(d) for d in result.diagnostics]
    return Controller(
        registration=registration,
        state=result.state,
        gateway=StripeGateway(
            api_key="sk_test_bench",
            api_base=url,
            rate_limit_per_second=10_000,
            retry=RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0),
            timeout_seconds=30,
        ),
        store=store,
    )


def _windows(start: int, duration: int, window: int) -> int:
    """The flush windows `[start, start + duration)` meets."""
    return (start + duration - 1) // window - start // window + 1


def one_run(
    args: argparse.Namespace, *, aggregate: bool, emulator: EmbeddedEmulator
) -> dict[str, Any]:
    emulator.control.reset()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "desired"
        (directory / "plans").mkdir(parents=True)
        (directory / "plans" / "catalog.yaml").write_text(textwrap.dedent(CATALOG_YAML))
        (directory / "billing.yaml").write_text(
            BILLING.format(aggregate=str(aggregate).lower(), window=args.flush_window)
        )
        store = Store.open(f"sqlite:///{Path(tmp) / 'state.db'}")
        try:
            orgs = [f"org{n:04d}" for n in range(args.customers)]
            with store.session() as session:
                accounts = AccountRepository(session)
                ids = {
                    org: accounts.create(org, name=org, email=None, currency="usd").id
                    for org in orgs
                }
            for registration in (CATALOG, CUSTOMERS):
                controller = _controller(directory, registration, store, emulator.url)
                controller.apply(controller.plan())
            # Event times an hour back (every window closed), aligned to a window start.
            start = (int(time.time()) - 3600) // args.flush_window * args.flush_window
            step = args.duration / args.per_customer
            now = datetime.now(UTC)
            for org in orgs:
                rows = [
                    OutboxRow(
                        id=f"{org}-{n}",
                        account_id=ids[org],
                        org_id=org,
                        event_name="api_requests",
                        value=1,
                        event_time=datetime.fromtimestamp(start + int(n * step), UTC),
                        created_at=now,
                    )
                    for n in range(args.per_customer)
                ]
                with store.session() as session:
                    record(session, rows)
            emulator.control.clear_requests()
            credits = _controller(directory, CREDITS, store, emulator.url)
            began = time.monotonic()
            _, _, residual = credits.apply(credits.plan())
            wall = time.monotonic() - began
            calls = len(
                emulator.control.requests(method="POST", path_prefix="/v1/billing/meter_events")
            )
            usages = args.customers * args.per_customer
            windows = _windows(start, args.duration, args.flush_window)
            expected = args.customers * windows if aggregate else usages
            return {
                "aggregate": aggregate,
                "usages": usages,
                "customers": args.customers,
                "meter_event_calls": calls,
                "formula_calls": expected,
                "formula_matches": calls == expected,
                "converged": residual.converged,
                "send_wall_seconds": round(wall, 2),
                "calls_per_second": round(calls / wall, 1) if wall else None,
            }
        finally:
            store.close()


def meters(args: argparse.Namespace) -> dict[str, Any]:
    with EmbeddedEmulator() as emulator:
        plain = one_run(args, aggregate=False, emulator=emulator)
        aggregated = one_run(args, aggregate=True, emulator=emulator)
    windows = _windows(0, args.duration, args.flush_window)
    full_plain = FULL_USAGES
    full_aggregated = FULL_CUSTOMERS * windows
    ratio = full_plain / full_aggregated
    return {
        "method": (
            "the real sender against the emulator on the scaled run (measured), then the "
            "exact formula for 1,000,000 usages from 1,000 customers"
        ),
        "duration_seconds": args.duration,
        "flush_window_seconds": args.flush_window,
        "scaled": [plain, aggregated],
        "per_1m_usages_from_1000_customers": {
            "without_aggregation": full_plain,
            "with_aggregation": full_aggregated,
            "ratio": round(ratio, 1),
            "target_ratio": TARGET_RATIO,
            "met": ratio >= TARGET_RATIO
            and plain["formula_matches"]
            and aggregated["formula_matches"],
        },
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--customers", type=int, default=100, help="scaled run's customers")
    parser.add_argument("--per-customer", type=int, default=100, help="usages per customer")
    parser.add_argument("--duration", type=int, default=200, help="seconds the usages span")
    parser.add_argument("--flush-window", type=int, default=60, help="aggregation window, s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    print(json.dumps(meters(parser.parse_args(argv)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The credits domain's meter events against the emulator over HTTP, on SQLite and PostgreSQL.

A `MeterWorld` is a desired/ directory (a `sum` meter with its own payload keys and a `count`
meter, each behind a metered price, and a plan billing the first), a store, the emulator and
the controllers of the catalog, customers and credits domains. Accounts are opened in the
store and given their Stripe customers by the customers domain; usages' meter events are
written to the outbox as the usage API writes them (`store.meter_outbox.record`).
"""

from __future__ import annotations

import contextlib
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from billing_reconciler.controller import Controller, PlanOptions, Registration
from billing_reconciler.desired import load_desired
from billing_reconciler.planning.plan import Plan
from billing_reconciler.registry import CATALOG, CREDITS, CUSTOMERS
from billing_reconciler.store import AccountRepository, Store
from billing_reconciler.store.meter_outbox import MeterOutboxRepository, OutboxRow, record
from billing_reconciler.stripe_gateway import RetryPolicy, StripeGateway
from stripe_emulator.control import RequestLogEntry
from tests.fixtures.emulator import EmulatorHandle, make_client
from tests.fixtures.postgres import new_postgres_database

BILLING = """\
billing:
  default_currency: usd
reconcile:
  installation_id: test
  rate_limit_per_second: 10000
  apply_concurrency: {concurrency}
  usage:
    aggregate: {aggregate}
    flush_window: {window}
"""

CATALOG_YAML = """\
products:
  - name: api_usage
    title: API requests
    prices:
      - name: monthly
        interval: month
        usage_type: metered
        amount: 3
        currency: usd
        meter:
          event_name: api_requests
          display_name: API requests
          aggregation: sum
          customer_key: customer
          value_key: requests
  - name: logins
    title: Logins
    prices:
      - name: monthly
        interval: month
        usage_type: metered
        amount: 1
        currency: usd
        meter:
          event_name: logins
          display_name: Logins
          aggregation: count
plans:
  - name: usage_monthly
    title: Usage
    interval: month
    products:
      - name: api_usage
"""

FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0)
SUM = "api_requests"
COUNT = "logins"


@dataclass
class MeterWorld:
    directory: Path
    store: Store
    emulator: EmulatorHandle
    url: str
    backend: str

    def configure(
        self, *, aggregate: bool = False, window: str = "1m", concurrency: int = 16
    ) -> None:
        (self.directory / "billing.yaml").write_text(
            BILLING.format(aggregate=str(aggregate).lower(), window=window, concurrency=concurrency)
        )

    def controller(
        self,
        registration: Registration,
        *,
        retry: RetryPolicy = FAST_RETRY,
        store: Store | None = None,
        clock: Any = time.time,
    ) -> Controller:
        result = load_desired(self.directory)
        assert result.state is not None, [str(d) for d in result.diagnostics]
        return Controller(
            registration=registration,
            state=result.state,
            gateway=StripeGateway(
                api_key="sk_test_emulator",
                api_base=self.emulator.url,
                rate_limit_per_second=10_000,
                retry=retry,
                timeout_seconds=10,
            ),
            store=store or self.store,
            clock=clock,
        )

    def open(
        self, orgs: Sequence[str], *, offline: Sequence[str] = (), clock: str | None = None
    ) -> None:
        """Accounts for `orgs` (those in `offline` without a Stripe customer), then the
        catalog's meters and the online accounts' customers."""
        with self.store.session() as session:
            accounts = AccountRepository(session)
            for org in orgs:
                accounts.create(
                    org,
                    name=f"Org {org}",
                    email=None,
                    currency="usd",
                    offline=org in offline,
                    test_clock=clock,
                )
        for registration in (CATALOG, CUSTOMERS):
            controller = self.controller(registration)
            _, _, residual = controller.apply(controller.plan())
            assert residual.converged, (registration.name, residual)

    def account_id(self, org: str) -> str:
        with self.store.session() as session:
            account = AccountRepository(session).active_for_org(org)
        assert account is not None
        return account.id

    def customer(self, org: str) -> str:
        with self.store.session() as session:
            account = AccountRepository(session).active_for_org(org)
        assert account is not None
        assert account.stripe_customer_id is not None
        return account.stripe_customer_id

    def usages(
        self,
        org: str,
        count: int,
        *,
        event_name: str = SUM,
        value: int = 1,
        at: float | None = None,
        prefix: str = "u",
    ) -> list[str]:
        """`count` usages' meter events written to the outbox; their ids."""
        account = self.account_id(org)
        moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
        ids = [f"{prefix}-{org}-{n:05d}" for n in range(count)]
        rows = [
            OutboxRow(
                id=ident,
                account_id=account,
                org_id=org,
                event_name=event_name,
                value=value,
                event_time=moment,
                created_at=datetime.now(UTC),
            )
            for ident in ids
        ]
        for start in range(0, len(rows), 1000):
            with self.store.session() as session:
                record(session, rows[start : start + 1000])
        return ids

    def plan(self, scope: frozenset[str] | None = None, *, clock: Any = time.time) -> Plan:
        return self.controller(CREDITS, clock=clock).plan(PlanOptions(scope=scope)).plan

    def send(self, *, retry: RetryPolicy = FAST_RETRY, clock: Any = time.time) -> Plan:
        """One credits pass, applied; it must converge. The plan it applied."""
        controller = self.controller(CREDITS, retry=retry, clock=clock)
        planned = controller.plan()
        if planned.plan.has_work:
            _, _, residual = controller.apply(planned)
            assert residual.converged, [(s.key, dict(s.params)) for s in residual.steps]
        return planned.plan

    def events(self) -> list[dict[str, Any]]:
        """Every meter event the emulator holds."""
        collection = self.emulator.server.emulator.store.collection("billing.meter_event")
        return [dict(e) for e in collection.objects.values()]

    def sends(self) -> list[RequestLogEntry]:
        """The meter-event requests the emulator answered, in order."""
        return self.emulator.control.requests(method="POST", path_prefix="/v1/billing/meter_events")

    def depth(self) -> tuple[int, int]:
        with self.store.session() as session:
            depth, _, refused = MeterOutboxRepository(session).totals()
        return depth, refused


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def meters(
    request: pytest.FixtureRequest, tmp_path: Path, emulator: EmulatorHandle
) -> Iterator[MeterWorld]:
    directory = tmp_path / "desired"
    (directory / "plans").mkdir(parents=True)
    (directory / "plans" / "catalog.yaml").write_text(textwrap.dedent(CATALOG_YAML))
    with contextlib.ExitStack() as stack:
        if request.param == "postgresql":
            url = stack.enter_context(new_postgres_database())
        else:
            url = f"sqlite:///{tmp_path / 'state.db'}"
        world = MeterWorld(
            directory=directory,
            store=Store.open(url),
            emulator=emulator,
            url=url,
            backend=request.param,
        )
        world.configure()
        try:
            yield world
        finally:
            world.store.close()


__all__ = ["COUNT", "FAST_RETRY", "SUM", "MeterWorld", "make_client"]

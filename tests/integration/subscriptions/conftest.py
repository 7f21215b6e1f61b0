"""The subscriptions domain against the emulator over HTTP, on SQLite and on PostgreSQL.

A `World` is a desired/ directory (a free plan, a per-seat team plan monthly and yearly), a
store, the emulator and one controller per registered domain, run in apply order (catalog,
customers, subscriptions) as `reconcile serve` runs them. The Stripe side follows a test
clock: every account is created on it, and the controllers' clock is its frozen time.
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import stripe

from billing_reconciler.api import ApiContext, ApiTokens
from billing_reconciler.api.onboarding import NewAccount, open_account
from billing_reconciler.config import Secret
from billing_reconciler.controller import Controller, PlanOptions, Registration
from billing_reconciler.desired import load_desired
from billing_reconciler.planning.plan import Plan
from billing_reconciler.registry import CATALOG, CUSTOMERS, SUBSCRIPTIONS
from billing_reconciler.runtime.domains import DomainRunner
from billing_reconciler.store import (
    AccountRecord,
    AccountRepository,
    IntentRepository,
    MemberRepository,
    OrganizationRepository,
    Store,
)
from billing_reconciler.stripe_gateway import RetryPolicy, StripeGateway
from tests.fixtures.emulator import EmulatorHandle, make_client
from tests.fixtures.postgres import new_postgres_database
from tests.fixtures.stores import migrated_sqlite_url

T0 = 1768435200  # 2026-01-15T00:00:00Z
DAY = 86_400
FEB_15 = T0 + 31 * DAY

BILLING = """\
billing:
  default_currency: usd
  stripe_auto_tax: {auto_tax}
  customer:
    default_plan: {default_plan}
  product:
    seat_change_behavior: {seat_change}
reconcile:
  installation_id: test
"""

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
      - name: yearly
        interval: year
        amount: 49000
        currency: usd
  - name: team_seat
    title: Team seat
    behavior: per_seat
    prices:
      - name: monthly
        interval: month
        amount: 900
        currency: usd
      - name: yearly
        interval: year
        amount: 9000
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
    on_start_credits: 100
    products:
      - name: team_base
      - name: team_seat
  - name: team_yearly
    title: Team (yearly)
    interval: year
    products:
      - name: team_base
      - name: team_seat
"""

DOMAINS = (CATALOG, CUSTOMERS, SUBSCRIPTIONS)


@dataclass
class World:
    directory: Path
    store: Store
    emulator: EmulatorHandle
    stripe: stripe.StripeClient
    test_clock: str
    clock: list[float] = field(default_factory=lambda: [float(T0)])
    # The store's URL (for a `reconcile` command run against the same store).
    url: str = ""

    def now(self) -> float:
        return self.clock[0]

    def configure(
        self,
        *,
        default_plan: str = "free_monthly",
        auto_tax: bool = False,
        seat_change: str = "exact",
    ) -> None:
        (self.directory / "billing.yaml").write_text(
            BILLING.format(
                default_plan=default_plan or '""',
                auto_tax=str(auto_tax).lower(),
                seat_change=seat_change,
            )
        )

    def runner(self, registration: Registration) -> DomainRunner:
        """`registration`'s runner as `serve` runs it, on the world's store, Stripe and clock."""
        result = load_desired(self.directory)
        assert result.state is not None, [str(d) for d in result.diagnostics]
        return DomainRunner(
            registration=registration,
            store=self.store,
            gateway=StripeGateway(
                api_key="sk_test_emulator",
                api_base=self.emulator.url,
                retry=RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0),
            ),
            actor="test",
            directory=self.directory,
            initial=result.state,
            clock=self.now,
        )

    def controller(self, registration: Registration) -> Controller:
        result = load_desired(self.directory)
        assert result.state is not None, [str(d) for d in result.diagnostics]
        return Controller(
            registration=registration,
            state=result.state,
            gateway=StripeGateway(
                api_key="sk_test_emulator",
                api_base=self.emulator.url,
                retry=RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0),
            ),
            store=self.store,
            clock=self.now,
        )

    def plan(self, scope: frozenset[str] | None = None, *, allow_mass_change: bool = False) -> Plan:
        """The subscriptions domain's plan (nothing applied)."""
        options = PlanOptions(scope=scope, allow_mass_change=allow_mass_change)
        return self.controller(SUBSCRIPTIONS).plan(options).plan

    def reconcile(
        self, scope: frozenset[str] | None = None, *, allow_mass_change: bool = False
    ) -> Plan:
        """One pass of every domain in apply order (each planned after the one before it
        applied); the subscriptions plan that was applied. Each pass must converge."""
        applied: Plan | None = None
        for registration in DOMAINS:
            controller = self.controller(registration)
            planned = controller.plan(PlanOptions(scope=scope, allow_mass_change=allow_mass_change))
            if planned.plan.has_work:
                _, _, residual = controller.apply(planned)
                assert residual.converged, (registration.name, residual)
            applied = planned.plan
        assert applied is not None
        return applied

    def open(self, org_id: str, *, members: int = 0, offline: bool = False) -> AccountRecord:
        """An org with `members` members and its account, opened as the host API opens it
        (the default plan's intent is recorded with the account), on the world's test clock."""
        result = load_desired(self.directory)
        assert result.state is not None
        config = result.state.config
        context = ApiContext(
            store=self.store,
            tokens=ApiTokens(app=(Secret("app-token-0123456789"),)),
            config=lambda: config,
        )
        with self.store.session() as session:
            org, _ = OrganizationRepository(session).upsert(org_id, title=org_id.title())
            for index in range(members):
                MemberRepository(session).upsert(org_id, f"user-{index}")
            return open_account(
                context,
                session,
                org,
                NewAccount(currency="usd", offline=offline, test_clock=self.test_clock),
            )

    def account(self, org_id: str) -> AccountRecord:
        with self.store.session() as session:
            record = AccountRepository(session).active_for_org(org_id)
        assert record is not None
        return record

    def add_card(self, org_id: str) -> None:
        customer = self.account(org_id).stripe_customer_id
        assert customer is not None
        pm = self.stripe.v1.payment_methods.attach("pm_card_visa", {"customer": customer})
        self.stripe.v1.customers.update(
            customer, {"invoice_settings": {"default_payment_method": pm.id}}
        )

    def subscribe(self, org_id: str, plan: str) -> str:
        """A direct subscribe (no trial) replacing whatever intent the account has."""
        account = self.account(org_id)
        with self.store.session() as session:
            intent, _ = IntentRepository(session).replace(
                account.id, plan=plan, source="subscribe", skip_trial=True
            )
        return intent.id

    def subscriptions(self, org_id: str | None = None) -> list[Any]:
        params: dict[str, Any] = {"limit": 100, "status": "all"}
        if org_id is not None:
            customer = self.account(org_id).stripe_customer_id
            assert customer is not None
            params["customer"] = customer
        return list(self.stripe.v1.subscriptions.list(params).auto_paging_iter())  # type: ignore[arg-type]

    def advance(self, to: int) -> None:
        self.stripe.v1.test_helpers.test_clocks.advance(self.test_clock, {"frozen_time": to})
        self.clock[0] = float(to)


@pytest.fixture(params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path: Path, emulator: EmulatorHandle
) -> Iterator[World]:
    directory = tmp_path / "desired"
    (directory / "plans").mkdir(parents=True)
    (directory / "plans" / "catalog.yaml").write_text(textwrap.dedent(CATALOG_YAML))
    with contextlib.ExitStack() as stack:
        # What `Store.open` makes of an empty database, copied from a migrated template with
        # an identity of its own (tests/fixtures/stores.py).
        if request.param == "postgresql":
            url = stack.enter_context(new_postgres_database(migrated=True))
        else:
            url = migrated_sqlite_url(tmp_path / "state.db")
        sdk = make_client(emulator.url)
        clock = sdk.v1.test_helpers.test_clocks.create({"frozen_time": T0}).id
        world = World(
            directory=directory,
            store=Store.open(url),
            emulator=emulator,
            stripe=sdk,
            test_clock=clock,
            url=url,
        )
        world.configure()
        try:
            yield world
        finally:
            world.store.close()

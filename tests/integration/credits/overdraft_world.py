"""A world for the overdraft part (DESIGN §17) against the emulator over HTTP.

A desired/ directory whose `credits` product (1000 USD cents for 100 credits: 10 cents a
credit) is the overdraft product, a store (SQLite or PostgreSQL), the emulator and the
controllers of the catalog, customers and credits domains, all on one clock: the controllers'
`now` and the frozen time of a Stripe test clock every account's customer is created on (so
Stripe stamps the invoices it makes at the same instant the rules think it is).
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import stripe

from billing_reconciler.controller import Controller, PlanOptions, Registration
from billing_reconciler.desired import load_desired
from billing_reconciler.planning.plan import Plan
from billing_reconciler.registry import CATALOG, CREDITS, CUSTOMERS
from billing_reconciler.store import AccountRepository, Store
from billing_reconciler.store.ledger import LedgerRepository
from billing_reconciler.store.overdraft import OverdraftRepository, WindowRow
from billing_reconciler.stripe_gateway import RetryPolicy, StripeGateway
from tests.fixtures.emulator import EmulatorHandle, make_client
from tests.fixtures.postgres import new_postgres_database

BILLING = """\
billing:
  default_currency: usd
  stripe_auto_tax: {auto_tax}
  payment_method_config:
    - type: card
      max: 5000000
    - type: customer_balance
      min: 100000
  customer:
    credit_overdraft_product: {product}
    credit_overdraft_invoice_day: {day}
    credit_overdraft_invoice_range_shift: {shift}
reconcile:
  installation_id: test
  rate_limit_per_second: 10000
"""

CATALOG_YAML = """\
products:
  - name: credits
    title: Usage credits
    behavior: credits
    config:
      credit_amount: 100
    prices:
      - name: pack_100
        amount: {amount}
        currency: usd
"""

FAST_RETRY = RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0)


def at(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


@dataclass
class OverdraftWorld:
    directory: Path
    store: Store
    emulator: EmulatorHandle
    stripe: stripe.StripeClient
    url: str
    backend: str
    test_clock: str = ""
    clock: list[float] = field(default_factory=lambda: [0.0])

    def configure(
        self,
        *,
        day: int = 1,
        shift: int = 0,
        amount: int = 1000,
        product: str = "credits",
        auto_tax: bool = False,
    ) -> None:
        (self.directory / "billing.yaml").write_text(
            BILLING.format(day=day, shift=shift, product=product, auto_tax=str(auto_tax).lower())
        )
        (self.directory / "plans" / "catalog.yaml").write_text(
            textwrap.dedent(CATALOG_YAML.format(amount=amount))
        )

    def now(self) -> float:
        return self.clock[0]

    def set_clock(self, seconds: int) -> None:
        """Move the controllers' clock and the Stripe test clock to `seconds`."""
        if not self.test_clock:
            self.test_clock = self.stripe.v1.test_helpers.test_clocks.create(
                {"frozen_time": seconds}
            ).id
        elif seconds > self.clock[0]:
            self.stripe.v1.test_helpers.test_clocks.advance(
                self.test_clock, {"frozen_time": seconds}
            )
        self.clock[0] = float(seconds)

    def controller(self, registration: Registration, *, store: Store | None = None) -> Controller:
        result = load_desired(self.directory)
        assert result.state is not None, [str(d) for d in result.diagnostics]
        return Controller(
            registration=registration,
            state=result.state,
            gateway=StripeGateway(
                api_key="sk_test_emulator",
                api_base=self.emulator.url,
                rate_limit_per_second=10_000,
                retry=FAST_RETRY,
            ),
            store=store or self.store,
            clock=self.now,
        )

    def open(
        self, org: str, *, credit_min: int = -1000, due_in_days: int = 14, offline: bool = False
    ) -> str:
        """An account (its Stripe customer made by the customers domain); its id."""
        with self.store.session() as session:
            account = AccountRepository(session).create(
                org,
                name=f"Org {org}",
                email=f"billing@{org}.example",
                currency="usd",
                credit_min=credit_min,
                due_in_days=due_in_days,
                offline=offline,
                test_clock=self.test_clock or None,
            )
        for registration in (CATALOG, CUSTOMERS):
            controller = self.controller(registration)
            _, _, residual = controller.apply(controller.plan())
            assert residual.converged, (registration.name, residual)
        return account.id

    def debit(self, org: str, amount: int, *, id: str) -> None:
        with self.store.session() as session:
            account = AccountRepository(session).active_for_org(org)
            assert account is not None
            LedgerRepository(session).debit(
                account.id, id=id, amount=amount, source="usage", credit_min=account.credit_min
            )

    def credit(self, org: str, amount: int, *, id: str, source: str = "system.awarded") -> None:
        with self.store.session() as session:
            account = AccountRepository(session).active_for_org(org)
            assert account is not None
            LedgerRepository(session).credit(account.id, id=id, amount=amount, source=source)

    def balance(self, org: str) -> int:
        with self.store.session() as session:
            account = AccountRepository(session).active_for_org(org)
            assert account is not None
            return LedgerRepository(session).balance(account.id)[0]

    def customer(self, org: str) -> str:
        with self.store.session() as session:
            account = AccountRepository(session).active_for_org(org)
        assert account is not None
        assert account.stripe_customer_id is not None
        return account.stripe_customer_id

    def plan(self, scope: frozenset[str] | None = None) -> Plan:
        return self.controller(CREDITS).plan(PlanOptions(scope=scope)).plan

    def reconcile(self, scope: frozenset[str] | None = None, *, store: Store | None = None) -> Plan:
        """One credits pass, applied; it must converge. The plan it applied."""
        controller = self.controller(CREDITS, store=store)
        planned = controller.plan(PlanOptions(scope=scope))
        if planned.plan.has_work:
            _, _, residual = controller.apply(planned)
            assert residual.converged, [(s.key, dict(s.params)) for s in residual.steps]
        return planned.plan

    def invoices(self, org: str | None = None) -> list[Any]:
        params: dict[str, Any] = {"limit": 100}
        if org is not None:
            params["customer"] = self.customer(org)
        listed = self.stripe.v1.invoices.list(params)  # type: ignore[arg-type]
        return list(listed.auto_paging_iter())

    def invoice_items(self) -> list[Any]:
        listed = self.stripe.v1.invoice_items.list({"limit": 100})
        return list(listed.auto_paging_iter())

    def windows(self) -> list[WindowRow]:
        with self.store.session() as session:
            return OverdraftRepository(session).windows()

    def pay(self, invoice_id: str) -> Any:
        return self.stripe.v1.invoices.pay(invoice_id, {"payment_method": "pm_card_visa"})


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def overdraft(
    request: pytest.FixtureRequest, tmp_path: Path, emulator: EmulatorHandle
) -> Iterator[OverdraftWorld]:
    directory = tmp_path / "desired"
    (directory / "plans").mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        if request.param == "postgresql":
            url = stack.enter_context(new_postgres_database())
        else:
            url = f"sqlite:///{tmp_path / 'state.db'}"
        world = OverdraftWorld(
            directory=directory,
            store=Store.open(url),
            emulator=emulator,
            stripe=make_client(emulator.url),
            url=url,
            backend=request.param,
        )
        world.configure()
        try:
            yield world
        finally:
            world.store.close()

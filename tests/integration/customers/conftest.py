"""The customers domain against the emulator over HTTP, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import stripe

from billing_reconciler.controller import Controller, PlanOptions
from billing_reconciler.desired import load_desired
from billing_reconciler.planning.plan import Plan
from billing_reconciler.registry import CUSTOMERS
from billing_reconciler.store import AccountRecord, AccountRepository, Store
from billing_reconciler.stripe_gateway import RetryPolicy, StripeGateway
from tests.fixtures.emulator import EmulatorHandle, make_client
from tests.fixtures.postgres import new_postgres_database
from tests.fixtures.stores import migrated_sqlite_url

BILLING = """\
billing:
  default_currency: eur
  customer:
    onboard_credits_with_org: 50
reconcile:
  installation_id: test
"""


@dataclass
class World:
    """A desired/ directory, a store, the emulator and a controller of the customers domain."""

    directory: Path
    store: Store
    emulator: EmulatorHandle
    stripe: stripe.StripeClient
    now: Callable[[], float]
    # A new store's URL (a second SQLite file or PostgreSQL database), as `Store.open` makes it.
    new_url: Callable[[], str] = lambda: ""

    def lose_store(self) -> None:
        """The store is lost: the world goes on with a new, empty one (Stripe unchanged)."""
        self.store.close()
        self.store = Store.open(self.new_url())

    def controller(self) -> Controller:
        result = load_desired(self.directory)
        assert result.state is not None, [str(d) for d in result.diagnostics]
        return Controller(
            registration=CUSTOMERS,
            state=result.state,
            gateway=StripeGateway(
                api_key="sk_test_emulator",
                api_base=self.emulator.url,
                retry=RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0),
            ),
            store=self.store,
            clock=self.now,
        )

    def plan(self, scope: frozenset[str] | None = None) -> Plan:
        return self.controller().plan(PlanOptions(scope=scope)).plan

    def apply(self, scope: frozenset[str] | None = None) -> Plan:
        controller = self.controller()
        planned = controller.plan(PlanOptions(scope=scope))
        _, _, residual = controller.apply(planned)
        assert residual.converged, residual
        return planned.plan

    def account(self, org_id: str, **fields: Any) -> AccountRecord:
        with self.store.session() as session:
            return AccountRepository(session).create(
                org_id,
                name=fields.pop("name", org_id.title()),
                email=fields.pop("email", None),
                currency=fields.pop("currency", "eur"),
                **fields,
            )

    def get(self, org_id: str) -> AccountRecord:
        with self.store.session() as session:
            record = AccountRepository(session).latest_for_org(org_id)
        assert record is not None
        return record

    def update(self, org_id: str, **fields: Any) -> AccountRecord:
        with self.store.session() as session:
            repository = AccountRepository(session)
            record = repository.active_for_org(org_id)
            assert record is not None
            return repository.update(record.id, **fields)

    def customers(self) -> list[Any]:
        return list(self.stripe.v1.customers.list({"limit": 100}).auto_paging_iter())

    def write_contract(self, text: str) -> None:
        folder = self.directory / "customers"
        folder.mkdir(exist_ok=True)
        (folder / "contracts.yaml").write_text(textwrap.dedent(text))


@pytest.fixture(params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path: Path, emulator: EmulatorHandle
) -> Iterator[World]:
    directory = tmp_path / "desired"
    (directory / "plans").mkdir(parents=True)
    (directory / "billing.yaml").write_text(BILLING)
    with contextlib.ExitStack() as stack:
        stores = iter(range(1, 1000))

        def new_url() -> str:
            # What `Store.open` makes of an empty database, copied from a migrated template
            # with an identity of its own (tests/fixtures/stores.py): each store is opened at
            # once.
            if request.param == "postgresql":
                return stack.enter_context(new_postgres_database(migrated=True))
            return migrated_sqlite_url(tmp_path / f"state{next(stores)}.db")

        clock = [1_900_000_000.0]
        world = World(
            directory=directory,
            store=Store.open(new_url()),
            emulator=emulator,
            stripe=make_client(emulator.url),
            now=lambda: clock[0],
            new_url=new_url,
        )
        try:
            yield world
        finally:
            world.store.close()

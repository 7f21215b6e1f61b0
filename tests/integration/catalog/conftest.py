"""Catalog reconciliation against the Stripe emulator over HTTP and a real SQLite store."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from billing_reconciler.controller import Controller
from billing_reconciler.desired import load_desired
from billing_reconciler.desired.state import DesiredState
from billing_reconciler.registry import CATALOG
from billing_reconciler.store import Store
from billing_reconciler.stripe_gateway import RetryPolicy, StripeGateway
from tests.fixtures.stores import migrated_sqlite_url

BILLING_YAML = """\
billing:
  default_currency: usd
reconcile:
  installation_id: {installation}
  prune: {prune}
  drift: {drift}
  apply_concurrency: {concurrency}
"""

CATALOG_YAML = """\
features:
  - name: api_access
    title: API access
products:
  - name: base
    title: Base platform
    description: Access to the platform
    prices:
      - name: monthly
        interval: month
        amount: 1000
        currency: usd
        currency_options:
          eur: {amount: 900}
          jpy: {amount: 1500}
      - name: yearly
        interval: year
        amount: 10000
        currency: usd
    features:
      - name: api_access
  - name: seats
    title: Seats
    behavior: per_seat
    config:
      seat_limit: 10
    prices:
      - name: monthly
        interval: month
        amount: 500
        currency: usd
      - name: yearly
        interval: year
        amount: 5000
        currency: usd
  - name: credits
    title: Credits
    behavior: credits
    config:
      credit_amount: 100
    prices:
      - name: pack
        amount: 2000
        currency: usd
plans:
  - name: team_monthly
    title: Team monthly
    interval: month
    products:
      - name: base
      - name: seats
  - name: team_yearly
    title: Team yearly
    interval: year
    products:
      - name: base
      - name: seats
"""


def write_desired(
    root: Path,
    catalog: str = CATALOG_YAML,
    *,
    installation: str = "default",
    prune: bool = False,
    drift: str = "correct",
    concurrency: int = 16,
) -> DesiredState:
    """Write desired/ under `root` and load it; fail the test on any diagnostic error."""
    (root / "plans").mkdir(parents=True, exist_ok=True)
    (root / "billing.yaml").write_text(
        BILLING_YAML.format(
            installation=installation,
            prune=str(prune).lower(),
            drift=drift,
            concurrency=concurrency,
        )
    )
    (root / "plans" / "catalog.yaml").write_text(textwrap.dedent(catalog))
    result = load_desired(root)
    assert result.state is not None, [str(d) for d in result.diagnostics]
    return result.state


class MakeController(Protocol):
    def __call__(self, state: DesiredState, **kw: Any) -> Controller: ...


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    # What `Store.open` makes of an empty file, copied from a migrated template with an
    # identity of its own (tests/fixtures/stores.py).
    opened = Store.open(migrated_sqlite_url(tmp_path / "state.db"))
    yield opened
    opened.close()


FAST_RETRY = RetryPolicy(max_attempts=6, base_delay=0.01, max_delay=0.05)


@pytest.fixture
def make_controller(emulator: Any, store: Store) -> MakeController:
    def make(state: DesiredState, **kw: Any) -> Controller:
        gateway = StripeGateway(
            api_key="sk_test_reconciler",
            api_base=emulator.url,
            rate_limit_per_second=kw.pop("rate_limit", 1000),
            retry=kw.pop("retry", FAST_RETRY),
            timeout_seconds=kw.pop("timeout", 5),
        )
        return Controller(
            registration=CATALOG, state=state, gateway=gateway, store=kw.pop("store", store), **kw
        )

    return make


def converge(controller: Controller) -> None:
    """Plan and apply; assert the re-plan is empty."""
    planned = controller.plan()
    assert not planned.plan.refused, planned.plan.refusals
    _, _, residual = controller.apply(planned)
    assert residual.steps == (), residual.steps


Posts = Callable[[], list[Any]]

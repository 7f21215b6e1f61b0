"""`DomainRunner` against the emulator over HTTP and a SQLite store: when it writes, when it
only plans, how it stops between steps, and what it does with a broken desired/."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from billing_reconciler.desired import load_desired
from billing_reconciler.desired.state import DesiredState
from billing_reconciler.registry import CATALOG
from billing_reconciler.runtime.domains import INTERRUPTED, DomainRunner
from billing_reconciler.runtime.events import ReconcileRequest
from billing_reconciler.runtime.queue import PermanentError
from billing_reconciler.store import (
    ControllerStateRepository,
    JournalRepository,
    RunMode,
    RunRepository,
    RunResult,
    Store,
)
from billing_reconciler.stripe_gateway import RetryPolicy, StripeGateway
from tests.fixtures.emulator import EmulatorHandle

EXAMPLE = Path(__file__).resolve().parents[3] / "desired"
WHOLE = ReconcileRequest("catalog", None, "test")


def always() -> bool:
    return True


def never() -> bool:
    return False


@pytest.fixture
def desired_dir(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLE, tmp_path / "desired")
    return tmp_path / "desired"


@pytest.fixture
def sqlite_store_file(tmp_path: Path) -> Iterator[Store]:
    store = Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    yield store
    store.close()


def load(directory: Path) -> DesiredState:
    result = load_desired(directory)
    assert result.state is not None, [str(d) for d in result.diagnostics]
    return result.state


@pytest.fixture
def domain(desired_dir: Path, sqlite_store_file: Store, emulator: EmulatorHandle) -> DomainRunner:
    gateway = StripeGateway(
        api_key="sk_test_domains",
        api_base=emulator.url,
        rate_limit_per_second=1000,
        retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05),
    )
    return DomainRunner(
        registration=CATALOG,
        directory=desired_dir,
        initial=load(desired_dir),
        store=sqlite_store_file,
        gateway=gateway,
        actor="tester pid 1",
    )


def last_run(store: Store) -> tuple[RunMode, RunResult, str | None]:
    with store.session() as session:
        run = RunRepository(session).latest("catalog")
    assert run is not None
    return run.mode, run.result, run.error


def test_a_follower_plans_and_records_a_dry_run_without_writing(
    domain: DomainRunner, sqlite_store_file: Store, emulator: EmulatorHandle
) -> None:
    result = domain.reconcile(WHOLE, may_write=never)
    assert (result.mode, result.result) == (RunMode.DRY_RUN, "changes_pending")
    assert result.steps > 0
    assert emulator.control.requests(method="POST") == []
    assert last_run(sqlite_store_file)[:2] == (RunMode.DRY_RUN, RunResult.CHANGES_PENDING)


def test_the_leader_applies_and_the_next_run_has_nothing_to_do(
    domain: DomainRunner, sqlite_store_file: Store
) -> None:
    first = domain.reconcile(WHOLE, may_write=always)
    assert (first.mode, first.result, first.applied) == (RunMode.APPLY, "applied", first.steps)
    second = domain.reconcile(WHOLE, may_write=always)
    assert (second.mode, second.result, second.steps) == (RunMode.DRY_RUN, "no_changes", 0)


def test_suspended_means_plan_only_until_resumed(
    domain: DomainRunner, sqlite_store_file: Store, emulator: EmulatorHandle
) -> None:
    with sqlite_store_file.session() as session:
        ControllerStateRepository(session).suspend("incident 7", "oncall")
    assert domain.reconcile(WHOLE, may_write=always).result == "changes_pending"
    assert emulator.control.requests(method="POST") == []
    with sqlite_store_file.session() as session:
        assert ControllerStateRepository(session).resume()
    assert domain.reconcile(WHOLE, may_write=always).result == "applied"


def test_losing_the_right_to_write_stops_between_steps(
    domain: DomainRunner, sqlite_store_file: Store
) -> None:
    answers = iter([True, True, True])  # before applying, then after steps 1 and 2

    def may_write() -> bool:
        return next(answers, False)

    result = domain.reconcile(WHOLE, may_write=may_write)
    assert (result.result, result.applied) == (INTERRUPTED, 3)
    mode, run_result, error = last_run(sqlite_store_file)
    assert (mode, run_result) == (RunMode.APPLY, RunResult.FAILED)
    assert error is not None
    assert "stopped writing after 3 of" in error
    with sqlite_store_file.session() as session:
        assert JournalRepository(session).pending(domain.installation_id) == []
    # The next leader picks up from where Stripe is.
    assert domain.reconcile(WHOLE, may_write=always).result == "applied"


def test_a_broken_desired_state_keeps_the_last_valid_one_enforced(
    domain: DomainRunner, desired_dir: Path, emulator: EmulatorHandle
) -> None:
    assert domain.reconcile(WHOLE, may_write=always).result == "applied"
    enforced = domain.desired_status.enforced_revision
    (desired_dir / "plans" / "catalog.yaml").write_text("products: [\n")

    result = domain.reconcile(WHOLE, may_write=always)
    assert (result.result, result.steps) == ("no_changes", 0), "nothing archived"
    status = domain.desired_status
    assert not status.valid
    assert status.enforced_revision == enforced
    assert any("catalog.yaml" in error for error in status.errors)

    shutil.copy(EXAMPLE / "plans" / "catalog.yaml", desired_dir / "plans" / "catalog.yaml")
    domain.reconcile(WHOLE, may_write=always)
    assert domain.desired_status.valid


def test_a_new_installation_id_needs_a_restart(domain: DomainRunner, desired_dir: Path) -> None:
    billing = desired_dir / "billing.yaml"
    billing.write_text(billing.read_text().replace("acme-prod", "acme-other"))
    domain.reconcile(WHOLE, may_write=never)
    status = domain.desired_status
    assert not status.valid
    assert "restart serve" in status.errors[0]
    assert domain.installation_id == "acme-prod"


def test_a_refused_plan_is_a_permanent_failure(
    domain: DomainRunner, desired_dir: Path, sqlite_store_file: Store
) -> None:
    assert domain.reconcile(WHOLE, may_write=always).result == "applied"
    billing = desired_dir / "billing.yaml"
    billing.write_text(billing.read_text().replace("prune: false", "prune: true"))
    catalog = desired_dir / "plans" / "catalog.yaml"
    plans = desired_dir / "plans" / "plans.yaml"
    catalog.write_text("products: []\n")
    plans.write_text("plans: []\n")
    billing.write_text(
        billing.read_text()
        .replace("default_plan: free_monthly", 'default_plan: ""')
        .replace("credit_overdraft_product: credits", 'credit_overdraft_product: ""')
    )
    assert load_desired(desired_dir).state is not None
    with pytest.raises(PermanentError, match="refused"):
        domain.reconcile(WHOLE, may_write=always)
    assert last_run(sqlite_store_file)[:2] == (RunMode.DRY_RUN, RunResult.CHANGES_PENDING)

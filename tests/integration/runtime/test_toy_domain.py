"""A domain registered in a test plugs into the shared machinery with no edit to it (DESIGN §14).

The toy domain keeps one "greeting" per desired product in a world of its own (an in-memory
stand-in for Stripe): its own step kind, its own reader and executor. Registered beside the
catalog, it goes through the very code `reconcile` and `reconcile serve` run: the CLI's plan
sections and saved plans, the `Controller`, the `Applier` (journal, idempotency keys, last
applied state), the run table that `status` reads, and a targeted `DomainRunner` request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing
from sqlalchemy.orm import Session

from billing_reconciler.apply import Done, record_last_applied
from billing_reconciler.cli.common import CliError
from billing_reconciler.cli.reconcile_cmd import Format, RunRequest, run
from billing_reconciler.cli.status_cmd import _desired_report, collect_status
from billing_reconciler.controller import Registration
from billing_reconciler.desired.state import DesiredState
from billing_reconciler.domains.base import PlanContext
from billing_reconciler.domains.event_routes import EventRoute
from billing_reconciler.planning.plan import (
    Action,
    FieldChange,
    Plan,
    Population,
    Reason,
    Step,
    canonical_json,
    digest,
)
from billing_reconciler.registry import CATALOG, check_unique_kinds
from billing_reconciler.runtime.domains import DomainRunner
from billing_reconciler.runtime.events import ReconcileRequest
from billing_reconciler.runtime.queue import PermanentError, TransientError
from billing_reconciler.store import (
    JournalRepository,
    JournalState,
    LastAppliedRepository,
    RunMode,
    RunRepository,
    RunResult,
    Store,
)
from billing_reconciler.stripe_gateway import StripeGateway, WriteResult
from tests.integration.catalog.conftest import write_desired

GREETING = "greeting"
TOY = "toy"


@dataclass
class ToyWorld:
    """The toy's remote system: greetings by key, and the idempotency keys it has seen."""

    greetings: dict[str, str] = field(default_factory=dict)
    seen: dict[str, str] = field(default_factory=dict)
    sends: int = 0

    def live(self) -> dict[str, str]:
        return dict(self.greetings)


class ToyDomain:
    name = TOY
    kinds = frozenset({GREETING})
    event_routes: tuple[EventRoute, ...] = ()

    def refresh_seconds(self, state: DesiredState) -> int:
        del state
        return 0

    def desired(self, state: DesiredState, context: PlanContext) -> dict[str, str]:
        del context
        return {f"{GREETING}/{p.name.lower()}": f"hello {p.title}" for p in state.products}

    def observe(
        self, reader: ToyWorld, desired: dict[str, str], context: PlanContext
    ) -> dict[str, str]:
        del desired, context
        return reader.live()

    def plan(self, desired: dict[str, str], observed: dict[str, str], context: PlanContext) -> Plan:
        steps = tuple(
            _step(key, text, observed.get(key), context)
            for key, text in sorted(desired.items())
            if observed.get(key) != text
        )
        return Plan(
            steps=steps,
            installation_id=context.installation_id,
            desired_revision=context.state.revision,
            fingerprint=digest(canonical_json(observed)),
            created_at=context.now,
        )

    def annotate(self, plan: Plan, reader: ToyWorld) -> Plan:
        del reader
        return plan

    def desired_fields(self, desired: dict[str, str]) -> dict[str, dict[str, Any]]:
        return {key: {"text": text} for key, text in desired.items()}

    def scope_of(self, key: str) -> str | None:
        return key


def _step(key: str, text: str, live: str | None, context: PlanContext) -> Step:
    return Step(
        action=Action.CREATE if live is None else Action.UPDATE,
        kind=GREETING,
        key=key,
        reason=Reason.NEW if live is None else Reason.DRIFT,
        params={"text": text},
        changes=() if live is None else (FieldChange("text", live, text, drift=True),),
        idempotency_key=digest(context.key_salt, key, live or "", text),
    )


@dataclass
class GreetingExecutor:
    world: ToyWorld

    def send(self, gateway: StripeGateway, step: Step, ids: Mapping[str, str]) -> WriteResult:
        del gateway, ids
        replayed = step.idempotency_key in self.world.seen
        if not replayed:
            self.world.sends += 1
            self.world.greetings[step.key] = str(step.params["text"])
            self.world.seen[step.idempotency_key] = f"gr_{len(self.world.seen) + 1}"
        stripe_id = self.world.seen[step.idempotency_key]
        return WriteResult(stripe_id=stripe_id, request_id=None, replayed=replayed)

    def record(self, session: Session, done: Done) -> None:
        record_last_applied(session, done)


@pytest.fixture
def world() -> ToyWorld:
    return ToyWorld()


@pytest.fixture
def toy(world: ToyWorld) -> Registration:
    return Registration(
        domain=ToyDomain(),
        open_reader=lambda gateway, store: world,
        executors={GREETING: GreetingExecutor(world)},
    )


@pytest.fixture
def desired_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BILLING_DATABASE_URL", f"sqlite:///{tmp_path / 'state.db'}")
    directory = tmp_path / "desired"
    write_desired(directory)
    return directory


def _request(directory: Path, **changes: Any) -> RunRequest:
    base: dict[str, Any] = {
        "directory": directory,
        "dry_run": True,
        "fmt": Format.TEXT,
        "out": None,
        "saved_plan": None,
        "adopt": False,
        "auto_approve": True,
        "confirm_live": False,
        "allow_mass_archive": False,
        "use_emulator": True,
    }
    return RunRequest(**{**base, **changes})


def _store(tmp_path: Path) -> Store:
    return Store.open(f"sqlite:///{tmp_path / 'state.db'}")


def test_a_registered_domain_plans_applies_and_reports_through_the_shared_code(
    toy: Registration,
    world: ToyWorld,
    desired_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    domains = (CATALOG, toy)
    check_unique_kinds(domains)
    saved = tmp_path / "plan.json"

    assert run(_request(desired_dir, out=saved), domains) == 2
    text = capsys.readouterr().out
    assert text.index("== catalog ==") < text.index("== toy ==")
    assert '+ greeting/base  (new)\n      text: "hello Base platform"' in text
    sections = json.loads(saved.read_text())["domains"]
    assert [s["domain"] for s in sections] == ["catalog", "toy"]
    assert {s["kind"] for s in sections[1]["steps"]} == {GREETING}
    assert world.greetings == {}

    # The saved plan, both sections, applied as reviewed.
    assert run(_request(desired_dir, dry_run=False, saved_plan=saved), domains) == 0
    out = capsys.readouterr().out
    assert "toy: Apply complete (3 steps). Re-plan: No changes." in out
    assert set(world.greetings) == {"greeting/base", "greeting/seats", "greeting/credits"}
    assert world.sends == 3

    store = _store(tmp_path)
    try:
        with store.session() as session:
            run_row = RunRepository(session).latest(TOY)
            assert run_row is not None
            assert (run_row.mode, run_row.result) == (RunMode.APPLY, RunResult.APPLIED)
            journal = JournalRepository(session).for_run(run_row.run_id)
            applied = LastAppliedRepository(session).for_installation("default")
        planned_keys = {s["key"]: s["idempotency_key"] for s in sections[1]["steps"]}
        assert {(e.object_key, e.state) for e in journal} == {
            (key, JournalState.DONE) for key in planned_keys
        }
        for entry in journal:
            assert entry.idempotency_key == digest(run_row.run_id, planned_keys[entry.object_key])
        assert applied["greeting/base"].fields == {"text": "hello Base platform"}
        assert applied["greeting/base"].kind == GREETING

        report = collect_status(store, _desired_report(desired_dir))
        assert report["domains"][TOY]["last_run"]["result"] == "applied"
        assert report["domains"]["catalog"]["last_run"]["result"] == "applied"
        assert report["pending_journal_steps"] == []
    finally:
        store.close()

    assert run(_request(desired_dir), domains) == 0
    assert "No changes." in capsys.readouterr().out


def test_a_targeted_request_reconciles_only_its_scope(
    toy: Registration, world: ToyWorld, desired_dir: Path, tmp_path: Path
) -> None:
    store = _store(tmp_path)
    try:
        runner = DomainRunner(
            registration=toy,
            directory=desired_dir,
            initial=write_desired(desired_dir),
            store=store,
            gateway=StripeGateway(api_key="sk_test_unused", api_base="http://127.0.0.1:9"),
            actor="tester pid 1",
        )
        whole = runner.reconcile(ReconcileRequest(TOY, None, "start"), may_write=lambda: True)
        assert (whole.result, whole.applied) == ("applied", 3)

        # Someone edits two greetings out of band; a request names one of them.
        world.greetings["greeting/base"] = "edited"
        world.greetings["greeting/seats"] = "edited"
        targeted = runner.reconcile(
            ReconcileRequest(TOY, frozenset({"greeting/base"}), "webhook"),
            may_write=lambda: True,
        )
        assert (targeted.result, targeted.applied, targeted.whole_domain) == ("applied", 1, False)
        assert world.greetings["greeting/base"] == "hello Base platform"
        assert world.greetings["greeting/seats"] == "edited"

        pending = runner.reconcile(ReconcileRequest(TOY, None, "schedule"), may_write=lambda: False)
        assert (pending.mode, pending.result, pending.steps) == (
            RunMode.DRY_RUN,
            "changes_pending",
            1,
        )
    finally:
        store.close()


def test_a_step_kind_without_an_executor_fails_before_it_is_journaled(
    world: ToyWorld, desired_dir: Path, tmp_path: Path
) -> None:
    unexecutable = Registration(domain=ToyDomain(), open_reader=lambda g, s: world, executors={})
    store = _store(tmp_path)
    try:
        runner = DomainRunner(
            registration=unexecutable,
            directory=desired_dir,
            initial=write_desired(desired_dir),
            store=store,
            gateway=StripeGateway(api_key="sk_test_unused", api_base="http://127.0.0.1:9"),
            actor="tester pid 1",
        )
        with pytest.raises(Exception, match="no executor for step kind 'greeting'"):
            runner.reconcile(ReconcileRequest(TOY, None, "start"), may_write=lambda: True)
        with store.session() as session:
            assert JournalRepository(session).pending("default") == []
    finally:
        store.close()
    assert world.greetings == {}


def test_two_domains_may_not_claim_one_step_kind(toy: Registration) -> None:
    with pytest.raises(ValueError, match="planned by both"):
        check_unique_kinds((toy, toy))


# --- the fleet facts a domain states: the mass-change guard, future-only settings ----------

PRORATION = "billing.plan_change.proration_behavior"


class FleetToy(ToyDomain):
    """The toy as a fleet domain: an edited greeting put back is a change the mass-change
    guard counts; it states its live population and a setting that applies to the future."""

    future_only_settings = (PRORATION,)

    def plan(self, desired: dict[str, str], observed: dict[str, str], context: PlanContext) -> Plan:
        plan = super().plan(desired, observed, context)
        steps = tuple(
            replace(step, mass_change=step.action is Action.UPDATE, causes=("billing.toy",))
            for step in plan.steps
        )
        return replace(plan, steps=steps, population=Population(len(observed), GREETING))


@pytest.fixture
def fleet_toy(world: ToyWorld) -> Registration:
    return Registration(
        domain=FleetToy(),
        open_reader=lambda gateway, store: world,
        executors={GREETING: GreetingExecutor(world)},
    )


def _set_proration(directory: Path, value: str) -> None:
    billing = directory / "billing.yaml"
    lines = [
        line
        for line in billing.read_text().splitlines()
        if "plan_change" not in line and "proration_behavior" not in line
    ]
    index = lines.index("  default_currency: usd") + 1
    lines[index:index] = ["  plan_change:", f"    proration_behavior: {value}"]
    billing.write_text("\n".join(lines) + "\n")


def test_a_mass_change_is_refused_without_the_flag_on_the_cli_and_in_serve(
    fleet_toy: Registration,
    world: ToyWorld,
    desired_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    domains = (fleet_toy,)
    assert run(_request(desired_dir, dry_run=False), domains) == 0
    # Two of three live greetings edited: putting them back is 67% > 10%.
    world.greetings["greeting/base"] = "edited"
    world.greetings["greeting/seats"] = "edited"
    capsys.readouterr()

    assert run(_request(desired_dir), domains) == 1
    out = capsys.readouterr().out
    assert (
        "the plan would cancel, downgrade or reprice 2 of 3 live greetings "
        "(66.7% > reconcile.max_fleet_change_fraction 10%). "
        "Re-run with --allow-mass-change if this is intended"
    ) in out
    assert "Plan refused: nothing will be applied." in out
    with pytest.raises(CliError, match="refused"):
        run(_request(desired_dir, dry_run=False), domains)
    assert world.greetings["greeting/base"] == "edited"

    store = _store(tmp_path)
    try:
        runner = DomainRunner(
            registration=fleet_toy,
            directory=desired_dir,
            initial=write_desired(desired_dir),
            store=store,
            gateway=StripeGateway(api_key="sk_test_unused", api_base="http://127.0.0.1:9"),
            actor="tester pid 1",
        )
        with pytest.raises(PermanentError, match="--allow-mass-change"):
            runner.reconcile(ReconcileRequest(TOY, None, "schedule"), may_write=lambda: True)
        assert world.greetings["greeting/base"] == "edited"
    finally:
        store.close()

    capsys.readouterr()
    assert run(_request(desired_dir, allow_mass_change=True), domains) == 2
    assert "Plan refused" not in capsys.readouterr().out
    assert run(_request(desired_dir, dry_run=False, allow_mass_change=True), domains) == 0
    assert world.greetings["greeting/base"] == "hello Base platform"


def test_a_future_only_setting_changed_since_the_last_apply_is_stated(
    fleet_toy: Registration,
    desired_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    domains = (fleet_toy,)
    _set_proration(desired_dir, "create_prorations")
    # Before any apply there is nothing to compare with.
    assert run(_request(desired_dir), domains) == 2
    assert PRORATION not in capsys.readouterr().out
    assert run(_request(desired_dir, dry_run=False), domains) == 0

    _set_proration(desired_dir, "none")
    saved = tmp_path / "plan.json"
    assert run(_request(desired_dir, out=saved), domains) == 0  # nothing to rewrite
    out = capsys.readouterr().out
    assert (
        f'{PRORATION} changed ("create_prorations" -> "none"): applies to future events only; '
        "no live greeting rewritten"
    ) in out
    assert json.loads(saved.read_text())["future_only"] == [
        {"setting": PRORATION, "before": "create_prorations", "after": "none"}
    ]
    assert run(_request(desired_dir, fmt=Format.MARKDOWN), domains) == 0
    assert f"`{PRORATION}` changed" in capsys.readouterr().out

    # A writing pass with nothing to do puts the new value in force: said no more.
    assert run(_request(desired_dir, dry_run=False), domains) == 0
    capsys.readouterr()
    assert run(_request(desired_dir), domains) == 0
    assert PRORATION not in capsys.readouterr().out


# --- a re-plan that is not empty: new input, or a write that did not take -------------------


@dataclass
class MeddlingExecutor(GreetingExecutor):
    """Sends greetings; after one of `edit_after` is sent, someone edits it out of band (a new
    fact, arriving while the run applies); a greeting in `lose` is acknowledged but never
    kept (a write that does not show)."""

    edit_after: frozenset[str] = frozenset()
    lose: frozenset[str] = frozenset()

    def send(self, gateway: StripeGateway, step: Step, ids: Mapping[str, str]) -> WriteResult:
        result = super().send(gateway, step, ids)
        if step.key in self.lose:
            self.world.greetings.pop(step.key, None)
        if step.key in self.edit_after:
            self.world.greetings[step.key] = "edited meanwhile"
        return result


def _meddling(world: ToyWorld, **meddling: frozenset[str]) -> Registration:
    return Registration(
        domain=ToyDomain(),
        open_reader=lambda gateway, store: world,
        executors={GREETING: MeddlingExecutor(world, **meddling)},
    )


def _runner(registration: Registration, desired_dir: Path, store: Store) -> DomainRunner:
    return DomainRunner(
        registration=registration,
        directory=desired_dir,
        initial=write_desired(desired_dir),
        store=store,
        gateway=StripeGateway(api_key="sk_test_unused", api_base="http://127.0.0.1:9"),
        actor="tester pid 1",
    )


def _last_run(store: Store) -> tuple[RunResult | None, str | None]:
    with store.session() as session:
        row = RunRepository(session).latest(TOY)
        assert row is not None
        return row.result, row.error


def test_new_input_in_the_re_plan_ends_the_run_applied_with_a_targeted_follow_up(
    world: ToyWorld, desired_dir: Path, tmp_path: Path
) -> None:
    registration = _meddling(world, edit_after=frozenset({"greeting/base"}))
    store = _store(tmp_path)
    try:
        result = _runner(registration, desired_dir, store).reconcile(
            ReconcileRequest(TOY, None, "schedule"), may_write=lambda: True
        )
        # Every write took; the edit made while the run applied is new input: the whole-
        # domain run follows up on that greeting alone, and is no failure.
        assert (result.result, result.applied) == ("applied", 3)
        assert result.follow_up is not None
        assert result.follow_up.domain == TOY
        assert result.follow_up.scope == frozenset({"greeting/base"})
        assert _last_run(store) == (RunResult.APPLIED, None)
    finally:
        store.close()


def test_a_write_the_re_plan_still_wants_did_not_converge_and_is_retried_with_backoff(
    world: ToyWorld, desired_dir: Path, tmp_path: Path
) -> None:
    registration = _meddling(world, lose=frozenset({"greeting/seats"}))
    store = _store(tmp_path)
    try:
        with pytest.raises(TransientError, match="apply did not converge") as raised:
            _runner(registration, desired_dir, store).reconcile(
                ReconcileRequest(TOY, None, "schedule"), may_write=lambda: True
            )
        assert raised.value.delay is None  # the queue's backoff
        assert raised.value.follow_up is None  # nothing new: only the lost write
        result, error = _last_run(store)
        assert result is RunResult.FAILED
        assert error is not None
        assert "greeting/seats" in error
    finally:
        store.close()


def test_a_run_with_a_lost_write_and_new_input_backs_off_and_follows_up_the_new_input(
    world: ToyWorld, desired_dir: Path, tmp_path: Path
) -> None:
    registration = _meddling(
        world, lose=frozenset({"greeting/seats"}), edit_after=frozenset({"greeting/base"})
    )
    store = _store(tmp_path)
    try:
        with pytest.raises(TransientError, match="apply did not converge") as raised:
            _runner(registration, desired_dir, store).reconcile(
                ReconcileRequest(TOY, None, "schedule"), may_write=lambda: True
            )
        follow_up = raised.value.follow_up
        assert follow_up is not None
        assert follow_up.scope == frozenset({"greeting/base"})
        assert _last_run(store)[0] is RunResult.FAILED
    finally:
        store.close()


def test_the_cli_reports_new_input_it_did_not_apply_and_records_the_run_applied(
    world: ToyWorld, desired_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    domains = (_meddling(world, edit_after=frozenset({"greeting/base"})),)
    assert run(_request(desired_dir, dry_run=False), domains) == 1
    err = capsys.readouterr().err
    assert "apply complete (3 steps), but changes arrived while it ran" in err
    assert "did not converge" not in err
    assert world.greetings["greeting/base"] == "edited meanwhile"  # not applied unasked
    store = _store(tmp_path)
    try:
        assert _last_run(store) == (RunResult.APPLIED, None)
    finally:
        store.close()

    domains = (_meddling(ToyWorld(), lose=frozenset({"greeting/seats"})),)
    assert run(_request(desired_dir, dry_run=False), domains) == 1
    assert "error: apply did not converge" in capsys.readouterr().err


class WarningToy(ToyDomain):
    """The toy with a plan warning, as the subscriptions domain warns of live subscriptions
    of ours for orgs the store does not know."""

    def plan(self, desired: dict[str, str], observed: dict[str, str], context: PlanContext) -> Plan:
        return replace(super().plan(desired, observed, context), warnings=("look at greeting/x",))


def test_serve_logs_the_plan_warnings_of_a_run(
    world: ToyWorld, desired_dir: Path, tmp_path: Path
) -> None:
    registration = Registration(
        domain=WarningToy(),
        open_reader=lambda gateway, store: world,
        executors={GREETING: GreetingExecutor(world)},
    )
    store = _store(tmp_path)
    try:
        with structlog.testing.capture_logs() as logs:
            _runner(registration, desired_dir, store).reconcile(
                ReconcileRequest(TOY, None, "schedule"), may_write=lambda: True
            )
        warned = [e for e in logs if e.get("event") == "plan warning"]
        assert [(e["log_level"], e["warning"]) for e in warned] == [
            ("warning", "look at greeting/x")
        ]
    finally:
        store.close()

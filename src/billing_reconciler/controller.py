"""One reconcile pass of one domain: observe, plan, apply, verify convergence.

The same pass serves `reconcile --dry-run` (stops after planning), `reconcile` (applies the
plan it printed) and `reconcile serve` (runs it on a schedule). Every pass is recorded in the
store's run table (who, when, which revision, which plan, what came of it), under the
domain's name.

`Controller` is domain-agnostic: a `Registration` gives it the domain (pure rules, see
`domains.base`), the domain's reader (its observation I/O) and its step executors. The
controller does the shared part: last-applied state and spent idempotency keys from the store,
targeted scopes, the saved-plan checks, the run table, apply through the `Applier`, the
convergence re-plan. A re-plan that is not empty is judged by what it repeats (`repeats`): a
step the run applied and still finds wanted means the write did not take (the run failed:
it did not converge); steps that are new, or differ from what was applied, are new input
that arrived while the run applied (the run succeeded; the caller decides whether to run
again). It also guards and states what a domain's plan says of its fleet
(DESIGN §14), never knowing which domain it is:
- the mass-change guard: a plan whose `Step.mass_change` steps touch more than
  `reconcile.max_fleet_change_fraction` of the plan's `population` (objects counted once by
  their request key, `scope_of`) is refused without `PlanOptions.allow_mass_change`;
- settings that apply only to future events (the domain's optional `future_only_settings`):
  their values are kept in the store when a pass applies (or finds nothing to do while
  writing), and a plan states each one changed since then (`Plan.future_only`);
- fleet settings, whose change rewrites live objects (the domain's optional `fleet_settings`):
  a fleet rewrite is applied only by a whole-domain plan, where the guard weighs the whole
  population. Their values are kept in the store only when a whole-domain pass applies (or
  writes with nothing to do); a targeted (scoped) plan is made with the values so kept (none
  kept yet: the desired ones), so a member change or a webhook after a `billing.yaml` edit
  neither rewrites that customer nor differs from what the guard approved, and a scoped step
  the guard would still count (`Step.mass_change`) is held back as a notice for the whole
  pass. A whole plan states a changed fleet setting no step of it follows from like a
  future-only one (`Plan.future_only`: nothing live rewritten).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from pydantic import BaseModel

from billing_reconciler.apply import Applier, ApplyError, StepExecutor, StepOutcome, step_scope
from billing_reconciler.desired.state import DesiredState
from billing_reconciler.domains.base import Domain, PlanContext, PlanOptions
from billing_reconciler.model import JSONValue
from billing_reconciler.planning.builder import AppliedState
from billing_reconciler.planning.plan import (
    DomainFact,
    Notice,
    Plan,
    Reason,
    SettingChange,
    Step,
    canonical_json,
    refs_in,
)
from billing_reconciler.planning.scope import restrict_to
from billing_reconciler.planning.serialize import plan_to_dict
from billing_reconciler.store import (
    ControllerStateRepository,
    JournalRepository,
    LastAppliedRepository,
    RunMode,
    RunRepository,
    RunResult,
    Store,
    default_actor,
)
from billing_reconciler.stripe_gateway import StripeGateway

__all__ = [
    "KEY_WINDOW_SECONDS",
    "PLAN_MAX_AGE_SECONDS",
    "Controller",
    "DomainFact",
    "PlanOptions",
    "Planned",
    "ReconcileError",
    "Registration",
    "new_input",
    "outstanding",
    "repeats",
]

_log = structlog.get_logger(__name__)

# Saved plans expire with Stripe's idempotency keys (DESIGN §6).
PLAN_MAX_AGE_SECONDS = 24 * 3600
# Stripe keeps an idempotency key for at least 24 hours.
KEY_WINDOW_SECONDS = 25 * 3600
DEFAULT_OPTIONS = PlanOptions()


@dataclass(frozen=True, slots=True)
class Registration:
    """A domain as the shared machinery runs it: its rules, its reader, its executors."""

    domain: Domain
    # Builds the reader the domain's `observe` and `annotate` read through.
    open_reader: Callable[[StripeGateway, Store], Any]
    executors: Mapping[str, StepExecutor]
    # Optional: the domain's facts, read from the store alone (status, metrics).
    facts: Callable[[Store], Sequence[DomainFact]] | None = None

    @property
    def name(self) -> str:
        return self.domain.name


class ReconcileError(RuntimeError):
    """A pass that cannot proceed: refused plan, stale saved plan, residual diff."""


@dataclass(frozen=True, slots=True)
class Planned:
    """A plan with what apply needs beside it: the fields each step's object should end with."""

    plan: Plan
    desired_fields: Mapping[str, Mapping[str, Any]]
    options: PlanOptions = DEFAULT_OPTIONS


@dataclass(slots=True)
class Controller:
    registration: Registration
    state: DesiredState
    gateway: StripeGateway
    store: Store
    git_revision: str | None = None
    clock: Callable[[], float] = time.time
    # Who the run table names as having run a pass; `reconcile serve` adds its process id so
    # replicas on one host stay apart.
    actor: str = field(default_factory=default_actor)
    # Whether the last `plan` was of the whole domain: only such a pass puts the fleet
    # settings in force (`record_settings_in_force`).
    _planned_whole: bool = field(default=False, init=False, repr=False)

    @property
    def domain(self) -> Domain:
        return self.registration.domain

    @property
    def installation_id(self) -> str:
        return self.state.config.reconcile.installation_id

    def plan(self, options: PlanOptions = DEFAULT_OPTIONS) -> Planned:
        whole = options.scope is None and not options.fleet_in_force
        self._planned_whole = whole
        # A targeted plan follows the fleet settings in force, not a `billing.yaml` edit the
        # whole-domain pass has not applied yet (nor does a pass the guard held back).
        state = self.state if whole else self._state_in_force()
        context = self._context(options, state)
        desired = self.domain.desired(state, context)
        reader = self.registration.open_reader(self.gateway, self.store)
        observed = self.domain.observe(reader, desired, context)
        plan = self.domain.plan(desired, observed, context)
        if options.scope is not None:
            plan = _hold_back_fleet_rewrites(
                restrict_to(plan, options.scope, self.domain.scope_of), self.guarded_settings
            )
        elif options.fleet_in_force:
            plan = _hold_back_fleet_rewrites(plan, self.guarded_settings)
        plan = self.domain.annotate(plan, reader)
        plan = self._guard_mass_change(plan, options)
        future_only = self._future_only_changes(plan if whole else None)
        if future_only:
            plan = replace(plan, future_only=future_only)
        return Planned(
            plan=plan, desired_fields=self.domain.desired_fields(desired), options=options
        )

    # --- the fleet: mass changes, settings for future events ------------------------------

    def _guard_mass_change(self, plan: Plan, options: PlanOptions) -> Plan:
        if options.allow_mass_change:
            return plan
        counted = {self.domain.scope_of(s.key) or s.key for s in plan.steps if s.mass_change}
        if not counted:
            return plan
        if plan.population is None:
            return replace(
                plan,
                warnings=(
                    *plan.warnings,
                    f"{len(counted):,} object(s) would be cancelled, downgraded or repriced, "
                    "but the plan states no live population: the mass-change guard cannot "
                    "weigh them",
                ),
            )
        limit = float(self.state.config.reconcile.max_fleet_change_fraction)
        live = plan.population.count
        fraction = len(counted) / max(live, 1)
        if fraction <= limit:
            return plan
        noun = plan.population.noun + ("" if live == 1 else "s")
        refusal = (
            f"the plan would cancel, downgrade or reprice {len(counted):,} of {live:,} live "
            f"{noun} ({fraction:.1%} > reconcile.max_fleet_change_fraction "
            f"{limit * 100:g}%). Re-run with --allow-mass-change if this is intended"
        )
        return replace(plan, refusals=(*plan.refusals, refusal))

    @property
    def future_only_settings(self) -> tuple[str, ...]:
        """The domain's settings that apply only to future events (none unless it says)."""
        return tuple(getattr(self.domain, "future_only_settings", ()))

    @property
    def fleet_settings(self) -> tuple[str, ...]:
        """The domain's settings whose change rewrites live objects (none unless it says)."""
        return tuple(getattr(self.domain, "fleet_settings", ()))

    @property
    def guarded_settings(self) -> frozenset[str]:
        """The fleet settings whose rewrites the mass-change guard counts (none unless the
        domain says)."""
        return frozenset(getattr(self.domain, "guarded_settings", ()))

    def _settings_key(self) -> str:
        return f"settings_in_force/{self.installation_id}/{self.domain.name}"

    def _recorded_settings(self) -> Mapping[str, JSONValue] | None:
        with self.store.session() as session:
            recorded = ControllerStateRepository(session).read(self._settings_key())
        return recorded if isinstance(recorded, Mapping) else None

    def _state_in_force(self) -> DesiredState:
        """The desired state with the fleet settings as last put in force by a whole-domain
        pass (each one never recorded keeps its desired value)."""
        settings = self.fleet_settings
        recorded = self._recorded_settings() if settings else None
        if not recorded:
            return self.state
        config = self.state.config
        for setting in settings:
            if setting in recorded:
                config = _with_setting(config, setting.split("."), recorded[setting])
        if config is self.state.config:
            return self.state
        return self.state.model_copy(update={"config": config})

    def _setting_values(self, settings: Sequence[str]) -> dict[str, JSONValue]:
        config = self.state.config.model_dump(mode="json")
        return {setting: _dig(config, setting) for setting in settings}

    def _future_only_changes(self, whole: Plan | None) -> tuple[SettingChange, ...]:
        """The future-only settings changed since they were put in force; with `whole` (a
        whole-domain plan), also the fleet settings changed that no step of it follows from
        (`seat_change_behavior: exact -> incremental` lowers no quantity): they too rewrite
        nothing live."""
        caused = set() if whole is None else {c for step in whole.steps for c in step.causes}
        fleet = () if whole is None else self.fleet_settings
        settings = (
            *self.future_only_settings,
            *(s for s in fleet if s not in caused and s not in self.future_only_settings),
        )
        if not settings:
            return ()
        recorded = self._recorded_settings()
        if recorded is None:
            return ()  # never applied with them: nothing to compare with
        current = self._setting_values(settings)
        return tuple(
            SettingChange(setting=setting, before=recorded[setting], after=current[setting])
            for setting in settings
            if setting in recorded and recorded[setting] != current[setting]
        )

    def record_settings_in_force(self) -> None:
        """Keep the values of the domain's future-only settings as in force: an apply (or a
        writing pass with nothing to do) ran with them; and of its fleet settings when that
        pass's plan (the last `plan`) was of the whole domain, as the guard weighed it."""
        fleet = self.fleet_settings if self._planned_whole else ()
        settings = (*self.future_only_settings, *fleet)
        if not settings:
            return
        with self.store.session() as session:
            repository = ControllerStateRepository(session)
            recorded = repository.read(self._settings_key())
            kept = recorded if isinstance(recorded, Mapping) else {}
            values = {**kept, **self._setting_values(settings)}
            if recorded != values:
                repository.write(self._settings_key(), values)

    def _context(self, options: PlanOptions, state: DesiredState | None = None) -> PlanContext:
        spent, refused, salt = self._key_history()
        return PlanContext(
            state=self.state if state is None else state,
            options=options,
            applied=self._applied(),
            spent_keys=spent,
            key_salt=salt,
            now=int(self.clock()),
            refused_keys=refused,
        )

    def _applied(self) -> dict[str, AppliedState]:
        """What we last applied to this domain's objects (keys are `<kind>/...`)."""
        kinds = self.domain.kinds
        with self.store.session() as session:
            entries = LastAppliedRepository(session).for_installation(self.installation_id)
        return {
            key: AppliedState(stripe_id=entry.stripe_id, fields=entry.fields)
            for key, entry in entries.items()
            if key.split("/", 1)[0] in kinds
        }

    def _key_history(self) -> tuple[frozenset[str], frozenset[str], str]:
        """Keys of steps completed within Stripe's idempotency window (plus an hour of slack
        for clock skew), which the plan must not give to new writes; those of them Stripe
        refused; and the store's identity, which salts every key (a lost store's spent keys
        are unknown to its successor)."""
        since = datetime.fromtimestamp(self.clock() - KEY_WINDOW_SECONDS, UTC)
        with self.store.session() as session:
            journal = JournalRepository(session)
            spent = journal.spent_step_keys(self.installation_id, since=since)
            refused = journal.refused_step_keys(self.installation_id, since=since)
            return spent, refused, ControllerStateRepository(session).store_id()

    def check_saved_plan(self, saved: Plan) -> Planned:
        """Re-plan and refuse a saved plan whose observed state or age no longer holds."""
        if self.clock() - saved.created_at > PLAN_MAX_AGE_SECONDS:
            raise ReconcileError(
                "the saved plan is older than 24 h (Stripe's idempotency keys have expired); "
                "run `reconcile --dry-run --out` again"
            )
        current = self.plan()
        if current.plan.fingerprint != saved.fingerprint:
            raise ReconcileError(
                "Stripe or the store changed since the saved plan was made "
                f"(fingerprint {saved.fingerprint} != {current.plan.fingerprint}); re-plan"
            )
        if saved.installation_id != self.installation_id:
            raise ReconcileError("the saved plan belongs to another installation id")
        if saved.desired_revision != current.plan.desired_revision:
            raise ReconcileError(
                f"desired/ changed since the saved plan was made (revision "
                f"{saved.desired_revision} != {current.plan.desired_revision}); re-plan"
            )
        if _step_view(saved) != _step_view(current.plan):
            # Same inputs, other steps: the file was edited. Apply runs only what the planner
            # would run now, so what a reviewer approved is exactly what is written.
            raise ReconcileError(
                "the saved plan's steps differ from the plan of the same desired/ and Stripe "
                "state (was the file edited?); re-plan"
            )
        return Planned(plan=saved, desired_fields=current.desired_fields)

    def apply(
        self,
        planned: Planned,
        *,
        on_step: Callable[[StepOutcome], None] | None = None,
        run_id: str | None = None,
        settle_bookkeeping: bool = False,
        hold_back_refused: bool = False,
    ) -> tuple[str, list[StepOutcome], Plan]:
        """Apply, then re-observe: returns the run id, the outcomes and the residual plan.

        The run is recorded applied unless the residual repeats a step it applied (`repeats`:
        recorded failed, "apply did not converge"); a residual of new input only is the
        caller's to act on (`new_input`).

        `run_id` names the run (default: a new id), so a caller can log under it before the
        run exists. An exception from `on_step` stops the apply after that step (the step is
        journaled done) and fails the run. `settle_bookkeeping`: a converged re-plan's
        bookkeeping restores (what the writes just made, as re-read: the subscriptions
        domain's mirror of a subscription it created, an events cursor) are applied in the
        same run, so the store shows the run's work when it ends (`serve`: the API answers
        the write from it); the residual returned then holds none.

        `hold_back_refused` (a scheduled whole-domain pass): when the apply's only failures are
        Stripe's refusals of scoped steps (a subscribe refused: one org's), which held back
        those scopes and nothing else, the run is not failed: it is recorded applied with the
        held-back scopes and Stripe's refusals (`summary["held_back"]`, and its error text,
        which `reconcile status` shows), each logged as a warning, and the residual leaves
        them out (its warnings name them), so they are neither new input nor a repeat. Without
        it (a targeted run, whose caller hears the verdict; the CLI) the `ApplyError` raises.
        """
        if planned.plan.refused:
            raise ReconcileError("the plan was refused: " + "; ".join(planned.plan.refusals))
        run_id = self._start_run(RunMode.APPLY, planned.plan, run_id)
        held: list[dict[str, str]] = []
        try:
            try:
                outcomes = Applier(
                    gateway=self.gateway,
                    store=self.store,
                    run_id=run_id,
                    desired_fields=planned.desired_fields,
                    executors=self.registration.executors,
                    on_step=on_step,
                    concurrency=self.state.config.reconcile.apply_concurrency,
                ).apply(self._with_outside_ids(planned.plan))
            except ApplyError as refusal:
                if not (hold_back_refused and refusal.held_scopes):
                    raise
                outcomes = list(refusal.outcomes)
                held = _held_back(refusal)
            residual = self.plan(planned.options).plan
            if held:
                residual = self._without_held(residual, held)
            if settle_bookkeeping and residual.converged and residual.restores:
                Applier(
                    gateway=self.gateway,
                    store=self.store,
                    run_id=run_id,
                    desired_fields=planned.desired_fields,
                    executors=self.registration.executors,
                ).apply(replace(residual, steps=()))
                residual = replace(residual, restores=())
        except Exception as error:
            self._finish_run(run_id, RunResult.FAILED, planned.plan, error=str(error))
            raise
        repeated = repeats(outcomes, residual)
        if residual.converged:
            self._settle_abandoned(run_id)
        if not repeated:
            self.record_settings_in_force()
        # A re-plan with only new input (facts that arrived while the run applied) ends the
        # run well: what it applied shows in Stripe. Only a step it wrote and still finds
        # wanted is a run that did not converge.
        message = _not_converged(repeated) if repeated else None
        if held:
            for entry in held:
                _log.warning("scope held back: Stripe refused its step", **entry)
            refusals = "; ".join(
                f"{h['scope']}: {h['action']} {h['key']}: {h['error']}" for h in held
            )
            note = f"held back (Stripe refused; the rest applied): {refusals}"
            message = note if message is None else f"{message}; {note}"
        self._finish_run(
            run_id,
            RunResult.FAILED if repeated else RunResult.APPLIED,
            planned.plan,
            error=message,
            held_back=held,
        )
        return run_id, outcomes, residual

    def _without_held(self, residual: Plan, held: Sequence[Mapping[str, str]]) -> Plan:
        """The residual without the steps and restores of the held-back scopes (still wanted,
        held back until their input changes or Stripe accepts them), and with a warning each."""
        scopes = {entry["scope"] for entry in held}
        executors = self.registration.executors

        def kept(step: Step) -> bool:
            return step_scope(executors, step) not in scopes

        return replace(
            residual,
            steps=tuple(s for s in residual.steps if kept(s)),
            restores=tuple(s for s in residual.restores if kept(s)),
            warnings=(
                *residual.warnings,
                *(
                    f"{h['scope']} held back: Stripe refused {h['action']} {h['key']}: {h['error']}"
                    for h in held
                ),
            ),
        )

    def _with_outside_ids(self, plan: Plan) -> Plan:
        """`plan` with the ids of the objects its `Ref`s name that no step of it creates and
        it does not know: another domain's objects, which that domain's apply earlier in the
        run may have just created (a price migration's new price), resolved from the
        last-applied records as they are now."""
        produced = {step.key for step in plan.steps} | set(plan.known_ids)
        wanted = {ref.key for step in plan.steps for ref in refs_in(step.params)} - produced
        if not wanted:
            return plan
        with self.store.session() as session:
            entries = LastAppliedRepository(session).for_installation(self.installation_id)
        found = {
            key: str(entries[key].stripe_id)
            for key in sorted(wanted)
            if key in entries and entries[key].stripe_id
        }
        return replace(plan, known_ids={**found, **plan.known_ids})

    def _settle_abandoned(self, run_id: str) -> None:
        with self.store.session() as session:
            # Only this domain's: another domain may be applying at the same time.
            domain = self.domain.name
            JournalRepository(session).abandon_pending(
                self.installation_id, domain=domain, except_run=run_id
            )
            RunRepository(session).abandon_running_applies(
                self.installation_id, domain=domain, except_run=run_id
            )

    def record_dry_run(self, plan: Plan, *, run_id: str | None = None) -> str:
        run_id = self._start_run(RunMode.DRY_RUN, plan, run_id)
        result = RunResult.CHANGES_PENDING if plan.has_changes else RunResult.NO_CHANGES
        self._finish_run(run_id, result, plan)
        return run_id

    def _start_run(self, mode: RunMode, plan: Plan, run_id: str | None) -> str:
        with self.store.session() as session:
            return RunRepository(session).start(
                domain=self.domain.name,
                mode=mode,
                actor=self.actor,
                git_revision=self.git_revision,
                desired_revision=self.state.revision,
                plan_fingerprint=plan.fingerprint,
                run_id=run_id,
            )

    def _finish_run(
        self,
        run_id: str,
        result: RunResult,
        plan: Plan,
        *,
        error: str | None = None,
        held_back: Sequence[Mapping[str, str]] = (),
    ) -> None:
        # Drift and orphans beside the step counts, so `reconcile status` can report them.
        summary: dict[str, Any] = {
            **plan.counts(),
            "drift": len(plan.drift),
            "orphans": len(plan.orphans),
        }
        if held_back:
            summary["held_back"] = [dict(entry) for entry in held_back]
        with self.store.session() as session:
            RunRepository(session).finish(run_id, result, summary, error)


def _held_back(error: ApplyError) -> list[dict[str, str]]:
    """The refused steps of an apply whose refusals held back their scopes only: scope, org
    (of a `customer/<org>` scope), step and Stripe's refusal, for the run and the log."""
    held: list[dict[str, str]] = []
    for failure in error.failures:
        scope = failure.scope or ""
        kind, _, name = scope.partition("/")
        entry = {
            "scope": scope,
            "key": failure.step.key,
            "action": failure.step.action.value,
            "error": str(failure.cause),
        }
        if kind == "customer" and name:
            entry["org_id"] = name
        held.append(entry)
    return held


def outstanding(residual: Plan) -> tuple[Step, ...]:
    """What keeps a re-plan from being converged: its steps, and its restores but a domain's
    bookkeeping (see `Plan.converged`)."""
    return (
        *residual.steps,
        *(restore for restore in residual.restores if restore.reason is not Reason.BOOKKEEPING),
    )


def repeats(applied: Iterable[StepOutcome], residual: Plan) -> tuple[Step, ...]:
    """The residual's outstanding steps that repeat one the run applied: same key, action and
    parameters. The run wrote it and the re-plan still wants it, so Stripe (or the store)
    does not show the write: the run did not converge. A residual step that is new, or that
    differs from what was applied (a quantity one seat higher), is new input: a fact that
    arrived while the run applied, for the next run to act on."""
    written = {_identity(outcome.step) for outcome in applied}
    return tuple(step for step in outstanding(residual) if _identity(step) in written)


def new_input(applied: Iterable[StepOutcome], residual: Plan) -> tuple[Step, ...]:
    """The residual's outstanding steps that are not repeats (see `repeats`)."""
    written = {_identity(outcome.step) for outcome in applied}
    return tuple(step for step in outstanding(residual) if _identity(step) not in written)


def _identity(step: Step) -> tuple[str, str, str]:
    return step.key, step.action.value, canonical_json(step.params)


def _not_converged(repeated: Sequence[Step]) -> str:
    keys = ", ".join(step.key for step in repeated[:5])
    more = f" (+{len(repeated) - 5} more)" if len(repeated) > 5 else ""
    return (
        f"apply did not converge: the re-plan still wants {len(repeated)} step(s) this run "
        f"applied: {keys}{more}"
    )


def _hold_back_fleet_rewrites(plan: Plan, guarded: frozenset[str]) -> Plan:
    """A targeted plan without the steps the mass-change guard counts (marked `mass_change`,
    or caused by a `guarded` setting: a fleet rewrite still wanted under the settings in
    force, a price migration): only a whole-domain plan, where the guard weighs the whole
    population, applies them. Each is a notice instead."""

    def counted(step: Step) -> bool:
        return step.mass_change or not guarded.isdisjoint(step.causes)

    held = [step for step in plan.steps if counted(step)]
    if not held:
        return plan
    notices = tuple(
        Notice(
            key=step.key,
            kind=step.kind,
            stripe_id=step.stripe_id,
            message=(
                f"fleet rewrite ({', '.join(step.causes) or 'mass change'}) held back: only a "
                "whole-domain pass applies it, as the mass-change guard weighs it"
            ),
        )
        for step in held
    )
    return replace(
        plan,
        steps=tuple(step for step in plan.steps if not counted(step)),
        notices=(*plan.notices, *notices),
    )


_Model = TypeVar("_Model", bound=BaseModel)


def _with_setting(model: _Model, path: Sequence[str], value: JSONValue) -> _Model:
    """`model` (a config) with the field at the dotted `path` set to `value`; unchanged when
    the path names no field."""
    name, rest = path[0], path[1:]
    if name not in type(model).model_fields:
        return model
    if not rest:
        if getattr(model, name) == value:
            return model
        return model.model_copy(update={name: value})
    child = getattr(model, name)
    if not isinstance(child, BaseModel):
        return model
    updated = _with_setting(child, rest, value)
    return model if updated is child else model.model_copy(update={name: updated})


def _dig(data: Mapping[str, Any], path: str) -> JSONValue:
    """The value at a dotted path of the config's JSON (None when there is none)."""
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value  # type: ignore[no-any-return]


def _step_view(plan: Plan) -> list[Any]:
    """The steps and restores as the JSON plan states them (what a saved plan must match).
    A domain's bookkeeping (an events cursor and the time of its full resync, which is the
    planning time itself) is not a reviewed change and is left out."""
    data = plan_to_dict(plan)
    restores = [
        r
        for r, step in zip(data["restores"], plan.restores, strict=True)
        if step.reason is not Reason.BOOKKEEPING
    ]
    return [data["steps"], restores, data["known_ids"]]

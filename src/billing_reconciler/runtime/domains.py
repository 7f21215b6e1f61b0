"""Running a registered domain the way `reconcile serve` must, behind one small protocol.

A `Domain` (here: the runtime's view) turns a `ReconcileRequest` into one recorded run. The
runtime knows nothing else about it: the queue, the scheduler and the inbox are generic, and
every registered domain (`registry.DOMAINS`) runs through `DomainRunner`; requests routed to a
domain that is not registered are logged and dropped by the runtime.

`DomainRunner` is one domain's pass of the `Controller`:
- it re-reads `desired/` on every run through the shared `DesiredSource` (the last valid
  state is enforced while desired/ is invalid);
- it applies only when allowed: the store is not suspended (`reconcile suspend`) and
  `may_write()` says this replica leads and is not shutting down; otherwise it plans and
  records a dry run;
- `may_write()` is asked again after every applied step: a lost lock or a SIGTERM stops the
  apply between two steps (each journaled in its own transaction), never inside one;
- every log line of a run carries its run id (structlog contextvars), the id the run table
  records;
- an apply whose re-plan is not empty did not converge only when it still wants a step the
  run applied (`controller.repeats`: a `TransientError`, retried with backoff). Anything else
  in it is new input, facts that arrived while the run applied (a member added during the
  seat update of the one before): the run succeeded and names the new input's scopes as its
  `follow_up`, which the queue runs at once (a whole-domain run's follow-up is targeted at
  the customers it found changed, so none of them waits for another pass of the fleet).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import structlog

from billing_reconciler.apply import StepOutcome
from billing_reconciler.controller import (
    Controller,
    Planned,
    PlanOptions,
    Registration,
    new_input,
    repeats,
)
from billing_reconciler.desired import LoadResult, load_desired
from billing_reconciler.desired.state import DesiredState
from billing_reconciler.planning.plan import Plan, Step
from billing_reconciler.runtime.desired_source import DesiredSource, DesiredStatus
from billing_reconciler.runtime.events import ReconcileRequest
from billing_reconciler.runtime.queue import PermanentError, TransientError
from billing_reconciler.store import (
    ControllerStateRepository,
    RunMode,
    RunRepository,
    RunResult,
    Store,
    Suspension,
)
from billing_reconciler.stripe_gateway import StripeGateway

_log = structlog.get_logger(__name__)

# A run that was stopped between two steps (leadership lost, shutting down). The run table
# records it as `failed` with the reason; metrics and logs say `interrupted`.
INTERRUPTED = "interrupted"

MayWrite = Callable[[], bool]


@dataclass(frozen=True, slots=True)
class DomainRunResult:
    """What one run did, for logs, metrics and readiness."""

    domain: str
    run_id: str
    result: str
    """A `store.RunResult` value, or `interrupted`."""
    mode: RunMode
    whole_domain: bool
    """False for a targeted run: drift and orphan counts then cover its scope only."""
    steps: int = 0
    applied: int = 0
    drift: int = 0
    orphans: int = 0
    follow_up: ReconcileRequest | None = None
    """The new input the run's re-plan found, to reconcile next (None: it converged)."""


class Domain(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def refresh_seconds(self) -> int:
        """How often the scheduler runs the whole domain; 0 disables the schedule."""
        ...

    def reconcile(self, request: ReconcileRequest, *, may_write: MayWrite) -> DomainRunResult:
        """One run. Raises `TransientError`/`PermanentError` (or anything) when it fails."""
        ...


class WritingStopped(Exception):
    """`may_write()` turned false between two steps: leadership lost, or shutting down."""


class DomainRunner:
    """See the module docstring. Give `source` to share one desired/ reader between domains;
    without it the runner reads `directory` itself, starting from `initial`."""

    def __init__(
        self,
        *,
        registration: Registration,
        store: Store,
        gateway: StripeGateway,
        actor: str,
        source: DesiredSource | None = None,
        directory: Path | None = None,
        initial: DesiredState | None = None,
        git_revision: Callable[[], str | None] = lambda: None,
        clock: Callable[[], float] = time.time,
        loader: Callable[[Path], LoadResult] = load_desired,
    ) -> None:
        if source is None:
            if directory is None or initial is None:
                raise TypeError("DomainRunner needs a source, or a directory and its initial state")
            source = DesiredSource(directory=directory, initial=initial, clock=clock, loader=loader)
        self._registration = registration
        self._source = source
        self._store = store
        self._gateway = gateway
        self._actor = actor
        self._git_revision = git_revision
        self._clock = clock

    @property
    def name(self) -> str:
        return self._registration.name

    @property
    def refresh_seconds(self) -> int:
        return self._registration.domain.refresh_seconds(self._source.current)

    @property
    def installation_id(self) -> str:
        return self._source.installation_id

    @property
    def desired_status(self) -> DesiredStatus:
        return self._source.status

    def reload(self) -> DesiredState:
        return self._source.reload()

    def reconcile(self, request: ReconcileRequest, *, may_write: MayWrite) -> DomainRunResult:
        run_id = str(uuid.uuid4())
        with structlog.contextvars.bound_contextvars(run_id=run_id, domain=self.name):
            _log.info(
                "reconcile started",
                reason=request.reason,
                scope=None if request.scope is None else sorted(request.scope),
            )
            try:
                return self._run(request, run_id, may_write)
            except Exception as error:
                self._record_failure_if_unrecorded(run_id, error)
                raise

    def _run(self, request: ReconcileRequest, run_id: str, may_write: MayWrite) -> DomainRunResult:
        controller = Controller(
            registration=self._registration,
            state=self.reload(),
            gateway=self._gateway,
            store=self._store,
            git_revision=self._git_revision(),
            clock=self._clock,
            actor=self._actor,
        )
        planned = controller.plan(PlanOptions(scope=request.scope))
        plan = planned.plan
        for warning in plan.warnings:
            # What a CLI plan prints under its warnings (a second live subscription, live
            # ones of ours for orgs the store does not know): serve has no one reading plans.
            _log.warning("plan warning", warning=warning)
        if plan.refused:
            controller.record_dry_run(plan, run_id=run_id)
            refusal = "the plan was refused: " + "; ".join(plan.refusals)
            if request.scope is None:
                self._apply_all_but_held(controller, request, refusal, may_write)
            raise PermanentError(refusal)
        suspension = self._suspension()
        if plan.has_work and suspension is None and may_write():
            return self._apply(controller, planned, request, run_id, may_write)
        if not plan.has_work and suspension is None and may_write():
            # The writer found nothing to do: the desired settings are in force as they are.
            controller.record_settings_in_force()
        controller.record_dry_run(plan, run_id=run_id)
        result = RunResult.CHANGES_PENDING if plan.has_changes else RunResult.NO_CHANGES
        _log_plan_only(plan, result, suspension)
        return self._result(request, run_id, result.value, RunMode.DRY_RUN, plan)

    def _apply_all_but_held(
        self,
        controller: Controller,
        request: ReconcileRequest,
        refusal: str,
        may_write: MayWrite,
    ) -> None:
        """A whole-domain pass the guard refused (a fleet rewrite of `billing.yaml` waiting
        for `--allow-mass-change`) still applies everything else, planned as a targeted run
        plans (the fleet settings in force, the guarded rewrites held back): a seat change or
        a new subscription recorded meanwhile (by a follower's API) is not held up with it.
        The pass then fails with the refusal, so the held-back change stays visible."""
        held = controller.plan(PlanOptions(fleet_in_force=True))
        if held.plan.refused or not held.plan.has_work:
            return
        if self._suspension() is not None or not may_write():
            return
        _log.error("fleet change held back; applying the rest of the pass", refusal=refusal)
        self._apply(controller, held, request, str(uuid.uuid4()), may_write)

    def _apply(
        self,
        controller: Controller,
        planned: Planned,
        request: ReconcileRequest,
        run_id: str,
        may_write: MayWrite,
    ) -> DomainRunResult:
        total = len(planned.plan.steps) + len(planned.plan.restores)
        applied = 0

        def after_step(outcome: StepOutcome) -> None:
            nonlocal applied
            applied += 1
            _log.info(
                "step applied",
                step=outcome.index + 1,
                of=total,
                action=outcome.step.action.value,
                key=outcome.step.key,
                stripe_id=outcome.stripe_id,
                replayed=outcome.replayed,
            )
            if applied < total and not may_write():
                raise WritingStopped(
                    f"stopped writing after {applied} of {total} steps: "
                    "leadership lost or shutting down"
                )

        try:
            # A scheduled whole-domain pass reports a scope Stripe refused as held back, not
            # as a failed pass; a targeted run fails with the refusal (its caller's verdict).
            _, outcomes, residual = controller.apply(
                planned,
                on_step=after_step,
                run_id=run_id,
                settle_bookkeeping=True,
                hold_back_refused=request.scope is None,
            )
        except WritingStopped as stopped:
            _log.warning("apply interrupted", applied=applied, of=total, detail=str(stopped))
            return self._result(
                request, run_id, INTERRUPTED, RunMode.APPLY, planned.plan, applied=applied
            )
        fresh = new_input(outcomes, residual)
        follow_up = None
        if fresh:
            scope = self._scope_of(fresh, request.scope)
            follow_up = ReconcileRequest(self.name, scope, f"new input after run {run_id[:8]}")
        repeated = repeats(outcomes, residual)
        if repeated:
            # Recorded as failed by the controller: a write it made does not show (someone
            # undid it at once, or Stripe lags). The retry backs off and re-plans.
            raise TransientError(
                f"apply did not converge: {len(repeated)} applied step(s) still wanted "
                f"({repeated[0].key}{', ...' if len(repeated) > 1 else ''})",
                follow_up=follow_up,
            )
        _log.info(
            "reconcile finished",
            result=RunResult.APPLIED.value,
            applied=applied,
            **({"new_input": len(fresh)} if fresh else {}),
        )
        return replace(
            self._result(
                request,
                run_id,
                RunResult.APPLIED.value,
                RunMode.APPLY,
                planned.plan,
                applied=applied,
            ),
            follow_up=follow_up,
        )

    def _scope_of(
        self, steps: tuple[Step, ...], scope: frozenset[str] | None
    ) -> frozenset[str] | None:
        """The request keys of `steps`, for a targeted follow-up; the run's own scope (None:
        the whole domain) when one of them belongs to no request key."""
        keys = {self._registration.domain.scope_of(step.key) for step in steps}
        if None in keys:
            return scope
        return frozenset(key for key in keys if key is not None)

    def _result(
        self,
        request: ReconcileRequest,
        run_id: str,
        result: str,
        mode: RunMode,
        plan: Plan,
        *,
        applied: int = 0,
    ) -> DomainRunResult:
        return DomainRunResult(
            domain=self.name,
            run_id=run_id,
            result=result,
            mode=mode,
            whole_domain=request.scope is None,
            steps=len(plan.steps),
            applied=applied,
            drift=len(plan.drift),
            orphans=len(plan.orphans),
        )

    # --- store ----------------------------------------------------------------------------

    def _suspension(self) -> Suspension | None:
        with self._store.session() as session:
            return ControllerStateRepository(session).suspension()

    def _record_failure_if_unrecorded(self, run_id: str, error: Exception) -> None:
        """A run that failed before its row existed (observe failed, ...) is still recorded."""
        try:
            with self._store.session() as session:
                runs = RunRepository(session)
                if runs.get(run_id) is not None:
                    return
                runs.start(
                    domain=self.name,
                    mode=RunMode.DRY_RUN,
                    actor=self._actor,
                    git_revision=None,
                    desired_revision=self._source.current.revision,
                    run_id=run_id,
                )
                runs.finish(run_id, RunResult.FAILED, {}, error=str(error)[:2000])
        except Exception as store_error:
            _log.warning("failed run not recorded", error=type(store_error).__name__)


def _log_plan_only(plan: Plan, result: RunResult, suspension: Suspension | None) -> None:
    fields = {"steps": len(plan.steps), "drift": len(plan.drift), "orphans": len(plan.orphans)}
    if not plan.steps:
        _log.info("reconcile finished", result=result.value, **fields)
    elif suspension is not None:
        _log.warning(
            "suspended: plan recorded, not applied",
            suspended_by=suspension.actor,
            suspended_because=suspension.reason,
            **fields,
        )
    else:
        _log.info("not writing (follower or stopping): plan recorded, not applied", **fields)

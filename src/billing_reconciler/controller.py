"""One reconcile pass of the catalog: observe, plan, apply, verify convergence.

The same pass serves `reconcile --dry-run` (stops after planning), `reconcile` (applies the
plan it printed) and `reconcile serve` (runs it on a schedule). Every pass is recorded in the
store's run table (who, when, which revision, which plan, what came of it).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from billing_reconciler.apply import Applier, StepOutcome
from billing_reconciler.desired.state import DesiredState
from billing_reconciler.domains.catalog import desired_catalog
from billing_reconciler.model import Catalog, CatalogRecord, Kind, PlanRecord, object_key
from billing_reconciler.planning.builder import AppliedState, PlanPolicy
from billing_reconciler.planning.diff import diff
from billing_reconciler.planning.fields import comparable_fields
from billing_reconciler.planning.plan import Action, Plan, Step
from billing_reconciler.planning.rules.attachments import products_to_list
from billing_reconciler.planning.scope import restrict
from billing_reconciler.planning.serialize import plan_to_dict
from billing_reconciler.store import (
    ControllerStateRepository,
    JournalRepository,
    LastAppliedRepository,
    PlanRepository,
    PlanState,
    RunMode,
    RunRepository,
    RunResult,
    Store,
    default_actor,
)
from billing_reconciler.stripe_gateway import (
    StripeGateway,
    count_active_subscriptions,
    observe_catalog,
)

DOMAIN = "catalog"
# Saved plans expire with Stripe's idempotency keys (DESIGN §6).
PLAN_MAX_AGE_SECONDS = 24 * 3600
# Stripe keeps an idempotency key for at least 24 hours.
KEY_WINDOW_SECONDS = 25 * 3600


class ReconcileError(RuntimeError):
    """A pass that cannot proceed: refused plan, stale saved plan, residual diff."""


@dataclass(frozen=True, slots=True)
class PlanOptions:
    adopt_all: bool = False
    allow_mass_archive: bool = False
    # Product keys a targeted (webhook-triggered) reconcile is limited to; None = everything.
    scope: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Planned:
    """A plan with what apply needs beside it: the fields each step's object should end with."""

    plan: Plan
    desired_fields: Mapping[str, Mapping[str, Any]]
    options: PlanOptions = PlanOptions()


@dataclass(slots=True)
class CatalogController:
    state: DesiredState
    gateway: StripeGateway
    store: Store
    git_revision: str | None = None
    clock: Callable[[], float] = time.time
    # Who the run table names as having run a pass; `reconcile serve` adds its process id so
    # replicas on one host stay apart.
    actor: str = field(default_factory=default_actor)

    @property
    def installation_id(self) -> str:
        return self.state.config.reconcile.installation_id

    def desired(self) -> Catalog:
        return desired_catalog(self.state, installation_id=self.installation_id)

    def observe(self, desired: Catalog) -> tuple[Catalog, dict[str, AppliedState]]:
        with self.store.session() as session:
            applied = {
                key: AppliedState(stripe_id=entry.stripe_id, fields=entry.fields)
                for key, entry in LastAppliedRepository(session)
                .for_installation(self.installation_id)
                .items()
            }
            plans = tuple(_plan_record(row) for row in PlanRepository(session).list_all())
        observed = observe_catalog(
            self.gateway,
            products_with_features=functools.partial(
                products_to_list,
                desired,
                applied_keys=applied,
                installation_id=self.installation_id,
                verify=self.state.config.reconcile.verify_attachments,
            ),
        )
        return replace(observed, plans=plans), applied

    def plan(self, options: PlanOptions = PlanOptions()) -> Planned:
        desired = self.desired()
        observed, applied = self.observe(desired)
        spent, salt = self._key_history()
        policy = replace(self._policy(options), spent_keys=spent, key_salt=salt)
        plan = diff(desired, observed, applied, policy)
        if options.scope is not None:
            plan = restrict(plan, options.scope)
        return Planned(
            plan=self._with_impact(plan), desired_fields=_fields_by_key(desired), options=options
        )

    def _policy(self, options: PlanOptions) -> PlanPolicy:
        settings = self.state.config.reconcile
        return PlanPolicy(
            installation_id=settings.installation_id,
            revision=self.state.revision,
            prune=settings.prune,
            max_archive_fraction=float(settings.max_archive_fraction),
            correct_drift=settings.drift == "correct",
            adopt_all=options.adopt_all,
            adopt_keys=frozenset(settings.adopt),
            allow_mass_archive=options.allow_mass_archive,
            now=int(self.clock()),
            verify_attachments=settings.verify_attachments,
        )

    def _key_history(self) -> tuple[frozenset[str], str]:
        """Keys of steps completed within Stripe's idempotency window (plus an hour of slack
        for clock skew), which the plan must not give to new writes, and the store's identity,
        which salts every key (a lost store's spent keys are unknown to its successor)."""
        since = datetime.fromtimestamp(self.clock() - KEY_WINDOW_SECONDS, UTC)
        with self.store.session() as session:
            spent = JournalRepository(session).spent_step_keys(self.installation_id, since=since)
            return spent, ControllerStateRepository(session).store_id()

    def _with_impact(self, plan: Plan) -> Plan:
        """State how many active subscriptions sit on each price a step supersedes or archives."""
        steps: list[Step] = []
        for step in plan.steps:
            leaving = step.kind is Kind.PRICE and step.action in (Action.SUPERSEDE, Action.ARCHIVE)
            if leaving and step.stripe_id:
                count = count_active_subscriptions(self.gateway, step.stripe_id)
                if count:
                    step = replace(
                        step,
                        impact=f"{count} active subscription(s) stay on {step.stripe_id} "
                        "(grandfathered)",
                    )
            steps.append(step)
        return replace(plan, steps=tuple(steps))

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
    ) -> tuple[str, list[StepOutcome], Plan]:
        """Apply, then re-observe: returns the run id, the outcomes and the residual plan.

        `run_id` names the run (default: a new id), so a caller can log under it before the
        run exists. An exception from `on_step` stops the apply after that step (the step is
        journaled done) and fails the run.
        """
        if planned.plan.refused:
            raise ReconcileError("the plan was refused: " + "; ".join(planned.plan.refusals))
        run_id = self._start_run(RunMode.APPLY, planned.plan, run_id)
        try:
            outcomes = Applier(
                gateway=self.gateway,
                store=self.store,
                run_id=run_id,
                desired_fields=planned.desired_fields,
                on_step=on_step,
                concurrency=self.state.config.reconcile.apply_concurrency,
            ).apply(planned.plan)
            residual = self.plan(planned.options).plan
        except Exception as error:
            self._finish_run(run_id, RunResult.FAILED, planned.plan, error=str(error))
            raise
        converged = not residual.has_work
        if converged:
            self._settle_abandoned(run_id)
        self._finish_run(
            run_id,
            RunResult.APPLIED if converged else RunResult.FAILED,
            planned.plan,
            error=None if converged else "apply did not converge: the re-plan is not empty",
        )
        return run_id, outcomes, residual

    def _settle_abandoned(self, run_id: str) -> None:
        with self.store.session() as session:
            JournalRepository(session).abandon_pending(self.installation_id, except_run=run_id)
            RunRepository(session).abandon_running_applies(self.installation_id, except_run=run_id)

    def record_dry_run(self, plan: Plan, *, run_id: str | None = None) -> str:
        run_id = self._start_run(RunMode.DRY_RUN, plan, run_id)
        result = RunResult.CHANGES_PENDING if plan.has_changes else RunResult.NO_CHANGES
        self._finish_run(run_id, result, plan)
        return run_id

    def _start_run(self, mode: RunMode, plan: Plan, run_id: str | None) -> str:
        with self.store.session() as session:
            return RunRepository(session).start(
                domain=DOMAIN,
                mode=mode,
                actor=self.actor,
                git_revision=self.git_revision,
                desired_revision=self.state.revision,
                plan_fingerprint=plan.fingerprint,
                run_id=run_id,
            )

    def _finish_run(
        self, run_id: str, result: RunResult, plan: Plan, *, error: str | None = None
    ) -> None:
        # Drift and orphans beside the step counts, so `reconcile status` can report them.
        summary = {**plan.counts(), "drift": len(plan.drift), "orphans": len(plan.orphans)}
        with self.store.session() as session:
            RunRepository(session).finish(run_id, result, summary, error)


def _step_view(plan: Plan) -> list[Any]:
    """The steps and restores as the JSON plan states them (what a saved plan must match)."""
    data = plan_to_dict(plan)
    return [data["steps"], data["restores"], data["known_ids"]]


def _plan_record(row: Any) -> PlanRecord:
    return PlanRecord(
        key=object_key(Kind.PLAN, row.name),
        name=row.name,
        title=row.title,
        description=row.description,
        interval=row.interval,
        product_keys=tuple(object_key(Kind.PRODUCT, p) for p in row.products),
        trial_days=row.trial_days,
        on_start_credits=row.on_start_credits,
        metadata=dict(row.metadata),
        active=row.state is PlanState.ACTIVE,
    )


def _fields_by_key(desired: Catalog) -> dict[str, dict[str, Any]]:
    records: tuple[CatalogRecord, ...] = (
        *desired.meters,
        *desired.features,
        *desired.products,
        *desired.prices,
        *desired.product_features,
        *desired.plans,
    )
    return {record.key: comparable_fields(record) for record in records}

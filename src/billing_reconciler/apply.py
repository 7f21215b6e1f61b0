"""Executes a Plan through the gateway and the store, with the journal. The only writer.

For each step, in the plan's order (never re-sorted):
1. the journal records the step as `pending` (its own transaction, before any Stripe call);
2. the Stripe call goes out with the step's idempotency key (retried by the gateway);
3. one transaction marks the step `done` and records what we applied (the last-applied state
   the next diff compares against).
A crash between 2 and 3 is safe: the rerun re-observes Stripe, and a step re-sent with the same
key replays Stripe's first response instead of creating a duplicate.

A failed step is journaled with Stripe's message and request id, and the apply raises
`ApplyError` for the first failing step in plan order once it has done what it still may:
- a failure of unknown outcome (no answer, 5xx, retries exhausted) stops the apply: no new
  step starts (Stripe is likely down; the rerun replays the same key);
- a permanent failure (Stripe refused the step) lets the other steps of its batch run (they
  are independent by construction). Then, if the step's executor names its scope
  (`ScopedExecutor.scope_of`: the customers domain's `customer/<org_id>`), later steps and
  restores of that scope, of the same key, or referring to it (a `Ref`, a parent) are skipped
  and every other one still runs: one refused customer holds back no other org. A step
  without a scope (the catalog's, whose phases depend on each other) stops the apply after
  its batch, as before. When only such refusals failed, the error names the scopes they held
  back (`ApplyError.held_scopes`) and carries the outcomes of what did apply, so a
  whole-domain pass can report them as held back rather than fail (`Controller.apply`).

The applier is the same for every domain: what a step *does* is its kind's `StepExecutor`
(the domain's edge module, `effects/<domain>.py`, provides one per kind it plans), which makes
the Stripe call through the gateway and writes its store records through the store's
repositories in the transaction that journals the step done. The journal, ordering, batching,
reference resolution and idempotency keys stay here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from billing_reconciler.planning.plan import Action, Plan, Reason, Ref, Step, canonical_json, digest
from billing_reconciler.store import (
    JournalEntry,
    JournalRepository,
    LastApplied,
    LastAppliedRepository,
    Store,
)
from billing_reconciler.stripe_gateway import StripeGateway, StripeGatewayError, WriteResult
from billing_reconciler.stripe_gateway.errors import (
    IdempotencyKeyReusedError,
    PermanentStripeError,
)


class ApplyError(RuntimeError):
    """A step failed; earlier steps stay applied and journaled. `failures`: every failed step
    of the apply (this one first), `skipped`: the steps not run because they depend on one
    (see the module docstring)."""

    def __init__(self, step: Step, index: int, cause: Exception) -> None:
        self.step = step
        self.index = index
        self.cause = cause
        self.request_id = getattr(cause, "request_id", None)
        self.failures: tuple[ApplyError, ...] = (self,)
        self.skipped: tuple[Step, ...] = ()
        # The step's scope (`ScopedExecutor.scope_of`), set by the applier.
        self.scope: str | None = None
        # When every failure was Stripe's refusal of a scoped step: the scopes they held back
        # (the apply ran every other step); empty when one stopped the apply.
        self.held_scopes: tuple[str, ...] = ()
        # The steps the apply did complete, in plan order.
        self.outcomes: tuple[StepOutcome, ...] = ()
        request = f" (request {self.request_id})" if self.request_id else ""
        self._message = (
            f"step {index + 1} ({step.action.value} {step.key}) failed: {cause}{request}"
        )
        super().__init__(self._message)

    @property
    def permanent(self) -> bool:
        """Stripe refused the step: sending it again cannot succeed (the other steps may go
        on); otherwise its outcome is unknown, or it never reached Stripe."""
        return isinstance(self.cause, PermanentStripeError)

    def with_others(self, failures: Sequence[ApplyError], skipped: Sequence[Step]) -> ApplyError:
        """This error, naming the apply's other failures and the steps they held back."""
        self.failures = (self, *[f for f in failures if f is not self])
        self.skipped = tuple(skipped)
        others = self.failures[1:]
        message = self._message
        if others:
            keys = ", ".join(f.step.key for f in others)
            message += f"; {len(others)} more failed ({keys})"
        if skipped:
            message += f"; {len(skipped)} dependent steps skipped"
        self.args = (message,)
        return self


@dataclass(frozen=True, slots=True)
class Done:
    """A step whose Stripe call succeeded, as its executor records it in the store."""

    plan: Plan
    step: Step
    stripe_id: str | None
    # The fields the step's object should end with (None: the domain states none for it).
    fields: Mapping[str, Any] | None


class StepExecutor(Protocol):
    """How one kind of step is carried out (see the module docstring)."""

    def send(
        self, gateway: StripeGateway, step: Step, ids: Mapping[str, str]
    ) -> WriteResult | None:
        """The Stripe call, under the step's idempotency key; None for a store-only step.
        `ids` maps object keys to Stripe ids, for `resolve_refs`."""
        ...

    def record(self, session: Session, done: Done) -> None:
        """The store side of a done step, inside the transaction that journals it done."""
        ...


class StoreExecutor(StepExecutor, Protocol):
    """An executor whose Stripe calls and store writes interleave (an outbox sender marks
    each event sent right after its send): the applier calls `send_with_store` instead of
    `send`. What it writes is its own business; the journal still records the step."""

    def send_with_store(
        self, gateway: StripeGateway, store: Store, step: Step, ids: Mapping[str, str]
    ) -> WriteResult | None: ...


class ScopedExecutor(StepExecutor, Protocol):
    """An executor whose steps fail alone: a step of one scope depends only on earlier steps
    of the same scope (and on what it refers to), so a refused one holds back no other."""

    def scope_of(self, key: str) -> str | None:
        """The scope a step's object key belongs to (e.g. `customer/<org_id>`), or None."""
        ...


@dataclass(slots=True)
class _Failures:
    """What failed so far in one apply, and what that holds back."""

    errors: list[ApplyError]
    skipped: list[Step]
    keys: set[str]
    scopes: set[str]
    # A failure that holds back every later step (unknown outcome, or no scope).
    stop: bool = False

    def blocks(self, step: Step, scope: str | None) -> bool:
        return (
            step.key in self.keys
            or (scope is not None and scope in self.scopes)
            or (step.parent is not None and step.parent.key in self.keys)
            or bool(_refs(step.params) & self.keys)
        )


@dataclass(frozen=True, slots=True)
class StepOutcome:
    index: int
    step: Step
    stripe_id: str | None
    replayed: bool


@dataclass(slots=True)
class Applier:
    """Applies one plan for one run. `desired_fields` maps keys to the fields we set."""

    gateway: StripeGateway
    store: Store
    run_id: str
    desired_fields: Mapping[str, Mapping[str, Any]]
    # The executor of each step kind (a plan with another kind fails before writing it).
    executors: Mapping[str, StepExecutor]
    on_step: Callable[[StepOutcome], None] | None = None
    concurrency: int = 1

    def apply(self, plan: Plan) -> list[StepOutcome]:
        """Run the batches in the plan's order; the steps of one batch, at most `concurrency`
        at a time. `on_step` sees each step as it completes; if it raises (the runtime's way of
        saying "stop writing"), no further step starts, and the ones in flight finish and are
        journaled before the error propagates. A failed step: see the module docstring."""
        ids: dict[str, str] = dict(plan.known_ids)
        outcomes: list[StepOutcome] = []
        failures = _Failures(errors=[], skipped=[], keys=set(), scopes=set())
        for batch in _batches(plan.steps):
            runnable = self._runnable(batch, failures)
            if runnable:
                outcomes.extend(self._apply_batch(plan, runnable, ids, failures))
            if failures.stop:
                break
        # Store-only records the store lost; journaled like steps, after them.
        offset = len(plan.steps)
        if not failures.stop:
            restores = list(enumerate(plan.restores, start=offset))
            for index, step in self._runnable(restores, failures):
                try:
                    outcomes.append(self._apply_step(plan, index, step, ids))
                except ApplyError as failure:
                    self._failed(failures, failure)
                    if failures.stop:
                        break
                    continue
                self._report(outcomes[-1])
        if failures.errors:
            first = min(failures.errors, key=lambda failure: failure.index)
            error = first.with_others(
                sorted(failures.errors, key=lambda f: f.index), failures.skipped
            )
            error.held_scopes = () if failures.stop else tuple(sorted(failures.scopes))
            error.outcomes = tuple(sorted(outcomes, key=lambda outcome: outcome.index))
            raise error
        return outcomes

    def _scope(self, step: Step) -> str | None:
        return step_scope(self.executors, step)

    def _runnable(
        self, batch: list[tuple[int, Step]], failures: _Failures
    ) -> list[tuple[int, Step]]:
        """The steps of `batch` no earlier failure holds back; the others are skipped, and
        hold back what depends on them in turn."""
        if not failures.errors:
            return batch
        runnable: list[tuple[int, Step]] = []
        for index, step in batch:
            scope = self._scope(step)
            if failures.blocks(step, scope):
                failures.skipped.append(step)
                failures.keys.add(step.key)
                continue
            runnable.append((index, step))
        return runnable

    def _failed(self, failures: _Failures, failure: ApplyError) -> None:
        failures.errors.append(failure)
        failures.keys.add(failure.step.key)
        scope = self._scope(failure.step)
        failure.scope = scope
        if not failure.permanent or scope is None:
            failures.stop = True
        else:
            failures.scopes.add(scope)

    def _apply_batch(
        self,
        plan: Plan,
        batch: list[tuple[int, Step]],
        ids: dict[str, str],
        failures: _Failures,
    ) -> list[StepOutcome]:
        if self.concurrency <= 1 or len(batch) == 1:
            sequential: list[StepOutcome] = []
            for index, step in batch:
                try:
                    sequential.append(self._apply_step(plan, index, step, ids))
                except ApplyError as failure:
                    self._failed(failures, failure)
                    if not failure.permanent:
                        break  # of unknown outcome: no new step starts
                    continue
                self._report(sequential[-1])
            return sequential
        stop = threading.Event()

        def run(index: int, step: Step) -> StepOutcome | None:
            return None if stop.is_set() else self._apply_step(plan, index, step, ids)

        done: list[StepOutcome] = []
        pool = ThreadPoolExecutor(min(self.concurrency, len(batch)), thread_name_prefix="apply")
        try:
            for future in as_completed([pool.submit(run, i, step) for i, step in batch]):
                try:
                    outcome = future.result()
                except ApplyError as failure:
                    if not failure.permanent:
                        stop.set()
                    self._failed(failures, failure)
                    continue
                if outcome is not None:
                    done.append(outcome)
                    self._report(outcome)
        except BaseException:
            stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return sorted(done, key=lambda outcome: outcome.index)

    def _send(
        self, executor: StepExecutor, step: Step, ids: Mapping[str, str]
    ) -> WriteResult | None:
        send_with_store = getattr(executor, "send_with_store", None)
        if send_with_store is not None:
            result: WriteResult | None = send_with_store(self.gateway, self.store, step, ids)
            return result
        return executor.send(self.gateway, step, ids)

    def _report(self, outcome: StepOutcome) -> None:
        if self.on_step is not None:
            self.on_step(outcome)

    def _apply_step(self, plan: Plan, index: int, step: Step, ids: dict[str, str]) -> StepOutcome:
        executor = self.executors.get(step.kind)
        if executor is None:
            raise ApplyError(step, index, LookupError(f"no executor for step kind {step.kind!r}"))
        self._journal_begin(plan, index, step)
        try:
            result = self._send(executor, step, ids)
        except StripeGatewayError as error:
            self._journal_failed(step, error)
            raise ApplyError(step, index, error) from error
        stripe_id = result.stripe_id if result else None
        if stripe_id and step.action in (
            Action.CREATE,
            Action.SUPERSEDE,
            Action.REACTIVATE,
            Action.ADOPT,
        ):
            ids[step.key] = stripe_id
        done = Done(plan, step, stripe_id, self.desired_fields.get(step.key))
        self._record(executor, done, result.request_id if result else None)
        return StepOutcome(index, step, stripe_id, bool(result and result.replayed))

    # --- store ----------------------------------------------------------------------------

    def _journal_begin(self, plan: Plan, index: int, step: Step) -> None:
        with self.store.session() as session:
            JournalRepository(session).begin(
                JournalEntry(
                    run_id=self.run_id,
                    installation_id=plan.installation_id,
                    plan_fingerprint=plan.fingerprint,
                    step_index=index,
                    object_key=step.key,
                    action=step.action.value,
                    idempotency_key=self._journal_key(step),
                    step_key=step.idempotency_key,
                )
            )

    def _journal_key(self, step: Step) -> str:
        # A step may legitimately run again in a later run (a rerun after a failure): each
        # run journals its own attempt, so the run id is part of the row's key.
        return digest(self.run_id, step.idempotency_key)

    def _journal_failed(self, step: Step, error: StripeGatewayError) -> None:
        with self.store.session() as session:
            JournalRepository(session).mark_failed(
                self._journal_key(step),
                error=str(error),
                request_id=error.request_id,
                refused=refused(error),
            )

    def _record(self, executor: StepExecutor, done: Done, request_id: str | None) -> None:
        with self.store.session() as session:
            executor.record(session, done)
            JournalRepository(session).mark_done(
                self._journal_key(done.step), stripe_id=done.stripe_id, request_id=request_id
            )


def step_scope(executors: Mapping[str, StepExecutor], step: Step) -> str | None:
    """The scope of `step` as its kind's executor names it (`ScopedExecutor.scope_of`), or
    None (an executor without scopes)."""
    scope_of = getattr(executors.get(step.kind), "scope_of", None)
    return None if scope_of is None else scope_of(step.key)


def refused(error: StripeGatewayError) -> bool:
    """Stripe refused the request for good and applied nothing: a permanent 4xx answer (bad
    parameters, a missing object, a refused card), so the step's key is spent and the next
    plan's corrected step takes the next one. Not a failure of unknown outcome (no answer, a
    5xx: the retry must replay the same key, or a create could run twice), and not Stripe's
    `idempotency_error` (the key's first request may have applied: never moved past)."""
    return (
        isinstance(error, PermanentStripeError)
        and not isinstance(error, IdempotencyKeyReusedError)
        and error.http_status is not None
        and 400 <= error.http_status < 500
    )


def _batches(steps: Sequence[Step]) -> list[list[tuple[int, Step]]]:
    """Consecutive steps of the same batch, in plan order (a step without one stands alone)."""
    batches: list[list[tuple[int, Step]]] = []
    for index, step in enumerate(steps):
        previous = batches[-1][-1][1] if batches else None
        if previous is not None and step.batch is not None and previous.batch == step.batch:
            batches[-1].append((index, step))
        else:
            batches.append([(index, step)])
    return batches


def wire_key(step: Step, params: Mapping[str, Any], parent: str | None) -> str:
    """The step's key, bound to the ids its references resolved to.

    A reference resolves to another id when its object was re-created (deleted in the
    dashboard) after an earlier attempt of this step; Stripe refuses a key re-sent with other
    parameters. Re-running the same plan resolves the same ids, so it still replays.
    """
    if step.parent is None and not _has_ref(step.params):
        return step.idempotency_key
    return digest(step.idempotency_key, canonical_json(params), parent or "")


def _refs(value: Any) -> set[str]:
    """The keys of the objects `value` refers to (its `Ref`s)."""
    if isinstance(value, Ref):
        return {value.key}
    if isinstance(value, Mapping):
        return set().union(*(_refs(v) for v in value.values()))
    if isinstance(value, list | tuple):
        return set().union(*(_refs(v) for v in value))
    return set()


def _has_ref(value: Any) -> bool:
    if isinstance(value, Ref):
        return True
    if isinstance(value, Mapping):
        return any(_has_ref(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_ref(v) for v in value)
    return False


def resolve_refs(value: Any, ids: Mapping[str, str]) -> Any:
    if isinstance(value, Ref):
        if value.key not in ids:
            raise KeyError(f"no Stripe id known for {value.key}")
        return ids[value.key]
    if isinstance(value, Mapping):
        return {k: resolve_refs(v, ids) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [resolve_refs(v, ids) for v in value]
    return value


def record_last_applied(session: Session, done: Done) -> None:
    """What we applied, for the next diff (the usual `record` of a Stripe-backed step)."""
    repository = LastAppliedRepository(session)
    plan, step = done.plan, done.step
    if step.action is Action.ARCHIVE:
        # The archive that completes a supersede leaves the key to the new price.
        if step.reason is not Reason.SUPERSEDED:
            repository.delete(plan.installation_id, step.key)
        return
    if done.fields is None:
        return
    repository.put(
        LastApplied(
            installation_id=plan.installation_id,
            object_key=step.key,
            kind=str(step.kind),
            stripe_id=done.stripe_id or step.stripe_id,
            fields=dict(done.fields),
            content_hash=digest(canonical_json(done.fields)),
            revision=plan.desired_revision,
            applied_at=datetime.now(UTC),
        )
    )

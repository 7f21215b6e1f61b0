"""The apply journal: one row per plan step executed, so a rerun after a crash resumes.

Rows are never deleted. A step moves `pending -> done` or `pending -> failed`; a failed step may
be retried (with the same idempotency key) and end `done` or `failed` again; a `done` step is
final: its Stripe id is the fact the next run builds on, so nothing may rewrite it.

A failure is either of unknown outcome (a connection lost, a 5xx: the request may have been
applied, so the next attempt must re-send the same key for Stripe to deduplicate) or a
*refusal*: Stripe answered a 4xx that applied nothing (bad parameters, a missing object). A
refused step's key is spent like a done one's (`spent_step_keys`): re-sent with the corrected
parameters the next plan derives, Stripe would refuse the reused key (400 `idempotency_error`).
The row's error then starts with `REFUSED` (the state column's closed set predates it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Select,
    Table,
    and_,
    bindparam,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from billing_reconciler.store._common import Clock, utc_now
from billing_reconciler.store.errors import ConflictError, NotFoundError
from billing_reconciler.store.tables import JournalModel, RunModel

#: The prefix of a refused step's error (see the module docstring).
REFUSED = "refused by Stripe: "

ABANDONED = (
    "abandoned: its run ended before finishing it; a later run re-planned from Stripe and converged"
)


class JournalState(enum.StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """A step about to be executed."""

    run_id: str
    installation_id: str
    plan_fingerprint: str
    step_index: int
    object_key: str
    action: str
    idempotency_key: str
    # The key the plan gave the step; None for callers that journal no plan step.
    step_key: str | None = None


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """A journaled step and how it went."""

    id: int
    run_id: str
    installation_id: str
    plan_fingerprint: str
    step_index: int
    object_key: str
    action: str
    idempotency_key: str
    state: JournalState
    stripe_id: str | None
    error: str | None
    request_id: str | None
    started_at: datetime
    finished_at: datetime | None


def _record(model: JournalModel | Row[Any]) -> JournalRecord:
    return JournalRecord(
        id=model.id,
        run_id=model.run_id,
        installation_id=model.installation_id,
        plan_fingerprint=model.plan_fingerprint,
        step_index=model.step_index,
        object_key=model.object_key,
        action=model.action,
        idempotency_key=model.idempotency_key,
        state=JournalState(model.state),
        stripe_id=model.stripe_id,
        error=model.error,
        request_id=model.request_id,
        started_at=model.started_at,
        finished_at=model.finished_at,
    )


_journal = cast(Table, JournalModel.__table__)

_BEGIN_COLUMNS = (
    "run_id",
    "installation_id",
    "plan_fingerprint",
    "step_index",
    "object_key",
    "action",
    "idempotency_key",
    "step_key",
    "state",
    "started_at",
)

#: A new pending row, returned; nothing (no row) when its idempotency key is journaled.
#: Built once per dialect; the values are bind parameters named like the columns.
_BEGIN = {
    name: dialect.insert(_journal)
    .values({column: bindparam(column, type_=_journal.c[column].type) for column in _BEGIN_COLUMNS})
    .on_conflict_do_nothing(index_elements=[_journal.c.idempotency_key])
    .returning(*_journal.c)
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}


def _finish_statement(*, stripe_id: bool) -> Any:
    """Finish a step not done yet, answering its row (none: done already, or unknown)."""
    names = ["state", "error", "request_id", "finished_at"] + (["stripe_id"] if stripe_id else [])
    return (
        update(_journal)
        .where(
            _journal.c.idempotency_key == bindparam("p_key"),
            _journal.c.state != bindparam("p_done"),
        )
        .values({name: bindparam(f"p_{name}", type_=_journal.c[name].type) for name in names})
        .returning(*_journal.c)
    )


_FINISH = _finish_statement(stripe_id=True)
_FINISH_KEEPING_ID = _finish_statement(stripe_id=False)


class _Keep:
    """`_finish` leaves the row's Stripe id as it is."""


_KEEP = _Keep()


def _runs_of(domain: str) -> Select[str]:
    """The ids of a domain's runs (journal rows name their run; the run names its domain)."""
    return select(RunModel.run_id).where(RunModel.domain == domain)


class JournalRepository:
    def __init__(self, session: Session, *, clock: Clock = utc_now) -> None:
        self._session = session
        self._clock = clock

    def begin(self, entry: JournalEntry) -> JournalRecord:
        """Journal a step as pending, or return the existing row for its idempotency key.

        A returned row that is `done` means the step already happened (skip it, reuse its Stripe
        id); `pending` or `failed` means replay it with the same key, so Stripe deduplicates.
        One statement for a new step (the INSERT returns the row it wrote).
        """
        inserted = (
            self._connection()
            .execute(
                _BEGIN[self._dialect()],
                {
                    "run_id": entry.run_id,
                    "installation_id": entry.installation_id,
                    "plan_fingerprint": entry.plan_fingerprint,
                    "step_index": entry.step_index,
                    "object_key": entry.object_key,
                    "action": entry.action,
                    "idempotency_key": entry.idempotency_key,
                    "step_key": entry.step_key,
                    "state": JournalState.PENDING.value,
                    "started_at": self._clock(),
                },
            )
            .first()
        )
        if inserted is not None:
            return _record(inserted)
        return self._require(entry.idempotency_key)

    def mark_done(
        self, idempotency_key: str, stripe_id: str | None, request_id: str | None = None
    ) -> JournalRecord:
        """Record success. Repeating it with the same Stripe id is a no-op; another id conflicts.
        One statement when the step was not done yet."""
        finished = self._finish(
            idempotency_key,
            state=JournalState.DONE,
            stripe_id=stripe_id,
            error=None,
            request_id=request_id,
        )
        if finished is not None:
            return finished
        current = self._require(idempotency_key)
        if current.state is not JournalState.DONE:
            raise ConflictError(f"journal step {idempotency_key!r} was finished concurrently")
        if current.stripe_id != stripe_id:
            raise ConflictError(
                f"journal step {idempotency_key!r} is done with {current.stripe_id!r}; "
                f"refusing to record {stripe_id!r}"
            )
        return current

    def mark_failed(
        self,
        idempotency_key: str,
        error: str,
        request_id: str | None = None,
        *,
        refused: bool = False,
    ) -> JournalRecord:
        """Record a failure (its Stripe id, if any, is kept); a step that is already done
        cannot fail afterwards. `refused`: Stripe refused it and applied nothing, so its step
        key is spent (see the module docstring)."""
        finished = self._finish(
            idempotency_key,
            state=JournalState.FAILED,
            stripe_id=_KEEP,
            error=REFUSED + error if refused else error,
            request_id=request_id,
        )
        if finished is not None:
            return finished
        current = self._require(idempotency_key)
        if current.state is JournalState.DONE:
            raise ConflictError(f"journal step {idempotency_key!r} is done; it cannot fail now")
        raise ConflictError(f"journal step {idempotency_key!r} was finished concurrently")

    def get(self, idempotency_key: str) -> JournalRecord | None:
        model = self._session.scalars(
            select(JournalModel)
            .where(JournalModel.idempotency_key == idempotency_key)
            .execution_options(populate_existing=True)
        ).one_or_none()
        return None if model is None else _record(model)

    def pending(self, installation_id: str, *, domain: str | None = None) -> list[JournalRecord]:
        """Steps begun but never finished (a crash, or a stop mid-apply), oldest first; with
        `domain`, only those journaled by that domain's runs."""
        conditions = [
            JournalModel.installation_id == installation_id,
            JournalModel.state == JournalState.PENDING.value,
        ]
        if domain is not None:
            conditions.append(JournalModel.run_id.in_(_runs_of(domain)))
        return self._where(*conditions)

    def pending_by_domain(self, installation_id: str) -> dict[str, list[JournalRecord]]:
        """The pending steps grouped by the domain of the run that journaled them, oldest first
        within a domain; a domain with none is absent."""
        query = (
            select(RunModel.domain, JournalModel)
            .join(RunModel, RunModel.run_id == JournalModel.run_id)
            .where(
                JournalModel.installation_id == installation_id,
                JournalModel.state == JournalState.PENDING.value,
            )
            .order_by(JournalModel.id)
            .execution_options(populate_existing=True)
        )
        grouped: dict[str, list[JournalRecord]] = {}
        for domain, model in self._session.execute(query):
            grouped.setdefault(domain, []).append(_record(model))
        return grouped

    def for_run(self, run_id: str) -> list[JournalRecord]:
        """Steps begun by one run, in the order they were begun (the plan's order)."""
        return self._where(JournalModel.run_id == run_id)

    def done_keys(self, installation_id: str) -> set[str]:
        query = select(JournalModel.idempotency_key).where(
            JournalModel.installation_id == installation_id,
            JournalModel.state == JournalState.DONE.value,
        )
        return set(self._session.scalars(query))

    def abandon_pending(self, installation_id: str, *, domain: str, except_run: str) -> int:
        """Close the `pending` steps of `domain`'s runs that ended without finishing them (a
        killed process): a later converged run of that domain re-planned from Stripe, so nothing
        is owed for them. Only the writer journals steps, so no other run of the domain can
        still be executing them; other domains' runs may be (the work queue applies several
        domains at once), so their steps are never touched. A step is the domain's when the
        run that journaled it is."""
        result = self._session.execute(
            update(JournalModel)
            .where(
                JournalModel.installation_id == installation_id,
                JournalModel.state == JournalState.PENDING.value,
                JournalModel.run_id != except_run,
                JournalModel.run_id.in_(_runs_of(domain)),
            )
            .values(
                state=JournalState.FAILED.value,
                error=ABANDONED,
                finished_at=self._clock(),
            )
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    def spent_step_keys(self, installation_id: str, *, since: datetime) -> frozenset[str]:
        """Plan keys of steps completed or refused since `since`: Stripe has answered them for
        good, so a later plan must give its steps other keys (Stripe keeps keys for 24 hours).
        A failure of unknown outcome does not spend its key: its retry must replay it."""
        query = select(JournalModel.step_key).where(
            JournalModel.installation_id == installation_id,
            or_(
                JournalModel.state == JournalState.DONE.value,
                and_(
                    JournalModel.state == JournalState.FAILED.value,
                    JournalModel.error.startswith(REFUSED, autoescape=True),
                ),
            ),
            JournalModel.step_key.is_not(None),
            JournalModel.started_at >= since,
        )
        return frozenset(key for key in self._session.scalars(query) if key)

    def refused_step_keys(self, installation_id: str, *, since: datetime) -> frozenset[str]:
        """Plan keys of steps Stripe refused since `since` (applied nothing; spent, see
        `spent_step_keys`)."""
        query = select(JournalModel.step_key).where(
            JournalModel.installation_id == installation_id,
            JournalModel.state == JournalState.FAILED.value,
            JournalModel.error.startswith(REFUSED, autoescape=True),
            JournalModel.step_key.is_not(None),
            JournalModel.started_at >= since,
        )
        return frozenset(key for key in self._session.scalars(query) if key)

    def _finish(
        self,
        idempotency_key: str,
        *,
        state: JournalState,
        stripe_id: str | _Keep | None,
        error: str | None,
        request_id: str | None,
    ) -> JournalRecord | None:
        """Finish a step that is not done yet, and answer its row; None when it is done
        already or unknown (the caller tells which). The state guard makes a concurrent writer
        that already finished the step win cleanly."""
        params: dict[str, Any] = {
            "p_key": idempotency_key,
            "p_done": JournalState.DONE.value,
            "p_state": state.value,
            "p_error": error,
            "p_request_id": request_id,
            "p_finished_at": self._clock(),
        }
        statement = _FINISH_KEEPING_ID
        if not isinstance(stripe_id, _Keep):
            statement = _FINISH
            params["p_stripe_id"] = stripe_id
        updated = self._connection().execute(statement, params).first()
        return None if updated is None else _record(updated)

    def _connection(self) -> Connection:
        return self._session.connection()

    def _dialect(self) -> str:
        return "postgresql" if self._session.get_bind().dialect.name == "postgresql" else "sqlite"

    def _require(self, idempotency_key: str) -> JournalRecord:
        record = self.get(idempotency_key)
        if record is None:
            raise NotFoundError(f"no journal step with idempotency key {idempotency_key!r}")
        return record

    def _where(self, *conditions: ColumnElement[bool]) -> list[JournalRecord]:
        query = (
            select(JournalModel)
            .where(*conditions)
            .order_by(JournalModel.id)
            .execution_options(populate_existing=True)
        )
        return [_record(model) for model in self._session.scalars(query)]

"""Reconcile runs: the audit trail of who reconciled what, when, from which revision, and how."""

from __future__ import annotations

import enum
import getpass
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from billing_reconciler.store._common import Clock, utc_now
from billing_reconciler.store.errors import ConflictError, NotFoundError
from billing_reconciler.store.tables import JournalModel, RunModel


class RunMode(enum.StrEnum):
    DRY_RUN = "dry_run"
    APPLY = "apply"


class RunResult(enum.StrEnum):
    RUNNING = "running"
    NO_CHANGES = "no_changes"
    CHANGES_PENDING = "changes_pending"
    APPLIED = "applied"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    domain: str
    mode: RunMode
    actor: str
    git_revision: str | None
    desired_revision: str | None
    plan_fingerprint: str | None
    result: RunResult
    summary: Mapping[str, int]
    error: str | None
    started_at: datetime
    finished_at: datetime | None


def default_actor() -> str:
    """`user@host` of this process, for the audit trail."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, e.g. an arbitrary container uid
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _record(model: RunModel) -> RunRecord:
    return RunRecord(
        run_id=model.run_id,
        domain=model.domain,
        mode=RunMode(model.mode),
        actor=model.actor,
        git_revision=model.git_revision,
        desired_revision=model.desired_revision,
        plan_fingerprint=model.plan_fingerprint,
        result=RunResult(model.result),
        summary=dict(model.summary),
        error=model.error,
        started_at=model.started_at,
        finished_at=model.finished_at,
    )


class RunRepository:
    def __init__(self, session: Session, *, clock: Clock = utc_now) -> None:
        self._session = session
        self._clock = clock

    def start(
        self,
        *,
        domain: str,
        mode: RunMode,
        actor: str,
        git_revision: str | None = None,
        desired_revision: str | None = None,
        plan_fingerprint: str | None = None,
        run_id: str | None = None,
    ) -> str:
        """Record a run as `running` and return its id (a new UUID unless one is given)."""
        run_id = run_id or str(uuid.uuid4())
        self._session.add(
            RunModel(
                run_id=run_id,
                domain=domain,
                mode=RunMode(mode).value,
                actor=actor,
                git_revision=git_revision,
                desired_revision=desired_revision,
                plan_fingerprint=plan_fingerprint,
                result=RunResult.RUNNING.value,
                summary={},
                error=None,
                started_at=self._clock(),
                finished_at=None,
            )
        )
        self._session.flush()
        return run_id

    def finish(
        self,
        run_id: str,
        result: RunResult,
        summary: Mapping[str, int],
        error: str | None = None,
        *,
        plan_fingerprint: str | None = None,
    ) -> RunRecord:
        """Close a running run. The plan fingerprint, known only after planning, may be set here."""
        if RunResult(result) is RunResult.RUNNING:
            raise ValueError("a run finishes with a final result, not 'running'")
        values: dict[str, object] = {
            "result": RunResult(result).value,
            "summary": dict(summary),
            "error": error,
            "finished_at": self._clock(),
        }
        if plan_fingerprint is not None:
            values["plan_fingerprint"] = plan_fingerprint
        updated = self._session.execute(
            update(RunModel)
            .where(RunModel.run_id == run_id, RunModel.result == RunResult.RUNNING.value)
            .values(values)
            .returning(RunModel.run_id)
            .execution_options(synchronize_session=False)
        ).first()
        if updated is None:
            if self.get(run_id) is None:
                raise NotFoundError(f"no reconcile run {run_id!r}")
            raise ConflictError(f"reconcile run {run_id!r} has already finished")
        record = self.get(run_id)
        assert record is not None
        return record

    def abandon_running_applies(self, installation_id: str, *, domain: str, except_run: str) -> int:
        """Close `domain`'s apply runs for this installation still marked running whose
        process is gone (only the writer applies a domain, and it is the caller): failed,
        saying so. Other domains' runs may be applying right now and are never touched. A run
        is the installation's when it journaled a step for it (runs carry no installation)."""
        journaled = select(JournalModel.run_id).where(
            JournalModel.installation_id == installation_id
        )
        result = self._session.execute(
            update(RunModel)
            .where(
                RunModel.domain == domain,
                RunModel.result == RunResult.RUNNING.value,
                RunModel.mode == RunMode.APPLY.value,
                RunModel.run_id != except_run,
                RunModel.run_id.in_(journaled),
            )
            .values(
                result=RunResult.FAILED.value,
                error="abandoned: the process ended before the run finished",
                finished_at=self._clock(),
            )
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    def get(self, run_id: str) -> RunRecord | None:
        model = self._session.scalars(
            select(RunModel)
            .where(RunModel.run_id == run_id)
            .execution_options(populate_existing=True)
        ).one_or_none()
        return None if model is None else _record(model)

    def latest(self, domain: str) -> RunRecord | None:
        """The most recently started run of a domain (running or finished)."""
        runs = self._recent(limit=1, domain=domain)
        return runs[0] if runs else None

    def recent(self, limit: int = 20) -> list[RunRecord]:
        """The most recently started runs of every domain, newest first."""
        return self._recent(limit=limit, domain=None)

    def _recent(self, *, limit: int, domain: str | None) -> list[RunRecord]:
        query = (
            select(RunModel)
            .order_by(RunModel.started_at.desc(), RunModel.run_id.desc())
            .limit(limit)
            .execution_options(populate_existing=True)
        )
        if domain is not None:
            query = query.where(RunModel.domain == domain)
        return [_record(model) for model in self._session.scalars(query)]

"""`desired/` as `reconcile serve` reads it: again on every run, keeping the last valid state.

A git pull or a new ConfigMap takes effect without a restart. An invalid desired state is
reported (`status`) and the last valid one keeps being enforced: broken YAML must never read
as "everything was removed". One source is shared by every domain of the process, so they all
enforce the same revision and readiness reports one desired state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from billing_reconciler.desired import LoadResult, load_desired
from billing_reconciler.desired.state import DesiredState

_log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DesiredStatus:
    """The desired/ directory as last read."""

    valid: bool
    enforced_revision: str
    """The content revision being enforced: the last valid one."""
    errors: tuple[str, ...] = ()
    checked_at: float = 0.0


class DesiredSource:
    """`initial` is the valid state `serve` started with."""

    def __init__(
        self,
        *,
        directory: Path,
        initial: DesiredState,
        clock: Callable[[], float] = time.time,
        loader: Callable[[Path], LoadResult] = load_desired,
    ) -> None:
        self._directory = directory
        self._state = initial
        self._clock = clock
        self._loader = loader
        self._lock = threading.Lock()
        self._status = DesiredStatus(True, initial.revision, checked_at=clock())

    @property
    def current(self) -> DesiredState:
        """The state being enforced (as of the last `reload`)."""
        return self._state

    @property
    def installation_id(self) -> str:
        return self._state.config.reconcile.installation_id

    @property
    def status(self) -> DesiredStatus:
        with self._lock:
            return self._status

    def reload(self) -> DesiredState:
        """Read desired/ again; the state to enforce (the last valid one if this one is not)."""
        loaded = self._loader(self._directory)
        now = self._clock()
        problems = [str(d) for d in loaded.errors]
        state = loaded.state
        if state is not None and state.config.reconcile.installation_id != self.installation_id:
            # The leader lock and every marker are per installation: switching needs a restart.
            problems.append(
                "billing.yaml: reconcile.installation_id changed from "
                f"{self.installation_id!r} to {state.config.reconcile.installation_id!r}; "
                "restart serve to switch installations"
            )
        if state is not None and not problems:
            if state.revision != self._state.revision:
                _log.info("desired state changed", revision=state.revision)
            self._state = state
            self._set_status(DesiredStatus(True, state.revision, checked_at=now))
            return state
        self._set_status(DesiredStatus(False, self._state.revision, tuple(problems), now))
        _log.error(
            "desired/ is invalid: enforcing the last valid state",
            enforced_revision=self._state.revision,
            errors=len(problems),
            first_error=problems[0] if problems else None,
        )
        return self._state

    def _set_status(self, status: DesiredStatus) -> None:
        with self._lock:
            self._status = status

"""The emulator clock: wall time plus an operator-controlled offset.

Everything time-based (`created`, idempotency-key expiry, signature timestamps) reads this
clock, so tests move time with `/_emulator/clock` instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class Clock:
    """Wall-clock time shifted by an offset the operator sets or advances."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()
        # Earliest due moment per sweep name (None: nothing due); a name absent is unknown.
        self.due: dict[str, int | None] = {}

    def now_float(self) -> float:
        """Emulator time in (fractional) Unix seconds."""
        with self._lock:
            return time.time() + self._offset

    def now(self) -> int:
        """Emulator time in whole Unix seconds (what `created` fields hold)."""
        return int(self.now_float())

    def set_time(self, timestamp: float) -> None:
        """Jump to `timestamp`; time keeps flowing from there."""
        with self._lock:
            self._offset = timestamp - time.time()

    def advance(self, seconds: float) -> None:
        """Move time forward (or back, with a negative value)."""
        with self._lock:
            self._offset += seconds

    def reset(self) -> None:
        """Back to wall time (and forget the sweeps' due moments: the state was emptied)."""
        with self._lock:
            self._offset = 0.0
            self.due.clear()

    @property
    def offset(self) -> float:
        """Seconds between emulator time and wall time (persisted with the state)."""
        with self._lock:
            return self._offset


# --- time sweeps ----------------------------------------------------------------------------
#
# Work that falls due when emulator time passes a moment (a checkout session's `expires_at`,
# a subscription schedule's future `start_date` for a customer without a test clock) is done
# by a sweep: `fn(ctx) -> next due moment or None`, registered by name in `SWEEPS` by its
# resource module. `run_sweeps(emulator)` runs the sweeps whose earliest due moment (kept in
# `Clock.due`, so a sweep costs nothing until something is due) has passed; the operator's
# clock control runs it after every move, and request handling may run it on arrival.

SWEEPS: dict[str, Callable[[Any], int | None]] = {}


def note_due(clock: Clock, name: str, at: int) -> None:
    """Something of sweep `name` falls due at `at` (keeps the earliest moment)."""
    with clock._lock:
        if name in clock.due:
            current = clock.due[name]
            clock.due[name] = at if current is None else min(current, at)


def run_sweeps(emulator: Any) -> None:
    """Run every sweep that is due (or whose due moment is unknown, e.g. after a restore or
    reset) under the emulator lock, with a context at the emulator clock."""
    clock: Clock = emulator.clock
    now = clock.now()
    with clock._lock:
        pending = [name for name in SWEEPS if _is_due(clock.due, name, now)]
    if not pending:
        return
    from stripe_emulator.core import RequestContext
    from stripe_emulator.ids import new_request_id

    with emulator.lock:
        ctx = RequestContext(emulator, new_request_id(), None, "/_emulator/clock")
        for name in pending:
            following = SWEEPS[name](ctx)
            with clock._lock:
                clock.due[name] = following
    if ctx.events:
        emulator.changed()


def _is_due(due: dict[str, int | None], name: str, now: int) -> bool:
    if name not in due:
        return True  # unknown: the sweep finds out
    when = due[name]
    return when is not None and when <= now

"""The emulator clock: wall time plus an operator-controlled offset.

Everything time-based (`created`, idempotency-key expiry, signature timestamps) reads this
clock, so tests move time with `/_emulator/clock` instead of sleeping.
"""

from __future__ import annotations

import threading
import time


class Clock:
    """Wall-clock time shifted by an offset the operator sets or advances."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

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
        """Back to wall time."""
        with self._lock:
            self._offset = 0.0

    @property
    def offset(self) -> float:
        """Seconds between emulator time and wall time (persisted with the state)."""
        with self._lock:
            return self._offset

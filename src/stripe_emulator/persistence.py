"""Optional persistence of the emulator state to a JSON file (`--state FILE`).

The file is loaded at start and rewritten atomically (temp file + rename) shortly after each
mutation — coalesced, so a burst of writes costs one save — and once more at shutdown. The
demo's second run therefore sees the objects of the first.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

_COALESCE_SECONDS = 0.2


class StateFile:
    """Saves snapshots produced by `snapshot()` to `path`, at most every 0.2 s."""

    def __init__(self, path: Path, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.path = path
        self._snapshot = snapshot
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when the file does not exist yet."""
        if not self.path.exists():
            return None
        data: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        return data

    def mark_dirty(self) -> None:
        """Schedule a save (the snapshot callable takes the emulator's lock)."""
        with self._lock:
            if self._timer is None:
                self._timer = threading.Timer(_COALESCE_SECONDS, self._timer_fired)
                self._timer.daemon = True
                self._timer.start()

    def _timer_fired(self) -> None:
        with self._lock:
            self._timer = None
        self.save()

    def save(self) -> None:
        """Write the current state now."""
        text = json.dumps(self._snapshot(), separators=(",", ":"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, self.path)

    def close(self) -> None:
        """Cancel any pending timer and save one last time."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        self.save()

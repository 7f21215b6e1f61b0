"""Optional persistence of the emulator state to a JSON file (`--state FILE`).

The file is loaded at start and rewritten atomically (temp file, fsync, rename, fsync of the
directory). An API write is answered only once a save that includes it is on disk
(`wait_saved`, called by the pipeline before it sends the response): writes that arrive
while a save runs are covered together by the next one (group commit), so concurrent
clients share saves. Changes made outside API requests (operator controls, sweeps) are
saved shortly after (coalesced, 0.2 s), and once more at shutdown. The demo's second run
therefore sees the objects of the first, and an acknowledged write survives `kill -9`.
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


class StateFileError(OSError):
    """The state file exists but cannot be loaded. An `OSError` with `strerror` and
    `filename`, so a command line reports it in one line naming the file."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(None, f"not a valid emulator state file ({problem})", str(path))


class StateFile:
    """Saves the JSON text `snapshot()` produces to `path`."""

    def __init__(self, path: Path, snapshot: Callable[[], str]) -> None:
        self.path = path
        self._snapshot = snapshot
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        # Generations: every `mark_dirty` is one; `_saved` is the last one a completed save
        # covers. One thread saves at a time (`_saving`), the others wait on `_done`.
        self._dirty = 0
        self._saved = 0
        self._saving = False
        self._done = threading.Condition(self._lock)

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when the file does not exist yet."""
        if not self.path.exists():
            return None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise StateFileError(self.path, str(error)) from None
        if not isinstance(data, dict):
            raise StateFileError(self.path, "not a JSON object")
        return data

    def mark_dirty(self) -> int:
        """Note a change and schedule a save (the snapshot callable takes the emulator's
        lock); returns the change's generation for `wait_saved`."""
        with self._lock:
            self._dirty += 1
            if self._timer is None:
                self._timer = threading.Timer(_COALESCE_SECONDS, self._timer_fired)
                self._timer.daemon = True
                self._timer.start()
            return self._dirty

    @property
    def dirty_generation(self) -> int:
        """The latest change's generation."""
        with self._lock:
            return self._dirty

    def _timer_fired(self) -> None:
        with self._lock:
            self._timer = None
            target = self._dirty
        self.wait_saved(target)

    def wait_saved(self, generation: int) -> None:
        """Return once a save covering change `generation` is on disk (saving now if no
        other thread is; one save covers every change noted before it took its snapshot)."""
        with self._lock:
            while self._saved < generation:
                if self._saving:
                    self._done.wait()
                    continue
                self._saving = True
                target = self._dirty
                self._lock.release()
                try:
                    self._write()
                finally:
                    self._lock.acquire()
                    self._saving = False
                    self._done.notify_all()
                self._saved = max(self._saved, target)

    def save(self) -> None:
        """Write the current state now."""
        with self._lock:
            self._dirty += 1
            generation = self._dirty
        self.wait_saved(generation)

    def _write(self) -> None:
        text = self._snapshot()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def close(self) -> None:
        """Cancel any pending timer and save one last time."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        self.save()

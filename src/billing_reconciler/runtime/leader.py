"""Single writer: only the replica holding the leader lock applies plans (DESIGN §11).

The lock is per installation id, so two installations sharing one database elect separate
leaders.

- **PostgreSQL**: a session-level advisory lock (`pg_try_advisory_lock`) held on a dedicated
  connection that does nothing else. The server releases it the moment that connection ends,
  so a killed leader hands over as soon as a follower asks again. TCP keepalives on both sides
  bound how long a leader that vanished from the network (no FIN, no RST) keeps it.
- **SQLite**: an exclusive `flock` on `<database>.leader.lock`, released by the kernel when the
  process dies. (An in-memory database is private to its process, which always leads.)

`Leadership.check()` re-verifies the lock itself (the connection answers and `pg_locks` still
lists our lock; the lock file is still the one we locked) and is called before every write
batch: a leader that lost its lock stops writing at once instead of at its next periodic
check. Followers retry acquisition every few seconds.

Who leads is also written to the store's lease table, for `reconcile status`; that row is
bookkeeping only, never what decides leadership.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Protocol

import structlog
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from billing_reconciler.store import LeaseRepository, Store

_log = structlog.get_logger(__name__)

DEFAULT_RETRY_SECONDS = 2.0
DEFAULT_CHECK_SECONDS = 2.0

# Keepalive probes on the lock connection: a peer that disappeared without closing the
# socket is noticed after about idle + interval * count seconds (here 10 + 5 * 3 = 25).
KEEPALIVE_IDLE_SECONDS = 10
KEEPALIVE_INTERVAL_SECONDS = 5
KEEPALIVE_COUNT = 3

_HELD = text(
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
    "AND pid = pg_backend_pid() AND granted "
    "AND classid::bigint = :high AND objid::bigint = :low AND objsubid = 1)"
)


def lease_name(installation_id: str) -> str:
    return f"leader/{installation_id}"


def lock_key(installation_id: str) -> int:
    """A stable, non-negative 63-bit advisory lock key for an installation."""
    digest = hashlib.sha256(f"billing-reconciler/leader/{installation_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


class LeaderLock(Protocol):
    """A lock at most one process holds. Implementations are not thread-safe on their own."""

    @property
    def description(self) -> str: ...

    def try_acquire(self) -> bool:
        """Take the lock if it is free (never waits); True when we hold it afterwards."""
        ...

    def still_held(self) -> bool:
        """Verify, against the lock's owner of record, that we still hold it."""
        ...

    def release(self) -> None: ...

    def close(self) -> None:
        """Release, and free whatever the lock holds open."""
        ...


class PostgresAdvisoryLock:
    """`pg_try_advisory_lock(key)` on a connection of its own (see the module docstring)."""

    def __init__(self, url: URL, key: int) -> None:
        self._key = key
        self._engine: Engine = create_engine(
            url,
            poolclass=NullPool,
            connect_args={
                "application_name": "billing-reconciler-leader",
                "connect_timeout": 5,
                "keepalives": 1,
                "keepalives_idle": KEEPALIVE_IDLE_SECONDS,
                "keepalives_interval": KEEPALIVE_INTERVAL_SECONDS,
                "keepalives_count": KEEPALIVE_COUNT,
                # The server's side of the same probes, so it frees the lock of a vanished
                # leader instead of waiting for the operating system's two-hour default.
                "options": (
                    f"-c tcp_keepalives_idle={KEEPALIVE_IDLE_SECONDS} "
                    f"-c tcp_keepalives_interval={KEEPALIVE_INTERVAL_SECONDS} "
                    f"-c tcp_keepalives_count={KEEPALIVE_COUNT} "
                    # A lock check never waits long: it runs before every write step.
                    "-c statement_timeout=5000"
                ),
            },
        )
        self._connection: Connection | None = None

    @property
    def description(self) -> str:
        return f"postgresql advisory lock {self._key}"

    @property
    def backend_pid(self) -> int | None:
        """The server process of the lock connection (tests terminate it)."""
        if self._connection is None:
            return None
        pid = self._connection.execute(text("SELECT pg_backend_pid()")).scalar()
        return int(pid) if pid is not None else None

    def try_acquire(self) -> bool:
        if self._connection is not None:
            return self.still_held()
        try:
            connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except Exception as error:
            _log.warning("leader lock: cannot connect", error=type(error).__name__)
            return False
        try:
            acquired = connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}
            ).scalar()
        except Exception as error:
            _log.warning("leader lock: acquisition failed", error=type(error).__name__)
            _close_quietly(connection)
            return False
        if not acquired:
            _close_quietly(connection)
            return False
        self._connection = connection
        return True

    def still_held(self) -> bool:
        if self._connection is None:
            return False
        try:
            held = self._connection.execute(
                _HELD, {"high": self._key >> 32, "low": self._key & 0xFFFF_FFFF}
            ).scalar()
        except Exception as error:
            _log.warning("leader lock: connection lost", error=type(error).__name__)
            held = False
        if not held:
            self._drop()
        return bool(held)

    def release(self) -> None:
        if self._connection is None:
            return
        with contextlib.suppress(Exception):
            self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
        self._drop()

    def close(self) -> None:
        self.release()
        self._engine.dispose()

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            _close_quietly(connection)


def _close_quietly(connection: Connection) -> None:
    with contextlib.suppress(Exception):
        connection.invalidate()
    with contextlib.suppress(Exception):
        connection.close()


class FileLock:
    """An exclusive, non-blocking `flock` on `path` (created if missing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def description(self) -> str:
        return f"file lock {self.path}"

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return self.still_held()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        # For a human looking at the file; the lock itself is the flock.
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def still_held(self) -> bool:
        if self._fd is None:
            return False
        # Someone deleting or replacing the file would let another process lock a new one.
        try:
            held = os.fstat(self._fd).st_ino == os.stat(self.path).st_ino
        except OSError:
            held = False
        if not held:
            self.release()
        return held

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def close(self) -> None:
        self.release()


class ProcessLock:
    """For an in-memory SQLite store, which no other process can reach: always held."""

    description = "in-process (in-memory store)"

    def __init__(self) -> None:
        self._held = False

    def try_acquire(self) -> bool:
        self._held = True
        return True

    def still_held(self) -> bool:
        return self._held

    def release(self) -> None:
        self._held = False

    def close(self) -> None:
        self.release()


def leader_lock_for(store: Store, installation_id: str) -> LeaderLock:
    """The lock that fits the store's backend."""
    url = store.engine.url
    if store.backend == "postgresql":
        return PostgresAdvisoryLock(url, lock_key(installation_id))
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return ProcessLock()
    return FileLock(Path(f"{database}.leader.lock"))


class Leadership:
    """Holds or pursues the leader lock; `check()` before every write batch.

    `step()` is one round (acquire if follower; verify and renew the lease if leader); the
    background thread started by `start()` runs it every `retry_seconds`/`check_seconds`.
    `on_change(is_leader)` is called on every transition, from whichever thread noticed it.

    `once=True` is for a one-shot writer (a CLI apply): after losing the lock it never takes
    it again, since another writer may have written in between and its plan is stale.
    """

    def __init__(
        self,
        lock: LeaderLock,
        *,
        store: Store,
        installation_id: str,
        holder: str,
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
        check_seconds: float = DEFAULT_CHECK_SECONDS,
        on_change: Callable[[bool], None] | None = None,
        once: bool = False,
    ) -> None:
        self.lock = lock
        self.holder = holder
        self._store = store
        self._name = lease_name(installation_id)
        self._retry_seconds = retry_seconds
        self._check_seconds = check_seconds
        # How long `status` keeps calling a lease live without a renewal.
        self._lease_ttl = timedelta(seconds=max(10.0, 5 * check_seconds))
        self._on_change = on_change
        self._once = once
        self._mutex = threading.Lock()
        self._leader = False
        self._lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def is_leader(self) -> bool:
        """The last known state (no I/O); use `check()` before writing."""
        return self._leader

    def check(self) -> bool:
        """Re-verify the lock now; a lost lock makes this replica a follower at once."""
        with self._mutex:
            if not self._leader:
                return False
            held = self.lock.still_held()
        if not held:
            self._transition(False)
        return held

    def step(self) -> bool:
        """One round of the election; True while leader."""
        if self._stop.is_set() or (self._once and self._lost):
            return False
        if self.check() if self._leader else self._try_acquire():
            self._record_lease()
            return True
        return False

    def _try_acquire(self) -> bool:
        with self._mutex:
            acquired = self.lock.try_acquire()
        if acquired:
            self._transition(True)
        return acquired

    def _transition(self, leader: bool) -> None:
        with self._mutex:
            if self._leader == leader:
                return
            self._leader = leader
            self._lost = self._lost or not leader
        if leader:
            _log.info("became leader", lock=self.lock.description, holder=self.holder)
        else:
            _log.warning("lost leadership: writing stops", lock=self.lock.description)
        if self._on_change is not None:
            self._on_change(leader)

    def _record_lease(self) -> None:
        try:
            with self._store.session() as session:
                LeaseRepository(session).record(self._name, self.holder, self._lease_ttl)
        except Exception as error:
            # Bookkeeping only: the lock, not this row, decides who writes.
            _log.warning("leader lease not recorded", error=type(error).__name__)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                leader = self.step()
            except Exception:
                _log.exception("leader election round failed")
                leader = self._leader
            self._stop.wait(self._check_seconds if leader else self._retry_seconds)

    def stop(self) -> None:
        """Stop pursuing the lock and release it (and its lease) if held."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._mutex:
            was_leader, self._leader = self._leader, False
            self.lock.close()
        if was_leader:
            self._release_lease()
            _log.info("released leadership", lock=self.lock.description)
            if self._on_change is not None:
                self._on_change(False)

    def _release_lease(self) -> None:
        try:
            with self._store.session() as session:
                LeaseRepository(session).release(self._name, self.holder)
        except Exception as error:
            _log.warning("leader lease not released", error=type(error).__name__)


def default_holder(actor: str) -> str:
    """How the lease names this process: `user@host pid N`."""
    return f"{actor} pid {os.getpid()}"

"""The leader lock on a real PostgreSQL server and on a SQLite file.

Election rounds are driven by hand (`Leadership.step()`), so nothing waits on a timer.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from billing_reconciler.runtime.leader import (
    FileLock,
    Leadership,
    PostgresAdvisoryLock,
    ProcessLock,
    leader_lock_for,
    lease_name,
    lock_key,
)
from billing_reconciler.store import LeaseRepository, Store

INSTALLATION = "acme-test"


def leadership(store: Store, holder: str, changes: list[bool] | None = None) -> Leadership:
    return Leadership(
        leader_lock_for(store, INSTALLATION),
        store=store,
        installation_id=INSTALLATION,
        holder=holder,
        on_change=None if changes is None else changes.append,
    )


def lease_holder(store: Store) -> str | None:
    with store.session() as session:
        lease = LeaseRepository(session).current(lease_name(INSTALLATION))
    return None if lease is None else lease.holder


def terminate(url: str, pid: int) -> None:
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


@pytest.mark.postgres
def test_two_candidates_on_postgres_elect_exactly_one(pg_store: Store) -> None:
    first_changes: list[bool] = []
    first = leadership(pg_store, "first", first_changes)
    second = leadership(pg_store, "second")
    try:
        assert isinstance(first.lock, PostgresAdvisoryLock)
        assert first.step() is True
        assert second.step() is False
        assert second.step() is False
        assert first.step() is True
        assert (first.check(), second.check()) == (True, False)
        assert lease_holder(pg_store) == "first"
        assert first_changes == [True]
    finally:
        first.stop()
        second.stop()
    assert first_changes == [True, False]
    assert lease_holder(pg_store) is None


@pytest.mark.postgres
def test_killing_the_holders_connection_hands_over(
    pg_store: Store, postgres_database_url: str
) -> None:
    changes: list[bool] = []
    first = leadership(pg_store, "first", changes)
    second = leadership(pg_store, "second")
    try:
        assert first.step()
        assert not second.step()
        assert isinstance(first.lock, PostgresAdvisoryLock)
        pid = first.lock.backend_pid
        assert pid is not None
        terminate(postgres_database_url, pid)

        # The very next check before a write sees it: writing stops at once.
        assert first.check() is False
        assert changes == [True, False]
        assert second.step() is True
        assert lease_holder(pg_store) == "second"
        assert first.step() is False, "the old holder is now a follower"
    finally:
        first.stop()
        second.stop()


@pytest.mark.postgres
def test_installations_elect_separate_leaders(pg_store: Store) -> None:
    url = pg_store.engine.url
    acme = PostgresAdvisoryLock(url, lock_key("acme"))
    other = PostgresAdvisoryLock(url, lock_key("other"))
    rival = PostgresAdvisoryLock(url, lock_key("acme"))
    try:
        assert acme.try_acquire()
        assert other.try_acquire()
        assert not rival.try_acquire()
        acme.release()
        assert rival.try_acquire()
        assert rival.still_held()
    finally:
        for lock in (acme, other, rival):
            lock.close()


@pytest.mark.postgres
def test_a_dead_process_frees_the_postgres_lock(
    pg_store: Store, postgres_database_url: str
) -> None:
    """SIGKILL: no unlock is ever sent; the server frees the lock when the socket closes."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from sqlalchemy.engine import make_url
                from billing_reconciler.runtime.leader import PostgresAdvisoryLock, lock_key
                lock = PostgresAdvisoryLock(make_url(sys.argv[1]), lock_key({INSTALLATION!r}))
                assert lock.try_acquire()
                print("held", flush=True)
                time.sleep(60)
                """
            ),
            postgres_database_url,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    lock = PostgresAdvisoryLock(pg_store.engine.url, lock_key(INSTALLATION))
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        assert not lock.try_acquire()
        holder.kill()
        holder.wait(timeout=10)
        assert _eventually(lock.try_acquire)
    finally:
        holder.kill()
        holder.wait(timeout=10)
        lock.close()


def _eventually(condition: Callable[[], bool], attempts: int = 100) -> bool:
    for _ in range(attempts):
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_sqlite_uses_a_file_lock_beside_the_database(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path}/state.db")
    try:
        first = leadership(store, "first")
        second = leadership(store, "second")
        assert isinstance(first.lock, FileLock)
        assert first.lock.path == tmp_path / "state.db.leader.lock"
        try:
            assert first.step()
            assert not second.step()
            first.stop()
            assert second.step()
            assert lease_holder(store) == "second"
        finally:
            first.stop()
            second.stop()
    finally:
        store.close()


def test_a_file_lock_is_held_by_one_process_only(tmp_path: Path) -> None:
    path = tmp_path / "leader.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, pathlib\n"
            "from billing_reconciler.runtime.leader import FileLock\n"
            "lock = FileLock(pathlib.Path(sys.argv[1]))\n"
            "assert lock.try_acquire()\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    lock = FileLock(path)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        assert not lock.try_acquire()
        holder.kill()
        holder.wait(timeout=10)
        assert lock.try_acquire(), "the kernel frees a dead process's flock"
    finally:
        holder.kill()
        holder.wait(timeout=10)
        lock.close()


def test_a_replaced_lock_file_is_no_longer_held(tmp_path: Path) -> None:
    path = tmp_path / "leader.lock"
    lock = FileLock(path)
    assert lock.try_acquire()
    path.unlink()
    assert not lock.still_held()
    assert lock.try_acquire()
    lock.close()


def test_an_in_memory_store_always_leads() -> None:
    store = Store.open("sqlite://")
    try:
        assert isinstance(leader_lock_for(store, INSTALLATION), ProcessLock)
    finally:
        store.close()

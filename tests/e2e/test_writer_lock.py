"""One writer for every writer (DESIGN §11): a CLI apply takes the lock `serve` leads with,
refuses (naming the holder) while another process holds it, waits for it with
`--wait-lock`, and refuses while applying is suspended unless `--ignore-suspension`.

Real processes throughout: `reconcile serve`, `reconcile` applies, and this test process
holding the PostgreSQL advisory lock through the same classes `serve` uses.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from billing_reconciler.runtime.leader import Leadership, leader_lock_for
from billing_reconciler.store import ControllerStateRepository, LeaseRepository, Store
from tests.e2e.cli import REPO, reconcile
from tests.e2e.test_serve import INSTALLATION, Serve, eventually, lease_pid
from tests.fixtures.emulator import TEST_API_KEY, EmulatorHandle

pytestmark = pytest.mark.timeout(120)

APPLY = ("--emulator", "--auto-approve")
SINCE = r"since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def sqlite_url(workdir: Path) -> str:
    (workdir / ".billing").mkdir(exist_ok=True)
    return f"sqlite:///{workdir / '.billing' / 'state.db'}"


@pytest.fixture
def pg_env(postgres_database_url: str) -> dict[str, str]:
    return {"BILLING_DATABASE_URL": postgres_database_url}


@pytest.fixture
def holder(pg_store: Store) -> Iterator[Leadership]:
    """This test process, holding the installation's advisory lock as a serve replica would."""
    leadership = Leadership(
        leader_lock_for(pg_store, INSTALLATION),
        store=pg_store,
        installation_id=INSTALLATION,
        holder="ops@bastion pid 4242",
    )
    assert leadership.step(), "the lock should be free at the start"
    try:
        yield leadership
    finally:
        leadership.stop()


def nothing_applied(workdir: Path, env: dict[str, str]) -> bool:
    still = reconcile("--dry-run", "--emulator", cwd=workdir, env=env)
    return still.returncode == 2


@pytest.fixture
def launch(workdir: Path, emulator: EmulatorHandle) -> Iterator[Callable[[str], Serve]]:
    started: list[Serve] = []

    def start(database_url: str) -> Serve:
        serve = Serve(workdir=workdir, name="serve", database_url=database_url, emulator=emulator)
        started.append(serve)
        return serve

    yield start
    for serve in started:
        serve.stop()


def test_a_cli_apply_is_refused_while_serve_leads_naming_it(
    workdir: Path, launch: Callable[[str], Serve], emulator: EmulatorHandle
) -> None:
    url = sqlite_url(workdir)
    serve = launch(url)
    serve.wait_healthy()
    store = Store.open(url)
    try:
        eventually(lambda: lease_pid(store) == serve.process.pid, timeout=20, what="serve to lead")
    finally:
        store.close()
    env = {
        "STRIPE_API_KEY": TEST_API_KEY,
        "STRIPE_API_BASE": emulator.url,
        "BILLING_DATABASE_URL": url,
    }

    refused = reconcile("--auto-approve", cwd=workdir, env=env)
    assert refused.returncode == 1, refused.stderr
    named = rf"another writer holds the file lock \S+: .*pid {serve.process.pid} {SINCE}"
    assert re.search(named, refused.stderr), refused.stderr
    assert "--wait-lock" in refused.stderr
    # Refused before planning: not a single step, not even a plan.
    assert refused.stdout == ""
    assert "done:" not in refused.stderr

    saved = workdir / "plan.json"
    planned = reconcile("--dry-run", "--out", str(saved), cwd=workdir, env=env)
    assert planned.returncode in (0, 2), planned.stderr  # a dry run needs no lock
    from_file = reconcile("--plan", str(saved), "--auto-approve", cwd=workdir, env=env)
    assert from_file.returncode == 1
    assert f"pid {serve.process.pid}" in from_file.stderr
    assert "done:" not in from_file.stderr


@pytest.mark.postgres
def test_on_postgresql_another_holder_of_the_advisory_lock_makes_an_apply_refuse(
    workdir: Path, pg_env: dict[str, str], holder: Leadership
) -> None:
    refused = reconcile(*APPLY, cwd=workdir, env=pg_env)
    assert refused.returncode == 1, refused.stderr
    assert re.search(
        rf"another writer holds the postgresql advisory lock \d+: ops@bastion pid 4242 {SINCE}",
        refused.stderr,
    )
    assert nothing_applied(workdir, pg_env)


@pytest.mark.postgres
def test_wait_lock_applies_once_the_holder_releases(
    workdir: Path, pg_env: dict[str, str], holder: Leadership, pg_store: Store
) -> None:
    stderr_path = workdir / "apply.stderr"
    with stderr_path.open("w") as stderr:
        waiting = subprocess.Popen(
            [sys.executable, "-m", "billing_reconciler", *APPLY, "--wait-lock", "30"],
            cwd=workdir,
            env={**_clean_env(), **pg_env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            # Release only once the CLI says it waits, however slowly it started.
            eventually(
                lambda: (
                    "waiting up to 30 s for the writer lock held by ops@bastion pid 4242"
                    in stderr_path.read_text()
                ),
                timeout=30,
                what="the CLI to wait for the lock",
            )
            assert waiting.poll() is None, "still waiting, not refused"
            holder.stop()
        finally:
            out, _ = waiting.communicate(timeout=90)
    assert waiting.returncode == 0, stderr_path.read_text()
    assert "Re-plan: No changes." in out
    with pg_store.session() as session:
        # The CLI released its lease with its lock.
        assert LeaseRepository(session).current(f"leader/{INSTALLATION}") is None


@pytest.mark.postgres
def test_wait_lock_gives_up_after_its_time(
    workdir: Path, pg_env: dict[str, str], holder: Leadership
) -> None:
    started = time.monotonic()
    refused = reconcile(*APPLY, "--wait-lock", "1.5", cwd=workdir, env=pg_env)
    assert refused.returncode == 1, refused.stderr
    assert 1.5 <= time.monotonic() - started < 20
    assert "waited 1.5 s" in refused.stderr
    assert "ops@bastion pid 4242" in refused.stderr


@pytest.mark.postgres
def test_status_and_a_second_apply_name_a_running_cli_apply(
    workdir: Path, pg_env: dict[str, str], pg_store: Store, emulator: EmulatorHandle
) -> None:
    # A slow Stripe (1 s a request) until the second apply has been refused, so the first
    # apply is still running then even on a loaded machine; then fast again.
    emulator.control.set_latency(1000)
    env = {**pg_env, "STRIPE_API_KEY": TEST_API_KEY, "STRIPE_API_BASE": emulator.url}
    first = start_apply(workdir, env)
    try:

        def cli_lease() -> str | None:
            with pg_store.session() as session:
                lease = LeaseRepository(session).current(f"leader/{INSTALLATION}")
            return lease.holder if lease and lease.holder.startswith("reconcile apply") else None

        holder = eventually(cli_lease, timeout=20, what="the CLI apply's lease")
        assert holder.endswith(f"pid {first.pid}")
        status = reconcile("status", cwd=workdir, env=pg_env)
        assert f"Leader: {holder} since" in status.stdout
        second = reconcile("--auto-approve", cwd=workdir, env=env)
        assert second.returncode == 1
        assert f"pid {first.pid}" in second.stderr
    finally:
        emulator.control.set_latency(0)
        out, err = first.communicate(timeout=90)
    assert first.returncode == 0, err
    assert "Re-plan: No changes." in out


def start_apply(workdir: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """`reconcile --auto-approve` in the background, its output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "billing_reconciler", "--auto-approve"],
        cwd=workdir,
        env={**_clean_env(), **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "BILLING_"))}


def test_a_suspension_refuses_an_apply_unless_ignored_and_dry_runs_still_plan(
    workdir: Path,
) -> None:
    env = {"BILLING_DATABASE_URL": sqlite_url(workdir)}
    # `suspend` never creates a store: a first dry run does (and records its plan).
    first = reconcile("--dry-run", "--emulator", cwd=workdir, env=env)
    assert first.returncode == 2, first.stderr
    suspended = reconcile("suspend", "--reason", "quarter-end freeze", cwd=workdir, env=env)
    assert suspended.returncode == 0, suspended.stderr

    refused = reconcile(*APPLY, cwd=workdir, env=env)
    assert refused.returncode == 1
    assert re.search(rf"applying is suspended by \S+ {SINCE}: quarter-end freeze", refused.stderr)
    assert "--ignore-suspension" in refused.stderr

    planned = reconcile("--dry-run", "--emulator", cwd=workdir, env=env)
    assert planned.returncode == 2, planned.stderr  # still pending: nothing was applied
    assert "quarter-end freeze" in planned.stderr

    applied = reconcile(*APPLY, "--ignore-suspension", cwd=workdir, env=env)
    assert applied.returncode == 0, applied.stderr
    assert "ignoring it (--ignore-suspension)" in applied.stderr
    assert "Re-plan: No changes." in applied.stdout
    store = Store.open(env["BILLING_DATABASE_URL"])
    try:
        with store.session() as session:
            assert ControllerStateRepository(session).suspension() is not None
    finally:
        store.close()


def test_demo_on_a_shared_state_dir_takes_the_writer_lock(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    store = Store.open(f"sqlite:///{state_dir / 'state.db'}")
    leadership = Leadership(
        leader_lock_for(store, INSTALLATION),
        store=store,
        installation_id=INSTALLATION,
        holder="ops@bastion pid 4242",
    )
    try:
        assert leadership.step()
        done = reconcile("demo", "--state-dir", str(state_dir), cwd=REPO)
        assert done.returncode == 1, done.stderr
        assert "another writer holds the file lock" in done.stderr
        assert "ops@bastion pid 4242" in done.stderr
        assert "Apply complete" not in done.stdout
    finally:
        leadership.stop()
        store.close()


@pytest.mark.postgres
def test_an_apply_that_loses_its_lock_stops_and_never_takes_it_back(
    workdir: Path, postgres_database_url: str, pg_store: Store, emulator: EmulatorHandle
) -> None:
    emulator.control.set_latency(300)  # observation alone takes seconds: time to cut in
    env = {
        "BILLING_DATABASE_URL": postgres_database_url,
        "STRIPE_API_KEY": TEST_API_KEY,
        "STRIPE_API_BASE": emulator.url,
    }
    first = start_apply(workdir, env)
    try:

        def cli_leads() -> bool:
            with pg_store.session() as session:
                lease = LeaseRepository(session).current(f"leader/{INSTALLATION}")
            return lease is not None and lease.holder.endswith(f"pid {first.pid}")

        eventually(cli_leads, timeout=20, what="the CLI apply's lease")
        admin = postgres_database_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(admin, autocommit=True) as connection:
            killed = connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'billing-reconciler-leader' "
                "AND datname = current_database()"
            ).fetchall()
        assert killed == [(True,)]
    finally:
        out, err = first.communicate(timeout=90)
        emulator.control.set_latency(0)
    assert first.returncode == 1, err
    assert "lost the writer lock after" in err
    assert "Apply complete" not in out
    done = [line for line in err.splitlines() if line.strip().startswith("done:")]
    assert len(done) <= 16, "it stopped with the steps in flight, not at the end"

"""`reconcile status`, `suspend` and `resume` as an operator runs them (SQLite, no Stripe)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from billing_reconciler.store import (
    AccountRepository,
    JournalEntry,
    JournalRepository,
    LedgerRepository,
    RunMode,
    RunRepository,
    Store,
    default_sqlite_url,
)
from tests.e2e.cli import reconcile


def test_status_suspend_and_resume_of_a_store_an_apply_created(workdir: Path) -> None:
    applied = reconcile("--emulator", "--auto-approve", cwd=workdir)
    assert applied.returncode == 0, applied.stderr

    done = reconcile("status", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert "Installation: acme-prod" in done.stdout
    assert "Desired state: valid" in done.stdout
    assert "Leader: none recorded" in done.stdout  # the apply released its lease
    assert "Applying: enabled" in done.stdout
    assert re.search(r"^catalog +\S+ +apply +applied ", done.stdout, re.MULTILINE), done.stdout
    assert "Ledger: OK (accounts: 1 active, 0 disabled; total of balances 50)" in done.stdout

    suspended = reconcile("suspend", "--reason", "billing incident 12", cwd=workdir)
    assert suspended.returncode == 0, suspended.stderr
    report = json.loads(reconcile("status", "--format", "json", cwd=workdir).stdout)
    assert report["suspended"]["reason"] == "billing incident 12"
    assert report["domains"]["catalog"]["last_run"]["result"] == "applied"
    assert report["pending_journal_steps"] == []

    assert reconcile("resume", cwd=workdir).stdout.strip() == "Applying resumed."
    again = reconcile("resume", cwd=workdir)
    assert again.stdout.strip() == "Applying was not suspended."
    assert (
        json.loads(reconcile("status", "--format", "json", cwd=workdir).stdout)["suspended"] is None
    )


CONTROL_COMMANDS = [
    ("status",),
    ("status", "--format", "json"),
    ("suspend", "--reason", "x"),
    ("resume",),
]
NO_STORE_ADVICE = (
    ": run `reconcile` (apply) or `reconcile serve` first, or set BILLING_DATABASE_URL"
)


def _files(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if "desired" not in path.relative_to(root).parts}


@pytest.mark.parametrize("args", CONTROL_COMMANDS, ids=" ".join)
def test_a_control_command_without_a_store_exits_1_and_creates_nothing(
    args: tuple[str, ...], workdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No store beside desired/, none at a BILLING_DATABASE_URL whose directory does not
    exist, an empty SQLite file: each says where it looked and writes nothing (fresh-user
    test T1, finding 3: they created the store, and `suspend` "suspended" a store no serve
    reads)."""
    default = reconcile(*args, cwd=workdir)
    assert default.returncode == 1, default.stdout
    assert default.stderr.strip() == (
        f"error: no store at {workdir.resolve()}/.billing/state.db{NO_STORE_ADVICE}"
    )
    assert default.stdout == ""
    assert _files(workdir) == set()

    elsewhere = tmp_path_factory.mktemp("elsewhere")
    missing = elsewhere / "no" / "such" / "dir" / "x.db"
    named = reconcile(*args, cwd=workdir, env={"BILLING_DATABASE_URL": f"sqlite:///{missing}"})
    assert named.returncode == 1, named.stdout
    assert named.stderr.strip() == f"error: no store at {missing}{NO_STORE_ADVICE}"
    assert list(elsewhere.iterdir()) == []

    empty = elsewhere / "empty.db"
    empty.touch()
    blank = reconcile(*args, cwd=workdir, env={"BILLING_DATABASE_URL": f"sqlite:///{empty}"})
    assert blank.returncode == 1, blank.stdout
    assert blank.stderr.strip() == f"error: no store at {empty}{NO_STORE_ADVICE}"
    assert list(elsewhere.iterdir()) == [empty]
    assert empty.stat().st_size == 0


@pytest.mark.parametrize("args", CONTROL_COMMANDS, ids=" ".join)
def test_a_control_command_with_a_missing_desired_directory_exits_1_and_creates_nothing(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    missing = tmp_path / "zzmissing" / "desired"
    done = reconcile(*args, "--desired", str(missing), cwd=tmp_path)
    assert done.returncode == 1, done.stdout
    assert done.stderr.strip() == f"error: no desired-state directory at {missing} (--desired DIR)"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.postgres
@pytest.mark.parametrize("args", CONTROL_COMMANDS, ids=" ".join)
def test_a_control_command_on_a_database_without_our_schema_exits_1_and_migrates_nothing(
    args: tuple[str, ...], workdir: Path, postgres_database_url: str
) -> None:
    done = reconcile(*args, cwd=workdir, env={"BILLING_DATABASE_URL": postgres_database_url})
    assert done.returncode == 1, done.stdout
    assert done.stderr.strip() == f"error: no store at {postgres_database_url}{NO_STORE_ADVICE}"
    engine = create_engine(postgres_database_url)
    try:
        with engine.connect() as connection:
            tables = connection.execute(
                text(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                )
            ).all()
    finally:
        engine.dispose()
    assert tables == []
    assert _files(workdir) == set()


def test_suspend_needs_a_reason(workdir: Path) -> None:
    done = reconcile("suspend", "--reason", "  ", cwd=workdir)
    assert done.returncode == 1
    assert "--reason" in done.stderr


def test_status_reports_an_invalid_desired_state(workdir: Path) -> None:
    Store.open(default_sqlite_url(workdir)).close()
    (workdir / "desired" / "plans" / "catalog.yaml").write_text("products: [\n")
    done = reconcile("status", "--format", "json", cwd=workdir)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["desired"]["valid"] is False
    assert report["installation_id"] == "acme-prod"


def _store_with_credits(workdir: Path) -> Store:
    """The store `status` reads, with two accounts (one disabled) holding credits."""
    store = Store.open(default_sqlite_url(workdir))
    with store.session() as session:
        accounts = AccountRepository(session)
        ledger = LedgerRepository(session)
        for org, amount in (("org-a", 500), ("org-b", 250)):
            account = accounts.create(org, name=org, email=None, currency="usd")
            ledger.credit(account.id, id=f"grant-{org}", amount=amount, source="system.awarded")
        accounts.set_state(account.id, "disabled", "closed")
    return store


def test_status_checks_a_sound_ledger(workdir: Path) -> None:
    _store_with_credits(workdir).close()

    done = reconcile("status", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert "Ledger: OK (accounts: 1 active, 1 disabled; total of balances 750)" in done.stdout

    report = json.loads(reconcile("status", "--format", "json", cwd=workdir).stdout)
    assert report["ledger"] == {
        "ok": True,
        "problems": [],
        "accounts": {"active": 1, "disabled": 1},
        "total_balance": 750,
    }


def test_status_lists_a_tampered_balance_and_exits_1(workdir: Path) -> None:
    store = _store_with_credits(workdir)
    try:
        with store.session() as session:
            account = AccountRepository(session).active_for_org("org-a")
            assert account is not None
            session.execute(
                text("UPDATE ledger_balances SET amount = 9999 WHERE account_id = :id"),
                {"id": account.id},
            )
    finally:
        store.close()
    problem = f"account {account.id}: balance 9999 but its entries sum to 500"

    done = reconcile("status", cwd=workdir)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Ledger: 1 PROBLEM(S) (accounts: 1 active, 1 disabled; total of balances" in done.stdout
    assert f"  {problem}\n" in done.stdout
    assert "Installation: acme-prod" in done.stdout  # the rest of the report still printed

    as_json = reconcile("status", "--format", "json", cwd=workdir)
    assert as_json.returncode == 1
    ledger = json.loads(as_json.stdout)["ledger"]
    assert ledger["ok"] is False
    assert ledger["problems"] == [problem]
    assert ledger["total_balance"] == 9999 + 250


def test_status_shows_pending_journal_steps_per_domain(workdir: Path) -> None:
    store = Store.open(default_sqlite_url(workdir))
    try:
        with store.session() as session:
            run_id = RunRepository(session).start(domain="catalog", mode=RunMode.APPLY, actor="t@h")
            JournalRepository(session).begin(
                JournalEntry(
                    run_id=run_id,
                    installation_id="acme-prod",
                    plan_fingerprint="fp",
                    step_index=0,
                    object_key="product/pro",
                    action="create",
                    idempotency_key="k0",
                )
            )
    finally:
        store.close()

    done = reconcile("status", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert f"  catalog: run {run_id} step 1: create product/pro" in done.stdout
    catalog_line = next(line for line in done.stdout.splitlines() if line.startswith("catalog "))
    assert catalog_line.split()[-1] == "1"

    report = json.loads(reconcile("status", "--format", "json", cwd=workdir).stdout)
    steps = report["domains"]["catalog"]["pending_journal_steps"]
    assert [(s["run_id"], s["domain"], s["object_key"]) for s in steps] == [
        (run_id, "catalog", "product/pro")
    ]
    assert report["pending_journal_steps"] == steps


def _grant(url: str, orgs_and_amounts: tuple[tuple[str, int], ...]) -> None:
    store = Store.open(url)
    try:
        with store.session() as session:
            accounts = AccountRepository(session)
            ledger = LedgerRepository(session)
            for org, amount in orgs_and_amounts:
                account = accounts.create(org, name=org, email=None, currency="usd")
                ledger.credit(account.id, id=f"big:{org}", amount=amount, source="api")
    finally:
        store.close()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_status_checks_balances_summing_past_int64(
    backend: str, workdir: Path, request: pytest.FixtureRequest
) -> None:
    """Two accounts at 2**62 credits each (the API's largest grant, fresh-user test T1,
    finding 4): on SQLite the check's SUM overflowed int64 and status blamed
    BILLING_DATABASE_URL; both backends report the exact total."""
    if backend == "postgres":
        url: str = request.getfixturevalue("postgres_database_url")
    else:
        url = default_sqlite_url(workdir)
    _grant(url, (("big-1", 2**62), ("big-2", 2**62)))
    env = {"BILLING_DATABASE_URL": url}

    done = reconcile("status", cwd=workdir, env=env)
    assert done.returncode == 0, done.stderr
    assert (
        "Ledger: OK (accounts: 2 active, 0 disabled; total of balances 9223372036854775808)"
        in done.stdout
    )
    as_json = reconcile("status", "--format", "json", cwd=workdir, env=env)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["ledger"] == {
        "ok": True,
        "problems": [],
        "accounts": {"active": 2, "disabled": 0},
        "total_balance": 2**63,
    }


def test_a_failed_query_is_not_blamed_on_the_database_url(workdir: Path) -> None:
    """The store opened, then a statement failed: the one line says a query failed, not
    that BILLING_DATABASE_URL is unusable (that is for a store that cannot be opened)."""
    store = Store.open(default_sqlite_url(workdir))
    try:
        with store.session() as session:
            session.execute(text("DROP TABLE ledger_balances"))
    finally:
        store.close()
    done = reconcile("status", cwd=workdir)
    assert done.returncode == 1, done.stdout
    assert done.stderr.strip() == (
        "error: a store query failed: (sqlite3.OperationalError) no such table: ledger_balances"
    )

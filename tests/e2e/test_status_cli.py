"""`reconcile status`, `suspend` and `resume` as an operator runs them (SQLite, no Stripe)."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import text

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


def test_status_of_a_fresh_store_then_suspend_and_resume(workdir: Path) -> None:
    fresh = reconcile("status", cwd=workdir)
    assert fresh.returncode == 0, fresh.stderr
    assert "Installation: acme-prod" in fresh.stdout
    assert "Desired state: valid" in fresh.stdout
    assert "Leader: none recorded" in fresh.stdout
    assert "Applying: enabled" in fresh.stdout
    assert "catalog       never" in fresh.stdout
    assert "Ledger: OK (accounts: 0 active, 0 disabled; total of balances 0)" in fresh.stdout

    suspended = reconcile("suspend", "--reason", "billing incident 12", cwd=workdir)
    assert suspended.returncode == 0, suspended.stderr
    report = json.loads(reconcile("status", "--format", "json", cwd=workdir).stdout)
    assert report["suspended"]["reason"] == "billing incident 12"
    assert report["domains"]["catalog"]["last_run"] is None
    assert report["pending_journal_steps"] == []

    assert reconcile("resume", cwd=workdir).stdout.strip() == "Applying resumed."
    again = reconcile("resume", cwd=workdir)
    assert again.stdout.strip() == "Applying was not suspended."
    assert (
        json.loads(reconcile("status", "--format", "json", cwd=workdir).stdout)["suspended"] is None
    )


def test_suspend_needs_a_reason(workdir: Path) -> None:
    done = reconcile("suspend", "--reason", "  ", cwd=workdir)
    assert done.returncode == 1
    assert "--reason" in done.stderr


def test_status_reports_an_invalid_desired_state(workdir: Path) -> None:
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

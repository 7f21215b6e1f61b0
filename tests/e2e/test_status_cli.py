"""`reconcile status`, `suspend` and `resume` as an operator runs them (SQLite, no Stripe)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.cli import reconcile


def test_status_of_a_fresh_store_then_suspend_and_resume(workdir: Path) -> None:
    fresh = reconcile("status", cwd=workdir)
    assert fresh.returncode == 0, fresh.stderr
    assert "Installation: acme-prod" in fresh.stdout
    assert "Desired state: valid" in fresh.stdout
    assert "Leader: none recorded" in fresh.stdout
    assert "Applying: enabled" in fresh.stdout
    assert "catalog       never" in fresh.stdout

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

"""`reconcile` as a user runs it: a real process, real exit codes, the embedded emulator."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.cli import EXAMPLE, reconcile


def test_demo_applies_then_reports_no_changes(tmp_path: Path) -> None:
    done = reconcile("demo", "--desired", str(EXAMPLE), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.split("== Run 2")
    assert "Plan: " in first
    assert "to create" in first
    assert "Apply complete" in first
    assert second.strip().endswith("No changes.")


def test_dry_run_exit_codes_follow_pending_changes(workdir: Path) -> None:
    pending = reconcile("--dry-run", "--emulator", cwd=workdir)
    assert pending.returncode == 2, pending.stderr
    assert "to create" in pending.stdout

    applied = reconcile("--emulator", "--auto-approve", cwd=workdir)
    assert applied.returncode == 0, applied.stderr
    assert "Re-plan: No changes." in applied.stdout

    clean = reconcile("--dry-run", "--emulator", cwd=workdir)
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.strip().endswith("No changes.")


def test_apply_without_a_terminal_needs_auto_approve(workdir: Path) -> None:
    refused = reconcile("--emulator", cwd=workdir)
    assert refused.returncode == 1
    assert "--auto-approve" in refused.stderr
    still_pending = reconcile("--dry-run", "--emulator", cwd=workdir)
    assert still_pending.returncode == 2


def test_json_plan_is_versioned_and_saved_plans_apply(workdir: Path) -> None:
    out = workdir / "plan.json"
    planned = reconcile(
        "--dry-run", "--emulator", "--format", "json", "--out", str(out), cwd=workdir
    )
    assert planned.returncode == 2, planned.stderr
    printed = json.loads(planned.stdout)
    assert printed["format_version"] == 1
    assert printed == json.loads(out.read_text())
    assert printed["summary"]["has_changes"] is True

    applied = reconcile("--emulator", "--plan", str(out), "--auto-approve", cwd=workdir)
    assert applied.returncode == 0, applied.stderr
    stale = reconcile("--emulator", "--plan", str(out), "--auto-approve", cwd=workdir)
    assert stale.returncode == 1
    assert "changed since the saved plan" in stale.stderr


def test_live_key_needs_confirmation_before_any_request(workdir: Path) -> None:
    key = "sk_live_" + "x" * 24 + "abcd"
    # Nothing listens on port 9: a request would fail with a connection error instead.
    env = {"STRIPE_API_KEY": key, "STRIPE_API_BASE": "http://127.0.0.1:9"}
    done = reconcile("--auto-approve", cwd=workdir, env=env)
    assert done.returncode == 1
    assert "--confirm-live" in done.stderr
    assert key not in done.stdout + done.stderr


def test_invalid_desired_state_observes_and_writes_nothing(workdir: Path) -> None:
    billing = workdir / "desired" / "billing.yaml"
    billing.write_text(billing.read_text() + "\nunknown_top_level_key: 1\n")
    done = reconcile("--dry-run", "--emulator", cwd=workdir)
    assert done.returncode == 1
    assert "billing.yaml:" in done.stderr
    assert "nothing was observed or applied" in done.stderr
    assert not (workdir / ".billing").exists()


def test_missing_key_is_a_clear_error(workdir: Path) -> None:
    done = reconcile("--dry-run", cwd=workdir)
    assert done.returncode == 1
    assert "STRIPE_API_KEY" in done.stderr


def test_dry_run_works_with_a_read_only_database_user(
    workdir: Path, postgres_database_url: str
) -> None:
    """A PR check plans against the production store through a read-only user: the plan and
    its exit code stand; only the audit row is lost, with a warning."""
    import uuid

    import psycopg

    from billing_reconciler.store import Store

    Store.open(postgres_database_url).close()  # migrated by the owner
    role = f"br_ro_{uuid.uuid4().hex[:8]}"
    database = postgres_database_url.rsplit("/", 1)[1]
    admin_url = postgres_database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
        admin.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    try:
        host = admin_url.split("@", 1)[1]
        env = {"BILLING_DATABASE_URL": f"postgresql://{role}@{host}"}
        done = reconcile("--dry-run", "--emulator", cwd=workdir, env=env)
        assert done.returncode == 2, done.stderr
        assert "to create" in done.stdout
        assert "warning: the dry run was not recorded" in done.stderr
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'REVOKE ALL ON DATABASE "{database}" FROM {role}')
            admin.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
            admin.execute(f"REVOKE USAGE ON SCHEMA public FROM {role}")
            admin.execute(f"DROP ROLE {role}")

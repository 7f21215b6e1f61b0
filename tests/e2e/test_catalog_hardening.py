"""Issue 8's defects as a user met them: the CLI against the emulator over HTTP.

The emulator runs in the test process (so the test can play the dashboard through the SDK);
`reconcile` runs as a real process pointed at it with STRIPE_API_BASE, on a SQLite store.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import stripe

from tests.e2e.cli import reconcile

KEY = "sk_test_hardening"
PRICE_LINE = "        amount: 4900\n"  # the example's team_base monthly price


def env(emulator: Any, workdir: Path, store: str = "state.db") -> dict[str, str]:
    return {
        "STRIPE_API_KEY": KEY,
        "STRIPE_API_BASE": emulator.url,
        "BILLING_DATABASE_URL": f"sqlite:///{workdir / store}",
    }


def set_amount(workdir: Path, amount: int) -> None:
    catalog = workdir / "desired" / "plans" / "catalog.yaml"
    text = re.sub(
        r"(?m)^        amount: (4900|5900)$", f"        amount: {amount}", catalog.read_text()
    )
    catalog.write_text(text)


def no_traceback(done: Any) -> None:
    assert "Traceback" not in done.stderr, done.stderr


def test_a_repeated_price_edit_is_applied_every_time(emulator: Any, workdir: Path) -> None:
    assert PRICE_LINE in (workdir / "desired" / "plans" / "catalog.yaml").read_text()
    client = stripe.StripeClient(KEY, base_addresses={"api": emulator.url})
    for amount in (4900, 5900, 4900, 5900):
        set_amount(workdir, amount)
        done = reconcile("--auto-approve", cwd=workdir, env=env(emulator, workdir))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "(replayed)" not in done.stderr
        assert "Re-plan: No changes." in done.stdout
        team = [
            p
            for p in client.v1.prices.list({"active": True, "limit": 100}).data
            if p.metadata and p.metadata.to_dict().get("br_key") == "price/team_base/monthly"
        ]
        assert [p.unit_amount for p in team] == [amount]


def test_a_look_alike_meter_refuses_the_plan_before_any_write(
    emulator: Any, workdir: Path, stripe_client: stripe.StripeClient
) -> None:
    stripe_client.v1.billing.meters.create(
        {
            "display_name": "Existing",
            "event_name": "api_requests",
            "default_aggregation": {"formula": "sum"},
        }
    )
    emulator.control.clear_requests()

    done = reconcile("--auto-approve", cwd=workdir, env=env(emulator, workdir))
    assert done.returncode == 1
    no_traceback(done)
    assert "meter/api_requests" in done.stderr + done.stdout
    assert "--adopt" in done.stderr + done.stdout
    assert emulator.control.requests(method="POST") == []  # nothing written

    dry = reconcile("--dry-run", cwd=workdir, env=env(emulator, workdir))
    assert dry.returncode == 1, dry.stdout  # a refused plan is an error, never "pending"
    assert "awaits adoption" in dry.stdout

    # Adoption converges in one apply (the meter's display name is aligned, no false drift).
    adopted = reconcile("--adopt", "--auto-approve", cwd=workdir, env=env(emulator, workdir))
    assert adopted.returncode == 0, adopted.stdout + adopted.stderr
    assert "Re-plan: No changes." in adopted.stdout
    [meter] = stripe_client.v1.billing.meters.list().data
    assert meter.display_name == "API requests (thousands)"
    clean = reconcile("--dry-run", cwd=workdir, env=env(emulator, workdir))
    assert clean.returncode == 0, clean.stdout
    assert "Drift" not in clean.stdout


def test_a_lost_store_plans_nothing_new_and_apply_converges(emulator: Any, workdir: Path) -> None:
    first = reconcile("--auto-approve", cwd=workdir, env=env(emulator, workdir))
    assert first.returncode == 0, first.stdout + first.stderr

    # A PR check with no store of its own: the plan is the full store's (none), with notices.
    empty = env(emulator, workdir, store="fresh.db")
    dry = reconcile("--dry-run", cwd=workdir, env=empty)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert dry.stdout.strip().endswith("No changes.")
    assert "drift cannot be told apart" in dry.stdout
    assert "not ours" not in dry.stdout

    emulator.control.clear_requests()
    applied = reconcile("--auto-approve", cwd=workdir, env=empty)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    no_traceback(applied)
    assert emulator.control.requests(method="POST") == []  # the store is rebuilt, Stripe untouched
    again = reconcile("--dry-run", cwd=workdir, env=empty)
    assert again.returncode == 0, again.stdout

    # A desired change with the empty store applies too.
    set_amount(workdir, 5900)
    changed = reconcile("--auto-approve", cwd=workdir, env=env(emulator, workdir, "other.db"))
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert "Re-plan: No changes." in changed.stdout


def test_a_saved_plan_applies_only_as_it_would_be_planned_now(emulator: Any, workdir: Path) -> None:
    """A saved plan made before desired/ changed, or edited by hand, is refused: apply never
    writes values nobody reviewed (found by a fresh-user test of issue 8)."""
    out = workdir / "plan.json"
    planned = reconcile("--dry-run", "--out", str(out), cwd=workdir, env=env(emulator, workdir))
    assert planned.returncode == 2, planned.stderr
    original = out.read_text()

    out.write_text(original.replace('"Team seat"', '"HACKED"', 1))
    assert '"HACKED"' in out.read_text()
    edited = reconcile(
        "--plan", str(out), "--auto-approve", cwd=workdir, env=env(emulator, workdir)
    )
    assert edited.returncode == 1
    assert "was the file edited?" in edited.stderr
    no_traceback(edited)

    out.write_text(original)
    set_amount(workdir, 5900)
    stale = reconcile("--plan", str(out), "--auto-approve", cwd=workdir, env=env(emulator, workdir))
    assert stale.returncode == 1
    assert "desired/ changed since the saved plan was made" in stale.stderr
    client = stripe.StripeClient(KEY, base_addresses={"api": emulator.url})
    assert client.v1.products.list().data == []  # nothing was written


def test_an_option_of_reconcile_before_a_subcommand_is_a_usage_error(workdir: Path) -> None:
    """`reconcile --desired X validate` validated ./desired and exited 0 (fresh-user test)."""
    done = reconcile("--desired", str(workdir / "nope"), "validate", cwd=workdir)
    assert done.returncode == 1
    assert "--desired belongs to the plain `reconcile` command" in done.stderr
    assert reconcile("--log-level", "info", "validate", cwd=workdir).returncode == 0

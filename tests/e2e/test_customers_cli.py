"""The example's contract customer (desired/customers/acme.yaml) through the real CLI against
the emulator over HTTP: a pull request's dry run shows it, apply converges, and a lost store
restores its account instead of creating a second customer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import stripe

from tests.e2e.cli import reconcile
from tests.e2e.test_catalog_hardening import KEY, env, no_traceback


def _acme(emulator: Any) -> list[Any]:
    client = stripe.StripeClient(KEY, base_addresses={"api": emulator.url})
    return [
        c
        for c in client.v1.customers.list({"limit": 100}).auto_paging_iter()
        if c.to_dict().get("metadata", {}).get("br_key") == "customer/acme"
    ]


def test_a_pr_dry_run_shows_the_contract_customer_and_apply_converges(
    emulator: Any, workdir: Path
) -> None:
    text = reconcile("--dry-run", cwd=workdir, env=env(emulator, workdir))
    assert text.returncode == 2, text.stdout + text.stderr
    no_traceback(text)
    customers = text.stdout[text.stdout.index("== customers ==") :]
    assert "billing_account/acme" in customers
    assert "customer/acme" in customers
    assert "Acme Corporation" in customers
    assert "billing@acme.example" in customers

    markdown = reconcile(
        "--dry-run", "--format", "markdown", cwd=workdir, env=env(emulator, workdir)
    )
    assert markdown.returncode == 2, markdown.stdout + markdown.stderr
    assert "### billing-reconciler plan: customers" in markdown.stdout
    section = markdown.stdout[markdown.stdout.index("### billing-reconciler plan: customers") :]
    assert "`customer/acme`" in section
    assert "`billing_account/acme`" in section
    assert "Acme Corporation" in section

    applied = reconcile("--auto-approve", cwd=workdir, env=env(emulator, workdir))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    [customer] = _acme(emulator)
    assert customer.name == "Acme Corporation"
    assert customer.metadata["br_installation"]

    for fmt in ("text", "markdown"):
        clean = reconcile("--dry-run", "--format", fmt, cwd=workdir, env=env(emulator, workdir))
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert "No changes." in clean.stdout
        assert "customer/acme" not in clean.stdout


def test_a_lost_store_restores_the_contract_account_and_never_duplicates_it(
    emulator: Any, workdir: Path
) -> None:
    first = reconcile("--auto-approve", cwd=workdir, env=env(emulator, workdir))
    assert first.returncode == 0, first.stdout + first.stderr
    [customer] = _acme(emulator)

    lost = env(emulator, workdir, store="lost.db")
    dry = reconcile("--dry-run", cwd=workdir, env=lost)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    customers = dry.stdout[dry.stdout.index("== customers ==") :]
    assert "billing_account/acme" in customers  # a link to restore, shown as such
    assert "Links to restore" in customers
    assert "(new)" not in customers
    assert "to create" not in customers
    assert customers.strip().endswith("No changes.")

    emulator.control.clear_requests()
    applied = reconcile("--auto-approve", cwd=workdir, env=lost)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    no_traceback(applied)
    assert emulator.control.requests(method="POST") == []
    assert [c.id for c in _acme(emulator)] == [customer.id]
    again = reconcile("--dry-run", cwd=workdir, env=lost)
    assert again.returncode == 0, again.stdout
    assert again.stdout.strip().endswith("No changes.")

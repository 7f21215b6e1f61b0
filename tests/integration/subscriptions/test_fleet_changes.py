"""Fleet changes in the plan (DESIGN §14, issue 11 point 7), through the `reconcile` command
against the emulator over HTTP, on SQLite and PostgreSQL: a `billing.yaml` setting that
rewrites live subscriptions lists every one of them, grouped, and is held back by the
mass-change guard without `--allow-mass-change`; one that applies to future events only
says so and rewrites nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from billing_reconciler.cli.common import CliError
from billing_reconciler.cli.reconcile_cmd import Format, RunRequest, run
from billing_reconciler.domains.subscription_rules import SETTING_AUTO_TAX, SUBSCRIPTION_STEP
from billing_reconciler.registry import CATALOG, CUSTOMERS, SUBSCRIPTIONS
from billing_reconciler.store import MemberRepository

from .conftest import World

ORGS = ("acme", "globex", "hooli", "initech", "umbrella")
DOMAINS = (CATALOG, CUSTOMERS, SUBSCRIPTIONS)
PRORATION = "billing.plan_change.proration_behavior"


@pytest.fixture
def command(world: World, monkeypatch: pytest.MonkeyPatch) -> Any:
    """`reconcile` (dry run unless told) over the world's desired/, store and emulator."""
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_emulator")
    monkeypatch.setenv("STRIPE_API_BASE", world.emulator.url)
    monkeypatch.setenv("BILLING_DATABASE_URL", world.url)

    def reconcile(**changes: Any) -> int:
        request: dict[str, Any] = {
            "directory": world.directory,
            "dry_run": True,
            "fmt": Format.TEXT,
            "out": None,
            "saved_plan": None,
            "adopt": False,
            "auto_approve": True,
            "confirm_live": False,
            "allow_mass_archive": False,
            "use_emulator": False,
            **changes,
        }
        return run(RunRequest(**request), DOMAINS)

    return reconcile


def _five_paid_subscriptions(world: World) -> None:
    world.configure(default_plan="")
    for org in ORGS:
        world.open(org, members=2)
    world.reconcile()
    for org in ORGS:
        world.add_card(org)
        world.subscribe(org, "team_monthly")
    world.reconcile()
    world.reconcile()  # mirrored
    assert world.plan().steps == ()


def _ours(world: World, org: str) -> Any:
    [sub] = [s for s in world.subscriptions(org) if "managed_by" in s.metadata]
    return sub


def _subscriptions_section(saved: Path) -> dict[str, Any]:
    data = json.loads(saved.read_text())
    [section] = [d for d in data["domains"] if d["domain"] == "subscriptions"]
    return dict(section)


def test_stripe_auto_tax_flipped_lists_every_subscription_grouped_and_apply_rewrites_them(
    world: World, command: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _five_paid_subscriptions(world)
    assert all(_ours(world, org).automatic_tax.enabled is False for org in ORGS)
    world.configure(default_plan="", auto_tax=True)
    capsys.readouterr()

    # 5 of 5 live subscriptions repriced: listed, grouped, and refused without the flag.
    assert command() == 1
    out = capsys.readouterr().out
    group = "  ~ 5 subscriptions: automatic_tax false -> true  (billing.stripe_auto_tax)"
    assert group in out
    assert (
        "the plan would cancel, downgrade or reprice 5 of 5 live subscriptions "
        "(100.0% > reconcile.max_fleet_change_fraction 10%). "
        "Re-run with --allow-mass-change if this is intended"
    ) in out
    with pytest.raises(CliError, match="refused"):
        command(dry_run=False)
    assert all(_ours(world, org).automatic_tax.enabled is False for org in ORGS)
    capsys.readouterr()

    # With the flag: changes pending (exit 2), the same group, every subscription in JSON.
    saved = tmp_path / "plan.json"
    assert command(allow_mass_change=True, out=saved) == 2
    out = capsys.readouterr().out
    assert group in out
    [examples] = re.findall(r"e\.g\. (.*), \.\.\. \(2 more in the JSON plan\)", out)
    assert set(examples.split(", ")) < {f"subscription/{org}" for org in ORGS}
    assert "Plan refused" not in out
    section = _subscriptions_section(saved)
    steps = [s for s in section["steps"] if s["kind"] == SUBSCRIPTION_STEP]
    assert sorted(s["key"] for s in steps) == [f"subscription/{org}" for org in ORGS]
    for step in steps:
        assert step["causes"] == [SETTING_AUTO_TAX]
        assert step["mass_change"] is True
        assert step["changes"] == [
            {
                "path": "automatic_tax",
                "before": False,
                "after": True,
                "drift": False,
                "forces_supersede": False,
            }
        ]
    assert section["population"] == {"count": 5, "noun": "subscription"}
    assert section["refusals"] == []

    assert command(fmt=Format.MARKDOWN, allow_mass_change=True) == 2
    markdown = capsys.readouterr().out
    assert "| update | 5 subscriptions (e.g. `subscription/" in markdown
    assert "caused by `billing.stripe_auto_tax`" in markdown

    # Apply: Stripe has automatic tax on each; the re-plan is empty.
    assert command(dry_run=False, allow_mass_change=True) == 0
    assert all(_ours(world, org).automatic_tax.enabled is True for org in ORGS)
    capsys.readouterr()
    assert command() == 0
    out = capsys.readouterr().out
    assert "== subscriptions ==\nNo changes." in out
    assert world.plan().steps == ()


def test_a_future_only_setting_changed_says_so_and_rewrites_nothing(
    world: World, command: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _five_paid_subscriptions(world)
    # An apply with nothing to do puts the settings in force.
    assert command(dry_run=False) == 0
    billing = world.directory / "billing.yaml"
    billing.write_text(
        billing.read_text().replace(
            "  product:\n", "  plan_change:\n    proration_behavior: none\n  product:\n"
        )
    )
    capsys.readouterr()
    saved = tmp_path / "plan.json"
    assert command(out=saved) == 0  # nothing to rewrite: no changes pending
    out = capsys.readouterr().out
    assert (
        f'  i {PRORATION} changed ("create_prorations" -> "none"): applies to future events '
        "only; no live subscription rewritten"
    ) in out
    section = _subscriptions_section(saved)
    assert section["steps"] == []
    assert section["future_only"] == [
        {"setting": PRORATION, "before": "create_prorations", "after": "none"}
    ]
    assert command(fmt=Format.MARKDOWN) == 0
    assert f"- `{PRORATION}` changed" in capsys.readouterr().out

    # Applied (nothing to write): the new value is in force and no more said.
    assert command(dry_run=False) == 0
    capsys.readouterr()
    assert command() == 0
    assert PRORATION not in capsys.readouterr().out
    for org in ORGS:
        assert _ours(world, org).automatic_tax.enabled is False


def test_a_subscription_on_a_superseded_seat_price_still_follows_the_members(
    world: World,
) -> None:
    """The catalog supersedes the seat price (a new amount); the live subscription stays on
    the old one (grandfathered), whose id the catalog's last-applied records no longer hold:
    its item is known by the price's marker, so a member added still raises its quantity."""
    world.configure(default_plan="")
    world.open("acme", members=2)
    world.reconcile()
    world.add_card("acme")
    world.subscribe("acme", "team_monthly")
    world.reconcile()
    world.reconcile()
    old = {i.price.lookup_key: i.price.id for i in _ours(world, "acme")["items"].data}
    catalog = world.directory / "plans" / "catalog.yaml"
    catalog.write_text(catalog.read_text().replace("amount: 900\n", "amount: 1000\n"))
    world.reconcile()
    [seat] = [
        p
        for p in world.stripe.v1.prices.list({"limit": 100}).data
        if p.metadata.to_dict().get("br_key") == "price/team_seat/monthly" and p.active
    ]
    assert seat.id != old["test.team_seat_monthly"]
    assert world.plan().steps == ()

    with world.store.session() as session:
        MemberRepository(session).upsert("acme", "user-new")
    plan = world.reconcile()
    [step] = plan.steps
    assert step.params["items"][0]["quantity"] == 3
    items = {i.price.id: i.quantity for i in _ours(world, "acme")["items"].data}
    assert items == {old["test.team_base_monthly"]: 1, old["test.team_seat_monthly"]: 3}
    assert world.plan().steps == ()


def _applied_counts(out: str) -> tuple[int, int]:
    """The steps and restored store records the `Apply complete (...)` lines add up to."""
    counts = re.findall(r"Apply complete \((\d+) steps(?:, (\d+) store records restored)?\)", out)
    assert counts, out
    return sum(int(n) for n, _ in counts), sum(int(r or 0) for _, r in counts)


def test_apply_complete_counts_the_done_lines_it_printed(
    world: World, command: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tester T1 finding 14a: `Apply complete (N steps)` did not match the `done:` lines (a
    domain's bookkeeping, its events cursor or a subscription's mirror, was printed as done
    but not counted). Every printed line is counted, and only those."""
    world.configure(default_plan="")
    for org in ORGS[:2]:
        world.open(org, members=2)
    capsys.readouterr()
    assert command(dry_run=False) == 0
    captured = capsys.readouterr()
    done = [line for line in captured.err.splitlines() if line.startswith("  done: ")]
    keys = {line.split()[2] for line in done}
    assert {f"customer/{org}" for org in ORGS[:2]} <= keys
    assert _applied_counts(captured.out) == (len(done), 0)
    assert "cursor" not in captured.err

    for org in ORGS[:2]:
        world.add_card(org)
        world.subscribe(org, "team_monthly")
    assert command(dry_run=False) == 0
    captured = capsys.readouterr()
    done = [line for line in captured.err.splitlines() if line.startswith("  done: ")]
    # (steps of one batch run concurrently: in any order)
    assert sorted(line.split()[2] for line in done) == [f"subscription/{o}" for o in ORGS[:2]]
    assert "Apply complete (2 steps). Re-plan: " in captured.out
    assert _applied_counts(captured.out) == (2, 0)
    assert "subscription_mirror" not in captured.err
    assert "cursor" not in captured.err

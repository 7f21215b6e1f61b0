"""Price migration (DESIGN §16, issue 11 point 8), through the `reconcile` command against the
emulator over HTTP, on SQLite and PostgreSQL: the catalog supersedes the seat price (a new
amount) while 20 live subscriptions bill it, under each `reconcile.price_migration` policy.

The dry run states the impact on the catalog's supersede step (20 live subscriptions and
their monthly revenue) and lists a move per subscription (none under `none`), held back by
the mass-change guard without `--allow-mass-change`; apply moves them in Stripe (now, or
from the next period once the test clock passes the period end), the re-plan is empty, and
there is never a second subscription or schedule."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from billing_reconciler.cli.common import CliError
from billing_reconciler.domains.price_impact import SETTING_PRICE_MIGRATION
from billing_reconciler.domains.subscription_rules import SCHEDULE_STEP, SUBSCRIPTION_STEP

from .conftest import World
from .test_fleet_changes import command  # noqa: F401  (the `reconcile` command fixture)

N = 20
ORGS = tuple(f"org-{i:02d}" for i in range(N))
SEAT_KEY = "price/team_seat/monthly"
BASE_KEY = "price/team_base/monthly"


def _ours(world: World) -> list[Any]:
    return [s for s in world.subscriptions() if "managed_by" in s.metadata]


def _price_ids(world: World, key: str) -> dict[bool, list[str]]:
    """The ids of our prices of `key`, by active."""
    found: dict[bool, list[str]] = {True: [], False: []}
    for price in world.stripe.v1.prices.list({"limit": 100}).auto_paging_iter():
        if price.metadata.to_dict().get("br_key") == key:
            found[bool(price.active)].append(price.id)
    return found


def _items(sub: Any) -> dict[str, tuple[str, int | None]]:
    """Per price key (the price's marker): the item's price id and quantity."""
    return {
        i.price.metadata.to_dict()["br_key"]: (i.price.id, i.quantity) for i in sub["items"].data
    }


def _schedules(world: World) -> list[Any]:
    return list(world.stripe.v1.subscription_schedules.list({"limit": 100}).auto_paging_iter())


def _twenty_on_the_seat_price(world: World, policy: str) -> str:
    """20 accounts on team_monthly with 2 seats each; the seat price's id. The test clock is
    moved to the present first: the `reconcile` command plans at the real time, and a
    schedule's phases are read from the current one on."""
    world.advance(int(time.time()))
    world.configure(default_plan="")
    billing = world.directory / "billing.yaml"
    billing.write_text(billing.read_text() + f"  price_migration: {policy}\n")
    for org in ORGS:
        world.open(org, members=2)
    world.reconcile()
    for org in ORGS:
        world.add_card(org)
        world.subscribe(org, "team_monthly")
    world.reconcile()
    world.reconcile()  # mirrored
    assert world.plan().steps == ()
    [seat] = _price_ids(world, SEAT_KEY)[True]
    return seat


def _supersede_the_seat_price(world: World) -> None:
    catalog = world.directory / "plans" / "catalog.yaml"
    text = catalog.read_text()
    assert text.count("amount: 900\n") == 1
    catalog.write_text(text.replace("amount: 900\n", "amount: 980\n"))


def _section(saved: Path, domain: str) -> dict[str, Any]:
    [section] = [d for d in json.loads(saved.read_text())["domains"] if d["domain"] == domain]
    return dict(section)


@pytest.mark.parametrize("policy", ["none", "now", "at_renewal"])
def test_a_superseded_price_with_20_subscriptions_on_it(
    world: World,
    command: Any,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    policy: str,
) -> None:
    old_seat = _twenty_on_the_seat_price(world, policy)
    [base] = _price_ids(world, BASE_KEY)[True]
    _supersede_the_seat_price(world)
    capsys.readouterr()

    # The dry run: the supersede states what sits on the price (20 x 2 seats x 9.00 USD).
    fate = {
        "none": "they stay on it, grandfathered (reconcile.price_migration: none)",
        "now": "moved to the new price now (reconcile.price_migration: now)",
        "at_renewal": "moved to the new price at their next renewal "
        "(reconcile.price_migration: at_renewal)",
    }[policy]
    impact = f"! 20 live subscriptions, 360.00 USD/month on {old_seat}: {fate}"
    saved = tmp_path / "plan.json"
    code = command(out=saved)
    out = capsys.readouterr().out
    assert impact in out
    moves = [
        s
        for s in _section(saved, "subscriptions")["steps"]
        if SETTING_PRICE_MIGRATION in s["causes"]
    ]
    if policy == "none":
        assert code == 2  # the catalog's changes; nothing for the subscriptions
        assert moves == []
        assert "== subscriptions ==\nNo changes." in out
    else:
        # 20 of 20 repriced: every one listed, and the plan held back without the flag.
        assert code == 1
        assert "the plan would cancel, downgrade or reprice 20 of 20 live subscriptions" in out
        kind = SUBSCRIPTION_STEP if policy == "now" else SCHEDULE_STEP
        assert sorted(s["key"].split("/")[-1] for s in moves) == list(ORGS)
        assert {s["kind"] for s in moves} == {kind}
        assert all(s["mass_change"] for s in moves)
        change = f'price[{SEAT_KEY}] "{old_seat}" -> "new {SEAT_KEY}"'
        if policy == "now":
            assert f"  ~ 20 subscriptions: {change}  ({SETTING_PRICE_MIGRATION})" in out
        else:
            assert f"  + 20 subscription schedules to create  ({SETTING_PRICE_MIGRATION})" in out
            assert f"      {change}: " not in out  # (the group's lines name the change)
            assert f"      {change.replace('] ', ']: ', 1)}" in out
        with pytest.raises(CliError, match="refused"):
            command(dry_run=False)
        assert {_items(s)[SEAT_KEY][0] for s in _ours(world)} == {old_seat}
        capsys.readouterr()

    assert command(dry_run=False, allow_mass_change=True) == 0
    capsys.readouterr()
    [new_seat] = _price_ids(world, SEAT_KEY)[True]
    assert new_seat != old_seat
    assert _price_ids(world, SEAT_KEY)[False] == [old_seat]

    subs = _ours(world)
    assert len(subs) == N
    assert all(s.status == "active" for s in subs)
    seats = {_items(s)[SEAT_KEY] for s in subs}
    assert {_items(s)[BASE_KEY] for s in subs} == {(base, 1)}
    if policy == "none":
        assert seats == {(old_seat, 2)}
        assert _schedules(world) == []
    elif policy == "now":
        assert seats == {(new_seat, 2)}
        assert _schedules(world) == []
    else:
        # Still on the old price until the renewal; one schedule each, its next phase on the
        # new price.
        assert seats == {(old_seat, 2)}
        schedules = _schedules(world)
        assert sorted(s.subscription for s in schedules) == sorted(s.id for s in subs)
        for schedule in schedules:
            _, renewal = schedule.phases
            assert {i.price for i in renewal["items"]} == {base, new_seat}
        assert world.plan().steps == ()
        [period_end] = {i.current_period_end for s in subs for i in s["items"].data}
        world.advance(period_end + 3600)
        world.reconcile()
        subs = _ours(world)
        assert len(subs) == N
        assert {_items(s)[SEAT_KEY] for s in subs} == {(new_seat, 2)}
        assert len(_schedules(world)) == N
        # The renewal's invoice is the first on the new price, with nothing prorated.
        [renewal] = [
            i
            for i in world.stripe.v1.invoices.list({"subscription": subs[0].id, "limit": 10}).data
            if i.billing_reason == "subscription_cycle"
        ]
        lines = [line.to_dict() for line in renewal.lines.data]
        assert sorted(line["amount"] for line in lines) == [2 * 980, 4900]
        assert not any(line.get("proration") for line in lines)

        # Converged (planned at the test clock's time, past the renewal).
        assert world.plan().steps == ()
        return

    # Converged: nothing more to do anywhere.
    assert command() == 0
    assert "== subscriptions ==\nNo changes." in capsys.readouterr().out
    assert world.plan().steps == ()

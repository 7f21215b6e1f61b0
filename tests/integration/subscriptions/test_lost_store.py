"""A lost store beside a live paid subscription (issue 11, DESIGN §16; README: Stripe is the
inventory). The host re-creating the org after the loss records the default plan's intent on
the new account; the subscriptions domain then finds the live subscription of ours on the
customer the account is linked to again and adopts it: its plan becomes the intent (under the
intent id it was made for) and the mirror, nothing is created beside it, no on-start credits
are granted again, and the re-plan is empty. SQLite and PostgreSQL, the emulator over HTTP."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from billing_reconciler.model_subscriptions import PendingChange, on_start_grant_id
from billing_reconciler.planning.plan import Reason
from billing_reconciler.store import (
    IntentRepository,
    LedgerRepository,
    Store,
    SubscriptionMirrorRepository,
)
from tests.fixtures.postgres import new_postgres_database

from .conftest import FEB_15, World
from .host import APP, V1, Host

TARGETED = frozenset({"customer/acme"})


@contextlib.contextmanager
def _lost_store(world: World, tmp_path: Path) -> Iterator[None]:
    """The world on a new, empty store (the old one is gone) for the block."""
    with contextlib.ExitStack() as stack:
        if world.url.startswith("sqlite"):
            url = f"sqlite:///{tmp_path / 'lost.db'}"
        else:
            url = stack.enter_context(new_postgres_database())
        old = world.store
        world.store = Store.open(url)
        try:
            yield
        finally:
            world.store.close()
            world.store = old


def _live(world: World, customer: str) -> list[Any]:
    params: dict[str, Any] = {"customer": customer, "status": "all", "limit": 100}
    listed = world.stripe.v1.subscriptions.list(params)  # type: ignore[arg-type]
    return [s for s in listed.data if s.status not in ("canceled", "incomplete_expired")]


def _phase_plan(phase: Any) -> str | None:
    metadata = phase.metadata
    return None if metadata is None else str(metadata["plan"])


def _on_team(world: World) -> tuple[str, Any]:
    """acme on the free default plan, then subscribed to team_monthly (the free one replaced),
    mirrored, its on-start credits granted: (customer id, the live paid subscription)."""
    world.open("acme", members=2)
    world.reconcile()
    world.reconcile()
    world.add_card("acme")
    world.subscribe("acme", "team_monthly")
    world.reconcile()
    world.reconcile()  # mirrored
    account = world.account("acme")
    assert account.stripe_customer_id is not None
    live = _live(world, account.stripe_customer_id)
    assert [s.metadata["plan"] for s in live] == ["team_monthly"]
    with world.store.session() as session:
        granted = LedgerRepository(session).get(on_start_grant_id(account.id, "team_monthly"))
    assert granted is not None
    assert granted.amount == 100
    return account.stripe_customer_id, live[0]


@pytest.mark.parametrize("scope", [None, TARGETED], ids=["refresh", "targeted"])
def test_a_live_paid_subscription_is_adopted_after_a_lost_store_never_duplicated(
    world: World, tmp_path: Path, scope: frozenset[str] | None
) -> None:
    customer, paid = _on_team(world)
    with _lost_store(world, tmp_path):
        world.reconcile()  # the catalog's records restored; no account yet
        world.open("acme", members=2)  # the host sends PUT org again: a default-plan intent
        with world.store.session() as session:
            default = IntentRepository(session).current(world.account("acme").id)
        assert default is not None
        assert (default.plan, default.source) == ("free_monthly", "default_plan")
        world.reconcile(scope)
        if scope is not None:
            world.reconcile()  # and the next refresh

        account = world.account("acme")
        assert account.stripe_customer_id == customer
        assert [s.id for s in _live(world, customer)] == [paid.id]  # the paid one only
        assert world.stripe.v1.subscriptions.retrieve(paid.id).status == paid.status
        with world.store.session() as session:
            intent = IntentRepository(session).current(account.id)
            mirrored = SubscriptionMirrorRepository(session).for_account(account.id)
            ledger = LedgerRepository(session)
            credits = ledger.get(on_start_grant_id(account.id, "team_monthly"))
            balance, _ = ledger.balance(account.id)
        assert intent is not None
        assert (intent.plan, intent.id) == ("team_monthly", paid.metadata["br_intent"])
        assert [(m.stripe_id, m.plan, m.status) for m in mirrored if m.live] == [
            (paid.id, "team_monthly", paid.status)
        ]  # and the free one the paid one replaced, canceled
        assert credits is None  # granted by the lost store, not again
        assert balance == 0
        replan = world.plan()
        assert replan.steps == ()
        assert all(r.reason is Reason.BOOKKEEPING for r in replan.restores)

        host = Host(world)
        try:
            listed = host.client.get(
                f"{V1}/organizations/acme/billing/subscriptions", headers=APP
            ).json()
        finally:
            host.close()
        current = listed["data"][0]
        assert (current["plan"], current["stripe_subscription_id"]) == ("team_monthly", paid.id)
        # No intent without a subscription (the re-PUT's default plan, replaced) is listed.
        assert all(s["stripe_subscription_id"] for s in listed["data"]), listed
        assert current["state"] == paid.status


def test_a_free_default_subscription_is_adopted_not_replaced_after_a_lost_store(
    world: World, tmp_path: Path
) -> None:
    world.open("acme")
    world.reconcile()
    world.reconcile()
    customer = world.account("acme").stripe_customer_id
    assert customer is not None
    (free,) = _live(world, customer)
    with _lost_store(world, tmp_path):
        world.reconcile()
        world.open("acme")
        world.reconcile()
        assert [s.id for s in _live(world, customer)] == [free.id]
        with world.store.session() as session:
            intent = IntentRepository(session).current(world.account("acme").id)
        assert intent is not None
        assert (intent.plan, intent.id) == ("free_monthly", free.metadata["br_intent"])
        assert world.plan().steps == ()


def test_a_pending_plan_change_is_adopted_with_its_schedule_after_a_lost_store(
    world: World, tmp_path: Path
) -> None:
    """A change at period end held by our schedule survives a lost store: the adopted intent
    gets the schedule's next phase as its pending change, the schedule keeps both phases, the
    API reports it, the re-plan is empty, and at the period end the subscription moves."""
    customer, paid = _on_team(world)
    account = world.account("acme")
    with world.store.session() as session:
        IntentRepository(session).set_pending_change(
            account.id, PendingChange("team_yearly", effective_at=FEB_15)
        )
    world.reconcile()
    [schedule] = world.stripe.v1.subscription_schedules.list({"customer": customer}).data
    assert [_phase_plan(p) for p in schedule.phases] == ["team_monthly", "team_yearly"]

    with _lost_store(world, tmp_path):
        world.reconcile()
        world.open("acme", members=2)
        world.reconcile()

        kept = world.stripe.v1.subscription_schedules.retrieve(schedule.id)
        assert kept.status in ("not_started", "active")
        assert [_phase_plan(p) for p in kept.phases] == ["team_monthly", "team_yearly"]
        assert kept.phases[0].end_date == FEB_15
        account = world.account("acme")
        with world.store.session() as session:
            intent = IntentRepository(session).current(account.id)
        assert intent is not None
        assert (intent.id, intent.plan) == (paid.metadata["br_intent"], "team_monthly")
        assert intent.pending_change == PendingChange("team_yearly", effective_at=FEB_15)
        assert world.plan().steps == ()

        host = Host(world)
        try:
            listed = host.client.get(
                f"{V1}/organizations/acme/billing/subscriptions", headers=APP
            ).json()
        finally:
            host.close()
        current = listed["data"][0]
        assert current["stripe_subscription_id"] == paid.id
        assert current["pending_change"] is not None
        assert current["pending_change"]["plan"] == "team_yearly"

        world.advance(FEB_15 + 3600)
        world.reconcile()
        moved = world.stripe.v1.subscriptions.retrieve(paid.id)
        assert moved.status == "active"
        assert moved.metadata["plan"] == "team_yearly"
        assert {i.price.recurring.interval for i in moved["items"].data} == {"year"}
        with world.store.session() as session:
            intent = IntentRepository(session).current(account.id)
        assert intent is not None
        assert (intent.plan, intent.pending_change) == ("team_yearly", None)


def test_a_cancel_at_period_end_is_adopted_with_its_schedule_after_a_lost_store(
    world: World, tmp_path: Path
) -> None:
    """A cancel at period end held by our schedule (its one phase ends at the period end,
    `end_behavior: cancel`) survives a lost store: the adopted intent asks for the cancel at
    that time, the schedule is not released or rewritten, the re-plan is empty, and at the
    period end the subscription is canceled."""
    customer, paid = _on_team(world)
    account = world.account("acme")
    with world.store.session() as session:
        IntentRepository(session).request_cancel(account.id, immediate=False, effective_at=FEB_15)
    world.reconcile()
    [schedule] = world.stripe.v1.subscription_schedules.list({"customer": customer}).data
    assert schedule.end_behavior == "cancel"
    assert [p.end_date for p in schedule.phases] == [FEB_15]

    with _lost_store(world, tmp_path):
        world.reconcile()
        world.open("acme", members=2)
        world.reconcile()

        kept = world.stripe.v1.subscription_schedules.retrieve(schedule.id)
        assert kept.status in ("not_started", "active")
        assert kept.end_behavior == "cancel"
        assert [p.end_date for p in kept.phases] == [FEB_15]
        account = world.account("acme")
        with world.store.session() as session:
            intent = IntentRepository(session).current(account.id)
        assert intent is not None
        assert (intent.id, intent.plan) == (paid.metadata["br_intent"], "team_monthly")
        assert intent.cancel_mode == "period_end"
        assert intent.pending_change == PendingChange(None, effective_at=FEB_15, reason="cancel")
        assert world.plan().steps == ()

        world.advance(FEB_15 + 3600)
        world.reconcile()
        assert world.stripe.v1.subscriptions.retrieve(paid.id).status == "canceled"
        assert _live(world, customer) == []
        with world.store.session() as session:
            assert IntentRepository(session).current(account.id) is None

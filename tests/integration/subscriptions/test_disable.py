"""Disabling a billing account stops its billing (issue 11, DESIGN §15-§16, README: subscription
lifecycle): `POST .../billing/disable` leaves the intent as it is and the subscriptions domain
cancels the account's live subscription at once (invoiced and prorated, as an immediate cancel),
then ends the intent; a new account of the same org never bills beside it (the disabled
account's cancel runs before anything else of the plan). The API over HTTP (a TestClient of the
app) on the world's store, the domains against the emulator; SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from billing_reconciler.store import AccountRepository, IntentRepository

from .conftest import World
from .host import APP, V1, Host

ORG = f"{V1}/organizations/acme"
TARGETED = frozenset({"customer/acme"})


@pytest.fixture
def host(world: World) -> Iterator[Host]:
    opened = Host(world)
    yield opened
    opened.close()


def _ours_of_acme(world: World) -> list[Any]:
    """Every subscription of ours for org acme in Stripe, on any customer."""
    listed = world.stripe.v1.subscriptions.list({"status": "all", "limit": 100})
    return [s for s in listed.data if s.metadata and s.metadata.to_dict().get("org_id") == "acme"]


def _live(subs: list[Any]) -> list[Any]:
    return [s for s in subs if s.status not in ("canceled", "incomplete_expired")]


def _on_team(world: World) -> Any:
    world.open("acme", members=1)
    world.reconcile()
    world.add_card("acme")
    world.subscribe("acme", "team_monthly")
    world.reconcile()
    world.reconcile()  # mirrored
    (paid,) = _live(_ours_of_acme(world))
    assert paid.metadata["plan"] == "team_monthly"
    return paid


def test_disabling_an_account_cancels_its_live_subscription_and_ends_the_intent(
    world: World, host: Host
) -> None:
    paid = _on_team(world)
    account = world.account("acme")
    assert host.client.post(f"{ORG}/billing/disable", headers=APP).status_code == 200
    world.reconcile(TARGETED)
    canceled = world.stripe.v1.subscriptions.retrieve(paid.id)
    assert canceled.status == "canceled"
    world.reconcile()  # mirrored: the intent ends
    with world.store.session() as session:
        assert IntentRepository(session).current(account.id) is None
        state = AccountRepository(session).get(account.id)
    assert state is not None
    assert state.state == "disabled"
    assert world.plan().steps == ()


def test_a_new_account_after_a_disable_never_bills_beside_the_old_subscription(
    world: World, host: Host
) -> None:
    paid = _on_team(world)
    old = world.account("acme")
    assert host.client.post(f"{ORG}/billing/disable", headers=APP).status_code == 200
    created = host.client.post(f"{ORG}/billing", json={}, headers=APP)
    assert created.status_code in (200, 201, 202), created.text
    plan = world.reconcile(TARGETED)  # one pass: the old one cancelled, the new one created
    cancel, create = [s for s in plan.steps if s.kind == "subscription"]
    assert (cancel.stripe_id, cancel.batch) == (paid.id, 0)
    assert create.batch == 1
    world.reconcile()
    new = world.account("acme")
    assert new.id != old.id
    live = _live(_ours_of_acme(world))
    assert [(s.customer, s.metadata["plan"]) for s in live] == [
        (new.stripe_customer_id, "free_monthly")
    ]
    assert world.stripe.v1.subscriptions.retrieve(paid.id).status == "canceled"
    assert world.plan().steps == ()


def test_a_disable_then_an_enable_before_any_reconcile_still_cancels_the_subscription(
    world: World, host: Host
) -> None:
    paid = _on_team(world)
    account = world.account("acme")
    assert host.client.post(f"{ORG}/billing/disable", headers=APP).status_code == 200
    assert host.client.post(f"{ORG}/billing/enable", headers=APP).status_code == 200
    with world.store.session() as session:
        intent = IntentRepository(session).current(account.id)
    assert intent is not None
    assert intent.cancel_mode == "immediate"  # recorded with the disable
    world.reconcile(TARGETED)
    assert world.stripe.v1.subscriptions.retrieve(paid.id).status == "canceled"
    world.reconcile()  # mirrored: the intent ends, nothing is created again
    assert _live(_ours_of_acme(world)) == []
    with world.store.session() as session:
        assert IntentRepository(session).current(account.id) is None
    assert world.plan().steps == ()

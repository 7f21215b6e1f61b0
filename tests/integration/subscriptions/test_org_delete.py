"""`DELETE /v1beta1/organizations/{org}` beside a live subscription (DESIGN §19): refused with
409 `failed_precondition` while a paid one is live, unless `?force=true`; a delete cancels
the live subscription at once on the targeted reconcile it asks for (or, if that one is lost,
on the next full pass). The API over HTTP (a TestClient of the app) on the world's store, the
subscriptions and customers domains against the emulator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from billing_reconciler.domains.subscription_rules import SUBSCRIPTION_STEP
from billing_reconciler.planning.plan import Action
from billing_reconciler.store import (
    AccountRepository,
    IntentRepository,
    OrganizationRepository,
    SubscriptionMirrorRepository,
)
from tests.integration.api.conftest import dump, error_of

from .conftest import World
from .host import APP, Host

ORG = "/v1beta1/organizations/acme"
TARGETED = frozenset({"customer/acme"})


@pytest.fixture
def host(world: World) -> Iterator[Host]:
    opened = Host(world)
    yield opened
    opened.close()


def _paid(world: World) -> str:
    """acme on team_monthly (live in Stripe and mirrored); its intent id."""
    world.configure(default_plan="")
    world.open("acme", members=1)
    world.reconcile()
    world.add_card("acme")
    intent_id = world.subscribe("acme", "team_monthly")
    world.reconcile()
    world.reconcile()  # mirrored
    return intent_id


def _subscriptions(world: World, customer: str | None) -> list[Any]:
    """The customer's subscriptions in Stripe (any status; the account may be disabled)."""
    assert customer is not None
    params: dict[str, Any] = {"customer": customer, "status": "all", "limit": 100}
    return list(world.stripe.v1.subscriptions.list(params).auto_paging_iter())  # type: ignore[arg-type]


def _stripe(world: World, customer: str | None) -> list[tuple[str, str, Any]]:
    return [(s.id, s.status, s.canceled_at) for s in _subscriptions(world, customer)]


def _intent(world: World, account_id: str) -> Any:
    with world.store.session() as session:
        return IntentRepository(session).current(account_id)


def test_a_delete_is_refused_while_a_paid_subscription_is_live(world: World, host: Host) -> None:
    intent_id = _paid(world)
    account = world.account("acme")
    [sub] = [s for s in _subscriptions(world, account.stripe_customer_id) if s.status == "active"]
    before_store, before_stripe = dump(world.store), _stripe(world, account.stripe_customer_id)

    response = host.client.delete(ORG, headers=APP)
    assert response.status_code == 409, response.text
    error = error_of(response)
    assert error["code"] == "failed_precondition"
    assert error["details"] == {
        "org_id": "acme",
        "account_id": account.id,
        "subscription_id": intent_id,
        "stripe_subscription_id": sub.id,
        "plan": "team_monthly",
    }
    assert "?force=true" in error["message"]
    assert f"/billing/subscriptions/{intent_id}/cancel" in error["message"]
    # Nothing changed: not the store, not Stripe (no reconcile asked for, none needed).
    assert dump(world.store) == before_store
    assert host.reconciles == []
    assert world.reconcile(TARGETED).steps == ()
    assert _stripe(world, account.stripe_customer_id) == before_stripe
    assert world.account("acme").state == "active"


@pytest.mark.parametrize("scope", [TARGETED, None], ids=["targeted", "next-full-pass"])
def test_a_forced_delete_cancels_the_paid_subscription_at_once(
    world: World, host: Host, scope: frozenset[str] | None
) -> None:
    intent_id = _paid(world)
    account = world.account("acme")
    [sub] = [s for s in _subscriptions(world, account.stripe_customer_id) if s.status == "active"]

    response = host.client.delete(f"{ORG}?force=true", headers=APP)
    assert response.status_code == 204, response.text
    assert host.reconciles == [frozenset({"acme"})]
    with world.store.session() as session:
        org = OrganizationRepository(session).get("acme")
        disabled = AccountRepository(session).get(account.id)
        intent = IntentRepository(session).current(account.id)
    assert org is not None
    assert org.deleted_at is not None
    assert disabled is not None
    assert disabled.state == "disabled"
    assert intent is not None
    assert intent.id == intent_id
    assert (intent.cancel_mode, intent.cancel_requested_by) == (
        "immediate",
        "organization deleted",
    )
    # Stripe is untouched until the reconcile: the delete only recorded the facts.
    assert world.stripe.v1.subscriptions.retrieve(sub.id).status == "active"

    plan = world.reconcile(scope)
    cancels = [s for s in plan.steps if s.kind == SUBSCRIPTION_STEP]
    assert [(s.action, s.stripe_id) for s in cancels] == [(Action.ARCHIVE, sub.id)]
    assert (cancels[0].params["invoice_now"], cancels[0].params["prorate"]) == (True, True)
    canceled = world.stripe.v1.subscriptions.retrieve(sub.id)
    assert canceled.status == "canceled"
    assert [s.id for s in _subscriptions(world, account.stripe_customer_id)] == [
        sub.id
    ]  # nothing new

    # The next pass mirrors the cancel and ends the intent; then nothing more, ever.
    world.reconcile(scope)
    with world.store.session() as session:
        mirrored = SubscriptionMirrorRepository(session).get(sub.id)
    assert mirrored is not None
    assert mirrored.status == "canceled"
    assert _intent(world, account.id) is None
    assert world.reconcile(scope).steps == ()
    assert world.reconcile().steps == ()
    assert _stripe(world, account.stripe_customer_id) == [
        (sub.id, "canceled", canceled.canceled_at)
    ]


def test_a_delete_with_only_a_free_plan_live_is_allowed_and_ends_it(
    world: World, host: Host
) -> None:
    world.open("acme", members=1)  # the free default plan
    world.reconcile()
    world.reconcile()
    account = world.account("acme")
    [sub] = _subscriptions(world, account.stripe_customer_id)
    assert sub.status == "active"

    response = host.client.delete(ORG, headers=APP)
    assert response.status_code == 204, response.text
    world.reconcile(TARGETED)
    assert world.stripe.v1.subscriptions.retrieve(sub.id).status == "canceled"
    world.reconcile(TARGETED)
    assert _intent(world, account.id) is None
    assert world.reconcile().steps == ()
    assert len(_subscriptions(world, account.stripe_customer_id)) == 1


def test_a_delete_of_an_offline_account_on_a_free_plan_ends_its_intent(
    world: World, host: Host
) -> None:
    world.open("acme", offline=True)
    world.reconcile()  # the catalog: the free plan is priced
    account = world.account("acme")
    assert _intent(world, account.id) is not None
    response = host.client.delete(ORG, headers=APP)
    assert response.status_code == 204, response.text
    assert _intent(world, account.id) is None
    assert world.reconcile().steps == ()

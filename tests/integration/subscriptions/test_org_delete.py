"""`DELETE /v1beta1/organizations/{org}` beside a live subscription (DESIGN §19): refused with
409 `failed_precondition` while a paid one is live, unless `?force=true`; a delete cancels
the live subscription at once on the targeted reconcile it asks for (or, if that one is lost,
on the next full pass). The API over HTTP (a TestClient of the app) on the world's store, the
subscriptions and customers domains against the emulator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from billing_reconciler.controller import PlanOptions
from billing_reconciler.domains.subscription_rules import SUBSCRIPTION_STEP
from billing_reconciler.planning.plan import Action
from billing_reconciler.registry import CUSTOMERS
from billing_reconciler.store import (
    AccountRepository,
    IntentRepository,
    OrganizationRepository,
    SubscriptionMirrorRepository,
)
from tests.integration.api.conftest import dump, error_of

from .conftest import FEB_15, World
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


def test_a_deleted_org_re_created_before_its_cancel_is_applied_plans_unique_keys(
    world: World, host: Host
) -> None:
    """acme on team_monthly with a cancel at period end pending, deleted (`force`) and opened
    again before any reconcile: one plan cancels the old account's subscription (its key names
    the Stripe subscription) and creates the new account's (`subscription/acme`); every step
    key is unique, a re-plan derives the same idempotency keys (a crash then rerun replays
    them), and after the apply the old one is canceled, the new one live, nothing more."""
    world.open("acme", members=1)
    world.reconcile()
    world.reconcile()
    world.add_card("acme")
    world.subscribe("acme", "team_monthly")
    world.reconcile()
    world.reconcile()  # mirrored
    old = world.account("acme")
    [sub] = [s for s in _subscriptions(world, old.stripe_customer_id) if s.status == "active"]
    with world.store.session() as session:
        IntentRepository(session).request_cancel(old.id, immediate=False, effective_at=FEB_15)
    response = host.client.delete(f"{ORG}?force=true", headers=APP)
    assert response.status_code == 204, response.text
    world.open("acme", members=1)  # re-created: a new account, the default plan's intent

    plan = world.reconcile()
    steps = [s for s in plan.steps if s.kind == SUBSCRIPTION_STEP]
    assert [(s.action, s.key) for s in steps] == [
        (Action.ARCHIVE, f"{SUBSCRIPTION_STEP}/acme/{sub.id}"),
        (Action.CREATE, f"{SUBSCRIPTION_STEP}/acme"),
    ]
    assert len({s.key for s in plan.steps}) == len(plan.steps)
    assert world.stripe.v1.subscriptions.retrieve(sub.id).status == "canceled"
    new = world.account("acme")
    assert new.id != old.id
    [created] = _subscriptions(world, new.stripe_customer_id)
    assert (created.status, created.metadata["plan"]) == ("active", "free_monthly")
    world.reconcile()  # the mirrors; the old intent ends
    assert _intent(world, old.id) is None
    assert world.reconcile().steps == ()
    assert [s.id for s in _subscriptions(world, new.stripe_customer_id)] == [created.id]


def test_the_keys_of_a_re_created_orgs_plan_are_stable_across_re_plans(
    world: World, host: Host
) -> None:
    """The plan of the cancel of a deleted org's subscription beside the create of its new
    account's, made twice before anything of it is applied (a crash, then the rerun), has the
    same step and idempotency keys, all unique."""
    _paid(world)
    response = host.client.delete(f"{ORG}?force=true", headers=APP)
    assert response.status_code == 204, response.text
    world.configure()  # the default plan again: the new account gets its intent
    world.open("acme", members=1)
    customers = world.controller(CUSTOMERS)
    planned = customers.plan(PlanOptions())
    customers.apply(planned)  # the new account's customer: its subscription can be created

    first, again = world.plan(), world.plan()
    keys = [(s.action, s.key, s.idempotency_key) for s in first.steps]
    assert [(a, k) for a, k, _ in keys] == [
        (Action.ARCHIVE, f"{SUBSCRIPTION_STEP}/acme/{first.steps[0].stripe_id}"),
        (Action.CREATE, f"{SUBSCRIPTION_STEP}/acme"),
    ]
    assert len({k for _, k, _ in keys}) == len(keys)
    assert [(s.action, s.key, s.idempotency_key) for s in again.steps] == keys

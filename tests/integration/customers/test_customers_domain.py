"""Accounts become Stripe customers: create, merge both ways, conflicts, deletions, contracts."""

from __future__ import annotations

from billing_reconciler.planning.plan import Action, Reason
from billing_reconciler.store import LedgerRepository, onboard_grant_id
from tests.integration.customers.conftest import World


def test_an_account_becomes_one_customer_with_markers(world: World) -> None:
    world.account("acme", name="Acme Inc", email="billing@acme.test")
    plan = world.apply()
    assert [(s.action, s.key) for s in plan.steps] == [(Action.CREATE, "customer/acme")]
    [customer] = world.customers()
    assert customer.name == "Acme Inc"
    assert customer.email == "billing@acme.test"
    assert customer.metadata["managed_by"] == "billing-reconciler"
    assert customer.metadata["br_key"] == "customer/acme"
    assert customer.metadata["br_installation"] == "test"
    assert customer.metadata["org_id"] == "acme"
    # Stripe's create has no currency: the first billed object sets it; the account keeps it.
    assert customer.currency is None
    account = world.get("acme")
    assert account.stripe_customer_id == customer.id
    assert account.currency == "eur"
    again = world.plan()
    assert again.converged, again
    world.apply()
    assert len(world.customers()) == 1


def test_offline_accounts_wait_for_register(world: World) -> None:
    world.account("quiet", offline=True)
    assert not world.plan().steps
    world.update("quiet", offline=False)
    world.apply()
    assert [c.metadata["org_id"] for c in world.customers()] == ["quiet"]


def test_a_stripe_edit_is_pulled_and_a_local_edit_pushed(world: World) -> None:
    world.account("acme", name="Acme", email="a@acme.test")
    world.apply()
    customer = world.customers()[0]
    world.stripe.v1.customers.update(customer.id, {"email": "portal@acme.test"})
    plan = world.apply()
    assert [(s.kind, s.reason) for s in plan.steps] == [("billing_account", Reason.REMOTE_CHANGED)]
    assert world.get("acme").email == "portal@acme.test"
    world.update("acme", name="Acme GmbH")
    plan = world.apply()
    assert [(s.kind, s.reason) for s in plan.steps] == [("customer", Reason.DESIRED_CHANGED)]
    assert world.stripe.v1.customers.retrieve(customer.id).name == "Acme GmbH"


def test_both_sides_changed_local_wins_and_the_plan_reports_it(world: World) -> None:
    world.account("acme", name="Acme")
    world.apply()
    customer = world.customers()[0]
    world.stripe.v1.customers.update(customer.id, {"name": "Portal name"})
    world.update("acme", name="Local name")
    plan = world.apply()
    assert [d.path for d in plan.drift] == ["name"]
    assert plan.steps[0].reason is Reason.DRIFT
    assert world.stripe.v1.customers.retrieve(customer.id).name == "Local name"
    assert world.get("acme").name == "Local name"


def test_a_customer_deleted_in_stripe_disables_the_account(world: World) -> None:
    world.account("acme")
    world.apply()
    customer = world.customers()[0]
    world.stripe.v1.customers.delete(customer.id)
    plan = world.apply()
    assert [(s.action, s.reason) for s in plan.steps] == [
        (Action.ARCHIVE, Reason.DELETED_IN_STRIPE)
    ]
    account = world.get("acme")
    assert account.state == "disabled"
    assert "deleted" in (account.disabled_reason or "")
    assert world.plan().converged
    assert world.customers() == []


def test_a_contract_customer_converges_with_onboard_credits_once(world: World) -> None:
    world.write_contract(
        """\
        customers:
          - org_id: bigco
            name: BigCo AG
            email: ap@bigco.test
            tax_ids: [{type: eu_vat, value: DE123456789}]
            credit_min: -500
        """
    )
    plan = world.apply()
    assert [(s.kind, s.action) for s in plan.steps] == [
        ("billing_account", Action.CREATE),
        ("customer", Action.CREATE),
    ]
    [customer] = world.customers()
    assert customer.name == "BigCo AG"
    account = world.get("bigco")
    assert account.contract
    assert account.credit_min == -500
    assert account.stripe_customer_id == customer.id
    with world.store.session() as session:
        grant = LedgerRepository(session).get(onboard_grant_id("bigco"))
    assert grant is not None
    assert grant.amount == 50
    # The YAML wins over an edit in Stripe.
    world.stripe.v1.customers.update(customer.id, {"name": "Someone else"})
    world.apply()
    assert world.stripe.v1.customers.retrieve(customer.id).name == "BigCo AG"
    assert world.plan().converged


def test_a_targeted_request_reconciles_that_customer_only(world: World) -> None:
    world.account("one")
    world.account("two")
    plan = world.apply(scope=frozenset({"customer/one"}))
    assert [s.key for s in plan.steps] == ["customer/one"]
    assert [c.metadata["org_id"] for c in world.customers()] == ["one"]

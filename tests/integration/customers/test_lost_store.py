"""A lost store never duplicates a customer, and keys never replay another account's create.

The idempotency key is not what prevents duplicates across a lost store (Stripe forgets keys
after 24 h, and a new store salts its keys anew): the listed customer's marker (`br_key`
`customer/<org_id>`, `br_installation`) is matched to the account, which is linked (a store
restore) instead of created again.
"""

from __future__ import annotations

from billing_reconciler.planning.plan import Action, Reason
from billing_reconciler.store import AccountRepository, LedgerRepository, onboard_grant_id
from tests.integration.customers.conftest import World

CONTRACT = """\
customers:
  - org_id: bigco
    name: BigCo AG
    email: ap@bigco.test
    tax_ids: [{type: eu_vat, value: DE123456789}]
    credit_min: -500
"""


def _posts(world: World) -> list[str]:
    return [r.path for r in world.emulator.control.requests(method="POST")]


def test_a_contract_customer_lost_with_the_store_is_restored_and_linked(world: World) -> None:
    world.write_contract(CONTRACT)
    world.apply()
    [customer] = world.customers()

    world.lose_store()
    world.emulator.control.clear_requests()
    plan = world.plan()
    assert plan.steps == (), [(s.action, s.key) for s in plan.steps]
    assert not plan.has_changes
    [restore] = [r for r in plan.restores if r.reason is Reason.STORE_LOST]
    assert (restore.kind, restore.action, restore.key) == (
        "billing_account",
        Action.CREATE,
        "billing_account/bigco",
    )
    assert restore.stripe_id == customer.id

    world.apply()
    assert _posts(world) == []  # store only: Stripe untouched
    assert [c.id for c in world.customers()] == [customer.id]
    account = world.get("bigco")
    assert (account.stripe_customer_id, account.contract, account.credit_min) == (
        customer.id,
        True,
        -500,
    )
    again = world.plan()
    assert again.converged, again
    assert again.restores == () or all(r.reason is Reason.BOOKKEEPING for r in again.restores)


def test_an_account_recreated_after_a_lost_store_is_linked_not_created(world: World) -> None:
    world.account("acme", name="Acme", email="a@acme.test")
    world.apply()
    [customer] = world.customers()

    world.lose_store()
    world.account("acme", name="Acme", email="a@acme.test")  # the host PUTs its orgs again
    world.emulator.control.clear_requests()
    plan = world.plan()
    assert plan.steps == (), [(s.action, s.key) for s in plan.steps]
    [link] = [r for r in plan.restores if r.reason is Reason.STORE_LOST]
    assert (link.key, link.stripe_id) == ("billing_account/acme", customer.id)
    world.apply()
    assert _posts(world) == []
    assert world.get("acme").stripe_customer_id == customer.id
    assert len(world.customers()) == 1
    assert world.plan().converged


def test_another_installations_customer_is_never_linked(world: World) -> None:
    world.stripe.v1.customers.create(
        {
            "name": "Acme",
            "metadata": {
                "managed_by": "billing-reconciler",
                "br_key": "customer/acme",
                "br_installation": "someone-else",
                "org_id": "acme",
            },
        }
    )
    world.account("acme", name="Acme")
    plan = world.plan()
    assert [(s.action, s.key) for s in plan.steps] == [(Action.CREATE, "customer/acme")]
    assert not [r for r in plan.restores if r.reason is Reason.STORE_LOST]


def test_a_second_account_of_an_org_gets_its_own_customer(world: World) -> None:
    """The first account's customer deleted in Stripe disables it; a new account of the org
    must get a new customer, not Stripe's replay of the first create (same key within 24 h
    would answer with the deleted customer's id)."""
    first = world.account("acme", name="Acme")
    create = world.apply().steps[0]
    [old] = world.customers()
    world.stripe.v1.customers.delete(old.id)
    world.apply()
    assert world.get("acme").state == "disabled"

    second = world.account("acme", name="Acme again")
    assert second.id != first.id
    plan = world.plan()
    [again] = [s for s in plan.steps if s.key == "customer/acme"]
    assert again.action is Action.CREATE
    assert again.idempotency_key != create.idempotency_key
    world.apply()
    [new] = world.customers()
    assert new.id != old.id
    assert world.get("acme").stripe_customer_id == new.id


def test_a_disabled_accounts_live_customer_is_not_linked_to_a_new_account(world: World) -> None:
    world.account("acme", name="Acme")
    world.apply()
    [old] = world.customers()
    with world.store.session() as session:
        repository = AccountRepository(session)
        account = repository.active_for_org("acme")
        assert account is not None
        repository.set_state(account.id, "disabled", reason="closed by the host")
    world.account("acme", name="Acme two")
    plan = world.plan()
    assert [(s.action, s.key) for s in plan.steps] == [(Action.CREATE, "customer/acme")]
    world.apply()
    assert {c.id for c in world.customers()} - {old.id}
    assert world.get("acme").stripe_customer_id != old.id


def test_the_creation_key_is_salted_with_the_store(world: World) -> None:
    world.account("acme", name="Acme", account_id="acct_same")
    key = world.plan().steps[0].idempotency_key
    world.lose_store()
    world.account("acme", name="Acme", account_id="acct_same")
    assert world.plan().steps[0].idempotency_key != key


def test_onboard_credits_of_a_restored_contract_account(world: World) -> None:
    world.write_contract(CONTRACT)
    world.apply()
    world.lose_store()
    world.apply()
    with world.store.session() as session:
        grant = LedgerRepository(session).get(onboard_grant_id("bigco"))
    assert grant is not None
    assert grant.amount == 50


# --- a targeted pass after a lost store (the host API's PUT) ----------------------------------

SCOPE = frozenset({"customer/acme"})


def _creates(world: World) -> int:
    return _posts(world).count("/v1/customers")


def test_a_targeted_pass_on_a_new_store_links_the_old_customer(world: World) -> None:
    """`PUT /organizations/acme` right after `reconcile serve` restarted on a lost store: the
    targeted reconcile of customer/acme is the store's first pass; it lists every customer
    before it would create one, and links the one of ours."""
    world.account("acme", name="Acme", email="a@acme.test")
    world.apply()
    [customer] = world.customers()

    world.lose_store()
    world.account("acme", name="Acme", email="a@acme.test")
    world.emulator.control.clear_requests()
    plan = world.plan(SCOPE)
    assert plan.steps == (), [(s.action, s.key) for s in plan.steps]
    [link] = [r for r in plan.restores if r.reason is Reason.STORE_LOST]
    assert (link.key, link.stripe_id) == ("billing_account/acme", customer.id)
    world.apply(SCOPE)
    assert _creates(world) == 0
    assert [c.id for c in world.customers()] == [customer.id]
    assert world.get("acme").stripe_customer_id == customer.id


def test_a_targeted_pass_after_the_first_full_resync_links_the_old_customer(
    world: World,
) -> None:
    """The restarted serve's first full pass ran before the host's PUT (the org had no
    account then): it remembers the customer of ours it found, and the PUT's targeted
    reconcile retrieves and links it instead of creating a second one."""
    world.account("acme", name="Acme", email="a@acme.test")
    world.apply()
    [customer] = world.customers()

    world.lose_store()
    first = world.apply()  # the scheduled full pass: no account of acme yet
    assert first.steps == ()
    world.account("acme", name="Acme", email="a@acme.test")
    world.emulator.control.clear_requests()
    plan = world.plan(SCOPE)
    assert plan.steps == (), [(s.action, s.key) for s in plan.steps]
    world.apply(SCOPE)
    assert _creates(world) == 0
    assert [c.id for c in world.customers()] == [customer.id]
    assert world.get("acme").stripe_customer_id == customer.id
    # The incremental pass (events after the cursor) agrees.
    assert world.plan().converged


def test_an_incremental_pass_after_the_first_full_resync_links_the_old_customer(
    world: World,
) -> None:
    world.account("acme", name="Acme")
    world.apply()
    [customer] = world.customers()
    world.lose_store()
    world.apply()
    world.account("acme", name="Acme")
    world.emulator.control.clear_requests()
    plan = world.plan()
    assert plan.steps == (), [(s.action, s.key) for s in plan.steps]
    world.apply()
    assert _creates(world) == 0
    assert world.get("acme").stripe_customer_id == customer.id


def test_two_customers_of_ours_with_one_br_key_are_reported(world: World) -> None:
    world.account("acme", name="Acme")
    world.apply()
    [customer] = world.customers()
    duplicate = world.stripe.v1.customers.create(
        {"name": "Acme", "metadata": customer.metadata.to_dict()}
    )
    plan = world.plan()
    [warning] = [w for w in plan.warnings if "br_key customer/acme" in w]
    assert customer.id in warning
    assert duplicate.id in warning
    assert f"{customer.id} is kept" in warning

"""A lost store, then the host PUTs its orgs again (DESIGN §15, README "a new or lost store
plans exactly what the full store plans"): the re-created account is linked to the org's
customer of ours, and with no last-applied record a field the store does not set is pulled
from Stripe, never pushed as a clear. A field both sides set differently is a conflict: the
store's (the API's) value wins and the plan reports it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from billing_reconciler.model_customers import customer_key
from billing_reconciler.planning.plan import Reason
from tests.integration.api.conftest import APP, Settings, build_app
from tests.integration.customers.conftest import World

ORG = "/v1beta1/organizations/m1"

Connect = Callable[..., TestClient]


@pytest.fixture
def connect(world: World) -> Iterator[Connect]:
    """A host API on the world's current store (auto-creating accounts with their orgs); its
    targeted reconcile is the customers domain's apply against the emulator."""
    clients: list[TestClient] = []

    class Reconciling(Settings):
        reconciles_now = True

        def request_reconcile(self, domain: str, scope: frozenset[str], reason: str) -> object:
            super().request_reconcile(domain, scope, reason)
            if self.reconciles_now:
                world.apply(scope=frozenset(customer_key(org) for org in scope))
            return None

    def open_api(*, reconcile: bool = True, auto_create: bool = True) -> TestClient:
        settings = Reconciling()
        settings.reconciles_now = reconcile
        settings.configure(auto_create_with_org=auto_create)
        client = TestClient(build_app(world.store, settings), raise_server_exceptions=True)
        clients.append(client)
        return client

    yield open_api
    for client in clients:
        client.close()


def _put(api: TestClient, **body: Any) -> None:
    answer = api.put(ORG, json={"title": "M1", "owner_email": "m@m1.test", **body}, headers=APP)
    assert answer.status_code in (200, 201), answer.text


def _metadata(world: World, stripe_id: str) -> dict[str, str]:
    metadata = world.stripe.v1.customers.retrieve(stripe_id).metadata
    return {} if metadata is None else {str(k): str(v) for k, v in metadata.to_dict().items()}


def _customer_updates(world: World, stripe_id: str) -> list[Any]:
    return [
        r
        for r in world.emulator.control.requests(method="POST")
        if r.path == f"/v1/customers/{stripe_id}"
    ]


def test_a_re_put_org_after_a_lost_store_pulls_the_fields_edited_in_stripe(
    world: World, connect: Connect
) -> None:
    _put(connect())
    [customer] = world.customers()
    assert _metadata(world, customer.id)["auto_created"] == "true"
    world.stripe.v1.customers.update(
        customer.id,
        {
            "phone": "+1 555 0000",
            "address": {"line1": "5 Portal Rd", "city": "Paris", "country": "FR"},
        },
    )
    world.apply()
    assert world.get("m1").phone == "+1 555 0000"  # pulled into the full store

    world.lose_store()
    first = world.apply()  # the one-shot reconcile on the empty store
    assert first.steps == ()
    world.emulator.control.clear_requests()
    _put(connect())  # the host PUTs the org again: a new account, linked to the customer
    plan = world.apply()
    assert _customer_updates(world, customer.id) == []  # nothing pushed to Stripe
    assert [(s.kind, s.reason) for s in plan.steps] in (
        [],
        [("billing_account", Reason.REMOTE_CHANGED)],
    )

    live = world.stripe.v1.customers.retrieve(customer.id)
    assert live.phone == "+1 555 0000"
    assert live.address is not None
    assert (live.address.line1, live.address.city, live.address.country) == (
        "5 Portal Rd",
        "Paris",
        "FR",
    )
    assert _metadata(world, customer.id)["auto_created"] == "true"
    account = world.get("m1")
    assert account.stripe_customer_id == customer.id
    assert account.phone == "+1 555 0000"
    assert account.address is not None
    assert (account.address.line1, account.address.city, account.address.country) == (
        "5 Portal Rd",
        "Paris",
        "FR",
    )
    again = world.plan()
    assert again.converged, (again.steps, again.restores)


def test_a_field_both_sides_set_differently_after_a_lost_store_is_a_reported_conflict(
    world: World, connect: Connect
) -> None:
    _put(connect())
    [customer] = world.customers()
    world.stripe.v1.customers.update(customer.id, {"email": "portal@m1.test", "phone": "+1 5"})
    world.apply()

    world.lose_store()
    world.apply()
    # The host's PUT says another owner email: the store sets it, Stripe holds another.
    api = connect(reconcile=False)
    answer = api.put(ORG, json={"title": "M1", "owner_email": "new@m1.test"}, headers=APP)
    assert answer.status_code == 201, answer.text
    plan = world.plan()
    [push] = [s for s in plan.steps if s.kind == "customer"]
    assert push.reason is Reason.DRIFT
    assert [(c.path, c.before, c.after, c.drift) for c in push.changes] == [
        ("email", "portal@m1.test", "new@m1.test", True)
    ]
    assert [(d.key, d.path, d.live) for d in plan.drift] == [
        ("customer/m1", "email", "portal@m1.test")
    ]
    world.apply()
    live = world.stripe.v1.customers.retrieve(customer.id)
    assert (live.email, live.phone) == ("new@m1.test", "+1 5")
    assert world.get("m1").phone == "+1 5"
    assert world.plan().converged


def test_a_link_after_a_lost_store_never_adds_auto_created(world: World, connect: Connect) -> None:
    """`auto_created=true` (DESIGN §15) is stamped when the customer of an account created
    with its org is created; an account opened explicitly has none, and the account the
    host's PUT auto-creates after a lost store links to that customer without adding it."""
    api = connect(auto_create=False)
    _put(api)
    created = api.post(f"{ORG}/billing", json={"currency": "eur"}, headers=APP)
    assert created.status_code == 201, created.text
    [customer] = world.customers()
    assert "auto_created" not in _metadata(world, customer.id)

    world.lose_store()
    world.apply()
    world.emulator.control.clear_requests()
    _put(connect())  # auto-created now, and linked
    world.apply()
    assert world.get("m1").stripe_customer_id == customer.id
    assert _customer_updates(world, customer.id) == []
    assert "auto_created" not in _metadata(world, customer.id)
    assert world.plan().converged


CONTRACT = """\
customers:
  - org_id: bigco
    name: BigCo AG
    email: ap@bigco.test
    address: {line1: 1 Main St, country: DE}
"""


def test_a_contract_restored_after_a_lost_store_keeps_what_its_yaml_leaves_out(
    world: World,
) -> None:
    world.write_contract(CONTRACT)
    world.apply()
    [customer] = world.customers()
    world.stripe.v1.customers.update(
        customer.id,
        {"phone": "+49 30 1", "address": {"line1": "1 Main St", "city": "Berlin", "country": "DE"}},
    )
    world.apply()

    world.lose_store()
    world.emulator.control.clear_requests()
    world.apply()  # the account opened again and linked
    world.apply()
    assert _customer_updates(world, customer.id) == []
    live = world.stripe.v1.customers.retrieve(customer.id)
    assert live.phone == "+49 30 1"
    assert live.address is not None
    assert live.address.city == "Berlin"
    account = world.get("bigco")
    assert account.phone == "+49 30 1"
    assert account.address is not None
    assert account.address.city == "Berlin"
    assert world.plan().converged

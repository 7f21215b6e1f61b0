"""A contract customer's fields its YAML leaves out, and account metadata, against the emulator.

- A field (or address part) a contract's YAML does not declare is not the contract's: it is
  merged three ways like an ordinary account's field, so an edit in Stripe is pulled into the
  store and plan -> apply -> plan converges (it used to plan the same pull on every pass).
- Account metadata (`PATCH .../billing` with `metadata`) is merged three ways per key, only
  for the keys we wrote: the targeted reconcile pushes it, a key set directly in Stripe
  survives, and a key removed through the API is removed in Stripe; the markers stay.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from billing_reconciler.model_customers import customer_key
from billing_reconciler.planning.plan import Reason
from tests.integration.api.conftest import APP, Settings, build_app
from tests.integration.customers.conftest import World

CONTRACT = """\
customers:
  - org_id: bigco
    name: BigCo AG
    email: ap@bigco.test
    address: {line1: 1 Main St, city: Berlin, country: DE}
    credit_min: -500
    currency: eur
"""


def _converged(world: World) -> None:
    again = world.plan()
    assert again.converged, (again.steps, again.restores)


def test_a_stripe_edit_of_a_field_the_yaml_leaves_out_is_pulled_and_converges(
    world: World,
) -> None:
    world.write_contract(CONTRACT)
    world.apply()
    [customer] = world.customers()
    assert customer.phone is None
    world.stripe.v1.customers.update(customer.id, {"phone": "+49 30 1234"})
    plan = world.apply()
    assert [(s.kind, s.reason) for s in plan.steps] == [("billing_account", Reason.REMOTE_CHANGED)]
    assert world.get("bigco").phone == "+49 30 1234"
    assert world.stripe.v1.customers.retrieve(customer.id).phone == "+49 30 1234"
    _converged(world)
    # The YAML's own fields still win over an edit in Stripe.
    world.stripe.v1.customers.update(customer.id, {"email": "someone@else.test"})
    world.apply()
    assert world.stripe.v1.customers.retrieve(customer.id).email == "ap@bigco.test"
    _converged(world)


def test_a_stripe_edit_of_an_address_part_the_yaml_leaves_out_converges(world: World) -> None:
    world.write_contract(CONTRACT)
    world.apply()
    [customer] = world.customers()
    # As the dashboard sends it: the whole address (Stripe replaces it whole).
    edited = {"line1": "1 Main St", "line2": "Building 7", "city": "Berlin", "country": "DE"}
    world.stripe.v1.customers.update(customer.id, {"address": edited})
    world.apply()
    live = world.stripe.v1.customers.retrieve(customer.id).address
    assert live is not None
    assert (live.line1, live.line2, live.city, live.country) == (
        "1 Main St",
        "Building 7",
        "Berlin",
        "DE",
    )
    stored = world.get("bigco").address
    assert stored is not None
    assert stored.line2 == "Building 7"
    _converged(world)
    # A declared part edited in Stripe is the contract's: put back, the other part kept.
    world.stripe.v1.customers.update(customer.id, {"address": {**edited, "city": "Munich"}})
    world.apply()
    live = world.stripe.v1.customers.retrieve(customer.id).address
    assert live is not None
    assert (live.city, live.line2) == ("Berlin", "Building 7")
    _converged(world)


def test_an_api_edit_of_a_field_the_yaml_leaves_out_is_pushed(world: World) -> None:
    world.write_contract(CONTRACT)
    world.apply()
    [customer] = world.customers()
    world.update("bigco", phone="+49 30 9999")
    plan = world.apply()
    assert [(s.kind, s.reason) for s in plan.steps] == [("customer", Reason.DESIRED_CHANGED)]
    assert world.stripe.v1.customers.retrieve(customer.id).phone == "+49 30 9999"
    _converged(world)


@pytest.fixture
def api(world: World) -> Iterator[TestClient]:
    """The host API on the world's store; its targeted reconcile is the real customers
    domain's apply against the emulator, run before the answer."""

    class Reconciling(Settings):
        def request_reconcile(self, domain: str, scope: frozenset[str], reason: str) -> object:
            super().request_reconcile(domain, scope, reason)
            world.apply(scope=frozenset(customer_key(org) for org in scope))
            return None

    client = TestClient(build_app(world.store, Reconciling()), raise_server_exceptions=True)
    org = client.put("/v1beta1/organizations/acme", json={"title": "Acme"}, headers=APP)
    assert org.status_code == 201, org.text
    created = client.post(
        "/v1beta1/organizations/acme/billing", json={"currency": "eur"}, headers=APP
    )
    assert created.status_code == 201, created.text
    yield client
    client.close()


def _patch(api: TestClient, metadata: dict[str, str]) -> None:
    answer = api.patch(
        "/v1beta1/organizations/acme/billing", json={"metadata": metadata}, headers=APP
    )
    assert answer.status_code == 200, answer.text


def test_metadata_patched_through_the_api_is_pushed_per_key(world: World, api: TestClient) -> None:
    [customer] = world.customers()
    _patch(api, {"team": "billing", "tier": "gold"})
    live = world.stripe.v1.customers.retrieve(customer.id).metadata
    assert (live["team"], live["tier"]) == ("billing", "gold")
    # A key someone sets directly in Stripe is theirs: it survives our writes.
    world.stripe.v1.customers.update(customer.id, {"metadata": {"crm_id": "42"}})
    _converged(world)
    _patch(api, {"team": "finance"})  # tier removed, team changed
    live = world.stripe.v1.customers.retrieve(customer.id).metadata.to_dict()
    assert live["team"] == "finance"
    assert "tier" not in live
    assert live["crm_id"] == "42"
    assert (live["managed_by"], live["br_key"], live["org_id"]) == (
        "billing-reconciler",
        "customer/acme",
        "acme",
    )
    assert world.get("acme").metadata == {"team": "finance"}
    _converged(world)


def test_a_stripe_edit_of_a_metadata_key_we_wrote_is_pulled(world: World, api: TestClient) -> None:
    [customer] = world.customers()
    _patch(api, {"team": "billing"})
    world.stripe.v1.customers.update(customer.id, {"metadata": {"team": "sales", "crm_id": "7"}})
    plan = world.apply()
    assert [(s.kind, s.reason) for s in plan.steps] == [("billing_account", Reason.REMOTE_CHANGED)]
    # Only the key we own is pulled; Stripe's own key is left where it is.
    assert world.get("acme").metadata == {"team": "sales"}
    _converged(world)


@pytest.fixture
def auto_api(world: World) -> Iterator[TestClient]:
    """As `api`, with accounts auto-created with their orgs (`auto_created=true`, DESIGN §15)."""

    class Reconciling(Settings):
        def request_reconcile(self, domain: str, scope: frozenset[str], reason: str) -> object:
            super().request_reconcile(domain, scope, reason)
            world.apply(scope=frozenset(customer_key(org) for org in scope))
            return None

    settings = Reconciling()
    settings.configure(auto_create_with_org=True)
    client = TestClient(build_app(world.store, settings), raise_server_exceptions=True)
    org = client.put("/v1beta1/organizations/n1", json={"title": "N1"}, headers=APP)
    assert org.status_code == 201, org.text
    yield client
    client.close()


def _live_metadata(world: World, stripe_id: str) -> dict[str, str]:
    metadata = world.stripe.v1.customers.retrieve(stripe_id).metadata
    return {} if metadata is None else {str(k): str(v) for k, v in metadata.to_dict().items()}


def test_a_metadata_patch_keeps_auto_created_and_the_account_shows_the_users_keys(
    world: World, auto_api: TestClient
) -> None:
    """`auto_created` is the controller's own key, like the markers: a PATCH of the user's
    metadata never removes it in Stripe, and the account resource shows the user's keys."""
    [customer] = world.customers()
    assert _live_metadata(world, customer.id)["auto_created"] == "true"
    path = "/v1beta1/organizations/n1/billing"
    answer = auto_api.patch(path, json={"metadata": {"a": "1"}}, headers=APP)
    assert answer.status_code == 200, answer.text
    assert answer.json()["metadata"] == {"a": "1"}
    live = _live_metadata(world, customer.id)
    assert (live["a"], live["auto_created"], live["org_id"]) == ("1", "true", "n1")
    got = auto_api.get(path, headers=APP)
    assert got.status_code == 200, got.text
    assert got.json()["metadata"] == {"a": "1"}
    # The store keeps it too (a later create from this account would stamp it).
    assert world.get("n1").metadata == {"a": "1", "auto_created": "true"}
    _converged(world)

    answer = auto_api.patch(path, json={"metadata": {}}, headers=APP)
    assert answer.status_code == 200, answer.text
    assert answer.json()["metadata"] == {}
    live = _live_metadata(world, customer.id)
    assert "a" not in live
    assert live["auto_created"] == "true"
    _converged(world)

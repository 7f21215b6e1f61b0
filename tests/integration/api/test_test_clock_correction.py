"""T1 finding 9 against the emulator with the real customers domain: an org auto-created with
a test clock Stripe does not have gets no customer (Stripe refuses the create); a PUT with a
real clock replaces it and the next create, under a key of its own (Stripe kept the refused
create's answer under the first), makes the customer on that clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from billing_reconciler.apply import ApplyError
from billing_reconciler.model_customers import customer_key
from tests.integration.api.conftest import APP, Settings, build_app
from tests.integration.customers.conftest import World
from tests.integration.customers.conftest import world as world  # the fixture

TC1 = "/v1beta1/organizations/tc1"


@pytest.fixture
def api(world: World) -> Iterator[tuple[TestClient, list[str]]]:
    failures: list[str] = []

    class Reconciling(Settings):
        def request_reconcile(self, domain: str, scope: frozenset[str], reason: str) -> object:
            super().request_reconcile(domain, scope, reason)
            try:
                world.apply(scope=frozenset(customer_key(org) for org in scope))
            except ApplyError as error:
                failures.append(str(error))
            return None

    settings = Reconciling()
    settings.configure(auto_create_with_org=True)
    client = TestClient(build_app(world.store, settings), raise_server_exceptions=True)
    yield client, failures
    client.close()


def test_a_put_with_a_real_clock_unsticks_the_account(
    world: World, api: tuple[TestClient, list[str]]
) -> None:
    client, failures = api
    bad = {**APP, "X-Stripe-Test-Clock": "clock_nonexistent"}
    assert client.put(TC1, json={"title": "TC1"}, headers=bad).status_code == 201
    assert len(failures) == 1, failures
    assert "No such test_clock" in failures[0], failures
    assert client.get(f"{TC1}/billing", headers=APP).json()["stripe_customer_id"] is None
    assert world.customers() == []

    clock = world.stripe.v1.test_helpers.test_clocks.create({"frozen_time": 1_900_000_000})
    good = {**APP, "X-Stripe-Test-Clock": clock.id}
    assert client.put(TC1, json={"title": "TC1"}, headers=good).status_code == 200
    assert len(failures) == 1, failures
    account = client.get(f"{TC1}/billing", headers=APP).json()
    [customer] = world.customers()
    assert (account["stripe_customer_id"], account["test_clock"]) == (customer.id, clock.id)
    assert customer.test_clock == clock.id


def test_a_patch_clearing_the_clock_unsticks_the_account(
    world: World, api: tuple[TestClient, list[str]]
) -> None:
    client, failures = api
    bad = {**APP, "X-Stripe-Test-Clock": "clock_nonexistent"}
    assert client.put(TC1, json={"title": "TC1"}, headers=bad).status_code == 201
    assert len(failures) == 1, failures
    answer = client.patch(f"{TC1}/billing", json={"test_clock": None}, headers=APP)
    assert answer.status_code == 200, answer.text
    assert len(failures) == 1, failures
    [customer] = world.customers()
    account = client.get(f"{TC1}/billing", headers=APP).json()
    assert (account["stripe_customer_id"], account["test_clock"]) == (customer.id, None)
    assert customer.test_clock is None
    # Now the customer exists, its clock is fixed.
    answer = client.patch(f"{TC1}/billing", json={"test_clock": "clock_x"}, headers=APP)
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"]["code"] == "failed_precondition"
    assert answer.json()["error"]["details"]["field"] == "test_clock"

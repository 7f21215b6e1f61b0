"""Delegated credit purchases (issue 12 item 4; DESIGN §17, §19): the admin subscribe route
with `{product: {name, quantity?}, id?}` adds `quantity x credit_amount` credits of a
`behavior: credits` product, source `system.awarded`, once per purchase id, with nothing sent
to Stripe. The catalog is applied to the emulator over HTTP by the catalog domain (once per
session), and each test's store gets the last-applied records that apply wrote, so the
products are read exactly as an apply records them; SQLite and PostgreSQL.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from billing_reconciler.api.models import INT64_MAX
from billing_reconciler.api.purchases import purchase_transaction_id
from billing_reconciler.client import BillingAPIError, BillingClient
from billing_reconciler.controller import Controller, PlanOptions
from billing_reconciler.desired import load_desired
from billing_reconciler.registry import CATALOG
from billing_reconciler.store import LastApplied, LastAppliedRepository, Store
from billing_reconciler.stripe_gateway import RetryPolicy, StripeGateway
from stripe_emulator.server import EmbeddedEmulator
from tests.fixtures.emulator import EmulatorHandle
from tests.integration.api.conftest import (
    ADMIN,
    ADMIN_TOKEN,
    APP,
    GRANT,
    ORG,
    V1,
    Api,
    Settings,
    build_app,
    dump,
    error_of,
    refused,
)
from tests.integration.runtime.live_server import LiveServer

SUBS = f"{ORG}/billing/subscriptions"

BILLING_YAML = """\
billing:
  default_currency: usd
reconcile:
  installation_id: default
"""

CATALOG_YAML = """\
products:
  - name: credits_400
    title: 400 credits
    behavior: credits
    config:
      credit_amount: 400
    prices:
      - name: pack
        amount: 4000
        currency: usd
  - name: credits_pack
    title: Credit pack
    behavior: credits
    config:
      credit_amount: 50
      min_quantity: 2
      max_quantity: 10
    prices:
      - name: pack
        amount: 500
        currency: usd
  - name: credits_empty
    title: Credits without an amount
    behavior: credits
    prices:
      - name: pack
        amount: 100
        currency: usd
  - name: support
    title: Support pack
    prices:
      - name: once
        amount: 9900
        currency: usd
  - name: seat
    title: Seat
    behavior: per_seat
    prices:
      - name: monthly
        interval: month
        amount: 900
        currency: usd
plans:
  - name: team_monthly
    title: Team
    interval: month
    products:
      - name: seat
"""


@pytest.fixture(scope="session")
def applied_catalog(
    emulator_server: EmbeddedEmulator, tmp_path_factory: pytest.TempPathFactory
) -> list[LastApplied]:
    """The catalog above applied to the emulator by the catalog domain, once per session:
    the last-applied records that apply left in its store."""
    root = tmp_path_factory.mktemp("credit_purchase")
    directory = root / "desired"
    (directory / "plans").mkdir(parents=True)
    (directory / "billing.yaml").write_text(BILLING_YAML)
    (directory / "plans" / "catalog.yaml").write_text(textwrap.dedent(CATALOG_YAML))
    result = load_desired(directory)
    assert result.state is not None, [str(d) for d in result.diagnostics]
    emulator_server.control.reset()
    store = Store.open(f"sqlite:///{root / 'state.db'}")
    try:
        controller = Controller(
            registration=CATALOG,
            state=result.state,
            gateway=StripeGateway(
                api_key="sk_test_emulator",
                api_base=emulator_server.url,
                retry=RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0),
            ),
            store=store,
        )
        _, _, residual = controller.apply(controller.plan(PlanOptions()))
        assert residual.converged, residual
        with store.session() as session:
            entries = list(LastAppliedRepository(session).for_installation("default").values())
    finally:
        store.close()
    assert any(e.object_key == "product/credits_400" for e in entries)
    return entries


@pytest.fixture
def catalog(
    api: Api, emulator: EmulatorHandle, applied_catalog: list[LastApplied]
) -> EmulatorHandle:
    """`api`'s store holds the applied catalog's records (as if it had applied it); the
    emulator (reset: any request it logs was sent by the test)."""
    with api.store.session() as session:
        repository = LastAppliedRepository(session)
        for entry in applied_catalog:
            repository.put(entry)
    return emulator


def _buy(api: Api, product: str, quantity: int | None = None, **extra: Any) -> Any:
    item: dict[str, Any] = {"name": product}
    if quantity is not None:
        item["quantity"] = quantity
    return api.post(SUBS, json={"product": item, **extra}, headers=ADMIN)


def _balance(api: Api, org: str = "acme") -> int:
    response = api.get(f"{V1}/organizations/{org}/billing/balance", headers=APP)
    assert response.status_code == 200, response.text
    amount: int = response.json()["amount"]
    return amount


def _transactions(api: Api) -> list[dict[str, Any]]:
    response = api.get(f"{ORG}/billing/transactions", headers=APP)
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


# --- the purchase -----------------------------------------------------------------------------


def test_a_two_unit_purchase_of_a_400_credit_product_gives_800(
    api: Api, acme: str, catalog: EmulatorHandle, settings: Settings
) -> None:
    """Frontier's case. The purchase is answered, the transactions list shows it as
    `system.awarded` with what was bought, and nothing was sent to Stripe."""
    response = _buy(api, "credits_400", 2, id="order-1")
    assert response.status_code == 201, response.text
    purchase = response.json()
    transaction_id = purchase_transaction_id("acme", "order-1")
    assert transaction_id == "system.purchase:acme/order-1"
    assert purchase == {
        "id": "order-1",
        "product": "credits_400",
        "quantity": 2,
        "checkout_id": None,
        "created_at": purchase["created_at"],
        "credits": 800,
        "transaction_id": transaction_id,
        "account_id": acme,
    }
    assert purchase["created_at"].endswith("Z")
    assert _balance(api) == 800
    (listed,) = _transactions(api)
    assert listed["id"] == transaction_id
    assert (listed["type"], listed["amount"], listed["source"]) == ("credit", 800, "system.awarded")
    assert listed["metadata"] == {
        "purchase_id": "order-1",
        "product": "credits_400",
        "quantity": "2",
        "credit_amount": "400",
        "delegated": "true",
    }
    assert listed["created_at"] == purchase["created_at"]
    assert catalog.control.requests() == []  # no payment, no Stripe object
    assert settings.reconciles[-1] == ("customer", frozenset({"acme"}), "credits purchased")


def test_the_quantity_defaults_to_one_and_the_name_is_case_insensitive(
    api: Api, acme: str, catalog: EmulatorHandle
) -> None:
    response = _buy(api, "Credits_400")
    assert response.status_code == 201, response.text
    assert (response.json()["product"], response.json()["quantity"]) == ("credits_400", 1)
    assert _balance(api) == 400


def test_an_offline_account_buys_credits_too(
    api: Api, settings: Settings, catalog: EmulatorHandle
) -> None:
    """No Stripe customer is needed: nothing is paid."""
    assert api.put(ORG, json={"title": "Acme"}, headers=APP).status_code == 201
    created = api.post(f"{ORG}/billing", json={"offline": True}, headers=APP)
    assert created.status_code == 201, created.text
    assert _buy(api, "credits_pack", 3).status_code == 201
    assert _balance(api) == 150
    assert catalog.control.requests() == []


# --- retries ----------------------------------------------------------------------------------


def test_the_same_purchase_id_again_adds_nothing(
    api: Api, acme: str, catalog: EmulatorHandle
) -> None:
    first = _buy(api, "credits_400", 2, id="order-1")
    assert first.status_code == 201, first.text
    before = dump(api.store)
    again = _buy(api, "credits_400", 2, id="order-1")
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert dump(api.store) == before
    assert _balance(api) == 800


def test_a_retry_is_answered_as_stored_after_the_catalog_changed(
    api: Api, acme: str, catalog: EmulatorHandle
) -> None:
    """The stored purchase answers a retry even when the product is gone from the applied
    catalog (archived) since: a retry never fails on what changed after the first try."""
    first = _buy(api, "credits_400", 2, id="order-1")
    assert first.status_code == 201, first.text
    with api.store.session() as session:
        assert LastAppliedRepository(session).delete("default", "product/credits_400")
    again = _buy(api, "credits_400", 2, id="order-1")
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert _balance(api) == 800
    refused(api, "POST", SUBS, status=404, code="not_found", field="product.name",
            headers=ADMIN, json={"product": {"name": "credits_400"}, "id": "order-2"})  # fmt: skip


@pytest.mark.parametrize(
    "product",
    [{"name": "credits_400", "quantity": 3}, {"name": "credits_pack", "quantity": 2}],
    ids=["other-quantity", "other-product"],
)
def test_the_same_id_with_other_content_is_an_id_conflict(
    api: Api, acme: str, catalog: EmulatorHandle, product: dict[str, Any]
) -> None:
    assert _buy(api, "credits_400", 2, id="order-1").status_code == 201
    error = refused(
        api,
        "POST",
        SUBS,
        status=409,
        code="id_conflict",
        field="id",
        headers=ADMIN,
        json={"product": product, "id": "order-1"},
    )
    assert error["details"]["id"] == "order-1"
    assert _balance(api) == 800


def test_without_an_id_each_request_is_a_new_purchase(
    api: Api, acme: str, catalog: EmulatorHandle
) -> None:
    ids = {_buy(api, "credits_400").json()["id"] for _ in range(3)}
    assert len(ids) == 3
    assert _balance(api) == 1200
    assert len(_transactions(api)) == 3


def test_purchase_ids_are_per_org(api: Api, acme: str, catalog: EmulatorHandle) -> None:
    """Two orgs may use the same purchase id (the ledger id names the org)."""
    other = f"{V1}/organizations/beta"
    assert api.put(other, json={"title": "Beta"}, headers=APP).status_code == 201
    assert api.post(f"{other}/billing", json={}, headers=APP).status_code == 201
    assert _buy(api, "credits_400", 1, id="order-1").status_code == 201
    response = api.post(
        f"{other}/billing/subscriptions",
        json={"product": {"name": "credits_400", "quantity": 2}, "id": "order-1"},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    assert response.json()["transaction_id"] == "system.purchase:beta/order-1"
    assert (_balance(api), _balance(api, "beta")) == (400, 800)


def test_a_long_purchase_id_gets_a_hashed_ledger_id(
    api: Api, acme: str, catalog: EmulatorHandle
) -> None:
    long_id = "x" * 255
    response = _buy(api, "credits_400", id=long_id)
    assert response.status_code == 201, response.text
    transaction_id = response.json()["transaction_id"]
    assert transaction_id.startswith("system.purchase#")
    assert len(transaction_id) == 80
    assert transaction_id != purchase_transaction_id("acme", "x" * 254)
    assert _buy(api, "credits_400", id=long_id).status_code == 200
    assert _balance(api) == 400


# --- retries across a disable and a new account (tester T2 G2, G3) ----------------------------


def test_a_retry_after_the_account_was_disabled_answers_the_stored_purchase(
    api: Api, acme: str, catalog: EmulatorHandle
) -> None:
    """G2: a sales tool retrying a purchase whose first answer was lost while the account
    was disabled hears that it was added (200, as stored), not that it failed; anything new
    or different keeps the account's refusal."""
    first = _buy(api, "credits_400", 2, id="order-1")
    assert first.status_code == 201, first.text
    assert api.post(f"{ORG}/billing/disable", headers=APP).status_code == 200
    before = dump(api.store)
    again = _buy(api, "credits_400", 2, id="order-1")
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert again.json()["account_id"] == acme
    assert dump(api.store) == before
    for body in (
        {"product": {"name": "credits_400", "quantity": 2}, "id": "order-2"},
        {"product": {"name": "credits_400", "quantity": 3}, "id": "order-1"},
        {"product": {"name": "credits_400", "quantity": 2}},
    ):
        error = refused(api, "POST", SUBS, status=409, code="failed_precondition",
                        headers=ADMIN, json=body)  # fmt: skip
        assert error["details"]["state"] == "disabled"
    assert dump(api.store) == before


def test_a_retry_after_a_new_account_was_opened_names_the_account_credited(
    api: Api, acme: str, catalog: EmulatorHandle
) -> None:
    """G3: the purchase id is the org's, so the same purchase after the org's account was
    disabled and a new one opened is the replay, naming the earlier account its credits went
    to (the new account gets nothing); other content is an id conflict that names that
    account instead of sending the operator looking for a content difference alone."""
    first = _buy(api, "credits_400", 2, id="order-1")
    assert first.status_code == 201, first.text
    assert api.post(f"{ORG}/billing/disable", headers=APP).status_code == 200
    opened = api.post(f"{ORG}/billing", json={"currency": "usd"}, headers=APP)
    assert opened.status_code == 201, opened.text
    new_account = opened.json()["id"]
    assert new_account != acme
    again = _buy(api, "credits_400", 2, id="order-1")
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert again.json()["account_id"] == acme
    assert _balance(api) == 0
    other = {"product": {"name": "credits_400"}, "id": "order-1"}
    error = refused(api, "POST", SUBS, status=409, code="id_conflict", field="id",
                    headers=ADMIN, json=other)  # fmt: skip
    assert acme in error["message"], error
    assert error["details"]["account_id"] == acme
    fresh = _buy(api, "credits_400", 1, id="order-2")
    assert fresh.status_code == 201, fresh.text
    assert fresh.json()["account_id"] == new_account
    assert _balance(api) == 400


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"product": {"name": "credits_400", "quantity": 0}}, "product.quantity"),
        ({"product": {"name": "credits_400", "quantity": -2}}, "product.quantity"),
        ({"product": {"name": "credits_400", "quantity": 100_001}}, "product.quantity"),
        ({"product": {"name": "credits_400", "quantity": 2.0}}, "product.quantity"),
        ({"product": {"name": "credits_400", "quantity": 1.5}}, "product.quantity"),
        ({"product": {"name": "credits_400", "quantity": "2"}}, "product.quantity"),
        ({"product": {"name": "credits_400", "quantity": True}}, "product.quantity"),
        ({"product": {"name": "credits_400", "quantity": None}}, "product.quantity"),
        ({"product": {"name": ""}}, "product.name"),
        ({"product": {"quantity": 2}}, "product.name"),
        ({"product": {"name": "credits_400", "price": "pack"}}, "product.price"),
        ({"product": "credits_400"}, "product"),
        ({"product": {"name": "credits_400"}, "id": ""}, "id"),
        ({"product": {"name": "credits_400"}, "id": " order-1"}, "id"),
        ({"product": {"name": "credits_400"}, "id": 7}, "id"),
        ({"product": {"name": "credits_400"}, "plan": "team_monthly"}, "body"),
        ({"product": {"name": "credits_400"}, "skip_trial": True}, "body"),
        ({"product": {"name": "credits_400"}, "cancel_after_trial": False}, "body"),
        ({"plan": "team_monthly", "id": "order-1"}, "body"),
        ({}, "body"),
    ],
)
def test_bad_bodies_are_refused(api: Api, acme: str, body: dict[str, Any], field: str) -> None:
    """Refused by the body's validation, before the store or the catalog is read."""
    refused(
        api,
        "POST",
        SUBS,
        status=422,
        code="invalid_argument",
        field=field,
        headers=ADMIN,
        json=body,
    )


def test_both_plan_and_product_says_which(api: Api, acme: str, catalog: EmulatorHandle) -> None:
    body = {"plan": "team_monthly", "product": {"name": "credits_400"}}
    response = api.post(SUBS, json=body, headers=ADMIN)
    assert response.status_code == 422
    assert "exactly one of plan" in error_of(response)["message"]


@pytest.mark.parametrize(
    ("product", "says"),
    [
        ("support", "one-time product that must be paid: buy it through a checkout"),
        ("seat", "billed in plans: subscribe to a plan"),
    ],
)
def test_a_product_that_is_not_credits_is_refused(
    api: Api, acme: str, catalog: EmulatorHandle, product: str, says: str
) -> None:
    error = refused(
        api,
        "POST",
        SUBS,
        status=422,
        code="invalid_argument",
        field="product.name",
        headers=ADMIN,
        json={"product": {"name": product}},
    )
    assert "not credits" in error["message"], error
    assert says in error["message"], error
    assert catalog.control.requests() == []


def test_an_unknown_product_is_not_found(api: Api, acme: str, catalog: EmulatorHandle) -> None:
    error = refused(
        api,
        "POST",
        SUBS,
        status=404,
        code="not_found",
        field="product.name",
        headers=ADMIN,
        json={"product": {"name": "nope", "quantity": 2}},
    )
    assert error["details"]["product"] == "nope"


def test_a_credits_product_without_a_credit_amount_is_refused(
    api: Api, acme: str, catalog: EmulatorHandle
) -> None:
    refused(api, "POST", SUBS, status=409, code="failed_precondition", field="product.name",
            headers=ADMIN, json={"product": {"name": "credits_empty"}})  # fmt: skip


@pytest.mark.parametrize("quantity", [1, 11])
def test_the_product_quantity_limits_hold(
    api: Api, acme: str, catalog: EmulatorHandle, quantity: int
) -> None:
    error = refused(
        api,
        "POST",
        SUBS,
        status=422,
        code="invalid_argument",
        field="product.quantity",
        headers=ADMIN,
        json={"product": {"name": "credits_pack", "quantity": quantity}},
    )
    assert "2..10" in error["message"]
    assert (error["details"]["min_quantity"], error["details"]["max_quantity"]) == (2, 10)
    assert _buy(api, "credits_pack", 10).status_code == 201


def test_no_org_or_no_account_is_not_found(api: Api, catalog: EmulatorHandle) -> None:
    body = {"product": {"name": "credits_400"}}
    refused(api, "POST", SUBS, status=404, code="not_found", headers=ADMIN, json=body)
    assert api.put(ORG, json={"title": "Acme"}, headers=APP).status_code == 201
    error = refused(api, "POST", SUBS, status=404, code="not_found", headers=ADMIN, json=body)
    assert "has no billing account" in error["message"]


def test_a_disabled_account_is_refused(api: Api, acme: str, catalog: EmulatorHandle) -> None:
    assert api.post(f"{ORG}/billing/disable", headers=APP).status_code == 200
    error = refused(api, "POST", SUBS, status=409, code="failed_precondition", headers=ADMIN,
                    json={"product": {"name": "credits_400"}})  # fmt: skip
    assert error["details"]["state"] == "disabled"


def test_an_app_token_is_forbidden(api: Api, acme: str, catalog: EmulatorHandle) -> None:
    refused(api, "POST", SUBS, status=403, code="forbidden", headers=APP,
            json={"product": {"name": "credits_400"}})  # fmt: skip


def test_the_balance_cannot_overflow(api: Api, acme: str, catalog: EmulatorHandle) -> None:
    for id, amount in (("g1", 2**62), ("g2", 2**62 - 401)):
        response = api.post(GRANT, json={"id": id, "amount": amount}, headers=ADMIN)
        assert response.status_code == 201, response.text
    assert _buy(api, "credits_400", 1, id="fits").status_code == 201
    assert _balance(api) == INT64_MAX
    error = refused(api, "POST", SUBS, status=422, code="invalid_argument",
                    field="product.quantity", headers=ADMIN,
                    json={"product": {"name": "credits_400"}})  # fmt: skip
    assert error["details"]["limit"] == INT64_MAX
    assert _buy(api, "credits_400", 1, id="fits").status_code == 200  # a replay still answers


# --- through the client, concurrently -----------------------------------------------------------


@pytest.fixture
def admin_client(api: Api, settings: Settings) -> Iterator[BillingClient]:
    live = LiveServer()
    live.start(build_app(api.store, settings))
    try:
        with BillingClient(live.url, token=ADMIN_TOKEN) as client:
            yield client
    finally:
        live.stop()


def test_the_client_buys_and_retries(
    api: Api, acme: str, catalog: EmulatorHandle, admin_client: BillingClient
) -> None:
    bought = admin_client.purchase_credits("acme", product="credits_400", quantity=2, id="o-1")
    assert (bought["id"], bought["credits"], bought["checkout_id"]) == ("o-1", 800, None)
    assert admin_client.purchase_credits("acme", product="credits_400", quantity=2, id="o-1") == (
        bought
    )
    with pytest.raises(BillingAPIError) as raised:
        admin_client.purchase_credits("acme", product="credits_400", quantity=1, id="o-1")
    assert (raised.value.status, raised.value.code) == (409, "id_conflict")
    assert admin_client.purchase_credits("acme", product="credits_pack", quantity=2)["credits"] == (
        100
    )
    assert _balance(api) == 900


def test_concurrent_retries_of_one_purchase_add_its_credits_once(
    api: Api, acme: str, catalog: EmulatorHandle, admin_client: BillingClient
) -> None:
    """Ten clients send the same purchase at once (a retry storm): one credit of 800."""

    def buy(_: int) -> str:
        bought = admin_client.purchase_credits(
            "acme", product="credits_400", quantity=2, id="storm"
        )
        return bought["transaction_id"]

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(buy, range(10)))
    assert set(answers) == {"system.purchase:acme/storm"}
    assert _balance(api) == 800
    assert len(_transactions(api)) == 1

"""`BillingClient` against the app served by a real uvicorn, including concurrent grants."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from billing_reconciler.api.pending import ReconcileTicket
from billing_reconciler.client import BillingAPIError, BillingClient, BillingPending
from billing_reconciler.store import Store
from tests.integration.api.conftest import ADMIN_TOKEN, APP_TOKEN, Settings, build_app
from tests.integration.runtime.live_server import LiveServer


@pytest.fixture
def server(store: Store, settings: Settings) -> Iterator[str]:
    live = LiveServer()
    live.start(build_app(store, settings))
    try:
        yield live.url
    finally:
        live.stop()


@pytest.fixture
def app_client(server: str) -> Iterator[BillingClient]:
    with BillingClient(server, token=APP_TOKEN) as client:
        yield client


@pytest.fixture
def admin_client(server: str) -> Iterator[BillingClient]:
    with BillingClient(server, token=ADMIN_TOKEN) as client:
        yield client


def test_every_route_through_the_client(
    app_client: BillingClient, admin_client: BillingClient, settings: Settings
) -> None:
    settings.configure(auto_create_with_org=True, onboard_credits_with_org=10)
    org = app_client.put_organization(
        "acme", title="Acme", owner_email="o@acme.test", metadata={"a": "b"}, test_clock="clock_1"
    )
    assert org["id"] == "acme"
    assert app_client.get_account("acme")["test_clock"] == "clock_1"
    app_client.put_member("acme", "u1", email="u1@acme.test", role="admin")
    app_client.put_member("acme", "u2")
    assert [m["user_id"] for m in app_client.iter_members("acme", limit=1)] == ["u1", "u2"]
    assert app_client.list_members("acme", limit=1)["next_cursor"] is not None
    app_client.delete_member("acme", "u2")
    assert app_client.patch_account("acme", {"name": "ACME"})["name"] == "ACME"
    assert app_client.register_account("acme")["offline"] is False
    assert app_client.disable_account("acme")["state"] == "disabled"
    assert app_client.enable_account("acme")["state"] == "active"
    grant = admin_client.grant_credits(
        "acme", id="g1", amount=5, source="promo", description="welcome"
    )
    assert grant["amount"] == 5
    assert (
        admin_client.grant_credits("acme", id="g1", amount=5, source="promo", description="welcome")
        == grant
    )
    assert admin_client.put_details("acme", credit_min=-50, due_in_days=7)["credit_min"] == -50
    assert app_client.get_balance("acme")["amount"] == 15
    assert [t["id"] for t in app_client.list_transactions("acme")["data"]] == ["g1", "onboard:acme"]
    assert app_client.list_plans() == []
    assert app_client.list_products() == []
    assert app_client.list_features() == []
    with pytest.raises(BillingAPIError) as missing:
        app_client.get_plan("nope")
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    with pytest.raises(BillingAPIError) as exists:
        app_client.create_account("acme", {"currency": "usd"})
    assert (exists.value.status, exists.value.code) == (409, "already_exists")
    with pytest.raises(BillingAPIError) as forbidden:
        app_client.grant_credits("acme", id="g2", amount=1)
    assert (forbidden.value.status, forbidden.value.code) == (403, "forbidden")
    with pytest.raises(BillingAPIError) as slash:
        app_client.put_organization("a/b", title="x")
    assert (slash.value.status, slash.value.code) == (400, "invalid_argument")
    app_client.delete_organization("acme", force=True)
    with pytest.raises(BillingAPIError) as gone:
        app_client.get_account("acme")
    assert gone.value.code == "not_found"


def test_a_wrong_token_raises_unauthenticated(server: str) -> None:
    with BillingClient(server, token="wrong") as client, pytest.raises(BillingAPIError) as error:
        client.list_plans()
    assert (error.value.status, error.value.code) == (401, "unauthenticated")
    assert "wrong" not in str(error.value)


def test_100_concurrent_grants_give_the_exact_balance(
    app_client: BillingClient, admin_client: BillingClient, store: Store
) -> None:
    app_client.put_organization("acme", title="Acme")
    app_client.create_account("acme")
    # Each grant is sent twice (a client retry): the resend must change nothing.
    grants = [(f"g{n}", n) for n in range(1, 101)] * 2

    def grant(item: tuple[str, int]) -> int:
        return admin_client.grant_credits("acme", id=item[0], amount=item[1])["amount"]

    with ThreadPoolExecutor(max_workers=20) as pool:
        amounts = list(pool.map(grant, grants))
    assert sum(amounts) == 2 * 5050
    assert app_client.get_balance("acme")["amount"] == 5050
    from billing_reconciler.store import LedgerRepository

    with store.session() as session:
        assert LedgerRepository(session).verify() == []


def _deferred() -> ReconcileTicket:
    ticket = ReconcileTicket()
    ticket.defer("not_leader")
    return ticket


def test_a_202_raises_billing_pending_with_the_request_id(
    app_client: BillingClient, settings: Settings
) -> None:
    app_client.put_organization("acme", title="Acme")
    app_client.create_account("acme", {"offline": True})
    settings.ticket = _deferred
    with pytest.raises(BillingPending) as raised:
        app_client.register_account("acme")
    pending = raised.value
    assert pending.status == 202
    assert pending.reason == "not_leader"
    assert pending.request_id.startswith("rr_")
    assert pending.location == "/v1beta1/organizations/acme/billing"
    assert not isinstance(pending, BillingAPIError)
    settings.ticket = None
    assert app_client.get_account("acme")["offline"] is False  # recorded all the same

"""Orgs and members: idempotent upserts, auto-created accounts, onboard credits once ever."""

from __future__ import annotations

from billing_reconciler.store import AccountRepository, LedgerRepository, onboard_grant_id
from tests.integration.api.conftest import ADMIN, APP, V1, Api, dump, error_of

ORG = f"{V1}/organizations/acme"


def _accounts(api: Api, org: str = "acme") -> list[str]:
    with api.store.session() as session:
        latest = AccountRepository(session).latest_for_org(org)
    return [] if latest is None else [latest.id]


def test_put_org_creates_then_updates(api: Api) -> None:
    first = api.put(
        ORG,
        json={"title": "Acme", "owner_email": "o@acme.test", "metadata": {"tier": "gold"}},
        headers=APP,
    )
    assert first.status_code == 201
    body = first.json()
    assert body["id"] == "acme"
    assert body["metadata"] == {"tier": "gold"}
    assert body["created_at"].endswith("Z")
    second = api.put(ORG, json={"title": "Acme Inc"}, headers=APP)
    assert second.status_code == 200
    assert second.json()["title"] == "Acme Inc"
    assert ("customer", frozenset({"acme"}), "organization upserted") in api.settings.reconciles
    # Without auto_create_with_org no account is opened.
    assert _accounts(api) == []


def test_put_org_twice_auto_creates_one_account_and_one_onboard_grant(api: Api) -> None:
    api.settings.configure(
        auto_create_with_org=True, onboard_credits_with_org=250, default_offline=True
    )
    headers = {**APP, "X-Stripe-Test-Clock": "clock_abc"}
    body = {"title": "Acme", "owner_email": "o@acme.test"}
    assert api.put(ORG, json=body, headers=headers).status_code == 201
    after_first = dump(api.store)
    assert api.put(ORG, json=body, headers=headers).status_code == 200
    assert dump(api.store)["billing_accounts"] == after_first["billing_accounts"]
    assert dump(api.store)["ledger_transactions"] == after_first["ledger_transactions"]
    account = api.get(f"{ORG}/billing", headers=APP).json()
    assert account["name"] == "Acme"
    assert account["email"] == "o@acme.test"
    assert account["currency"] == "usd"
    assert account["offline"] is True
    assert account["test_clock"] == "clock_abc"
    with api.store.session() as session:
        record = AccountRepository(session).get(account["id"])
        assert record is not None
        assert record.metadata == {"auto_created": "true"}
    assert api.get(f"{ORG}/billing/balance", headers=APP).json()["amount"] == 250
    page = api.get(f"{ORG}/billing/transactions", headers=APP).json()
    assert [t["id"] for t in page["data"]] == [onboard_grant_id("acme")]
    assert page["data"][0]["source"] == "system.awarded"  # DESIGN §16


def test_the_default_currency_comes_from_billing_yaml(api: Api) -> None:
    from billing_reconciler.config import BillingConfig

    api.settings.config = BillingConfig.model_validate(
        {"billing": {"default_currency": "EUR", "customer": {"auto_create_with_org": True}}}
    )
    api.put(ORG, json={"title": "Acme"}, headers=APP)
    assert api.get(f"{ORG}/billing", headers=APP).json()["currency"] == "eur"


def test_onboard_credits_are_granted_once_per_org_ever(api: Api) -> None:
    api.settings.configure(onboard_credits_with_org=100)
    api.put(ORG, json={"title": "Acme"}, headers=APP)
    # Created later, explicitly: the grant comes with it.
    first = api.post(f"{ORG}/billing", json={"name": "Acme"}, headers=APP).json()
    assert api.get(f"{ORG}/billing/balance", headers=APP).json()["amount"] == 100
    api.post(f"{ORG}/billing/disable", headers=APP)
    second = api.post(f"{ORG}/billing", json={}, headers=APP).json()
    assert second["id"] != first["id"]
    assert api.get(f"{ORG}/billing/balance", headers=APP).json()["amount"] == 0
    with api.store.session() as session:
        grant = LedgerRepository(session).get(onboard_grant_id("acme"))
    assert grant is not None
    assert grant.account_id == first["id"]


def test_delete_is_refused_while_the_balance_is_negative_unless_forced(api: Api) -> None:
    api.put(ORG, json={"title": "Acme"}, headers=APP)
    account = api.post(f"{ORG}/billing", json={}, headers=APP).json()
    with api.store.session() as session:
        LedgerRepository(session).debit(
            account["id"], id="u1", amount=7, source="usage", credit_min=-10
        )
    before = dump(api.store)
    refused = api.delete(ORG, headers=APP)
    assert refused.status_code == 409
    error = error_of(refused)
    assert error["code"] == "failed_precondition"
    assert error["details"]["balance"] == -7
    assert dump(api.store) == before
    assert api.delete(ORG, params={"force": "true"}, headers=APP).status_code == 204
    assert api.get(f"{ORG}/billing", headers=APP).status_code == 404
    # Deleting again is a success; upserting again creates it again (201), its old account
    # still disabled (no auto-create here).
    assert api.delete(ORG, headers=APP).status_code == 204
    assert api.put(ORG, json={"title": "Acme"}, headers=APP).status_code == 201
    assert api.put(ORG, json={"title": "Acme"}, headers=APP).status_code == 200
    assert api.get(f"{ORG}/billing", headers=APP).json()["state"] == "disabled"


def test_an_org_put_again_after_a_delete_gets_a_new_account(api: Api) -> None:
    """A fresh user's PUT of a deleted org answered 200 with its old, disabled account and
    opened nothing although `auto_create_with_org` was set."""
    api.settings.configure(auto_create_with_org=True, default_offline=True)
    assert api.put(ORG, json={"title": "Acme"}, headers=APP).status_code == 201
    first = api.get(f"{ORG}/billing", headers=APP).json()
    assert api.delete(ORG, headers=APP).status_code == 204
    again = api.put(ORG, json={"title": "Acme again"}, headers=APP)
    assert again.status_code == 201, again.text
    account = api.get(f"{ORG}/billing", headers=APP).json()
    assert account["id"] != first["id"]
    assert (account["state"], account["name"]) == ("active", "Acme again")
    with api.store.session() as session:
        old = AccountRepository(session).get(first["id"])
    assert old is not None
    assert old.state == "disabled"
    # A plain update of a live org opens nothing more.
    assert api.put(ORG, json={"title": "Acme 3"}, headers=APP).status_code == 200
    with api.store.session() as session:
        assert AccountRepository(session).active_for_org("acme") is not None


def test_delete_disables_the_account(api: Api) -> None:
    api.put(ORG, json={"title": "Acme"}, headers=APP)
    api.post(f"{ORG}/billing", json={}, headers=APP)
    assert api.delete(ORG, headers=ADMIN).status_code == 204
    with api.store.session() as session:
        latest = AccountRepository(session).latest_for_org("acme")
    assert latest is not None
    assert latest.state == "disabled"


def test_members_upsert_delete_and_paginate(api: Api) -> None:
    api.put(ORG, json={"title": "Acme"}, headers=APP)
    for n in range(5):
        response = api.put(f"{ORG}/members/user{n}", json={"email": f"u{n}@x.test"}, headers=APP)
        assert response.status_code == 201
    again = api.put(f"{ORG}/members/user1", json={"role": "owner"}, headers=APP)
    assert again.status_code == 200
    assert again.json()["role"] == "owner"
    assert api.delete(f"{ORG}/members/user3", headers=APP).status_code == 204
    assert api.delete(f"{ORG}/members/user3", headers=APP).status_code == 204
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} if cursor is None else {"limit": 2, "cursor": cursor}
        page = api.get(f"{ORG}/members", params=params, headers=APP).json()
        assert len(page["data"]) <= 2
        seen += [m["user_id"] for m in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["user0", "user1", "user2", "user4"]
    default = api.get(f"{ORG}/members", headers=APP).json()
    assert len(default["data"]) == 4
    assert default["next_cursor"] is None


def test_an_org_made_again_after_a_delete_has_a_new_created_at(api: Api) -> None:
    """Tester T3-9: a deleted org put again is created again (201), and said so: its
    `created_at` is the new creation's, not the deleted org's."""
    first = api.put(ORG, json={"title": "Acme"}, headers=APP)
    assert first.status_code == 201
    assert api.delete(ORG, headers=APP).status_code in (200, 204)
    again = api.put(ORG, json={"title": "Acme again"}, headers=APP)
    assert again.status_code == 201, again.text
    assert again.json()["created_at"] > first.json()["created_at"]
    assert again.json()["created_at"] == again.json()["updated_at"]

"""Issue 10's fresh-user round: enabling an account whose Stripe customer was deleted, email
fields, what a PUT of an org without `owner_email` does, and grant ids across orgs."""

from __future__ import annotations

import pytest

from billing_reconciler.store import AccountRepository
from tests.integration.api.conftest import ADMIN, APP, ORG, V1, Api, dump, error_of, refused


def _deleted_in_stripe(api: Api, account_id: str, customer_id: str) -> None:
    """What the customers domain records when the account's customer was deleted in Stripe
    (its archive step, `effects.customers`): disabled, the customer id kept, the reason."""
    with api.store.session() as session:
        accounts = AccountRepository(session)
        accounts.set_stripe_customer(account_id, customer_id)
        accounts.set_state(
            account_id, "disabled", reason=f"Stripe customer {customer_id} deleted in Stripe"
        )


def test_enabling_an_account_whose_customer_was_deleted_in_stripe_is_409(
    api: Api, acme: str
) -> None:
    _deleted_in_stripe(api, acme, "cus_gone")
    error = refused(api, "POST", f"{ORG}/billing/enable", status=409, code="failed_precondition")
    assert error["details"] == {
        "org_id": "acme",
        "account_id": acme,
        "stripe_customer_id": "cus_gone",
    }
    assert "cus_gone was deleted in Stripe" in error["message"]
    assert f"POST {V1}/organizations/acme/billing" in error["message"]
    # The way out the message names: a new account (the old one is disabled).
    created = api.post(f"{ORG}/billing", json={"currency": "usd"}, headers=APP)
    assert created.status_code == 201, created.text
    assert created.json()["id"] != acme


def test_an_account_disabled_through_the_api_can_still_be_enabled(api: Api, acme: str) -> None:
    with api.store.session() as session:
        AccountRepository(session).set_stripe_customer(acme, "cus_live")
    assert api.post(f"{ORG}/billing/disable", headers=APP).json()["state"] == "disabled"
    enabled = api.post(f"{ORG}/billing/enable", headers=APP)
    assert enabled.status_code == 200, enabled.text
    assert enabled.json()["state"] == "active"


@pytest.mark.parametrize(
    "email",
    ["not-an-email", "a@b", "two@@ats.test", "spaced out@acme.test", "@acme.test", "a@-x.test"],
)
def test_emails_that_are_not_addresses_are_422_naming_the_field(
    api: Api, acme: str, email: str
) -> None:
    del acme
    for method, path, body, field in (
        ("PUT", ORG, {"title": "Acme", "owner_email": email}, "owner_email"),
        ("PATCH", f"{ORG}/billing", {"email": email}, "email"),
        ("POST", f"{V1}/organizations/other/billing", {"email": email}, "email"),
        ("PUT", f"{ORG}/members/u1", {"email": email}, "email"),
    ):
        error = refused(
            api, method, path, status=422, code="invalid_argument", field=field, json=body
        )
        assert "not an email address" in error["message"]


def test_real_addresses_are_accepted(api: Api, acme: str) -> None:
    del acme
    for email in ("ops@acme.test", "first.last+billing@mail.example.co.uk", "o'neil@x.io"):
        answer = api.put(ORG, json={"title": "Acme", "owner_email": email}, headers=APP)
        assert answer.status_code == 200, answer.text
        assert answer.json()["owner_email"] == email
        patched = api.patch(f"{ORG}/billing", json={"email": email}, headers=APP)
        assert patched.json()["email"] == email


def test_a_put_of_an_org_replaces_it_so_a_left_out_owner_email_is_cleared(api: Api) -> None:
    first = api.put(
        ORG,
        json={"title": "Acme", "owner_email": "ops@acme.test", "metadata": {"tier": "gold"}},
        headers=APP,
    )
    assert first.status_code == 201
    again = api.put(ORG, json={"title": "Acme"}, headers=APP)
    assert again.status_code == 200
    assert again.json()["owner_email"] is None
    assert again.json()["metadata"] == {}
    # Idempotent: the same PUT twice is the same org.
    assert api.put(ORG, json={"title": "Acme"}, headers=APP).json() == again.json()


def test_grant_ids_are_global_so_one_reused_in_another_org_is_409(api: Api, acme: str) -> None:
    del acme
    assert api.put(f"{V1}/organizations/globex", json={"title": "G"}, headers=APP).is_success
    assert api.post(f"{V1}/organizations/globex/billing", json={}, headers=APP).is_success
    grant = {"id": "welcome", "amount": 5, "source": "promo"}
    assert (
        api.post(
            f"{V1}/admin/organizations/acme/billing/credits", json=grant, headers=ADMIN
        ).status_code
        == 201
    )
    reused = api.post(f"{V1}/admin/organizations/globex/billing/credits", json=grant, headers=ADMIN)
    assert reused.status_code == 409, reused.text
    error = error_of(reused)
    assert error["code"] == "id_conflict"
    assert error["details"]["id"] == "welcome"
    # It says the id is taken, never what another org was granted, or which account.
    assert "another account" in error["message"]
    acme_account = api.get(f"{V1}/organizations/acme/billing", headers=APP).json()["id"]
    assert acme_account not in reused.text
    assert "promo" not in reused.text
    balance = api.get(f"{V1}/organizations/globex/billing/balance", headers=APP).json()
    assert balance["amount"] == 0


@pytest.mark.parametrize(
    "source", ["system.overdraft", "system.buy", "System.Starter", "system.revert.usage"]
)
def test_a_grant_may_not_use_the_engines_reserved_sources(api: Api, acme: str, source: str) -> None:
    """`system.overdraft` credits are left out of the overdraft deficit (DESIGN §17): a hand
    grant under it would change what an org is invoiced."""
    del acme
    before = dump(api.store)
    answer = api.post(
        f"{V1}/admin/organizations/acme/billing/credits",
        json={"id": "g-src", "amount": 5, "source": source},
        headers=ADMIN,
    )
    assert answer.status_code == 422, answer.text
    error = error_of(answer)
    assert (error["code"], error["details"]["field"]) == ("invalid_argument", "source")
    assert dump(api.store) == before
    allowed = api.post(
        f"{V1}/admin/organizations/acme/billing/credits",
        json={"id": "g-ok", "amount": 5, "source": "system.awarded"},
        headers=ADMIN,
    )
    assert allowed.status_code == 201

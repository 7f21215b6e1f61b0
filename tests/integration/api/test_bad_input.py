"""Every refused input of issue 10: the status, the error code, the field named, and that the
store is exactly as before (bad bodies never reach it)."""

from __future__ import annotations

from typing import Any

import pytest

from billing_reconciler.store import AccountRepository, LedgerRepository
from tests.integration.api.conftest import (
    ADMIN,
    APP,
    DETAILS,
    GRANT,
    ORG,
    V1,
    Api,
    dump,
    error_of,
    refused,
)


def test_malformed_json_is_400(api: Api, acme: str) -> None:
    del acme
    json_headers = {**APP, "Content-Type": "application/json"}
    for path in (ORG, f"{ORG}/members/u1", f"{ORG}/billing"):
        method = "POST" if path.endswith("billing") else "PUT"
        refused(
            api,
            method,
            path,
            status=400,
            code="invalid_argument",
            field="body",
            headers=json_headers,
            content=b'{"title": ',
        )
    refused(
        api,
        "POST",
        GRANT,
        status=400,
        code="invalid_argument",
        field="body",
        headers={**ADMIN, "Content-Type": "application/json"},
        content=b"{nope",
    )


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("PUT", ORG, {"title": "Acme", "owner": "x"}, "owner"),
        ("PUT", f"{ORG}/members/u1", {"email": "a@b.co", "admin": True}, "admin"),
        ("POST", f"{ORG}/billing", {"name": "n", "credit_min": -5}, "credit_min"),
        ("PATCH", f"{ORG}/billing", {"state": "disabled"}, "state"),
        ("PATCH", f"{ORG}/billing", {"address": {"line1": "x", "zip": "1"}}, "address.zip"),
    ],
)
def test_unknown_fields_are_422(
    api: Api, acme: str, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    del acme
    refused(api, method, path, status=422, code="invalid_argument", field=field, json=body)


def test_unknown_fields_of_admin_bodies_are_422(api: Api, acme: str) -> None:
    del acme
    refused(
        api,
        "POST",
        GRANT,
        status=422,
        code="invalid_argument",
        field="currency",
        headers=ADMIN,
        json={"id": "g1", "amount": 5, "currency": "usd"},
    )
    refused(
        api,
        "PUT",
        DETAILS,
        status=422,
        code="invalid_argument",
        field="state",
        headers=ADMIN,
        json={"due_in_days": 3, "state": "x"},
    )


def test_wrong_types_are_422(api: Api, acme: str) -> None:
    del acme
    refused(api, "PUT", ORG, status=422, code="invalid_argument", field="title", json={"title": 5})
    refused(api, "PUT", ORG, status=422, code="invalid_argument", field="body", json=[])
    refused(
        api,
        "PATCH",
        f"{ORG}/billing",
        status=422,
        code="invalid_argument",
        field="currency",
        json={"currency": "zzz"},
    )
    refused(
        api,
        "GET",
        f"{ORG}/members",
        status=422,
        code="invalid_argument",
        field="limit",
        params={"limit": 501},
    )


@pytest.mark.parametrize("org", ["a" * 65, "a b", "acme!", "ü"])
def test_an_invalid_org_id_is_400(api: Api, org: str) -> None:
    refused(
        api,
        "PUT",
        f"{V1}/organizations/{org}",
        status=400,
        code="invalid_argument",
        field="org",
        json={"title": "T"},
    )


@pytest.mark.parametrize("org", ["a/b", "a%2Fb"])
def test_an_org_id_with_a_slash_is_400(api: Api, org: str) -> None:
    refused(
        api,
        "PUT",
        f"{V1}/organizations/{org}",
        status=400,
        code="invalid_argument",
        field="org",
        json={"title": "T"},
    )
    refused(api, "DELETE", f"{V1}/organizations/{org}", status=400, code="invalid_argument")


def test_an_org_id_of_64_characters_is_fine(api: Api) -> None:
    response = api.put(f"{V1}/organizations/{'a' * 64}", json={"title": "T"}, headers=APP)
    assert response.status_code == 201
    assert api.put(f"{V1}/organizations/A-z_0.9:x", json={"title": "T"}, headers=APP).is_success


def test_a_second_active_account_is_409_already_exists(api: Api, acme: str) -> None:
    error = refused(api, "POST", f"{ORG}/billing", status=409, code="already_exists", json={})
    assert error["details"]["org_id"] == "acme"
    del acme


def test_a_new_account_while_an_old_one_is_overdrawn_is_409(api: Api, acme: str) -> None:
    with api.store.session() as session:
        LedgerRepository(session).debit(acme, id="u1", amount=30, source="usage", credit_min=-100)
    assert api.post(f"{ORG}/billing/disable", headers=APP).json()["state"] == "disabled"
    error = refused(
        api,
        "POST",
        f"{ORG}/billing",
        status=409,
        code="failed_precondition",
        json={"name": "Acme again"},
    )
    assert error["details"]["org_id"] == "acme"


def test_a_new_account_after_a_settled_old_one_is_fine(api: Api, acme: str) -> None:
    assert api.post(f"{ORG}/billing/disable", headers=APP).status_code == 200
    response = api.post(f"{ORG}/billing", json={}, headers=APP)
    assert response.status_code == 201
    assert response.json()["id"] != acme


def test_patching_the_currency_once_set_is_409(api: Api, acme: str) -> None:
    error = refused(
        api,
        "PATCH",
        f"{ORG}/billing",
        status=409,
        code="failed_precondition",
        field="currency",
        json={"currency": "eur"},
    )
    assert error["details"]["account_id"] == acme
    # The same currency again is no change, and is fine.
    assert api.patch(f"{ORG}/billing", json={"currency": "USD"}, headers=APP).status_code == 200


def test_a_currency_not_yet_set_can_be_patched(api: Api) -> None:
    api.put(ORG, json={"title": "Acme"}, headers=APP)
    with api.store.session() as session:
        AccountRepository(session).create("acme", name="Acme", email=None, currency=None)
    response = api.patch(f"{ORG}/billing", json={"currency": "eur"}, headers=APP)
    assert response.status_code == 200
    assert response.json()["currency"] == "eur"


@pytest.mark.parametrize(
    "body", [{"due_in_days": -1}, {"due_in_days": 1.5}, {"credit_min": "5"}, {"credit_min": True}]
)
def test_bad_details_are_422(api: Api, acme: str, body: dict[str, Any]) -> None:
    del acme
    refused(
        api,
        "PUT",
        DETAILS,
        status=422,
        code="invalid_argument",
        field=next(iter(body)),
        headers=ADMIN,
        json=body,
    )


@pytest.mark.parametrize("amount", [0, -5, 1.5, 5.0, "5", True, None, 2**63])
def test_a_grant_with_a_bad_amount_is_422(api: Api, acme: str, amount: object) -> None:
    del acme
    refused(
        api,
        "POST",
        GRANT,
        status=422,
        code="invalid_argument",
        field="amount",
        headers=ADMIN,
        json={"id": "g1", "amount": amount},
    )


def test_a_grant_id_reused_with_another_amount_is_409_and_the_same_grant_is_a_no_op(
    api: Api, acme: str
) -> None:
    first = api.post(GRANT, json={"id": "g1", "amount": 5}, headers=ADMIN)
    assert first.status_code == 201
    error = refused(
        api,
        "POST",
        GRANT,
        status=409,
        code="id_conflict",
        headers=ADMIN,
        json={"id": "g1", "amount": 6},
    )
    assert error["details"]["id"] == "g1"
    before = dump(api.store)
    again = api.post(GRANT, json={"id": "g1", "amount": 5}, headers=ADMIN)
    assert again.status_code == 200
    assert again.json() == first.json()
    assert dump(api.store) == before
    with api.store.session() as session:
        assert LedgerRepository(session).balance(acme)[0] == 5


def test_routes_of_an_unknown_org_are_404(api: Api) -> None:
    for method, path in [
        ("GET", f"{ORG}/billing"),
        ("GET", f"{ORG}/members"),
        ("PUT", f"{ORG}/members/u1"),
        ("DELETE", ORG),
        ("GET", f"{ORG}/billing/balance"),
    ]:
        body: dict[str, str] | None = {} if method == "PUT" else None
        error = refused(api, method, path, status=404, code="not_found", json=body)
        assert error["details"]["org_id"] == "acme"


def test_a_test_clock_is_refused_with_a_live_key(api: Api) -> None:
    api.settings.live_mode = True
    # The settings object is read when the app is built: rebuild it in live mode.
    from fastapi.testclient import TestClient

    from tests.integration.api.conftest import build_app

    api.settings.configure(auto_create_with_org=True)
    live = TestClient(build_app(api.store, api.settings))
    before = dump(api.store)
    response = live.put(
        ORG, json={"title": "Acme"}, headers={**APP, "X-Stripe-Test-Clock": "clock_123"}
    )
    assert response.status_code == 409
    assert error_of(response)["code"] == "failed_precondition"
    assert error_of(response)["details"]["field"] == "test_clock"
    assert dump(api.store) == before


def test_a_malformed_test_clock_header_is_422(api: Api) -> None:
    refused(
        api,
        "PUT",
        ORG,
        status=422,
        code="invalid_argument",
        field="X-Stripe-Test-Clock",
        json={"title": "Acme"},
        headers={**APP, "X-Stripe-Test-Clock": "not a clock"},
    )


@pytest.mark.parametrize(
    ("method", "path", "hint"),
    [
        ("GET", "organizations/acme", ""),
        ("POST", "organizations/acme/billing/nonsense", ""),
    ],
)
def test_an_unknown_route_under_a_real_org_is_404_not_an_org_id_error(
    api: Api, method: str, path: str, hint: str
) -> None:
    """A fresh user got 400 'an org id cannot contain /' for these, though the org id is fine.
    (A user id with '/' is 400 field `user`: test_fresh_user_t1.)"""
    answer = api.request(method, f"{V1}/{path}", json={}, headers=APP)
    assert answer.status_code == 404, answer.text
    error = error_of(answer)
    assert error["code"] == "not_found"
    assert "org id" not in error["message"]
    assert hint in error["message"]

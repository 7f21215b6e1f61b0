"""The fresh-user tester's findings: non-provider errors are never 503, auth is checked before
anything else of a request, and bodies and limits are bounded (DESIGN §19)."""

from __future__ import annotations

from typing import Any

import pytest
import structlog

from billing_reconciler.api.routing import MAX_BODY_BYTES
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

INT64_MAX = 2**63 - 1
WRONG = {"Authorization": "Bearer not-a-token"}


# --- 1. non-provider errors are 4xx ------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("PUT", ORG, {"title": "A\u0000cme"}, "title"),
        ("PUT", ORG, {"title": "Acme", "owner_email": "a\u0000@x.io"}, "owner_email"),
        ("PUT", ORG, {"title": "Acme", "metadata": {"k\u0000": "v"}}, "metadata"),
        ("PUT", ORG, {"title": "Acme", "metadata": {"k": "v\u0000"}}, "metadata"),
        ("PUT", f"{ORG}/members/u1", {"email": "\u0000"}, "email"),
        ("POST", f"{ORG}/billing", {"name": "x\u0000"}, "name"),
        ("PATCH", f"{ORG}/billing", {"address": {"city": "P\u0000"}}, "address.city"),
        (
            "PATCH",
            f"{ORG}/billing",
            {"tax_ids": [{"type": "eu_vat", "value": "\u0000"}]},
            "tax_ids[0].value",
        ),
        ("POST", GRANT, {"id": "g\u0000", "amount": 1}, "id"),
        ("POST", GRANT, {"id": "g1", "amount": 1, "description": "\u0000"}, "description"),
    ],
)
def test_nul_characters_are_refused_naming_the_field(
    api: Api, acme: str, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    del acme
    headers = ADMIN if "/admin/" in path else APP
    error = refused(
        api,
        method,
        path,
        status=422,
        code="invalid_argument",
        field=field,
        headers=headers,
        json=body,
    )
    assert "NUL" in error["message"]


@pytest.mark.parametrize("user", ["u%00x", "u%0Ax", "%7F"])
def test_a_user_id_with_control_characters_is_400(api: Api, acme: str, user: str) -> None:
    del acme
    refused(
        api,
        "PUT",
        f"{ORG}/members/{user}",
        status=400,
        code="invalid_argument",
        field="user",
        json={},
    )


def test_a_grant_past_the_64_bit_balance_is_422(api: Api, acme: str) -> None:
    del acme
    half = 2**62
    first = api.post(GRANT, json={"id": "g1", "amount": half}, headers=ADMIN)
    assert first.status_code == 201, first.text
    error = refused(
        api,
        "POST",
        GRANT,
        status=422,
        code="invalid_argument",
        field="amount",
        headers=ADMIN,
        json={"id": "g2", "amount": half},
    )
    assert error["details"]["balance"] == half
    # Up to the limit itself is fine, and a resent grant is still idempotent.
    last = api.post(GRANT, json={"id": "g3", "amount": INT64_MAX - half}, headers=ADMIN)
    assert last.status_code == 201, last.text
    assert api.post(GRANT, json={"id": "g1", "amount": half}, headers=ADMIN).status_code == 200
    assert api.get(f"{ORG}/billing/balance", headers=APP).json()["amount"] == INT64_MAX


@pytest.mark.parametrize("depth", [100, 5000, 100_000])
def test_deeply_nested_json_is_4xx(api: Api, acme: str, depth: int) -> None:
    del acme
    nested = "[" * depth + "]" * depth
    for value in (nested, '{"a":' * depth + "1" + "}" * depth):
        content = '{"title": "Acme", "metadata": ' + value + "}"
        response = api.put(
            ORG, content=content, headers={**APP, "Content-Type": "application/json"}
        )
        assert response.status_code in (400, 422), response.text
        assert error_of(response)["code"] == "invalid_argument"


def test_an_unexpected_error_is_logged_with_class_path_and_org(
    api: Api, acme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    del acme

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("postgresql://user:secret@db/billing")

    monkeypatch.setattr("billing_reconciler.api.ledger.LedgerRepository.balance", boom)
    with structlog.testing.capture_logs() as logs:
        response = api.get(f"{ORG}/billing/balance", headers=APP)
    assert response.status_code == 503
    assert error_of(response)["code"] == "provider_unavailable"
    failed = [e for e in logs if e["event"] == "api request failed"]
    assert len(failed) == 1, logs
    entry = failed[0]
    assert entry["error"] == "RuntimeError"
    assert entry["path"] == f"{V1}/organizations/{{org}}/billing/balance"
    assert entry["org_id"] == "acme"
    text = repr(logs)
    assert "secret" not in text
    assert APP["Authorization"] not in text


# --- 2. auth first -----------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, WRONG], ids=["none", "wrong"])
def test_auth_is_checked_before_the_body_and_path(api: Api, headers: dict[str, str]) -> None:
    json_headers = {**headers, "Content-Type": "application/json"}
    for method, path in (
        ("PUT", ORG),
        ("POST", f"{ORG}/billing"),
        ("POST", GRANT),
        ("PUT", DETAILS),
    ):
        response = api.request(method, path, content=b"{not json", headers=json_headers)
        assert response.status_code == 401, (path, response.text)
        assert error_of(response)["code"] == "unauthenticated"
        assert response.headers["WWW-Authenticate"] == "Bearer"
    for path in (
        f"{V1}/organizations/a%2Fb",
        f"{V1}/organizations/a%2Fb/billing",
        f"{V1}/admin/organizations/a%2Fb/billing/credits",
        f"{V1}/organizations/{'x' * 65}",
        f"{V1}/organizations/acme/billing/transactions?limit=0",
    ):
        response = api.request("PUT" if path.count("/") == 3 else "GET", path, headers=headers)
        assert response.status_code == 401, (path, response.text)
    big = b"x" * (MAX_BODY_BYTES + 10)
    response = api.put(ORG, content=big, headers=json_headers)
    assert response.status_code == 401, response.text


def test_an_app_token_on_an_admin_route_is_403_before_the_body(api: Api) -> None:
    json_headers = {**APP, "Content-Type": "application/json"}
    for method, path in (("POST", GRANT), ("PUT", DETAILS)):
        response = api.request(method, path, content=b"{not json", headers=json_headers)
        assert response.status_code == 403, response.text
        assert error_of(response)["code"] == "forbidden"
    response = api.post(f"{V1}/admin/organizations/a%2Fb/billing/credits", json={}, headers=APP)
    assert response.status_code == 403, response.text


def test_a_valid_token_still_gets_the_400s(api: Api) -> None:
    response = api.put(
        ORG, content=b"{not json", headers={**APP, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    response = api.put(f"{V1}/organizations/a%2Fb", json={"title": "x"}, headers=APP)
    assert response.status_code == 400
    assert error_of(response)["details"]["field"] == "org"


# --- 3. bounded bodies and limits --------------------------------------------------------


def test_a_body_over_the_limit_is_422(api: Api, acme: str) -> None:
    del acme
    padding = "x" * MAX_BODY_BYTES
    error = refused(
        api,
        "PUT",
        ORG,
        status=422,
        code="invalid_argument",
        field="body",
        json={"title": "Acme", "metadata": {"k": padding}},
    )
    assert error["details"]["limit"] == MAX_BODY_BYTES


def test_a_streamed_body_over_the_limit_is_422(api: Api, acme: str) -> None:
    del acme

    def chunks() -> Any:
        yield b'{"title": "Acme", "metadata": {"k": "'
        for _ in range(MAX_BODY_BYTES // 4096 + 2):
            yield b"x" * 4096
        yield b'"}}'

    before = dump(api.store)
    response = api.put(ORG, content=chunks(), headers={**APP, "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["details"] == {"field": "body", "limit": MAX_BODY_BYTES}
    assert dump(api.store) == before


def test_a_body_at_the_limit_is_read(api: Api) -> None:
    body = b'{"title": "Acme"}'
    body = body + b" " * (MAX_BODY_BYTES - len(body))
    response = api.put(ORG, content=body, headers={**APP, "Content-Type": "application/json"})
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "credit_min", [1, 2**63, -(2**63) - 1, 10**30], ids=["positive", "max", "min", "huge"]
)
def test_credit_min_out_of_range_is_422(api: Api, acme: str, credit_min: int) -> None:
    del acme
    refused(
        api,
        "PUT",
        DETAILS,
        status=422,
        code="invalid_argument",
        field="credit_min",
        headers=ADMIN,
        json={"credit_min": credit_min},
    )


@pytest.mark.parametrize("credit_min", [0, -1, -(2**63)])
def test_credit_min_in_range_is_stored(api: Api, acme: str, credit_min: int) -> None:
    del acme
    response = api.put(DETAILS, json={"credit_min": credit_min}, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["credit_min"] == credit_min

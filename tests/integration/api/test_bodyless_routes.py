"""Tester T1 F15: the mutating routes without a body ignored one, so a caller who sent
`{"org_id": ...}` (or `{"force": true}`) thought the call scoped or forced when it was not.
They refuse a body other than nothing, whitespace or `{}` (422 `invalid_argument`, field
`body`) before doing anything; a bad path or query parameter still answers as before (400
naming `org`). The fleet-wide invoice route: tests/integration/credits/test_overdraft_api.py.
SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from tests.integration.api.conftest import APP, ORG, V1, Api, error_of, refused

JSON = {"Content-Type": "application/json"}
MEMBER = f"{ORG}/members/u1"
BODYLESS = [
    ("POST", f"{ORG}/billing/register"),
    ("POST", f"{ORG}/billing/enable"),
    ("POST", f"{ORG}/billing/disable"),
    ("DELETE", ORG),
    ("DELETE", MEMBER),
]


def _member(api: Api) -> None:
    answer = api.put(MEMBER, json={"email": "u1@acme.example", "role": "member"}, headers=APP)
    assert answer.status_code == 201, answer.text


@pytest.mark.parametrize(("method", "path"), BODYLESS)
@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ('{"org_id": "acme"}', "application/json"),
        ('{"force": true}', "application/json"),
        ("[]", "application/json"),
        ("null", "application/json"),
        ("not json", "application/json"),
        ("force=true", "application/x-www-form-urlencoded"),
    ],
)
def test_a_body_is_refused_before_anything_is_done(
    api: Api, acme: str, method: str, path: str, body: str, content_type: str
) -> None:
    _member(api)
    asked = list(api.settings.reconciles)
    error = refused(
        api,
        method,
        path,
        content=body.encode(),
        headers={**APP, "Content-Type": content_type},
        status=422,
        code="invalid_argument",
        field="body",
    )
    assert "takes no request body" in error["message"]
    assert api.settings.reconciles == asked  # no reconcile asked for either


@pytest.mark.parametrize(("method", "path"), BODYLESS)
@pytest.mark.parametrize("body", ["", "{}", " { } ", "\n{\n}\n", "  "])
def test_no_body_whitespace_or_an_empty_object_is_taken(
    api: Api, acme: str, method: str, path: str, body: str
) -> None:
    _member(api)
    answer = api.request(method, path, content=body.encode(), headers={**APP, **JSON})
    assert answer.status_code in (200, 204), answer.text


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("POST", f"{V1}/organizations/a*b/billing/enable", "org"),
        ("POST", f"{V1}/organizations/{'o' * 65}/billing/disable", "org"),
        ("POST", f"{V1}/organizations/.../billing/register", "org"),
        ("DELETE", f"{V1}/organizations/a*b", "org"),
        ("DELETE", f"{V1}/organizations/acme/members/%20u1", "user"),
    ],
)
def test_a_bad_path_parameter_still_answers_400_with_a_body(
    api: Api, acme: str, method: str, path: str, field: str
) -> None:
    for content in (b"", b'{"org_id": "acme"}'):
        error = refused(
            api,
            method,
            path,
            content=content,
            headers={**APP, **JSON},
            status=400,
            code="invalid_argument",
            field=field,
        )
        assert error["details"]["errors"][0]["in"] == "path"


def test_a_bad_query_parameter_still_answers_with_a_body(api: Api, acme: str) -> None:
    refused(
        api,
        "DELETE",
        f"{ORG}?force=maybe",
        content=b'{"force": true}',
        headers={**APP, **JSON},
        status=422,
        code="invalid_argument",
        field="force",
    )


def test_the_token_is_still_checked_first(api: Api, acme: str) -> None:
    answer = api.post(f"{ORG}/billing/disable", content=b'{"x": 1}', headers=JSON)
    assert answer.status_code == 401
    assert error_of(answer)["code"] == "unauthenticated"


@pytest.mark.parametrize(("method", "path"), BODYLESS)
@pytest.mark.parametrize("query", ["org_id=acme", "forced=true", "force=true&extra=1"])
def test_an_undeclared_query_parameter_is_refused_before_anything_is_done(
    api: Api, acme: str, method: str, path: str, query: str
) -> None:
    """Tester T3-4: a query parameter the route does not declare (a scope, a typo of
    `force`) was ignored as a body was; it is 422 naming it, and nothing is done. `force`
    itself, which `DELETE /organizations/{org}` declares, still works (below)."""
    _member(api)
    asked = list(api.settings.reconciles)
    unknown = next(p.split("=")[0] for p in query.split("&") if not p.startswith("force="))
    if method != "DELETE" or path != ORG:
        unknown = query.split("=")[0]
    error = refused(
        api, method, f"{path}?{query}", status=422, code="invalid_argument", field=unknown
    )
    assert "has no query parameter" in error["message"]
    assert api.settings.reconciles == asked


def test_a_declared_query_parameter_still_works(api: Api, acme: str) -> None:
    answer = api.delete(f"{ORG}?force=true", headers=APP)
    assert answer.status_code in (200, 204), answer.text


def test_a_declared_query_parameter_given_twice_is_refused(api: Api, acme: str) -> None:
    """Tester T4-2: `?force=false&force=true` took one of the two (a guess); it is 422."""
    error = refused(
        api,
        "DELETE",
        f"{ORG}?force=false&force=true",
        status=422,
        code="invalid_argument",
        field="force",
    )
    assert "more than once" in error["message"]

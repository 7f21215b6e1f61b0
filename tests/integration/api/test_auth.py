"""Bearer tokens in two scopes; 401 without a valid one, 403 for an app token on admin routes."""

from __future__ import annotations

from pathlib import Path

import pytest

from billing_reconciler.api import ApiTokens, load_api_tokens
from billing_reconciler.api.auth import Scope
from billing_reconciler.config import ConfigError
from tests.integration.api.conftest import (
    ADMIN,
    ADMIN_TOKEN,
    APP,
    APP_TOKEN,
    OLD_APP_TOKEN,
    V1,
    Api,
    dump,
    error_of,
)

GRANT = f"{V1}/admin/organizations/acme/billing/credits"
DETAILS = f"{V1}/admin/organizations/acme/billing/details"


def _org_with_account(api: Api) -> None:
    created = api.put(f"{V1}/organizations/acme", json={"title": "Acme"}, headers=APP)
    assert created.status_code == 201
    assert api.post(f"{V1}/organizations/acme/billing", json={}, headers=APP).status_code == 201


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {APP_TOKEN}"},
        {"Authorization": f"Bearer {APP_TOKEN}x"},
        {"Authorization": "Bearer t\xf6k\xe9n".encode("latin-1")},
    ],
)
def test_a_missing_or_wrong_token_is_401_and_writes_nothing(
    api: Api, headers: dict[str, str | bytes]
) -> None:
    _org_with_account(api)
    before = dump(api.store)
    for method, path, body in [
        ("PUT", f"{V1}/organizations/other", {"title": "Other"}),
        ("POST", GRANT, {"id": "g1", "amount": 5}),
        ("PUT", DETAILS, {"credit_min": -100}),
        ("GET", f"{V1}/organizations/acme/billing", None),
        ("GET", f"{V1}/billing/plans", None),
    ]:
        response = api.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (method, path, response.text)
        error = error_of(response)
        assert error["code"] == "unauthenticated"
        assert response.headers["www-authenticate"] == "Bearer"
        assert APP_TOKEN not in response.text
    assert dump(api.store) == before


def test_an_app_token_on_an_admin_route_is_403_and_writes_nothing(api: Api) -> None:
    _org_with_account(api)
    before = dump(api.store)
    for path, body in [(GRANT, {"id": "g1", "amount": 5}), (DETAILS, {"credit_min": -100})]:
        response = api.request("POST" if path == GRANT else "PUT", path, json=body, headers=APP)
        assert response.status_code == 403
        assert error_of(response)["code"] == "forbidden"
        assert APP_TOKEN not in response.text
    assert dump(api.store) == before


def test_admin_tokens_are_allowed_on_app_routes_and_old_tokens_still_work(api: Api) -> None:
    response = api.put(f"{V1}/organizations/acme", json={"title": "Acme"}, headers=ADMIN)
    assert response.status_code == 201
    old = {"Authorization": f"Bearer {OLD_APP_TOKEN}"}
    assert api.get(f"{V1}/organizations/acme/members", headers=old).status_code == 200


def test_tokens_come_from_the_environment_comma_separated_or_from_files(tmp_path: Path) -> None:
    tokens = load_api_tokens({"BILLING_API_TOKENS": "a1, a2", "BILLING_ADMIN_TOKENS": "z1"})
    assert tokens.scope_of("a1") is Scope.APP
    assert tokens.scope_of("a2") is Scope.APP
    assert tokens.scope_of("z1") is Scope.ADMIN
    assert tokens.scope_of("a3") is None
    assert "a1" not in repr(tokens)
    path = tmp_path / "admin"
    path.write_text("z2,z3\n", encoding="utf-8")
    from_file = load_api_tokens({"BILLING_ADMIN_TOKENS_FILE": str(path)})
    assert from_file.scope_of("z3") is Scope.ADMIN
    assert from_file.app == ()
    assert not load_api_tokens({})
    with pytest.raises(ConfigError, match="not both"):
        load_api_tokens({"BILLING_API_TOKENS": "a", "BILLING_API_TOKENS_FILE": str(path)})
    with pytest.raises(ConfigError, match="cannot read"):
        load_api_tokens({"BILLING_API_TOKENS_FILE": str(tmp_path / "missing")})


def test_no_configured_tokens_admit_nobody() -> None:
    assert ApiTokens().scope_of(ADMIN_TOKEN) is None
    assert ApiTokens().scope_of("") is None

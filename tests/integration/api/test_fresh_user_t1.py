"""A fresh user's findings on the API's request validation (tester T1, 2026-12-03): each bad
request is refused with the status, code and field named, and writes nothing."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest

from billing_reconciler.customer_validation import ACCOUNT_METADATA_KEYS
from billing_reconciler.model_customers import (
    AUTO_CREATED_KEY,
    CONTROLLER_METADATA_KEYS,
    CUSTOMER_MARKER_KEYS,
)
from billing_reconciler.store import (
    AccountRepository,
    LastApplied,
    LastAppliedRepository,
    PlanRepository,
    PlanRow,
)
from tests.integration.api.conftest import (
    APP,
    ORG,
    V1,
    Api,
    Settings,
    build_app,
    dump,
    refused,
)

EIN = {"type": "us_ein", "value": "12-3456789"}

# --- 7: metadata keys ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "fragment"),
    [
        ({"": "empty"}, "must not be empty"),
        ({"k" * 41: "v"}, "at most 40 characters"),
        ({"a[b]": "v"}, "must not contain '[' or ']'"),
        ({"k": "v" * 501}, "at most 500 characters"),
        ({"managed_by": "me"}, "reserved"),
        ({"org_id": "other"}, "reserved"),
        ({"br_key": "customer/x"}, "reserved"),
        ({AUTO_CREATED_KEY: "true"}, "reserved"),
        ({f"k{i}": "v" for i in range(ACCOUNT_METADATA_KEYS + 1)}, "at most 44 keys (got 45)"),
        ({f"k{i}": "v" for i in range(50)}, "at most 44 keys (got 50)"),
    ],
)
@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_account_metadata_within_stripe_limits_with_our_markers(
    api: Api, acme: str, method: str, metadata: dict[str, str], fragment: str
) -> None:
    del acme
    if method == "POST":
        assert api.post(f"{ORG}/billing/disable", headers=APP).status_code == 200
    error = refused(
        api,
        method,
        f"{ORG}/billing",
        status=422,
        code="invalid_argument",
        field="metadata",
        json={"metadata": metadata},
    )
    assert fragment in error["message"], error


def test_account_metadata_leaves_room_for_the_markers(api: Api, acme: str) -> None:
    del acme
    ours = len(CUSTOMER_MARKER_KEYS) + len(CONTROLLER_METADATA_KEYS)
    assert ours + ACCOUNT_METADATA_KEYS == 50
    most = {f"k{i}": "v" for i in range(ACCOUNT_METADATA_KEYS)}
    answer = api.patch(f"{ORG}/billing", json={"metadata": most}, headers=APP)
    assert answer.status_code == 200, answer.text
    assert answer.json()["metadata"] == most


def test_org_metadata_refuses_an_empty_key(api: Api) -> None:
    refused(
        api,
        "PUT",
        f"{V1}/organizations/m1",
        status=422,
        code="invalid_argument",
        field="metadata",
        json={"title": "M1", "metadata": {"": "x"}},
    )


# --- 11: duplicate tax ids -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_duplicate_tax_ids_are_refused_at_the_second(api: Api, acme: str, method: str) -> None:
    del acme
    if method == "POST":
        assert api.post(f"{ORG}/billing/disable", headers=APP).status_code == 200
    other = {"type": "eu_vat", "value": "DE123456789"}
    error = refused(
        api,
        method,
        f"{ORG}/billing",
        status=422,
        code="invalid_argument",
        field="tax_ids[2]",
        json={"tax_ids": [EIN, other, dict(EIN)]},
    )
    assert "the same tax id as tax_ids[0] (us_ein 12-3456789)" in error["message"], error


def test_the_same_value_under_another_type_is_not_a_duplicate(api: Api, acme: str) -> None:
    del acme
    body = {"tax_ids": [EIN, {"type": "ca_bn", "value": "12-3456789"}]}
    answer = api.patch(f"{ORG}/billing", json=body, headers=APP)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["tax_ids"]) == 2


# --- 12, 16: ids -----------------------------------------------------------------------------


def as_is(api: Api, method: str, path: str, body: object = None) -> tuple[int, dict[str, Any]]:
    """Send `path` as it is (as `curl --path-as-is` does; httpx removes dot segments) straight
    to the app: the status and the JSON answer."""
    payload = b"" if body is None else json.dumps(body).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"authorization", APP["Authorization"].encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": payload, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    async def call() -> None:
        await api.app(scope, receive, send)

    anyio.run(call)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    text = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(text) if text else {}


@pytest.mark.parametrize("org", [".", "..", "...", ". ."])
@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_org_ids_of_only_dots_are_refused(api: Api, method: str, org: str) -> None:
    before = dump(api.store)
    status, answer = as_is(api, method, f"{V1}/organizations/{org}", {"title": "Dots"})
    assert status == 400, answer
    assert answer["error"]["code"] == "invalid_argument", answer
    assert answer["error"]["details"]["field"] == "org", answer
    status, answer = as_is(api, "GET", f"{V1}/organizations/{org}/billing")
    assert status == 400, answer
    assert answer["error"]["details"]["field"] == "org", answer
    assert dump(api.store) == before


@pytest.mark.parametrize("user", [".", ".."])
def test_user_ids_of_only_dots_are_refused(api: Api, acme: str, user: str) -> None:
    del acme
    before = dump(api.store)
    status, answer = as_is(api, "PUT", f"{ORG}/members/{user}", {"email": "u@acme.test"})
    assert status == 400, answer
    assert answer["error"]["code"] == "invalid_argument", answer
    assert answer["error"]["details"]["field"] == "user", answer
    assert "only dots" in answer["error"]["message"], answer
    assert dump(api.store) == before


def test_org_ids_with_dots_inside_are_fine(api: Api) -> None:
    assert api.put(f"{V1}/organizations/a.b", json={"title": "A"}, headers=APP).status_code == 201
    assert api.put(f"{V1}/organizations/.a.", json={"title": "A"}, headers=APP).status_code == 201


@pytest.mark.parametrize("org", [" ", "%20acme", "acme%20"])
def test_org_ids_with_whitespace_are_refused(api: Api, org: str) -> None:
    refused(
        api,
        "PUT",
        f"{V1}/organizations/{org}",
        status=400,
        code="invalid_argument",
        field="org",
        json={"title": "Blank"},
    )


@pytest.mark.parametrize(
    ("user", "fragment"),
    [
        ("...", "only dots"),
        ("%20", "blank"),
        ("%20%20", "blank"),
        ("%20u1", "whitespace"),
        ("u1%20", "whitespace"),
        ("u1%09", ""),  # a control character: the pattern's refusal
    ],
)
@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_bad_user_ids_are_refused(
    api: Api, acme: str, method: str, user: str, fragment: str
) -> None:
    del acme
    request: dict[str, Any] = {"json": {"email": "u@acme.test"}} if method == "PUT" else {}
    error = refused(
        api,
        method,
        f"{ORG}/members/{user}",
        status=400,
        code="invalid_argument",
        field="user",
        **request,
    )
    assert fragment in error["message"], error


@pytest.mark.parametrize("user", ["a/b", "a%2Fb"])
@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_a_user_id_with_a_slash_is_refused_as_an_org_id_with_one(
    api: Api, acme: str, method: str, user: str
) -> None:
    del acme
    request: dict[str, Any] = {"json": {"email": "u@acme.test"}} if method == "PUT" else {}
    as_org = refused(
        api,
        method,
        f"{V1}/organizations/{user}",
        status=400,
        code="invalid_argument",
        field="org",
        **request,
    )
    as_user = refused(
        api,
        method,
        f"{ORG}/members/{user}",
        status=400,
        code="invalid_argument",
        field="user",
        **request,
    )
    assert "cannot contain '/'" in as_org["message"]
    assert "cannot contain '/'" in as_user["message"]


@pytest.mark.parametrize(("field", "value"), [("phone", "   "), ("name", " \t ")])
@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_blank_phone_and_name_are_refused(
    api: Api, acme: str, method: str, field: str, value: str
) -> None:
    del acme
    if method == "POST":
        assert api.post(f"{ORG}/billing/disable", headers=APP).status_code == 200
    error = refused(
        api,
        method,
        f"{ORG}/billing",
        status=422,
        code="invalid_argument",
        field=field,
        json={field: value},
    )
    assert "must not be blank" in error["message"], error


# --- 15: a body that is not sent as JSON ----------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data"]
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("PUT", f"{V1}/organizations/f1"), ("PATCH", f"{ORG}/billing"), ("POST", f"{ORG}/billing")],
)
def test_a_body_not_sent_as_json_is_named(
    api: Api, acme: str, method: str, path: str, content_type: str
) -> None:
    del acme
    error = refused(
        api,
        method,
        path,
        status=422,
        code="invalid_argument",
        field="body",
        content=b'{"title":"F1"}',
        headers={**APP, "Content-Type": content_type},
    )
    assert error["message"] == "the body must be JSON (Content-Type: application/json)", error


def test_json_content_types_with_parameters_are_json(api: Api) -> None:
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        answer = api.put(
            f"{V1}/organizations/f1",
            content=b'{"title":"F1"}',
            headers={**APP, "Content-Type": content_type},
        )
        assert answer.status_code in (200, 201), answer.text


def test_a_bodyless_post_needs_no_content_type(api: Api, acme: str) -> None:
    del acme
    answer = api.post(f"{ORG}/billing/disable", headers={**APP, "Content-Type": "text/plain"})
    assert answer.status_code == 200, answer.text


# --- 18: PATCH of an address merges its parts ------------------------------------------------

FULL = {"line1": "5 Portal Rd", "line2": "Floor 2", "city": "Paris", "postal_code": "75001"}


def test_an_address_patch_merges_its_parts(api: Api, acme: str) -> None:
    del acme
    path = f"{ORG}/billing"

    def patch(address: object) -> dict[str, Any] | None:
        answer = api.patch(path, json={"address": address}, headers=APP)
        assert answer.status_code == 200, answer.text
        assert api.get(path, headers=APP).json()["address"] == answer.json()["address"]
        result: dict[str, Any] | None = answer.json()["address"]
        return result

    empty = dict.fromkeys(("line1", "line2", "city", "state", "postal_code", "country"))
    assert patch({**FULL, "country": "fr"}) == {**empty, **FULL, "country": "FR"}
    # A part sent replaces it; the parts left out stay.
    assert patch({"line1": "Main 1"}) == {**empty, **FULL, "line1": "Main 1", "country": "FR"}
    # A part sent as null clears it.
    assert patch({"line2": None, "postal_code": None}) == {
        **empty,
        "line1": "Main 1",
        "city": "Paris",
        "country": "FR",
    }
    # Nothing sent changes nothing.
    assert patch({}) == {**empty, "line1": "Main 1", "city": "Paris", "country": "FR"}
    # Clearing every part left clears the address; `address: null` clears it all.
    assert patch({"line1": None, "city": None, "country": None}) is None
    assert patch({"city": "Lyon"}) == {**empty, "city": "Lyon"}
    assert patch(None) is None


# --- 10: the catalog lists are paged ---------------------------------------------------------


def _seed_catalog(api: Api) -> None:
    now = datetime.now(UTC)
    with api.store.session() as session:
        for name in ("e", "a", "d", "b", "c"):
            PlanRepository(session).upsert(PlanRow(name=name, title=name.upper()))
        repo = LastAppliedRepository(session)
        for kind, names in (("product", "zyx"), ("feature", "qpo")):
            for name in names:
                repo.put(
                    LastApplied(
                        installation_id="default",
                        object_key=f"{kind}/{name}",
                        kind=kind,
                        stripe_id=f"{kind}_{name}",
                        fields={"title": name},
                        content_hash="x",
                        revision="r",
                        applied_at=now,
                    )
                )


def _walk(api: Api, path: str, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit, **({} if cursor is None else {"cursor": cursor})}
        answer = api.get(path, params=params, headers=APP)
        assert answer.status_code == 200, answer.text
        pages.append([item["name"] for item in answer.json()["data"]])
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            return pages


@pytest.mark.parametrize(
    ("path", "names"),
    [("plans", "abcde"), ("products", "xyz"), ("features", "opq")],
)
def test_catalog_lists_take_limit_and_cursor(api: Api, path: str, names: str) -> None:
    _seed_catalog(api)
    url = f"{V1}/billing/{path}"
    everything = api.get(url, headers=APP).json()
    assert [item["name"] for item in everything["data"]] == list(names)
    assert everything["next_cursor"] is None
    pages = _walk(api, url, 2)
    assert pages == [list(names[i : i + 2]) for i in range(0, len(names), 2)]
    assert _walk(api, url, 500) == [list(names)]
    for limit in (0, 501, -1):
        refused(
            api,
            "GET",
            url,
            status=422,
            code="invalid_argument",
            field="limit",
            params={"limit": limit},
        )
    for cursor in ("zzz", "", "cGxhbjph=", "bm9wZTph"):
        error = refused(
            api,
            "GET",
            url,
            status=422,
            code="invalid_argument",
            field="cursor",
            params={"cursor": cursor},
        )
        assert error["message"] == "not a cursor this list handed out", error


def test_a_cursor_of_another_catalog_list_is_refused(api: Api) -> None:
    _seed_catalog(api)
    plans = api.get(f"{V1}/billing/plans", params={"limit": 1}, headers=APP).json()
    assert plans["next_cursor"] is not None
    refused(
        api,
        "GET",
        f"{V1}/billing/features",
        status=422,
        code="invalid_argument",
        field="cursor",
        params={"cursor": plans["next_cursor"]},
    )


# --- 13: register on a contract account declared offline --------------------------------------


def _contract_account(api: Api, org: str, *, offline: bool) -> str:
    assert api.put(f"{V1}/organizations/{org}", json={"title": org}, headers=APP).status_code == 201
    with api.store.session() as session:
        record = AccountRepository(session).create(
            org, name=org, email=None, currency="usd", offline=offline, contract=True
        )
    return record.id


def test_register_of_a_contract_account_declared_offline_is_refused(api: Api) -> None:
    account_id = _contract_account(api, "c1", offline=True)
    api.settings.reconciles.clear()
    error = refused(
        api,
        "POST",
        f"{V1}/organizations/c1/billing/register",
        status=409,
        code="failed_precondition",
        field="offline",
    )
    assert "declares offline: true" in error["message"], error
    assert error["details"]["org_id"] == "c1"
    assert error["details"]["account_id"] == account_id
    assert error["details"]["source"] == "desired/customers"
    assert api.settings.reconciles == []
    got = api.get(f"{V1}/organizations/c1/billing", headers=APP).json()
    assert (got["offline"], got["stripe_customer_id"]) == (True, None)


def test_register_of_an_ordinary_offline_account_still_works(api: Api) -> None:
    assert api.put(f"{V1}/organizations/o1", json={"title": "O1"}, headers=APP).status_code == 201
    created = api.post(
        f"{V1}/organizations/o1/billing", json={"offline": True, "currency": "usd"}, headers=APP
    )
    assert created.status_code == 201, created.text
    answer = api.post(f"{V1}/organizations/o1/billing/register", headers=APP)
    assert answer.status_code == 200, answer.text
    assert answer.json()["offline"] is False


# --- 9: a test clock that named no clock can be corrected -------------------------------------

TC1 = f"{V1}/organizations/tc1"


def _clock_of(api: Api) -> str | None:
    answer = api.get(f"{TC1}/billing", headers=APP)
    assert answer.status_code == 200, answer.text
    clock: str | None = answer.json()["test_clock"]
    return clock


def _stuck(api: Api) -> str:
    """An org whose auto-created online account names a clock Stripe has not (no customer)."""
    api.settings.configure(auto_create_with_org=True)
    headers = {**APP, "X-Stripe-Test-Clock": "clock_nonexistent"}
    assert api.put(TC1, json={"title": "TC1"}, headers=headers).status_code == 201
    assert _clock_of(api) == "clock_nonexistent"
    account_id: str = api.get(f"{TC1}/billing", headers=APP).json()["id"]
    return account_id


def test_a_put_with_another_clock_replaces_it_while_no_customer_exists(api: Api) -> None:
    account_id = _stuck(api)
    api.settings.reconciles.clear()
    headers = {**APP, "X-Stripe-Test-Clock": "clock_good"}
    answer = api.put(TC1, json={"title": "TC1"}, headers=headers)
    assert answer.status_code == 200, answer.text
    assert _clock_of(api) == "clock_good"
    assert api.get(f"{TC1}/billing", headers=APP).json()["id"] == account_id
    assert [r[1] for r in api.settings.reconciles] == [frozenset({"tc1"})]
    # Without the header, a PUT leaves the clock alone.
    assert api.put(TC1, json={"title": "TC1"}, headers=APP).status_code == 200
    assert _clock_of(api) == "clock_good"


def test_a_patch_replaces_or_clears_the_clock_while_no_customer_exists(api: Api) -> None:
    _stuck(api)
    answer = api.patch(f"{TC1}/billing", json={"test_clock": "clock_other"}, headers=APP)
    assert answer.status_code == 200, answer.text
    assert answer.json()["test_clock"] == "clock_other"
    answer = api.patch(f"{TC1}/billing", json={"test_clock": None}, headers=APP)
    assert answer.status_code == 200, answer.text
    assert _clock_of(api) is None
    refused(
        api,
        "PATCH",
        f"{TC1}/billing",
        status=422,
        code="invalid_argument",
        field="test_clock",
        json={"test_clock": "not a clock"},
    )


def test_the_clock_is_fixed_once_the_customer_exists(api: Api) -> None:
    account_id = _stuck(api)
    with api.store.session() as session:
        AccountRepository(session).set_stripe_customer(account_id, "cus_1")
    for clock in ("clock_other", None):
        error = refused(
            api,
            "PATCH",
            f"{TC1}/billing",
            status=409,
            code="failed_precondition",
            field="test_clock",
            json={"test_clock": clock},
        )
        assert error["details"]["stripe_customer_id"] == "cus_1", error
    # The same clock again changes nothing and is fine; a PUT's header is ignored.
    answer = api.patch(f"{TC1}/billing", json={"test_clock": "clock_nonexistent"}, headers=APP)
    assert answer.status_code == 200, answer.text
    headers = {**APP, "X-Stripe-Test-Clock": "clock_good"}
    assert api.put(TC1, json={"title": "TC1"}, headers=headers).status_code == 200
    assert _clock_of(api) == "clock_nonexistent"


def test_a_live_key_refuses_a_test_clock_on_patch(api: Api, acme: str) -> None:
    del acme
    live = Api(build_app(api.store, Settings(live_mode=True)))
    live.store = api.store
    try:
        error = refused(
            live,
            "PATCH",
            f"{ORG}/billing",
            status=409,
            code="failed_precondition",
            field="test_clock",
            json={"test_clock": "clock_good"},
        )
        assert "test mode only" in error["message"], error
        # Clearing one is no test clock: allowed.
        assert (
            live.patch(f"{ORG}/billing", json={"test_clock": None}, headers=APP).status_code == 200
        )
    finally:
        live.close()

"""Tester T1's findings on the usage and grant API (issue 12): text that is not Unicode
anywhere in a body, usage ids Stripe's meter events or the revert route cannot take, and
caller ids in the engine's derived id space are refused 422 naming the field, with nothing
written. SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from billing_reconciler.api.models import MAX_METER_IDENTIFIER, RESERVED_ID_PREFIXES
from billing_reconciler.api.purchases import purchase_transaction_id
from billing_reconciler.api.usage import AGGREGATE_ID_PREFIX
from billing_reconciler.domains.credit_meters import aggregate_identifier
from billing_reconciler.domains.credit_overdraft import credit_id
from billing_reconciler.model_subscriptions import on_start_grant_id
from billing_reconciler.store.ledger import onboard_grant_id
from billing_reconciler.store.usage import revert_id
from tests.integration.api.conftest import ADMIN, APP, GRANT, ORG, V1, Api, refused
from tests.integration.api.test_usage import _grant, _meter, _post, _usage

USAGES = f"{ORG}/billing/usages"
JSON = {"Content-Type": "application/json"}
#: JSON's escape of a lone surrogate: it decodes to a Python string no encoder takes.
SURROGATE = "\\ud800"


def _raw(api: Api, method: str, path: str, text: str, headers: dict[str, str]) -> Any:
    """Send `text` as the body byte for byte (a JSON library would not encode a surrogate)."""
    return api.request(method, path, content=text.encode(), headers={**headers, **JSON})


def _raw_refused(api: Api, method: str, path: str, text: str, field: str, **kw: Any) -> Any:
    headers = kw.pop("headers", APP)
    return refused(
        api,
        method,
        path,
        content=text.encode(),
        headers={**headers, **JSON},
        status=422,
        code="invalid_argument",
        field=field,
        **kw,
    )


# --- F1, F2: a lone surrogate anywhere in a body ------------------------------------------


@pytest.mark.parametrize(
    ("usage", "field"),
    [
        (f'{{"id": "{SURROGATE}", "amount": 1}}', "usages[0].id"),
        (f'{{"id": "u{SURROGATE}x", "amount": 1}}', "usages[0].id"),
        (f'{{"id": "{SURROGATE}", "amount": 0}}', "usages[0].id"),
        (f'{{"id": "u1", "amount": 1, "description": "{SURROGATE}"}}', "usages[0].description"),
        (f'{{"id": "u1", "amount": 1, "metadata": {{"k": "{SURROGATE}"}}}}', "usages[0].metadata"),
        (f'{{"id": "u1", "amount": 1, "metadata": {{"{SURROGATE}": "v"}}}}', "usages[0].metadata"),
    ],
)
def test_a_lone_surrogate_in_a_usage_is_422_naming_the_field(
    api: Api, acme: str, usage: str, field: str
) -> None:
    _grant(api, 100)
    error = _raw_refused(api, "POST", USAGES, f'{{"usages": [{usage}]}}', field)
    # The id is echoed only when it is text.
    if field != "usages[0].id":
        assert error["details"]["usage_id"] == "u1"
    else:
        assert "usage_id" not in error["details"]
    if "metadata" in field:
        assert "must be valid Unicode text" in error["message"]


def test_a_surrogate_pair_is_text_and_recorded(api: Api, acme: str) -> None:
    _grant(api, 100)
    body = (
        '{"usages": [{"id": "u\\ud83d\\ude00", "amount": 1, "metadata": {"k": "\\ud83d\\ude00"}}]}'
    )
    response = _raw(api, "POST", USAGES, body, APP)
    assert response.status_code == 201, response.text
    assert response.json()["created"] == ["u\U0001f600"]
    assert response.json()["data"][0]["metadata"] == {"k": "\U0001f600"}


def test_a_lone_surrogate_in_org_metadata_or_a_grant_is_422(api: Api, acme: str) -> None:
    _raw_refused(
        api,
        "PUT",
        f"{V1}/organizations/other",
        f'{{"title": "t", "metadata": {{"k": "{SURROGATE}"}}}}',
        "metadata",
    )
    _raw_refused(
        api,
        "PATCH",
        f"{ORG}/billing",
        f'{{"metadata": {{"k": "v{SURROGATE}"}}}}',
        "metadata",
    )
    _raw_refused(
        api,
        "POST",
        GRANT,
        f'{{"id": "g{SURROGATE}", "amount": 1}}',
        "id",
        headers=ADMIN,
    )


# --- F3: a metered usage's id is Stripe's meter event identifier (<= 100 characters) ------


def test_a_metered_usage_id_over_100_characters_is_refused(api: Api, acme: str) -> None:
    _grant(api, 100)
    _meter(api)
    meter = {"event_name": "api_calls"}
    long_id = "L" * (MAX_METER_IDENTIFIER + 1)
    error = refused(
        api,
        "POST",
        USAGES,
        json={"usages": [_usage("ok", meter=meter), _usage(long_id, meter=meter)]},
        status=422,
        code="invalid_argument",
        field="usages[1].id",
    )
    assert error["details"]["usage_id"] == long_id
    assert error["details"]["limit"] == MAX_METER_IDENTIFIER
    assert "identifier" in error["message"]
    # 100 characters with a meter, and 255 without one, are taken.
    response = _post(api, _usage("M" * MAX_METER_IDENTIFIER, meter=meter), _usage("N" * 255))
    assert response.status_code == 201, response.text


# --- a metered usage's id is not an aggregated meter event's identifier (`agg_...`) --------


@pytest.mark.parametrize(
    "usage_id",
    [
        aggregate_identifier("acme", "api_calls", 1_800_000_000, 0),
        "agg_x",
        "AGG_x",
        "Agg_",
    ],
)
def test_a_metered_usage_id_in_the_aggregates_identifier_space_is_refused(
    api: Api, acme: str, usage_id: str
) -> None:
    _grant(api, 100)
    _meter(api)
    meter = {"event_name": "api_calls"}
    error = refused(
        api,
        "POST",
        USAGES,
        json={"usages": [_usage("ok", meter=meter), _usage(usage_id, meter=meter)]},
        status=422,
        code="invalid_argument",
        field="usages[1].id",
    )
    assert error["details"]["usage_id"] == usage_id
    assert "reserved for aggregated meter events" in error["message"]
    assert AGGREGATE_ID_PREFIX in error["message"]


def test_agg_ids_without_a_meter_and_ids_merely_containing_agg_are_taken(
    api: Api, acme: str
) -> None:
    _grant(api, 100)
    _meter(api)
    meter = {"event_name": "api_calls"}
    response = _post(
        api, _usage("agg_plain"), _usage("x-agg_1", meter=meter), _usage("agg1", meter=meter)
    )
    assert response.status_code == 201, response.text


# --- F4: ids the revert route cannot reach --------------------------------------------------


@pytest.mark.parametrize("usage_id", ["x/y", "/", "a/", ".", "..", "..."])
def test_a_usage_id_the_revert_route_cannot_take_is_refused(
    api: Api, acme: str, usage_id: str
) -> None:
    _grant(api, 100)
    error = refused(
        api,
        "POST",
        USAGES,
        json={"usages": [_usage(usage_id)]},
        status=422,
        code="invalid_argument",
        field="usages[0].id",
    )
    assert error["details"]["usage_id"] == usage_id


def test_ids_with_dots_inside_are_usage_ids_and_revertible(api: Api, acme: str) -> None:
    _grant(api, 100)
    assert _post(api, _usage(".a."), _usage("a..b")).status_code == 201
    for usage_id in (".a.", "a..b"):
        response = api.post(f"{USAGES}/{usage_id}/revert", json={"amount": 1}, headers=ADMIN)
        assert response.status_code == 201, response.text


# --- the engine's derived ids: not a caller's grant or usage id ------------------------------


def test_every_derived_ledger_id_begins_with_a_reserved_prefix() -> None:
    derived = [
        revert_id("u1", 1),
        revert_id("u" * 255, 1),
        onboard_grant_id("acme"),
        on_start_grant_id("acc_1", "pro"),
        credit_id("in_1", "il_1"),
        purchase_transaction_id("acme", "p1"),
        purchase_transaction_id("acme", "p" * 300),
    ]
    for ledger_id in derived:
        assert ledger_id.lower().startswith(RESERVED_ID_PREFIXES), ledger_id


RESERVED_IDS = [
    "system.x",
    "SYSTEM.revert:u1:1",
    "onboard:acme",
    "Onboard:acme",
    "ONBOARD:other",
    "on_start:acc_1:pro",
    "overdraft:in_1:il_1",
]


@pytest.mark.parametrize("ledger_id", RESERVED_IDS)
def test_a_grant_id_in_the_derived_id_space_is_refused(api: Api, acme: str, ledger_id: str) -> None:
    error = refused(
        api,
        "POST",
        GRANT,
        json={"id": ledger_id, "amount": 5},
        headers=ADMIN,
        status=422,
        code="invalid_argument",
        field="id",
    )
    assert "reserved" in error["message"]


@pytest.mark.parametrize("ledger_id", RESERVED_IDS)
def test_a_usage_id_in_the_derived_id_space_is_refused(api: Api, acme: str, ledger_id: str) -> None:
    _grant(api, 100)
    error = refused(
        api,
        "POST",
        USAGES,
        json={"usages": [_usage(ledger_id)]},
        status=422,
        code="invalid_argument",
        field="usages[0].id",
    )
    assert error["details"]["usage_id"] == ledger_id
    assert "reserved" in error["message"]


def test_ids_merely_containing_a_prefix_are_taken(api: Api, acme: str) -> None:
    for ledger_id in ("g-system.x", "my-onboard:acme", "onboard-acme"):
        response = api.post(GRANT, json={"id": ledger_id, "amount": 5}, headers=ADMIN)
        assert response.status_code == 201, response.text
    response = _post(api, _usage("u-onboard:acme"), _usage("usage.system.1"))
    assert response.status_code == 201, response.text


# --- F9: a resend after the account was disabled is still the replay ------------------------


def test_a_resend_to_a_disabled_account_is_the_replay_and_anything_new_is_409(
    api: Api, acme: str
) -> None:
    _grant(api, 100)
    _meter(api)
    batch = [
        _usage("d1", 5, metadata={"k": "v"}),
        _usage("d2", 2, meter={"event_name": "api_calls"}),
    ]
    first = _post(api, *batch)
    assert first.status_code == 201, first.text
    assert api.post(f"{ORG}/billing/disable", headers=APP).status_code == 200
    again = _post(api, *batch)
    assert again.status_code == 200, again.text
    assert again.json()["created"] == []
    assert again.json()["replayed"] == ["d1", "d2"]
    assert again.json()["data"] == first.json()["data"]
    assert again.json()["balance"] == 93
    # A new usage, or one with other content, in the batch: the account's refusal stands.
    for usages in ([*batch, _usage("d3")], [_usage("d1", 6)], [_usage("d3")]):
        refused(
            api,
            "POST",
            USAGES,
            json={"usages": usages},
            status=409,
            code="failed_precondition",
        )


# --- F11: an id taken on another account says so --------------------------------------------


def test_a_usage_id_taken_in_another_org_says_so(api: Api, acme: str) -> None:
    _grant(api, 100)
    assert _post(api, _usage("m1")).status_code == 201
    other = f"{V1}/organizations/beta"
    assert api.put(other, json={"title": "Beta"}, headers=APP).status_code == 201
    assert api.post(f"{other}/billing", json={"currency": "usd"}, headers=APP).status_code == 201
    error = refused(
        api,
        "POST",
        f"{other}/billing/usages",
        json={"usages": [_usage("m1")]},
        status=409,
        code="id_conflict",
    )
    assert "another account" in error["message"]
    assert "different content" not in error["message"]
    assert error["details"] == {"usage_id": "m1", "id": "m1", "org_id": "beta"}
    # In its own org other content is still "different content".
    own = refused(
        api, "POST", USAGES, json={"usages": [_usage("m1", 2)]}, status=409, code="id_conflict"
    )
    assert "different content" in own["message"]


def test_a_grant_to_a_disabled_account_is_409_as_usages_are(api: Api, acme: str) -> None:
    _grant(api, 10)
    assert api.post(f"{ORG}/billing/disable", headers=APP).status_code == 200
    error = refused(
        api,
        "POST",
        GRANT,
        json={"id": "g2", "amount": 5},
        headers=ADMIN,
        status=409,
        code="failed_precondition",
    )
    assert error["details"]["state"] == "disabled"
    assert error["details"]["account_id"] == acme
    refused(
        api,
        "POST",
        f"{V1}/admin/organizations/nobody/billing/credits",
        json={"id": "g3", "amount": 5},
        headers=ADMIN,
        status=404,
        code="not_found",
    )


# --- F10: a revert with an id is safe to retry ----------------------------------------------


def _revert(api: Api, usage_id: str, amount: int, **extra: Any) -> Any:
    return api.post(f"{USAGES}/{usage_id}/revert", json={"amount": amount, **extra}, headers=ADMIN)


def test_a_revert_with_an_id_is_given_back_once_however_often_it_is_sent(
    api: Api, acme: str
) -> None:
    _grant(api, 100)
    assert _post(api, _usage("rv1", 10)).status_code == 201
    first = _revert(api, "rv1", 4, id="r-1")
    assert first.status_code == 201, first.text
    assert (first.json()["reverted"], first.json()["remaining"]) == (4, 6)
    assert first.json()["transaction"]["id"].startswith("system.revert@")
    retry = _revert(api, "rv1", 4, id="r-1")
    assert retry.status_code == 200, retry.text
    assert retry.json() == first.json()
    assert api.get(f"{ORG}/billing/balance", headers=APP).json()["amount"] == 94
    error = refused(
        api,
        "POST",
        f"{USAGES}/rv1/revert",
        json={"amount": 5, "id": "r-1"},
        headers=ADMIN,
        status=409,
        code="id_conflict",
    )
    assert error["details"] == {"id": "r-1", "usage_id": "rv1", "org_id": "acme"}
    # Another id, and no id, are new reverts; a retry after the usage is fully reverted is
    # still the stored answer, not an over-revert.
    assert _revert(api, "rv1", 4, id="r-2").status_code == 201
    assert _revert(api, "rv1", 2).status_code == 201
    again = _revert(api, "rv1", 4, id="r-2")
    assert again.status_code == 200, again.text
    assert (again.json()["reverted"], again.json()["remaining"]) == (10, 0)
    assert api.get(f"{ORG}/billing/balance", headers=APP).json()["amount"] == 100
    for bad in ("", " r", 1):
        refused(
            api,
            "POST",
            f"{USAGES}/rv1/revert",
            json={"amount": 1, "id": bad},
            headers=ADMIN,
            status=422,
            code="invalid_argument",
            field="id",
        )

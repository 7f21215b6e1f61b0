"""Usage over HTTP (DESIGN §17, §19): batches, replays, conflicts, atomicity, the credit check,
meter-outbox rows, admin reverts, and every bad input refused with nothing written. SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from billing_reconciler.store import LastApplied, LastAppliedRepository, LedgerRepository
from billing_reconciler.store.tables import MeterOutboxModel
from billing_reconciler.store.usage import revert_id
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

USAGES = f"{ORG}/billing/usages"
CHECK = f"{ORG}/billing/check"


def _grant(api: Api, amount: int, id: str = "g1") -> None:
    response = api.post(GRANT, json={"id": id, "amount": amount}, headers=ADMIN)
    assert response.status_code == 201, response.text


def _credit_min(api: Api, value: int) -> None:
    response = api.put(DETAILS, json={"credit_min": value}, headers=ADMIN)
    assert response.status_code == 200, response.text


def _balance(api: Api) -> int:
    amount: int = api.get(f"{ORG}/billing/balance", headers=APP).json()["amount"]
    return amount


def _usage(id: str, amount: int = 1, **extra: Any) -> dict[str, Any]:
    return {"id": id, "amount": amount, **extra}


def _post(api: Api, *usages: dict[str, Any]) -> Any:
    return api.post(USAGES, json={"usages": list(usages)}, headers=APP)


def _meter(api: Api, event_name: str = "api_calls") -> None:
    """A meter in the applied catalog (as the catalog domain's apply records it)."""
    with api.store.session() as session:
        LastAppliedRepository(session).put(
            LastApplied(
                installation_id="default",
                object_key=f"meter/{event_name}",
                kind="meter",
                stripe_id="mtr_1",
                fields={"event_name": event_name, "display_name": "API calls"},
                content_hash="x",
                revision="r1",
                applied_at=datetime.now(UTC),
            )
        )


def _outbox(api: Api) -> list[Any]:
    with api.store.session() as session:
        return list(session.scalars(select(MeterOutboxModel).order_by(MeterOutboxModel.seq)))


# --- recording --------------------------------------------------------------------------------


def test_a_batch_is_recorded_and_listed_and_its_resend_changes_nothing(api: Api, acme: str) -> None:
    _grant(api, 100)
    batch = [
        _usage("u1", 10, source="Search", description="a search", user_id="user-1"),
        _usage("u2", 5, metadata={"request": "r-2"}),
    ]
    response = _post(api, *batch)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["created"] == ["u1", "u2"]
    assert body["replayed"] == []
    assert body["balance"] == 85
    assert [(t["id"], t["type"], t["amount"], t["source"]) for t in body["data"]] == [
        ("u1", "debit", 10, "search"),
        ("u2", "debit", 5, "usage"),
    ]
    listed = {
        t["id"]: t for t in api.get(f"{ORG}/billing/transactions", headers=APP).json()["data"]
    }
    assert listed["u1"]["source"] == "search"
    assert listed["u1"]["description"] == "a search"
    assert listed["u1"]["user_id"] == "user-1"
    assert listed["u2"]["metadata"] == {"request": "r-2"}
    assert listed["u2"]["reverts"] is None
    before = dump(api.store)
    again = _post(api, *batch)
    assert again.status_code == 200, again.text
    assert again.json()["created"] == []
    assert again.json()["replayed"] == ["u1", "u2"]
    assert again.json()["data"] == body["data"]
    assert dump(api.store) == before
    # A batch mixing a replay and a new usage records only the new one.
    mixed = _post(api, batch[0], _usage("u3", 1))
    assert mixed.status_code == 201
    assert (mixed.json()["created"], mixed.json()["replayed"]) == (["u3"], ["u1"])
    assert _balance(api) == 84
    with api.store.session() as session:
        assert LedgerRepository(session).verify() == []


def test_credit_min_minus_20_lets_the_balance_reach_minus_10_and_refuses_the_next_50(
    api: Api, acme: str
) -> None:
    _grant(api, 40)
    _credit_min(api, -20)
    assert _post(api, _usage("a", 50)).status_code == 201
    assert _balance(api) == -10
    error = refused(
        api,
        "POST",
        USAGES,
        json={"usages": [_usage("b", 50)]},
        status=422,
        code="insufficient_credits",
    )
    assert error["details"]["usage_id"] == "b"
    assert (error["details"]["balance"], error["details"]["credit_min"]) == (-10, -20)
    # Exactly down to credit_min is allowed.
    assert _post(api, _usage("c", 10)).status_code == 201
    assert _balance(api) == -20


def test_the_same_id_with_other_content_is_a_conflict(api: Api, acme: str) -> None:
    _grant(api, 100)
    _meter(api)
    assert _post(api, _usage("u1", 3, meter={"event_name": "api_calls"})).status_code == 201
    for other in (
        _usage("u1", 4, meter={"event_name": "api_calls"}),
        _usage("u1", 3),
        _usage("u1", 3, meter={"event_name": "api_calls", "value": 7}),
        _usage("u1", 3, meter={"event_name": "api_calls"}, description="x"),
        _usage("g1", 1),  # the grant's id
    ):
        error = refused(
            api, "POST", USAGES, json={"usages": [other]}, status=409, code="id_conflict"
        )
        assert error["details"]["usage_id"] == other["id"]
    # The meter's value defaulting to the amount is the same content as saying it.
    same = _post(api, _usage("u1", 3, meter={"event_name": "api_calls", "value": 3}))
    assert same.status_code == 200, same.text


def test_a_batch_whose_7th_usage_lacks_credit_records_nothing(api: Api, acme: str) -> None:
    _grant(api, 60)
    batch = [_usage(f"u{n}", 10) for n in range(1, 11)]
    error = refused(
        api, "POST", USAGES, json={"usages": batch}, status=422, code="insufficient_credits"
    )
    assert error["details"]["usage_id"] == "u7"
    assert error["details"]["balance"] == 0
    assert _balance(api) == 60


def test_a_batch_whose_3rd_usage_conflicts_records_nothing(api: Api, acme: str) -> None:
    _grant(api, 60)
    assert _post(api, _usage("u3", 1)).status_code == 201
    batch = [_usage("u1", 1), _usage("u2", 1), _usage("u3", 2), _usage("u4", 1)]
    error = refused(api, "POST", USAGES, json={"usages": batch}, status=409, code="id_conflict")
    assert error["details"]["usage_id"] == "u3"
    assert _balance(api) == 59


def test_a_metered_usage_writes_its_outbox_row_and_asks_for_a_reconcile(
    api: Api, acme: str
) -> None:
    _grant(api, 100)
    _meter(api)
    stamp = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
    response = _post(
        api,
        _usage("m1", 4, meter={"event_name": "api_calls"}),
        _usage(
            "m2", 2, meter={"event_name": "api_calls", "value": 9, "timestamp": stamp.isoformat()}
        ),
        _usage("plain", 1),
    )
    assert response.status_code == 201, response.text
    rows = _outbox(api)
    assert [(r.id, r.event_name, r.value, r.account_id, r.org_id) for r in rows] == [
        ("m1", "api_calls", 4, acme, "acme"),
        ("m2", "api_calls", 9, acme, "acme"),
    ]
    assert rows[1].event_time == stamp
    assert abs(rows[0].event_time - rows[0].created_at) < timedelta(seconds=1)
    assert all(r.sent_at is None and r.aggregate_id is None and r.attempts == 0 for r in rows)
    assert api.settings.reconciles[-1] == ("customer", frozenset({"acme"}), "usage recorded")
    # A replay writes no second row and asks for nothing.
    asked = len(api.settings.reconciles)
    assert _post(api, _usage("m1", 4, meter={"event_name": "api_calls"})).status_code == 200
    assert len(_outbox(api)) == 2
    assert len(api.settings.reconciles) == asked


def test_usages_without_a_meter_ask_for_no_reconcile(api: Api, acme: str) -> None:
    _grant(api, 10)
    asked = len(api.settings.reconciles)
    assert _post(api, _usage("u1", 1)).status_code == 201
    assert len(api.settings.reconciles) == asked


# --- bad input ----------------------------------------------------------------------------


# Timestamps relative to when the test runs, not to when it was collected (with xdist a test
# may run many minutes after collection: "10 minutes ahead" would be in the past by then).
_OLD = "<36 days ago>"
_AHEAD = "<10 minutes ahead>"


def _at_run_time(value: Any) -> Any:
    if value == _OLD:
        return (datetime.now(UTC) - timedelta(days=36)).isoformat()
    if value == _AHEAD:
        return (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    if isinstance(value, dict):
        return {key: _at_run_time(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_at_run_time(item) for item in value]
    return value


@pytest.mark.parametrize(
    ("usages", "field"),
    [
        ([_usage("u1", 0)], "usages[0].amount"),
        ([_usage("u1", -1)], "usages[0].amount"),
        ([_usage("u1", 1.5)], "usages[0].amount"),
        ([_usage("u1", 1.0)], "usages[0].amount"),
        ([_usage("u1", "1")], "usages[0].amount"),
        ([_usage("u1", True)], "usages[0].amount"),
        ([_usage("u1", 2**53 + 1)], "usages[0].amount"),
        ([_usage("ok", 1), {"id": "u1"}], "usages[1].amount"),
        ([], "usages"),
        ([_usage(f"u{n}") for n in range(1001)], "usages"),
        ([_usage("u1"), _usage("u2"), _usage("u1")], "usages"),
        ([_usage("")], "usages[0].id"),
        ([_usage(" u1")], "usages[0].id"),
        ([_usage("x" * 256)], "usages[0].id"),
        ([_usage("system.revert:u1:1")], "usages[0].id"),
        ([_usage("u1", source="system.buy")], "usages[0].source"),
        ([_usage("u1", source="bad source")], "usages[0].source"),
        ([_usage("u1", meter={"event_name": "nope"})], "usages[0].meter.event_name"),
        ([_usage("u1", meter={"event_name": "api_calls", "value": -1})], "usages[0].meter.value"),
        ([_usage("u1", meter={"event_name": "api_calls", "value": 1.5})], "usages[0].meter.value"),
        ([_usage("u1", meter={"event_name": "api_calls", "value": "2"})], "usages[0].meter.value"),
        (
            [_usage("u1", meter={"event_name": "api_calls", "timestamp": "yesterday"})],
            "usages[0].meter.timestamp",
        ),
        (
            [_usage("u1", meter={"event_name": "api_calls", "timestamp": 1_700_000_000})],
            "usages[0].meter.timestamp",
        ),
        (
            [_usage("u1", meter={"event_name": "api_calls", "timestamp": "2026-01-02T03:04:05"})],
            "usages[0].meter.timestamp",
        ),
        (
            [_usage("u1", meter={"event_name": "api_calls", "timestamp": _OLD})],
            "usages[0].meter.timestamp",
        ),
        (
            [_usage("u1", meter={"event_name": "api_calls", "timestamp": _AHEAD})],
            "usages[0].meter.timestamp",
        ),
        ([_usage("u1", meter={"value": 1})], "usages[0].meter.event_name"),
        ([_usage("u1", extra=1)], "usages[0].extra"),
    ],
)
def test_bad_usages_are_refused_and_nothing_is_written(
    api: Api, acme: str, usages: list[dict[str, Any]], field: str
) -> None:
    _grant(api, 10_000)
    _meter(api)
    usages = _at_run_time(usages)
    error = refused(
        api,
        "POST",
        USAGES,
        json={"usages": usages},
        status=422,
        code="invalid_argument",
        field=field,
    )
    if field.startswith("usages[") and usages[0]["id"]:
        index = int(field[len("usages[") : field.index("]")])
        assert error["details"]["usage_id"] == usages[index].get("id")


def test_the_duplicate_id_is_named(api: Api, acme: str) -> None:
    _grant(api, 10)
    error = refused(
        api,
        "POST",
        USAGES,
        json={"usages": [_usage("a"), _usage("dup"), _usage("dup")]},
        status=422,
        code="invalid_argument",
        field="usages",
    )
    assert "'dup'" in error["message"]


def test_an_org_without_an_account_or_unknown_is_404_and_a_disabled_account_409(
    api: Api,
) -> None:
    assert api.put(ORG, json={"title": "Acme"}, headers=APP).status_code == 201
    for path, body in ((USAGES, {"usages": [_usage("u1")]}), (CHECK, {"amount": 1})):
        refused(api, "POST", path, json=body, status=404, code="not_found")
        refused(
            api,
            "POST",
            path.replace("/acme/", "/nobody/"),
            json=body,
            status=404,
            code="not_found",
        )
    assert api.post(f"{ORG}/billing", json={"currency": "usd"}, headers=APP).status_code == 201
    _grant(api, 10)
    assert api.post(f"{ORG}/billing/disable", headers=APP).status_code == 200
    for path, body in ((USAGES, {"usages": [_usage("u1")]}), (CHECK, {"amount": 1})):
        refused(api, "POST", path, json=body, status=409, code="failed_precondition")


def test_usages_need_a_token(api: Api, acme: str) -> None:
    refused(
        api,
        "POST",
        USAGES,
        json={"usages": [_usage("u1")]},
        headers={},
        status=401,
        code="unauthenticated",
    )


# --- check --------------------------------------------------------------------------------


def test_check_answers_against_credit_min(api: Api, acme: str) -> None:
    _grant(api, 5)
    assert api.post(CHECK, json={"amount": 5}, headers=APP).json() == {
        "allowed": True,
        "balance": 5,
        "credit_min": 0,
    }
    assert api.post(CHECK, json={"amount": 6}, headers=APP).json()["allowed"] is False
    _credit_min(api, -1)
    assert api.post(CHECK, json={"amount": 6}, headers=APP).json() == {
        "allowed": True,
        "balance": 5,
        "credit_min": -1,
    }
    for amount in (0, -1, 1.5, "1", 2**53 + 1, None):
        refused(
            api,
            "POST",
            CHECK,
            json={"amount": amount},
            status=422,
            code="invalid_argument",
            field="amount",
        )


# --- reverts ------------------------------------------------------------------------------


def _revert(api: Api, usage_id: str, amount: Any, headers: dict[str, str] = ADMIN) -> Any:
    return api.post(f"{USAGES}/{usage_id}/revert", json={"amount": amount}, headers=headers)


def test_partial_reverts_up_to_the_total_then_refused(api: Api, acme: str) -> None:
    _grant(api, 100)
    assert _post(api, _usage("u1", 10, source="search")).status_code == 201
    first = _revert(api, "u1", 4)
    assert first.status_code == 201, first.text
    body = first.json()
    assert (body["usage_id"], body["reverted"], body["remaining"]) == ("u1", 4, 6)
    revert = body["transaction"]
    assert revert["id"] == revert_id("u1", 1) == "system.revert:u1:1"
    assert (revert["type"], revert["amount"], revert["source"], revert["reverts"]) == (
        "credit",
        4,
        "system.revert.search",
        "u1",
    )
    assert _balance(api) == 94
    second = _revert(api, "u1", 6)
    assert second.status_code == 201
    assert second.json()["transaction"]["id"] == "system.revert:u1:2"
    assert second.json()["remaining"] == 0
    assert _balance(api) == 100
    error = refused(
        api,
        "POST",
        f"{USAGES}/u1/revert",
        json={"amount": 1},
        headers=ADMIN,
        status=422,
        code="invalid_argument",
        field="amount",
    )
    assert (error["details"]["usage_id"], error["details"]["remaining"]) == ("u1", 0)
    listed = api.get(f"{ORG}/billing/transactions", headers=APP).json()["data"]
    reverts = [t for t in listed if t["reverts"] == "u1"]
    assert sorted(t["id"] for t in reverts) == ["system.revert:u1:1", "system.revert:u1:2"]
    assert {t["source"] for t in reverts} == {"system.revert.search"}
    with api.store.session() as session:
        assert LedgerRepository(session).verify() == []


def test_an_over_revert_is_refused_at_once(api: Api, acme: str) -> None:
    _grant(api, 100)
    assert _post(api, _usage("u1", 10)).status_code == 201
    refused(
        api,
        "POST",
        f"{USAGES}/u1/revert",
        json={"amount": 11},
        headers=ADMIN,
        status=422,
        code="invalid_argument",
        field="amount",
    )


def test_reverts_refused(api: Api, acme: str) -> None:
    _grant(api, 100)
    assert _post(api, _usage("u1", 10)).status_code == 201
    assert _revert(api, "u1", 1).status_code == 201
    cases = [
        ("system.revert:u1:1", 409, "failed_precondition", ADMIN),  # a revert
        ("g1", 409, "failed_precondition", ADMIN),  # a grant
        ("nope", 404, "not_found", ADMIN),
        ("u1", 403, "forbidden", APP),  # an app token
    ]
    for usage_id, status, code, headers in cases:
        error = refused(
            api,
            "POST",
            f"{USAGES}/{usage_id}/revert",
            json={"amount": 1},
            headers=headers,
            status=status,
            code=code,
        )
        if status != 403:
            assert error["details"]["usage_id"] == usage_id
    for amount in (0, -1, 1.5, "1", 2**53 + 1):
        refused(
            api,
            "POST",
            f"{USAGES}/u1/revert",
            json={"amount": amount},
            headers=ADMIN,
            status=422,
            code="invalid_argument",
            field="amount",
        )


def test_another_orgs_usage_is_not_found(api: Api, acme: str) -> None:
    _grant(api, 100)
    assert _post(api, _usage("u1", 10)).status_code == 201
    other = f"{V1}/organizations/beta"
    assert api.put(other, json={"title": "Beta"}, headers=APP).status_code == 201
    assert api.post(f"{other}/billing", json={"currency": "usd"}, headers=APP).status_code == 201
    error = refused(
        api,
        "POST",
        f"{other}/billing/usages/u1/revert",
        json={"amount": 1},
        headers=ADMIN,
        status=404,
        code="not_found",
    )
    assert "u1" in error["message"]
    # The same message as for an id nobody used: nothing says it exists.
    unknown = error_of(
        api.post(f"{other}/billing/usages/zz/revert", json={"amount": 1}, headers=ADMIN)
    )
    assert unknown["message"].replace("'zz'", "'u1'") == error["message"]


def test_a_revert_of_a_255_character_usage_id_has_a_hashed_id(api: Api, acme: str) -> None:
    _grant(api, 100)
    long_id = "u" * 255
    assert _post(api, _usage(long_id, 3)).status_code == 201
    response = _revert(api, long_id, 1)
    assert response.status_code == 201, response.text
    revert = response.json()["transaction"]
    assert len(revert["id"]) <= 255
    assert revert["id"].startswith("system.revert#")
    assert revert["id"].endswith(":1")
    assert revert["reverts"] == long_id
    assert _revert(api, long_id, 1).json()["transaction"]["id"].endswith(":2")


def test_the_lowest_credit_min_never_overflows(api: Api, acme: str) -> None:
    """credit_min at -2^63 and batches of 1,000 usages of 2^53: the first fits, the second
    is insufficient_credits (not an int64 overflow answered 503)."""
    _credit_min(api, -(2**63))
    first = [_usage(f"a{n}", 2**53) for n in range(1000)]
    assert _post(api, *first).status_code == 201
    assert _balance(api) == -1000 * 2**53
    second = [_usage(f"b{n}", 2**53) for n in range(1000)]
    error = refused(
        api, "POST", USAGES, json={"usages": second}, status=422, code="insufficient_credits"
    )
    assert error["details"]["usage_id"] == "b24"  # 24 more fit above -2^63
    assert _balance(api) == -1000 * 2**53


def test_a_revert_past_the_largest_balance_is_refused(api: Api, acme: str) -> None:
    _grant(api, 10)
    assert _post(api, _usage("u1", 10)).status_code == 201
    _grant(api, 2**62, id="g2")
    _grant(api, 2**62 - 1, id="g3")  # the balance is now 2^63 - 1
    error = refused(
        api,
        "POST",
        f"{USAGES}/u1/revert",
        json={"amount": 1},
        headers=ADMIN,
        status=409,
        code="failed_precondition",
    )
    assert error["details"]["usage_id"] == "u1"


def test_the_account_a_usage_is_written_to_is_read_again_each_time(api: Api, acme: str) -> None:
    """On PostgreSQL a request for an org whose account an earlier request found is written
    by one statement that checks the account again (`record_in_one_statement`); whatever it
    finds changed, the general path answers exactly as it would have (SQLite always takes
    it). So: disabled after a usage -> 409 and nothing written; enabled again -> recorded;
    a resend -> 200; the same id with other content -> 409; too little credit -> 422; an org
    deleted and made again with a new account -> the new account is debited."""
    _grant(api, 10)
    assert _post(api, _usage("u1", 2)).status_code == 201
    assert api.post(f"{ORG}/billing/disable", headers=APP).status_code == 200
    refused(
        api, "POST", USAGES, json={"usages": [_usage("u2")]}, status=409, code="failed_precondition"
    )
    assert api.post(f"{ORG}/billing/enable", headers=APP).status_code == 200
    assert _post(api, _usage("u2", 3)).status_code == 201
    again = _post(api, _usage("u2", 3))
    assert (again.status_code, again.json()["replayed"]) == (200, ["u2"])
    refused(api, "POST", USAGES, json={"usages": [_usage("u2", 4)]}, status=409, code="id_conflict")
    refused(
        api,
        "POST",
        USAGES,
        json={"usages": [_usage("u3", 6)]},
        status=422,
        code="insufficient_credits",
    )
    assert _balance(api) == 5
    with api.store.session() as session:
        ledger = LedgerRepository(session)
        assert ledger.balance(acme)[0] == 5
        assert ledger.verify() == []
    assert api.delete(ORG, headers=ADMIN).status_code in (200, 204)
    assert api.put(ORG, json={"title": "Acme"}, headers=APP).status_code == 201
    created = api.post(f"{ORG}/billing", json={"currency": "usd"}, headers=APP)
    assert created.status_code == 201, created.text
    fresh = created.json()["id"]
    assert fresh != acme
    _grant(api, 10, id="g2")
    recorded = _post(api, _usage("u4", 1))
    assert recorded.status_code == 201, recorded.text
    with api.store.session() as session:
        assert LedgerRepository(session).balance(fresh)[0] == 9
        assert LedgerRepository(session).balance(acme)[0] == 5


def test_a_retry_after_the_org_was_made_again_is_the_replay_and_no_revert_is_swallowed(
    api: Api, acme: str
) -> None:
    """Tester T3-2, T3-3: an org deleted and made again has a new account. A retry of a usage
    its old account recorded is still the replay (200, the transaction as stored, on the old
    account), not "taken by another org"; other content under that id is still 409. A revert
    of it would credit the old, disabled account that no route of the org shows: refused
    (409 failed_precondition naming the account), as a revert on a disabled account is."""
    _grant(api, 50)
    assert _post(api, _usage("u1", 10)).status_code == 201
    assert api.delete(ORG, headers=ADMIN).status_code in (200, 204)
    assert api.put(ORG, json={"title": "Acme"}, headers=APP).status_code == 201
    created = api.post(f"{ORG}/billing", json={"currency": "usd"}, headers=APP)
    assert created.status_code == 201, created.text
    _grant(api, 5, id="g2")
    again = _post(api, _usage("u1", 10))
    assert again.status_code == 200, again.text
    assert again.json()["replayed"] == ["u1"]
    assert again.json()["data"][0]["amount"] == 10
    assert again.json()["balance"] == 5  # the new account's, untouched
    error = refused(
        api, "POST", USAGES, json={"usages": [_usage("u1", 11)]}, status=409, code="id_conflict"
    )
    assert "different content" in error["message"]
    error = refused(
        api,
        "POST",
        f"{USAGES}/u1/revert",
        json={"amount": 1},
        headers=ADMIN,
        status=409,
        code="failed_precondition",
    )
    assert acme in error["message"]
    # On an account merely disabled the same; enabled again, the revert is made.
    assert _post(api, _usage("u2", 1)).status_code == 201
    assert api.post(f"{ORG}/billing/disable", headers=APP).status_code == 200
    refused(
        api,
        "POST",
        f"{USAGES}/u2/revert",
        json={"amount": 1},
        headers=ADMIN,
        status=409,
        code="failed_precondition",
    )
    assert api.post(f"{ORG}/billing/enable", headers=APP).status_code == 200
    assert _revert(api, "u2", 1).status_code == 201
    assert _balance(api) == 5


def test_a_revert_of_an_id_holding_nul_is_404(api: Api, acme: str) -> None:
    """Tester T3-8: PostgreSQL cannot look a NUL up (a DataError, answered 503 'retry
    later'); no usage id holds one, so it is the unknown usage it is, on both stores."""
    refused(
        api,
        "POST",
        f"{USAGES}/x%00y/revert",
        json={"amount": 1},
        headers=ADMIN,
        status=404,
        code="not_found",
    )


def test_a_grant_retried_after_the_org_was_made_again_is_the_replay(api: Api, acme: str) -> None:
    """Tester T4-1 (T3-2 for grants): the same grant again after the org was deleted and
    made again answers the grant as stored (200, on the earlier account), the new account
    untouched; other content under its id is still 409."""
    _grant(api, 50)
    assert api.delete(ORG, headers=ADMIN).status_code in (200, 204)
    assert api.put(ORG, json={"title": "Acme"}, headers=APP).status_code == 201
    created = api.post(f"{ORG}/billing", json={"currency": "usd"}, headers=APP)
    assert created.status_code == 201, created.text
    again = api.post(GRANT, json={"id": "g1", "amount": 50}, headers=ADMIN)
    assert again.status_code == 200, again.text
    assert (again.json()["id"], again.json()["amount"]) == ("g1", 50)
    assert _balance(api) == 0
    refused(
        api,
        "POST",
        GRANT,
        json={"id": "g1", "amount": 51},
        headers=ADMIN,
        status=409,
        code="id_conflict",
    )

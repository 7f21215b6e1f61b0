"""Billing accounts, their admin limits, the ledger, and the catalog as applied."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from billing_reconciler.store import (
    LastApplied,
    LastAppliedRepository,
    LedgerRepository,
    PlanRepository,
    PlanRow,
)
from tests.integration.api.conftest import ADMIN, APP, V1, Api, refused

ORG = f"{V1}/organizations/acme"
GRANT = f"{V1}/admin/organizations/acme/billing/credits"


def _acme(api: Api, **account: object) -> dict[str, object]:
    api.put(ORG, json={"title": "Acme", "owner_email": "o@acme.test"}, headers=APP)
    response = api.post(f"{ORG}/billing", json=account, headers=APP)
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


def test_explicit_create_takes_the_body_and_defaults_from_the_org(api: Api) -> None:
    account = _acme(
        api,
        phone="+4912345",
        address={"line1": "Main St 1", "city": "Berlin", "country": "DE"},
        tax_ids=[{"type": "eu_vat", "value": "DE123456789"}],
        currency="EUR",
        offline=True,
        test_clock="clock_xyz",
        metadata={"k": "v"},
    )
    assert account["name"] == "Acme"
    assert account["email"] == "o@acme.test"
    assert account["currency"] == "eur"
    assert account["offline"] is True
    assert account["test_clock"] == "clock_xyz"
    assert account["state"] == "active"
    assert account["address"] == {
        "line1": "Main St 1",
        "line2": None,
        "city": "Berlin",
        "state": None,
        "postal_code": None,
        "country": "DE",
    }
    assert account["tax_ids"] == [{"type": "eu_vat", "value": "DE123456789"}]
    assert account["stripe_customer_id"] is None
    assert account["due_in_days"] == 30
    assert api.settings.reconciles[-1] == (
        "customer",
        frozenset({"acme"}),
        "billing account created",
    )


def test_patch_register_enable_disable(api: Api) -> None:
    _acme(api, offline=True)
    patched = api.patch(f"{ORG}/billing", json={"name": "ACME", "phone": None}, headers=APP)
    assert patched.status_code == 200
    assert patched.json()["name"] == "ACME"
    registered = api.post(f"{ORG}/billing/register", headers=APP).json()
    assert registered["offline"] is False
    assert api.post(f"{ORG}/billing/register", headers=APP).json()["offline"] is False
    assert api.post(f"{ORG}/billing/disable", headers=APP).json()["state"] == "disabled"
    assert api.post(f"{ORG}/billing/enable", headers=APP).json()["state"] == "active"
    reasons = [r for _, _, r in api.settings.reconciles]
    assert "billing account registered" in reasons
    assert "billing account disabled" in reasons


def test_admin_details(api: Api) -> None:
    _acme(api)
    response = api.put(
        f"{V1}/admin/organizations/acme/billing/details",
        json={"credit_min": -500, "due_in_days": 0},
        headers=ADMIN,
    )
    assert response.status_code == 200
    assert response.json()["credit_min"] == -500
    assert response.json()["due_in_days"] == 0
    partial = api.put(
        f"{V1}/admin/organizations/acme/billing/details", json={"due_in_days": 14}, headers=ADMIN
    ).json()
    assert (partial["credit_min"], partial["due_in_days"]) == (-500, 14)


def test_grants_balance_and_transactions_newest_first(api: Api) -> None:
    account = _acme(api)
    for n in range(1, 6):
        response = api.post(
            GRANT,
            json={"id": f"g{n}", "amount": n, "source": "Promo", "description": f"grant {n}"},
            headers=ADMIN,
        )
        assert response.status_code == 201
        assert response.json()["source"] == "promo"
    default = api.post(GRANT, json={"id": "g6", "amount": 10}, headers=ADMIN).json()
    assert default["source"] == "system.awarded"
    balance = api.get(f"{ORG}/billing/balance", headers=APP).json()
    assert balance["amount"] == 25
    assert balance["updated_at"].endswith("Z")
    ids: list[str] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": 4}
        if cursor:
            params["cursor"] = cursor
        page = api.get(f"{ORG}/billing/transactions", params=params, headers=APP).json()
        ids += [t["id"] for t in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    with api.store.session() as session:
        stored = LedgerRepository(session).transactions(str(account["id"]), limit=100)[0]
    assert ids == [t.id for t in stored]
    assert len(ids) == 6
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    empty = api.get(f"{ORG}/billing/transactions", params={"start": future}, headers=APP)
    assert empty.json() == {"data": [], "next_cursor": None}
    everything = api.get(f"{ORG}/billing/transactions", params={"end": future}, headers=APP)
    assert len(everything.json()["data"]) == 6
    bad = api.get(f"{ORG}/billing/transactions", params={"cursor": "nope"}, headers=APP)
    assert bad.status_code == 422
    assert bad.json()["error"]["details"]["field"] == "cursor"
    naive = api.get(
        f"{ORG}/billing/transactions", params={"start": "2025-01-01T00:00:00"}, headers=APP
    )
    assert naive.status_code == 422


def test_a_grant_without_an_active_account_is_404(api: Api) -> None:
    api.put(ORG, json={"title": "Acme"}, headers=APP)
    response = api.post(GRANT, json={"id": "g1", "amount": 1}, headers=ADMIN)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_the_catalog_as_applied(api: Api) -> None:
    now = datetime.now(UTC)
    with api.store.session() as session:
        PlanRepository(session).upsert(
            PlanRow(name="Team", title="Team", interval="month", products=("seat",), trial_days=14)
        )
        PlanRepository(session).upsert(PlanRow(name="old", title="Old"))
        PlanRepository(session).archive("old")
        repo = LastAppliedRepository(session)
        entries: list[tuple[str, str, str, dict[str, object]]] = [
            ("product/seat", "product", "prod_1", {"title": "Seat", "description": "A seat"}),
            (
                "price/seat/monthly",
                "price",
                "price_1",
                {
                    "currency": "usd",
                    "unit_amount": 900,
                    "recurring": {"interval": "month"},
                    "lookup_key": "seat_monthly",
                },
            ),
            ("feature/sso", "feature", "feat_1", {"title": "SSO", "lookup_key": "sso"}),
        ]
        for key, kind, stripe_id, fields in entries:
            repo.put(
                LastApplied(
                    installation_id="default",
                    object_key=key,
                    kind=kind,
                    stripe_id=stripe_id,
                    fields=fields,
                    content_hash="x",
                    revision="r",
                    applied_at=now,
                )
            )
    plans = api.get(f"{V1}/billing/plans", headers=APP).json()
    assert [p["name"] for p in plans["data"]] == ["team"]
    assert plans["next_cursor"] is None
    assert api.get(f"{V1}/billing/plans/TEAM", headers=APP).json()["trial_days"] == 14
    assert api.get(f"{V1}/billing/plans/old", headers=APP).status_code == 404
    products = api.get(f"{V1}/billing/products", headers=APP).json()["data"]
    assert products == [
        {
            "name": "seat",
            "title": "Seat",
            "description": "A seat",
            "stripe_product_id": "prod_1",
            "prices": [
                {
                    "name": "monthly",
                    "stripe_price_id": "price_1",
                    "currency": "usd",
                    "amount": 900,
                    "interval": "month",
                    "lookup_key": "seat_monthly",
                }
            ],
        }
    ]
    features = api.get(f"{V1}/billing/features", headers=APP).json()["data"]
    assert features == [
        {"name": "sso", "title": "SSO", "stripe_feature_id": "feat_1", "lookup_key": "sso"}
    ]


@pytest.mark.parametrize(
    "query",
    ["start=0001-01-01T00:00:00%2B14:00", "end=9999-12-31T23:59:59-14:00"],
)
def test_a_date_bound_outside_the_range_in_utc_is_422_not_503(
    api: Api, acme: str, query: str
) -> None:
    """Tester T3-5: an instant the datetime range cannot hold once converted to UTC was an
    OverflowError answered 503 (retry later: it never succeeds); it is a bad parameter."""
    field = query.split("=")[0]
    refused(
        api,
        "GET",
        f"{ORG}/billing/transactions?{query}",
        status=422,
        code="invalid_argument",
        field=field,
    )

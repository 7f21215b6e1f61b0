"""The subscription routes and seat limits of the host API (issue 11, DESIGN §16, §19).

The catalog "as applied" is written straight into the store (plans table, last-applied
products, prices and feature attachments); the subscriptions domain is not running, so where
a test needs Stripe's side it fills the mirror with `SubscriptionMirrorRepository.upsert`
(as the domain's bookkeeping restore would), sometimes from inside the reconcile request (a
ticket that is done at once), so the answer shows the mirrored subscription.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from billing_reconciler.api.pending import ReconcileTicket, RunFailure
from billing_reconciler.client import BillingAPIError, BillingClient
from billing_reconciler.model_subscriptions import (
    ItemRecord,
    SubscriptionOwner,
    SubscriptionRecord,
)
from billing_reconciler.store import (
    LastApplied,
    LastAppliedRepository,
    MemberRepository,
    PlanRepository,
    PlanRow,
    Store,
)
from billing_reconciler.store.subscriptions import (
    IntentRepository,
    PlanHistoryRepository,
    SubscriptionMirrorRepository,
)
from tests.integration.api.conftest import (
    ADMIN,
    ADMIN_TOKEN,
    APP,
    APP_TOKEN,
    ORG,
    Api,
    Settings,
    build_app,
    error_of,
    refused,
)
from tests.integration.runtime.live_server import LiveServer

SUBS = f"{ORG}/billing/subscriptions"
PERIOD_START = 1_790_000_000
PERIOD_END = PERIOD_START + 30 * 86400
NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)


def rfc(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


END = rfc(PERIOD_END)


def _entry(key: str, kind: str, stripe_id: str, fields: dict[str, Any]) -> LastApplied:
    return LastApplied(
        installation_id="default",
        object_key=key,
        kind=kind,
        stripe_id=stripe_id,
        fields=fields,
        content_hash="x",
        revision="r",
        applied_at=NOW,
    )


def _product(name: str, behavior: str = "basic", seat_limit: int | None = None) -> LastApplied:
    metadata = {"br_behavior": behavior}
    if seat_limit is not None:
        metadata["br_seat_limit"] = str(seat_limit)
    return _entry(
        f"product/{name}", "product", f"prod_{name}", {"title": name, "metadata": metadata}
    )


def _price(
    product: str, name: str, amount: int, currency: str = "usd", **extra: Any
) -> LastApplied:
    fields: dict[str, Any] = {
        "product": f"product/{product}",
        "currency": currency,
        "unit_amount": amount,
        "tiers": [],
        "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
        "currency_options": {},
        **extra,
    }
    return _entry(f"price/{product}/{name}", "price", f"price_{product}_{name}", fields)


def install_catalog(store: Store) -> None:
    """free (0 usd), pro (per seat, seat_limit 3, 900 usd / 800 eur, feature sso), team
    (per seat, unlimited, 2000 usd), solo (per seat, seat_limit 1, 500 usd), gbp (gbp only),
    old (archived)."""
    with store.session() as session:
        plans = PlanRepository(session)
        for name, products in (
            ("free", ("base",)),
            ("pro", ("seat", "credits_pack")),
            ("team", ("team_seat",)),
            ("solo", ("solo_seat",)),
            ("gbp", ("gbp_base",)),
            ("old", ("base",)),
        ):
            plans.upsert(
                PlanRow(
                    name=name,
                    title=name.title(),
                    interval="month",
                    products=products,
                    trial_days=14 if name == "pro" else 0,
                )
            )
        plans.archive("old")
        repo = LastAppliedRepository(session)
        for entry in (
            _product("base"),
            _price("base", "monthly", 0),
            _product("seat", "per_seat", seat_limit=3),
            _price(
                "seat",
                "monthly",
                900,
                currency_options={"eur": {"unit_amount": 800, "tiers": [], "tax_behavior": None}},
            ),
            _product("credits_pack", "credits"),
            _price("credits_pack", "once", 500),
            _product("team_seat", "per_seat", seat_limit=0),
            _price("team_seat", "monthly", 2000),
            _product("solo_seat", "per_seat", seat_limit=1),
            _price("solo_seat", "monthly", 500),
            _product("gbp_base"),
            _price("gbp_base", "monthly", 100, currency="gbp"),
            _entry("feature/sso", "feature", "feat_sso", {"title": "SSO", "lookup_key": "sso"}),
            _entry("feature/audit", "feature", "feat_audit", {"title": "Audit"}),
            _entry(
                "product_feature/seat/sso",
                "product_feature",
                "pf_1",
                {"product": "product/seat", "feature": "feature/sso"},
            ),
        ):
            repo.put(entry)


@pytest.fixture
def catalog(api: Api) -> None:
    install_catalog(api.store)


def mirror(
    store: Store,
    intent_id: str,
    *,
    status: str = "active",
    plan: str | None = None,
    stripe_id: str = "sub_1",
    seats: int | None = 1,
    trial_end: int | None = None,
    cancel_at: int | None = None,
) -> None:
    """What the domain's bookkeeping would write for the intent's Stripe subscription."""
    with store.session() as session:
        intent = IntentRepository(session).get(intent_id)
        assert intent is not None
        record = SubscriptionRecord(
            stripe_id=stripe_id,
            customer_id="cus_1",
            status=status,
            currency="usd",
            items=(
                ItemRecord(
                    price_id="price_x",
                    quantity=seats,
                    item_id="si_1",
                    current_period_start=PERIOD_START,
                    current_period_end=PERIOD_END,
                ),
            ),
            trial_end=trial_end,
            cancel_at=cancel_at,
            canceled_at=PERIOD_START + 5 if status == "canceled" else None,
            created=PERIOD_START,
            owner=SubscriptionOwner(
                installation_id="default",
                org_id=intent.org_id,
                plan=plan or intent.plan,
                intent_id=intent.id,
            ),
        )
        SubscriptionMirrorRepository(session).upsert(
            record, account_id=intent.account_id, org_id=intent.org_id, seats=seats
        )


def subscribe(api: Api, plan: str, **body: Any) -> dict[str, Any]:
    response = api.post(SUBS, json={"plan": plan, **body}, headers=ADMIN)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


def live(api: Api, plan: str, **mirrored: Any) -> str:
    """Subscribed and mirrored as live: the subscription id."""
    sub_id: str = subscribe(api, plan)["id"]
    mirror(api.store, sub_id, **mirrored)
    return sub_id


def add_members(api: Api, *users: str) -> None:
    for user in users:
        assert api.put(f"{ORG}/members/{user}", json={}, headers=APP).status_code == 201


# --- subscribe ------------------------------------------------------------------------------


def test_subscribe_records_the_intent_asks_for_the_reconcile_and_answers_it(
    api: Api, acme: str, catalog: None
) -> None:
    api.settings.reconciles.clear()
    sub = subscribe(api, "Free")
    assert sub["id"].startswith("subi_")
    assert sub["plan"] == "free"
    assert sub["org_id"] == "acme"
    assert sub["state"] is None
    assert sub["stripe_subscription_id"] is None
    assert sub["pending_change"] is None
    assert api.settings.reconciles == [("customer", frozenset({"acme"}), "subscribed")]
    assert api.get(f"{SUBS}/{sub['id']}", headers=APP).json() == sub
    listed = api.get(SUBS, headers=APP).json()
    assert listed == {"data": [sub], "next_cursor": None}
    with api.store.session() as session:
        intent = IntentRepository(session).current(acme)
        assert intent is not None
        assert intent.id == sub["id"]
        assert intent.source == "subscribe"


def test_subscribe_waits_for_the_reconcile_and_answers_the_mirrored_subscription(
    api: Api, acme: str, catalog: None
) -> None:
    def reconciled() -> ReconcileTicket:
        with api.store.session() as session:
            intent = IntentRepository(session).current(acme)
        assert intent is not None
        mirror(api.store, intent.id, status="trialing", trial_end=PERIOD_END, seats=1)
        ticket = ReconcileTicket()
        ticket.seal()  # nothing queued: done at once
        return ticket

    api.settings.ticket = reconciled
    sub = subscribe(api, "pro")
    assert sub["stripe_subscription_id"] == "sub_1"
    assert sub["state"] == "trialing"
    assert sub["seats"] == 1
    assert sub["trial_ends_at"] == END
    assert sub["current_period_start"] == rfc(PERIOD_START)
    assert sub["current_period_end"] == sub["trial_ends_at"]


def test_subscribe_answers_202_when_the_reconcile_did_not_create_it(
    api: Api, acme: str, catalog: None
) -> None:
    def done() -> ReconcileTicket:
        ticket = ReconcileTicket()
        ticket.seal()
        return ticket

    api.settings.ticket = done
    response = api.post(SUBS, json={"plan": "free"}, headers=ADMIN)
    assert response.status_code == 202
    assert response.json()["reason"] == "not_applied"
    assert response.headers["Location"].startswith(f"{SUBS}/subi_")


def test_a_paid_plan_replaces_a_live_free_one(api: Api, acme: str, catalog: None) -> None:
    free = live(api, "free")
    pro = subscribe(api, "pro", skip_trial=True)
    assert pro["id"] != free
    with api.store.session() as session:
        history = IntentRepository(session).history(acme)
    assert [(i.plan, i.state) for i in history] == [("free", "replaced"), ("pro", "current")]
    assert history[1].skip_trial is True
    listed = api.get(SUBS, params={"limit": 1}, headers=APP).json()
    assert [s["id"] for s in listed["data"]] == [pro["id"]]
    rest = api.get(SUBS, params={"cursor": listed["next_cursor"]}, headers=APP).json()
    assert [s["id"] for s in rest["data"]] == [free]
    assert rest["data"][0]["state"] == "active"
    assert rest["next_cursor"] is None


def test_subscribing_again_after_the_subscription_ended_starts_a_new_one(
    api: Api, acme: str, catalog: None
) -> None:
    first = live(api, "pro", status="canceled")
    second = subscribe(api, "pro")
    assert second["id"] != first
    assert api.get(f"{SUBS}/{first}", headers=APP).json()["state"] == "canceled"


def test_subscribe_refusals(api: Api, acme: str, catalog: None) -> None:
    error = refused(
        api,
        "POST",
        SUBS,
        json={"plan": "nope"},
        headers=ADMIN,
        status=404,
        code="not_found",
        field="plan",
    )
    assert error["details"]["plan"] == "nope"
    error = refused(
        api,
        "POST",
        SUBS,
        json={"plan": "old"},
        headers=ADMIN,
        status=409,
        code="failed_precondition",
        field="plan",
    )
    assert "inactive" in error["message"]
    error = refused(
        api,
        "POST",
        SUBS,
        json={"plan": "gbp"},
        headers=ADMIN,
        status=422,
        code="invalid_argument",
        field="plan",
    )
    assert error["details"]["currency"] == "usd"
    assert error["details"]["plan"] == "gbp"
    assert "gbp" in error["message"]
    assert "usd" in error["message"]
    refused(api, "POST", SUBS, json={"plan": "pro"}, status=403, code="forbidden")
    refused(
        api,
        "POST",
        SUBS,
        json={"plan": "pro", "trial": 1},
        headers=ADMIN,
        status=422,
        code="invalid_argument",
    )
    refused(
        api,
        "POST",
        SUBS,
        json={"plan": "pro", "skip_trial": "yes"},
        headers=ADMIN,
        status=422,
        code="invalid_argument",
    )


def test_the_plan_already_held_is_409_already_exists(api: Api, acme: str, catalog: None) -> None:
    sub = live(api, "pro")
    error = refused(
        api, "POST", SUBS, json={"plan": "PRO"}, headers=ADMIN, status=409, code="already_exists"
    )
    assert error["details"]["subscription_id"] == sub


def test_another_paid_plan_beside_a_live_paid_one_is_refused(
    api: Api, acme: str, catalog: None
) -> None:
    sub = live(api, "pro")
    error = refused(
        api,
        "POST",
        SUBS,
        json={"plan": "team"},
        headers=ADMIN,
        status=409,
        code="failed_precondition",
    )
    assert "change the plan instead" in error["message"]
    assert error["details"]["subscription_id"] == sub


def test_an_offline_account_on_a_paid_plan_is_refused_and_a_free_one_is_recorded(
    api: Api, catalog: None
) -> None:
    assert api.put(ORG, json={"title": "Acme"}, headers=APP).status_code == 201
    assert api.post(f"{ORG}/billing", json={"offline": True}, headers=APP).status_code == 201
    error = refused(
        api,
        "POST",
        SUBS,
        json={"plan": "pro"},
        headers=ADMIN,
        status=409,
        code="failed_precondition",
    )
    assert "register" in error["message"]
    sub = subscribe(api, "free")
    assert sub["state"] is None
    # Cancelling a subscription that can not exist in Stripe (offline) just ends the intent.
    response = api.post(f"{SUBS}/{sub['id']}/cancel", json={}, headers=APP)
    assert response.status_code == 200, response.text
    with api.store.session() as session:
        assert IntentRepository(session).get(sub["id"]).state == "ended"  # type: ignore[union-attr]


def test_no_account_or_no_org_is_404(api: Api, catalog: None) -> None:
    refused(api, "POST", SUBS, json={"plan": "pro"}, headers=ADMIN, status=404, code="not_found")
    refused(api, "GET", SUBS, status=404, code="not_found")
    assert api.put(ORG, json={"title": "Acme"}, headers=APP).status_code == 201
    refused(api, "GET", SUBS, status=404, code="not_found")
    refused(api, "GET", f"{SUBS}/subi_x", status=404, code="not_found")


def test_a_subscription_of_another_org_is_404(api: Api, acme: str, catalog: None) -> None:
    sub = live(api, "pro")
    assert api.put(f"{ORG}2", json={"title": "Other"}, headers=APP).status_code == 201
    path = f"{ORG}2/billing/subscriptions/{sub}"
    refused(api, "GET", path, status=404, code="not_found")
    refused(api, "POST", f"{path}/cancel", json={}, status=404, code="not_found")


# --- change --------------------------------------------------------------------------------


def test_a_plan_change_at_the_period_end(api: Api, acme: str, catalog: None) -> None:
    sub = live(api, "pro")
    api.settings.reconciles.clear()
    response = api.post(f"{SUBS}/{sub}/change", json={"plan": "team"}, headers=APP)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["plan"] == "pro"
    assert answer["pending_change"] == {
        "plan": "team",
        "effective_at": END,
        "reason": "change",
    }
    assert api.settings.reconciles == [("customer", frozenset({"acme"}), "subscription changed")]
    # The same change again (a retry) answers the same and writes nothing.
    again = api.post(f"{SUBS}/{sub}/change", json={"plan": "team"}, headers=APP)
    assert again.status_code == 200
    assert again.json() == answer
    # Dropping it.
    dropped = api.post(f"{SUBS}/{sub}/change", json={"cancel_upcoming_changes": True}, headers=APP)
    assert dropped.status_code == 200, dropped.text
    assert dropped.json()["pending_change"] is None


def test_an_immediate_change_in_frontiers_form(api: Api, acme: str, catalog: None) -> None:
    sub = live(api, "pro")
    before = datetime.now(UTC).replace(microsecond=0)
    response = api.post(
        f"{SUBS}/{sub}/change",
        json={"plan_change": {"plan": "team", "immediate": True}},
        headers=APP,
    )
    assert response.status_code == 200, response.text
    pending = response.json()["pending_change"]
    assert pending["plan"] == "team"
    assert pending["reason"] == "change"
    assert datetime.fromisoformat(pending["effective_at"]) >= before
    with api.store.session() as session:
        intent = IntentRepository(session).get(sub)
    assert intent is not None
    assert intent.pending_change is not None
    assert intent.pending_change.immediate is True


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"plan": "pro"}, 409, "failed_precondition"),  # the same plan
        ({"plan": "old"}, 409, "failed_precondition"),  # inactive
        ({"plan": "nope"}, 404, "not_found"),
        ({"plan": "gbp"}, 422, "invalid_argument"),  # no price in usd
        ({"plan": "team", "cancel_upcoming_changes": True}, 422, "invalid_argument"),
        ({"plan_change": {"plan": "team"}, "plan": "team"}, 422, "invalid_argument"),
        ({}, 422, "invalid_argument"),
        ({"immediate": True}, 422, "invalid_argument"),
        ({"cancel_upcoming_changes": False}, 422, "invalid_argument"),
        ({"cancel_upcoming_changes": True, "preview": True}, 422, "invalid_argument"),
        ({"plan": "team", "preview": "yes"}, 422, "invalid_argument"),
        # A preview asks Stripe, and this app has none (test_subscription_preview.py does).
        ({"plan": "team", "preview": True}, 503, "provider_unavailable"),
        ({"plan": "gbp", "preview": True}, 422, "invalid_argument"),  # refused first
    ],
)
def test_change_refusals(
    api: Api, acme: str, catalog: None, body: dict[str, Any], status: int, code: str
) -> None:
    sub = live(api, "pro")
    refused(api, "POST", f"{SUBS}/{sub}/change", json=body, status=status, code=code)


def test_a_change_while_one_is_in_flight_is_refused(api: Api, acme: str, catalog: None) -> None:
    sub = live(api, "pro")
    assert api.post(f"{SUBS}/{sub}/change", json={"plan": "team"}, headers=APP).status_code == 200
    error = refused(
        api,
        "POST",
        f"{SUBS}/{sub}/change",
        json={"plan": "free"},
        status=409,
        code="failed_precondition",
    )
    assert error["details"]["pending_plan"] == "team"
    # An immediate change to the same target is another change, also refused.
    refused(
        api,
        "POST",
        f"{SUBS}/{sub}/change",
        json={"plan": "team", "immediate": True},
        status=409,
        code="failed_precondition",
    )
    # A period-end cancel while the change is pending is refused the same way (finding 12).
    refused(api, "POST", f"{SUBS}/{sub}/cancel", json={}, status=409, code="failed_precondition")
    # A pending cancel is in flight too.
    dropped = api.post(f"{SUBS}/{sub}/change", json={"cancel_upcoming_changes": True}, headers=APP)
    assert dropped.status_code == 200, dropped.text
    assert api.post(f"{SUBS}/{sub}/cancel", json={}, headers=APP).status_code == 200
    refused(
        api,
        "POST",
        f"{SUBS}/{sub}/change",
        json={"plan": "free"},
        status=409,
        code="failed_precondition",
    )


def test_changing_a_canceled_subscription_is_refused(api: Api, acme: str, catalog: None) -> None:
    sub = live(api, "pro", status="canceled")
    for body in ({"plan": "team"}, {"cancel_upcoming_changes": True}):
        refused(
            api, "POST", f"{SUBS}/{sub}/change", json=body, status=409, code="failed_precondition"
        )
    refused(api, "POST", f"{SUBS}/{sub}/cancel", json={}, status=409, code="failed_precondition")


def test_changing_a_replaced_subscription_is_refused(api: Api, acme: str, catalog: None) -> None:
    free = live(api, "free")
    subscribe(api, "pro")
    refused(
        api,
        "POST",
        f"{SUBS}/{free}/change",
        json={"plan": "team"},
        status=409,
        code="failed_precondition",
    )


def test_a_change_putting_members_above_the_target_seat_limit_is_refused(
    api: Api, acme: str, catalog: None
) -> None:
    sub = live(api, "pro")
    add_members(api, "u1", "u2")
    error = refused(
        api,
        "POST",
        f"{SUBS}/{sub}/change",
        json={"plan": "solo"},
        status=409,
        code="seat_limit_reached",
    )
    assert error["details"] == {"org_id": "acme", "plan": "solo", "seat_limit": 1, "members": 2}


# --- cancel --------------------------------------------------------------------------------


def test_cancel_at_the_period_end_and_now(api: Api, acme: str, catalog: None) -> None:
    sub = live(api, "pro")
    api.settings.reconciles.clear()
    response = api.post(f"{SUBS}/{sub}/cancel", json={}, headers=APP)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["cancel_at"] == END
    assert answer["pending_change"] == {
        "plan": None,
        "effective_at": END,
        "reason": "cancel",
    }
    assert api.settings.reconciles == [("customer", frozenset({"acme"}), "subscription canceled")]
    now = api.post(f"{SUBS}/{sub}/cancel", json={"immediate": True}, headers=APP)
    assert now.status_code == 200, now.text
    assert now.json()["pending_change"] is None
    with api.store.session() as session:
        intent = IntentRepository(session).get(sub)
    assert intent is not None
    assert intent.cancel_mode == "immediate"
    # Being cancelled now: no further change or cancel.
    refused(
        api,
        "POST",
        f"{SUBS}/{sub}/change",
        json={"plan": "team"},
        status=409,
        code="failed_precondition",
    )
    refused(
        api,
        "POST",
        f"{SUBS}/{sub}/cancel",
        json={"immediate": "yes"},
        status=422,
        code="invalid_argument",
    )
    # Cancelling again (a retry) answers it as it is.
    again = api.post(f"{SUBS}/{sub}/cancel", json={"immediate": True}, headers=APP)
    assert again.status_code == 200
    assert again.json() == now.json()


def test_a_refused_reconcile_is_answered_with_stripes_verdict(
    api: Api, acme: str, catalog: None
) -> None:
    sub = live(api, "pro")

    def declined() -> ReconcileTicket:
        ticket = ReconcileTicket()
        on_done, on_failure = ticket.expect()
        ticket.seal()
        on_failure(RunFailure("card declined", False, stripe_code="card_declined", http_status=402))
        on_done("failed")
        return ticket

    api.settings.ticket = declined
    response = api.post(f"{SUBS}/{sub}/change", json={"plan": "team"}, headers=APP)
    assert response.status_code == 402
    error = error_of(response)
    assert error["code"] == "payment_failed"
    assert error["details"]["subscription_id"] == sub


# --- trials and entitlements ---------------------------------------------------------------


def test_trialed(api: Api, acme: str, catalog: None) -> None:
    path = f"{ORG}/billing/plans/pro/trialed"
    assert api.get(path, headers=APP).json() == {"plan": "pro", "trialed": False, "had_plan": False}
    with api.store.session() as session:
        PlanHistoryRepository(session).start(
            acme, "pro", stripe_subscription_id="sub_0", started_at=NOW, trialed=True
        )
        PlanHistoryRepository(session).start(
            acme, "team", stripe_subscription_id="sub_0", started_at=NOW
        )
    assert api.get(path, headers=APP).json() == {"plan": "pro", "trialed": True, "had_plan": True}
    team = api.get(f"{ORG}/billing/plans/TEAM/trialed", headers=APP).json()
    assert team == {"plan": "team", "trialed": False, "had_plan": True}
    refused(api, "GET", f"{ORG}/billing/plans/nope/trialed", status=404, code="not_found")


def test_a_trialing_mirror_counts_as_trialed(api: Api, acme: str, catalog: None) -> None:
    live(api, "pro", status="trialing", trial_end=PERIOD_END)
    answer = api.get(f"{ORG}/billing/plans/pro/trialed", headers=APP).json()
    assert answer == {"plan": "pro", "trialed": True, "had_plan": True}


def test_entitlements(api: Api, acme: str, catalog: None) -> None:
    sso = f"{ORG}/billing/entitlements/sso"
    denied = {"feature": "sso", "entitled": False, "allowed": False, "plan": None}
    assert api.get(sso, headers=APP).json() == denied
    sub = live(api, "pro", status="trialing")
    granted = {"feature": "sso", "entitled": True, "allowed": True, "plan": "pro"}
    assert api.get(sso, headers=APP).json() == granted
    # A feature on no product of the plan grants nothing; an unknown one is 404.
    audit = api.get(f"{ORG}/billing/entitlements/audit", headers=APP).json()
    assert audit["entitled"] is False
    refused(api, "GET", f"{ORG}/billing/entitlements/nope", status=404, code="not_found")
    mirror(api.store, sub, status="past_due")
    assert api.get(sso, headers=APP).json() == denied


def test_a_disabled_account_is_entitled_to_nothing(api: Api, acme: str, catalog: None) -> None:
    """Disabling stops billing (its live subscription is cancelled by the reconcile): from the
    disable on, entitlement checks answer not entitled, also before Stripe has cancelled it."""
    sso = f"{ORG}/billing/entitlements/sso"
    live(api, "pro", status="active")
    assert api.get(sso, headers=APP).json()["entitled"] is True
    assert api.post(f"{ORG}/billing/disable", headers=APP).status_code == 200
    denied = {"feature": "sso", "entitled": False, "allowed": False, "plan": None}
    assert api.get(sso, headers=APP).json() == denied


# --- seats ---------------------------------------------------------------------------------


def test_a_member_beyond_the_seat_limit_is_refused(api: Api, acme: str, catalog: None) -> None:
    live(api, "pro")
    add_members(api, "u1", "u2", "u3")
    api.settings.reconciles.clear()
    error = refused(api, "PUT", f"{ORG}/members/u4", json={}, status=409, code="seat_limit_reached")
    assert error["details"] == {"org_id": "acme", "plan": "pro", "seat_limit": 3, "members": 4}
    assert api.settings.reconciles == []
    # Updating an existing member is no new seat.
    assert api.put(f"{ORG}/members/u3", json={"role": "admin"}, headers=APP).status_code == 200
    # A removed member frees a seat.
    assert api.delete(f"{ORG}/members/u1", headers=APP).status_code == 204
    add_members(api, "u4")


def test_no_limit_without_a_subscription_or_on_an_unlimited_plan(
    api: Api, acme: str, catalog: None
) -> None:
    add_members(api, "u1", "u2", "u3", "u4")
    live(api, "team")
    add_members(api, "u5")


def test_a_pending_change_to_a_smaller_plan_limits_seats_too(
    api: Api, acme: str, catalog: None
) -> None:
    sub = live(api, "team")
    add_members(api, "u1")
    assert api.post(f"{SUBS}/{sub}/change", json={"plan": "pro"}, headers=APP).status_code == 200
    add_members(api, "u2", "u3")
    refused(api, "PUT", f"{ORG}/members/u4", json={}, status=409, code="seat_limit_reached")


# --- the client, and concurrent member adds --------------------------------------------------


@pytest.fixture
def server(store: Store, settings: Settings) -> Iterator[str]:
    live_server = LiveServer()
    live_server.start(build_app(store, settings))
    try:
        yield live_server.url
    finally:
        live_server.stop()


def test_the_client_covers_the_subscription_routes(
    server: str, store: Store, database_url: str
) -> None:
    install_catalog(store)
    with (
        BillingClient(server, token=APP_TOKEN) as app,
        BillingClient(server, token=ADMIN_TOKEN) as admin,
    ):
        app.put_organization("acme", title="Acme")
        app.create_account("acme", {"currency": "usd"})
        sub = admin.subscribe("acme", plan="pro", skip_trial=True)
        assert sub["plan"] == "pro"
        assert app.get_subscription("acme", sub["id"]) == sub
        assert app.list_subscriptions("acme")["data"] == [sub]
        assert list(app.iter_subscriptions("acme", limit=1)) == [sub]
        mirror(store, sub["id"])
        changed = app.change_subscription("acme", sub["id"], plan="team")
        assert changed["pending_change"] is not None
        dropped = app.change_subscription("acme", sub["id"], cancel_upcoming_changes=True)
        assert dropped["pending_change"] is None
        canceled = app.cancel_subscription("acme", sub["id"])
        assert canceled["cancel_at"] is not None
        assert app.trialed("acme", "pro") == {"plan": "pro", "trialed": False, "had_plan": True}
        assert app.check_entitlement("acme", "sso")["entitled"] is True
        with pytest.raises(BillingAPIError) as raised:
            app.subscribe("acme", plan="team")
        assert raised.value.status == 403
        assert raised.value.code == "forbidden"


def test_concurrent_member_adds_never_overshoot_the_seat_limit(
    server: str, store: Store, database_url: str
) -> None:
    install_catalog(store)
    with (
        BillingClient(server, token=APP_TOKEN) as app,
        BillingClient(server, token=ADMIN_TOKEN) as admin,
    ):
        app.put_organization("acme", title="Acme")
        app.create_account("acme", {"currency": "usd"})
        admin.subscribe("acme", plan="pro")

        def add(user: str) -> str:
            try:
                app.put_member("acme", user)
            except BillingAPIError as error:
                return error.code
            return "added"

        with ThreadPoolExecutor(max_workers=12) as pool:
            outcomes = list(pool.map(add, [f"u{i}" for i in range(12)]))
    assert outcomes.count("added") == 3
    assert outcomes.count("seat_limit_reached") == 9
    with store.session() as session:
        assert MemberRepository(session).count("acme") == 3

"""Subscription writes the API refuses before recording anything, and answers that show why
(tester T1's findings 2, 7, 11, 12, 14e; DESIGN §16, §19).

The API is wired as `serve` wires it (`runtime.service.api_request`, a threaded `WorkQueue`
running each domain's `DomainRunner` against the emulator over HTTP), on SQLite and
PostgreSQL, so every write is answered after its targeted reconcile, with Stripe's verdict.
A refusal is asserted with its status and code, the store unchanged (every row) and nothing
sent to Stripe (the emulator's request log).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from billing_reconciler.api import ApiContext, ApiTokens, api_router, install_error_handlers
from billing_reconciler.api.pending import ReconcileTicket
from billing_reconciler.config import Secret
from billing_reconciler.desired import load_desired
from billing_reconciler.registry import by_name
from billing_reconciler.runtime.domains import DomainRunner
from billing_reconciler.runtime.queue import Backoff, WorkQueue
from billing_reconciler.runtime.service import api_request, run_outcome
from billing_reconciler.stripe_gateway import RetryPolicy, StripeGateway
from tests.integration.api.conftest import dump
from tests.integration.subscriptions.conftest import World, world
from tests.integration.subscriptions.host import ADMIN, ADMIN_TOKEN, APP, APP_TOKEN, V1

__all__ = ["world"]
SUBS = f"{V1}/organizations/acme/billing/subscriptions"


@pytest.fixture
def served(world: World) -> Iterator[TestClient]:
    """The API on the world's store, its writes reconciled as `serve` reconciles them."""
    result = load_desired(world.directory)
    assert result.state is not None
    state = result.state
    gateway = StripeGateway(
        api_key="sk_test_emulator",
        api_base=world.emulator.url,
        retry=RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0),
    )
    registrations = by_name()
    runners = {
        name: DomainRunner(
            registration=registration,
            store=world.store,
            gateway=gateway,
            actor="test",
            directory=world.directory,
            initial=state,
            clock=world.now,
        )
        for name, registration in registrations.items()
    }

    queue = WorkQueue(
        lambda request: run_outcome(
            runners[request.domain].reconcile(request, may_write=lambda: True)
        ),
        workers=1,
        backoff=Backoff(initial=5.0),
    )
    queue.start()

    def request_reconcile(kind: str, ids: frozenset[str], reason: str) -> ReconcileTicket:
        return api_request(
            kind,
            ids,
            reason,
            registrations=registrations,
            put=queue.put,
            writing=lambda: True,
            stopping=lambda: False,
        )

    context = ApiContext(
        store=world.store,
        tokens=ApiTokens(app=(Secret(APP_TOKEN),), admin=(Secret(ADMIN_TOKEN),)),
        config=lambda: state.config,
        installation_id=lambda: "test",
        request_reconcile=request_reconcile,
        reconcile_wait_seconds=20.0,
        waiters=threading.BoundedSemaphore(4),
    )
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(api_router(context))
    client = TestClient(app)
    try:
        yield client
    finally:
        queue.stop(timeout=10)
        client.close()


def _posts(world: World) -> list[str]:
    return [r.path for r in world.emulator.control.requests(method="POST")]


def _refused(
    world: World, served: TestClient, method: str, path: str, *, status: int, code: str, **kw: Any
) -> dict[str, Any]:
    """Send it; assert the status and code, the store unchanged, nothing sent to Stripe."""
    before = dump(world.store)
    world.emulator.control.clear_requests()
    response = served.request(method, path, headers=kw.pop("headers", APP), **kw)
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    assert dump(world.store) == before
    assert _posts(world) == []
    return error


def _refused_paid_subscribe(world: World, served: TestClient) -> tuple[str, str]:
    """acme on the free default plan, no card; a paid subscribe without a trial Stripe refuses
    (no payment source) before any Stripe subscription exists: (its id, the free sub's id)."""
    world.open("acme", members=2)
    world.reconcile()
    world.reconcile()
    (free,) = world.subscriptions("acme")
    response = served.post(SUBS, json={"plan": "team_monthly", "skip_trial": True}, headers=ADMIN)
    assert response.status_code == 409, response.text
    intent_id = response.json()["error"]["details"]["subscription_id"]
    assert isinstance(intent_id, str)
    assert [s.id for s in world.subscriptions("acme")] == [free.id]
    return intent_id, free.id


def test_a_refused_subscribe_is_not_a_live_subscription(world: World, served: TestClient) -> None:
    """Finding 7: it shows why it is not in Stripe, it cannot be changed (nothing is written,
    least of all a schedule on the live free subscription), and another subscribe replaces
    it."""
    intent_id, free_id = _refused_paid_subscribe(world, served)
    listed = served.get(SUBS, headers=APP).json()["data"]
    refused = next(s for s in listed if s["id"] == intent_id)
    assert (refused["stripe_subscription_id"], refused["state"]) == (None, None)
    assert "Stripe refused its create" in str(refused["refusal"])

    for change in ({"plan": "team_yearly"}, {"plan": "team_yearly", "immediate": True}):
        error = _refused(
            world,
            served,
            "POST",
            f"{SUBS}/{intent_id}/change",
            status=409,
            code="failed_precondition",
            json=change,
        )
        assert "is not in Stripe" in error["message"], error
        assert error["details"]["subscription_id"] == intent_id
    assert world.stripe.v1.subscriptions.retrieve(free_id).schedule is None

    # Not "a live paid subscription": a free subscribe replaces it and keeps the live one.
    response = served.post(SUBS, json={"plan": "free_monthly"}, headers=ADMIN)
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["plan"], body["stripe_subscription_id"]) == ("free_monthly", free_id)
    assert (body["state"], body["refusal"]) == ("active", None)
    assert served.get(f"{SUBS}/{intent_id}", headers=APP).json()["refusal"] is None
    (only,) = world.subscriptions("acme")
    assert (only.id, only.status, only.schedule) == (free_id, "active", None)
    # One entry for the live free subscription, not one per intent that held it (tester T2).
    listed = served.get(SUBS, headers=APP).json()["data"]
    assert [s["id"] for s in listed if s["stripe_subscription_id"] == free_id] == [body["id"]]
    assert world.plan().steps == ()

    # Another paid plan's subscribe (refused again) replaces a refused one too.
    again = served.post(SUBS, json={"plan": "team_yearly", "skip_trial": True}, headers=ADMIN)
    assert again.status_code == 409, again.text
    assert "send it again" in again.json()["error"]["message"]
    other = served.post(SUBS, json={"plan": "team_monthly", "skip_trial": True}, headers=ADMIN)
    assert other.status_code == 409, other.text
    assert "live paid subscription" not in other.json()["error"]["message"]


def test_cancelling_a_refused_subscribe_ends_it_at_once_sending_nothing(
    world: World, served: TestClient
) -> None:
    """Finding 7 and 14e: a cancel (no body at all: every field is optional) ends it at once,
    answered as canceled, nothing sent to Stripe, the live free subscription untouched."""
    intent_id, free_id = _refused_paid_subscribe(world, served)
    world.emulator.control.clear_requests()
    response = served.post(f"{SUBS}/{intent_id}/cancel", headers=APP)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["id"], body["stripe_subscription_id"], body["state"]) == (
        intent_id,
        None,
        "canceled",
    )
    assert body["canceled_at"] is not None
    assert body["pending_change"] is None
    assert _posts(world) == []
    assert world.stripe.v1.subscriptions.retrieve(free_id).status == "active"
    again = served.get(f"{SUBS}/{intent_id}", headers=APP).json()
    assert (again["state"], again["refusal"]) == ("canceled", None)
    _refused(
        world,
        served,
        "POST",
        f"{SUBS}/{intent_id}/change",
        status=409,
        code="failed_precondition",
        json={"plan": "team_yearly"},
    )


def test_a_refused_subscribe_does_not_block_the_org_delete(
    world: World, served: TestClient
) -> None:
    """Finding 7: a paid subscribe Stripe refused has nothing in Stripe to bill, so an org
    DELETE is not refused for it; the delete ends it and the live free subscription is
    cancelled, as any delete with only a free plan live."""
    _, free_id = _refused_paid_subscribe(world, served)
    customer = world.stripe.v1.subscriptions.retrieve(free_id).customer
    response = served.delete(f"{V1}/organizations/acme", headers=APP)
    assert response.status_code == 204, response.text
    # The delete's targeted reconcile (the served queue: the one writer, so no reconcile of
    # the test's own beside it) cancels the free one.
    deadline = time.monotonic() + 20
    while world.stripe.v1.subscriptions.retrieve(free_id).status != "canceled":
        assert time.monotonic() < deadline, "the delete's reconcile did not cancel it"
        time.sleep(0.05)
    listed = world.stripe.v1.subscriptions.list({"customer": str(customer), "status": "all"})
    assert [s.id for s in listed.data] == [free_id]  # the refused one was never created


def _trial_to_cancel(world: World, served: TestClient) -> dict[str, Any]:
    """acme (card, no default plan) subscribed to team_monthly (given a 14-day trial) with
    `cancel_after_trial`: trialing, set to cancel at its trial end. The subscription."""
    world.configure(default_plan="")
    catalog = world.directory / "plans" / "catalog.yaml"
    text = catalog.read_text()
    catalog.write_text(text.replace("    on_start_credits: 100\n", "    trial_days: 14\n", 1))
    world.open("acme", members=2)
    world.reconcile()
    world.add_card("acme")
    body = {"plan": "team_monthly", "cancel_after_trial": True}
    response = served.post(SUBS, json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    sub: dict[str, Any] = response.json()
    assert sub["state"] == "trialing", sub
    return sub


def test_a_subscription_set_to_cancel_after_its_trial_shows_it_and_refuses_a_change(
    world: World, served: TestClient
) -> None:
    """Finding 2: the resource shows the cancel at the trial end; a change is refused before
    anything is recorded (Stripe makes no schedule on a subscription set to cancel), the same
    change again too; `cancel_upcoming_changes` does not undo that cancel (409); a cancel at
    period end is answered as it is (already then)."""
    sub = _trial_to_cancel(world, served)
    path = f"{SUBS}/{sub['id']}"
    trial_end = sub["trial_ends_at"]
    assert trial_end is not None
    assert sub["pending_change"] == {"plan": None, "effective_at": trial_end, "reason": "cancel"}
    assert sub["cancel_at"] == trial_end
    assert sub["canceled_at"] is None  # not ended (Stripe's is the time the cancel was asked)

    for _ in range(2):
        error = _refused(
            world,
            served,
            "POST",
            f"{path}/change",
            status=409,
            code="failed_precondition",
            json={"plan": "free_monthly"},
        )
        assert "is set to cancel" in error["message"], error
        assert error["details"]["pending_reason"] == "cancel"
    error = _refused(
        world,
        served,
        "POST",
        f"{path}/change",
        status=409,
        code="failed_precondition",
        json={"cancel_upcoming_changes": True},
    )
    assert "not undone" in error["message"], error

    before = dump(world.store)
    world.emulator.control.clear_requests()
    cancel = served.post(f"{path}/cancel", json={}, headers=APP)
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["pending_change"] == sub["pending_change"]
    assert dump(world.store) == before
    assert _posts(world) == []
    assert world.plan().steps == ()


def test_a_cancel_at_period_end_while_a_change_is_pending_is_refused(
    world: World, served: TestClient
) -> None:
    """Finding 12: as a change while a cancel is pending is refused, a period-end cancel
    while a change is pending is (409: drop the change first); an immediate cancel is not."""
    world.configure(default_plan="")
    world.open("acme", members=2)
    world.reconcile()
    world.add_card("acme")
    created = served.post(SUBS, json={"plan": "team_monthly", "skip_trial": True}, headers=ADMIN)
    assert created.status_code == 201, created.text
    path = f"{SUBS}/{created.json()['id']}"
    changed = served.post(f"{path}/change", json={"plan": "team_yearly"}, headers=APP)
    assert changed.status_code == 200, changed.text
    assert changed.json()["pending_change"]["plan"] == "team_yearly"
    for body in ({}, {"immediate": False}):
        error = _refused(
            world,
            served,
            "POST",
            f"{path}/cancel",
            status=409,
            code="failed_precondition",
            json=body,
        )
        assert "cancel_upcoming_changes" in error["message"], error
        assert error["details"]["pending_plan"] == "team_yearly"
    dropped = served.post(f"{path}/change", json={"cancel_upcoming_changes": True}, headers=APP)
    assert dropped.status_code == 200, dropped.text
    cancel = served.post(f"{path}/cancel", headers=APP)  # no body: {}
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["pending_change"]["reason"] == "cancel"


def test_a_default_plan_the_account_cannot_have_says_why(world: World, served: TestClient) -> None:
    """Finding 11: a default plan with no price in the account's currency is listed with the
    refusal saying so, not as a subscription with state null and no word."""
    world.reconcile()  # the catalog
    put = served.put(f"{V1}/organizations/acme", json={"title": "Acme"}, headers=APP)
    assert put.status_code in (200, 201), put.text
    created = served.post(
        f"{V1}/organizations/acme/billing", json={"currency": "gbp", "offline": True}, headers=APP
    )
    assert created.status_code == 201, created.text
    (sub,) = served.get(SUBS, headers=APP).json()["data"]
    assert (sub["plan"], sub["state"], sub["stripe_subscription_id"]) == (
        "free_monthly",
        None,
        None,
    )
    assert "no price in gbp" in str(sub["refusal"]), sub


def test_bad_query_parameters_are_422_alike(world: World, served: TestClient) -> None:
    """Finding 14e: a bad `?cursor=` is 422 `invalid_argument` as a bad `?limit=` is (README:
    400 is for unreadable JSON and path parameters)."""
    world.open("acme")
    for params, field in (({"limit": 0}, "limit"), ({"cursor": "nope"}, "cursor")):
        error = _refused(
            world, served, "GET", SUBS, status=422, code="invalid_argument", params=params
        )
        assert error["details"]["field"] == field, error

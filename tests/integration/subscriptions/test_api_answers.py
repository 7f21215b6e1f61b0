"""The host API's subscription writes answered as `reconcile serve` answers them (DESIGN §19,
issue 11): the API wired to `runtime.service.api_request`, a real threaded `WorkQueue` running
each registered domain's `DomainRunner` (the runs of one request in apply order) against the
emulator, and the API waiting on the ticket. A subscribe Stripe accepted answers 201 with the
subscription as mirrored by the run that created it, never 202 `not_applied`."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from billing_reconciler.api import ApiContext, ApiTokens, api_router, install_error_handlers
from billing_reconciler.api.pending import ReconcileTicket
from billing_reconciler.config import Secret
from billing_reconciler.desired import load_desired
from billing_reconciler.registry import by_name
from billing_reconciler.runtime.domains import DomainRunner
from billing_reconciler.runtime.events import ReconcileRequest
from billing_reconciler.runtime.queue import Backoff, FollowUp, Outcome, WorkQueue
from billing_reconciler.runtime.service import api_request, run_outcome
from billing_reconciler.stripe_gateway import RetryPolicy, StripeGateway

from .conftest import World
from .host import ADMIN, ADMIN_TOKEN, APP, APP_TOKEN, V1

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

    def handle(request: ReconcileRequest) -> Outcome | FollowUp | None:
        return run_outcome(runners[request.domain].reconcile(request, may_write=lambda: True))

    queue = WorkQueue(handle, workers=1, backoff=Backoff(initial=5.0))
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


def test_a_subscribe_stripe_accepted_answers_201_with_the_mirrored_subscription(
    world: World, served: TestClient
) -> None:
    world.configure(default_plan="")
    world.open("acme", members=2)
    world.reconcile()
    world.add_card("acme")
    response = served.post(SUBS, json={"plan": "team_monthly"}, headers=ADMIN)
    assert response.status_code == 201, response.text
    sub = response.json()
    (live,) = world.subscriptions("acme")
    assert (sub["plan"], sub["stripe_subscription_id"]) == ("team_monthly", live.id)
    assert (sub["state"], sub["seats"]) == (live.status, 2)
    assert served.get(f"{SUBS}/{sub['id']}", headers=APP).json() == sub


def _refused_paid_subscribe(world: World, served: TestClient) -> str:
    """acme on the free default plan without a card; a paid subscribe without a trial that
    Stripe refuses (no payment source): the paid intent's id."""
    world.open("acme", members=2)
    world.reconcile()
    world.reconcile()
    (free,) = world.subscriptions("acme")
    assert (free.metadata["plan"], free.status) == ("free_monthly", "active")
    response = served.post(SUBS, json={"plan": "team_monthly", "skip_trial": True}, headers=ADMIN)
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert "send it again" in error["message"], error
    subscription_id = error["details"]["subscription_id"]
    assert isinstance(subscription_id, str)
    assert [s.id for s in world.subscriptions("acme")] == [free.id]  # nothing created
    return subscription_id


def test_a_refused_subscribe_sent_again_is_the_retry_with_stripes_new_verdict(
    world: World, served: TestClient
) -> None:
    intent_id = _refused_paid_subscribe(world, served)
    body = {"plan": "team_monthly", "skip_trial": True}
    again = served.post(SUBS, json=body, headers=ADMIN)
    assert again.status_code == 409, again.text
    error = again.json()["error"]
    assert error["code"] != "already_exists", error  # Stripe's verdict again, not a duplicate
    assert "send it again" in error["message"], error
    world.add_card("acme")
    corrected = served.post(SUBS, json=body, headers=ADMIN)
    assert corrected.status_code == 201, corrected.text
    sub = corrected.json()
    assert (sub["id"], sub["plan"]) == (intent_id, "team_monthly")
    live = [s for s in world.subscriptions("acme") if s.status == "active"]
    assert [s.metadata["plan"] for s in live] == ["team_monthly"]
    assert sub["stripe_subscription_id"] == live[0].id


def test_cancelling_a_refused_subscribe_ends_it_and_never_the_live_free_one(
    world: World, served: TestClient
) -> None:
    intent_id = _refused_paid_subscribe(world, served)
    (free,) = world.subscriptions("acme")
    response = served.post(f"{SUBS}/{intent_id}/cancel", json={"immediate": True}, headers=APP)
    assert response.status_code == 200, response.text
    assert response.json()["stripe_subscription_id"] is None
    world.reconcile()
    world.reconcile()
    assert world.stripe.v1.subscriptions.retrieve(free.id).status == "active"
    listed = served.get(SUBS, headers=APP).json()["data"]
    current = [s for s in listed if s["stripe_subscription_id"] == free.id]
    assert current
    assert current[0]["canceled_at"] is None
    assert current[0]["state"] == "active"
    paid = served.get(f"{SUBS}/{intent_id}", headers=APP).json()
    assert paid["stripe_subscription_id"] is None
    assert world.plan().steps == ()

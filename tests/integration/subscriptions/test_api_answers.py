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
from billing_reconciler.runtime.queue import Backoff, Outcome, WorkQueue
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

    def handle(request: ReconcileRequest) -> Outcome | None:
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

"""DESIGN §19: a write that changes Stripe runs the targeted reconcile before answering.

The API here is wired as `serve` wires it: `runtime.service.api_request` turns its request
into work-queue entries for the registered domains whose keys match (the customers domain for
`customer/<org>`), a real threaded `WorkQueue` runs them, and the API waits on the ticket. The
queue's handler stands in for the customers domain (what it writes to the store, or how it
fails, is the test's); the real domain against the emulator is `tests/e2e/test_serve_customers`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from billing_reconciler.api import ApiContext, ApiTokens, api_router, install_error_handlers
from billing_reconciler.api.pending import ReconcileTicket
from billing_reconciler.config import BillingConfig, Secret
from billing_reconciler.registry import by_name
from billing_reconciler.runtime.events import ReconcileRequest
from billing_reconciler.runtime.queue import Backoff, Outcome, WorkQueue
from billing_reconciler.runtime.service import api_request
from billing_reconciler.store import AccountRepository, Store
from billing_reconciler.stripe_gateway import PermanentStripeError, TransientStripeError
from tests.integration.api.conftest import APP, APP_TOKEN, ORG, dump, error_of

Handler = Callable[[ReconcileRequest], "Outcome | None"]


@dataclass
class Runtime:
    """The runtime's side: leadership, the handler the queue runs, what it was asked."""

    leader: bool = True
    handler: Handler = lambda request: None
    requests: list[ReconcileRequest] = field(default_factory=list)
    tickets: list[ReconcileTicket] = field(default_factory=list)

    def handle(self, request: ReconcileRequest) -> Outcome | None:
        self.requests.append(request)
        return self.handler(request)


@pytest.fixture
def runtime() -> Runtime:
    return Runtime()


def _client(
    store: Store, runtime: Runtime, *, wait: float, waiters: int = 16, **customer: object
) -> TestClient:
    queue = WorkQueue(runtime.handle, workers=1, backoff=Backoff(initial=5.0))
    queue.start()
    registrations = by_name()

    def request_reconcile(kind: str, ids: frozenset[str], reason: str) -> ReconcileTicket:
        ticket = api_request(
            kind,
            ids,
            reason,
            registrations=registrations,
            put=queue.put,
            writing=lambda: runtime.leader,
            stopping=lambda: False,
        )
        runtime.tickets.append(ticket)
        return ticket

    config = BillingConfig.model_validate({"billing": {"customer": customer}})
    context = ApiContext(
        store=store,
        tokens=ApiTokens(app=(Secret(APP_TOKEN),)),
        config=lambda: config,
        request_reconcile=request_reconcile,
        reconcile_wait_seconds=wait,
        waiters=threading.BoundedSemaphore(waiters),
    )
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(api_router(context))
    client = TestClient(app)
    client.queue = queue  # type: ignore[attr-defined]
    return client


@pytest.fixture
def make_client(store: Store, runtime: Runtime) -> Iterator[Callable[..., TestClient]]:
    made: list[TestClient] = []

    def make(*, wait: float = 5.0, waiters: int = 16, **customer: object) -> TestClient:
        client = _client(store, runtime, wait=wait, waiters=waiters, **customer)
        made.append(client)
        return client

    yield make
    for client in made:
        client.queue.stop(timeout=5)  # type: ignore[attr-defined]
        client.close()


def _creates_customer(store: Store, *, delay: float = 0.2) -> Handler:
    """The customers domain's effect on the store: link the org's account to a customer (a
    moment later, so an answer that did not wait would still show none)."""

    def handle(request: ReconcileRequest) -> None:
        time.sleep(delay)
        assert request.scope is not None
        for key in request.scope:
            org_id = key.partition("/")[2]
            with store.session() as session:
                accounts = AccountRepository(session)
                account = accounts.active_for_org(org_id)
                if account is not None and not account.offline:
                    accounts.set_stripe_customer(account.id, f"cus_{org_id}")

    return handle


def _idle(client: TestClient) -> None:
    queue: WorkQueue = client.queue  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        snapshot = queue.snapshot()
        if not snapshot.waiting and not snapshot.running:
            return
        time.sleep(0.01)
    raise AssertionError("the queue did not go idle")


def _blocked_until(event: threading.Event) -> Handler:
    def handle(request: ReconcileRequest) -> None:
        del request
        event.wait(10)

    return handle


def _offline_acme(client: TestClient) -> str:
    """The org `acme` with an offline account (its id), its reconciles run."""
    assert client.put(ORG, json={"title": "Acme"}, headers=APP).status_code == 201
    created = client.post(f"{ORG}/billing", json={"offline": True}, headers=APP)
    assert created.status_code == 201, created.text
    _idle(client)
    account_id: str = created.json()["id"]
    return account_id


def test_register_answers_after_the_reconcile_with_the_stripe_customer(
    make_client: Callable[..., TestClient], runtime: Runtime, store: Store
) -> None:
    runtime.handler = _creates_customer(store)
    client = make_client()
    _offline_acme(client)
    registered = client.post(f"{ORG}/billing/register", headers=APP)
    assert registered.status_code == 200, registered.text
    assert registered.json()["stripe_customer_id"] == "cus_acme"
    assert registered.json()["offline"] is False
    # DESIGN §14: one customer across the customer-scoped domains, in apply order.
    assert [(r.domain, r.scope) for r in runtime.requests][-3:] == [
        ("customers", frozenset({"customer/acme"})),
        ("subscriptions", frozenset({"customer/acme"})),
        ("credits", frozenset({"customer/acme"})),
    ]


def test_an_explicit_online_account_and_an_auto_created_one_wait_for_their_customer(
    make_client: Callable[..., TestClient], runtime: Runtime, store: Store
) -> None:
    runtime.handler = _creates_customer(store)
    client = make_client(auto_create_with_org=True)
    started = time.monotonic()
    put = client.put(ORG, json={"title": "Acme"}, headers=APP)
    assert put.status_code == 201, put.text
    assert time.monotonic() - started >= 0.2  # it waited for the run
    assert client.get(f"{ORG}/billing", headers=APP).json()["stripe_customer_id"] == "cus_acme"

    other = make_client()
    assert other.put(f"{ORG}x", json={"title": "X"}, headers=APP).status_code == 201
    created = other.post(f"{ORG}x/billing", json={"currency": "eur"}, headers=APP)
    assert created.status_code == 201, created.text
    assert created.json()["stripe_customer_id"] == "cus_acmex"


def test_a_patch_of_a_pushed_field_waits_and_one_of_an_offline_account_does_not(
    make_client: Callable[..., TestClient], runtime: Runtime, store: Store
) -> None:
    release = threading.Event()
    client = make_client(wait=0.5)
    _offline_acme(client)
    runtime.handler = _blocked_until(release)
    started = time.monotonic()
    offline = client.patch(f"{ORG}/billing", json={"name": "ACME"}, headers=APP)
    assert offline.status_code == 200, offline.text
    assert time.monotonic() - started < 0.4  # offline: nothing goes to Stripe, no wait
    release.set()
    runtime.handler = _creates_customer(store, delay=0.0)
    assert client.post(f"{ORG}/billing/register", headers=APP).status_code == 200
    _idle(client)
    release.clear()
    runtime.handler = _blocked_until(release)
    started = time.monotonic()
    online = client.patch(f"{ORG}/billing", json={"email": "billing@acme.test"}, headers=APP)
    assert time.monotonic() - started >= 0.5
    assert online.status_code == 202, online.text
    release.set()


def test_a_reconcile_that_wrote_nothing_it_planned_is_202_not_applied(
    make_client: Callable[..., TestClient], runtime: Runtime, store: Store
) -> None:
    """Applying is suspended (`reconcile suspend`): the runtime's run plans the push and
    writes nothing, so the edit is recorded but Stripe has not seen it (a fresh user's
    PATCH answered 200 with the new name while Stripe kept the old one)."""
    client = make_client(wait=2.0)
    _offline_acme(client)
    runtime.handler = _creates_customer(store, delay=0.0)
    assert client.post(f"{ORG}/billing/register", headers=APP).status_code == 200
    _idle(client)
    runtime.handler = lambda request: Outcome.NOT_APPLIED
    answer = client.patch(f"{ORG}/billing", json={"name": "While suspended"}, headers=APP)
    assert answer.status_code == 202, answer.text
    assert answer.json()["reason"] == "not_applied"
    with store.session() as session:
        account = AccountRepository(session).active_for_org("acme")
    assert account is not None
    assert account.name == "While suspended"  # the fact is recorded all the same


def test_a_reconcile_still_running_after_the_wait_is_202_with_the_request_id(
    make_client: Callable[..., TestClient], runtime: Runtime, store: Store
) -> None:
    release = threading.Event()
    client = make_client(wait=0.3)
    _offline_acme(client)
    runtime.handler = _blocked_until(release)
    started = time.monotonic()
    answer = client.post(f"{ORG}/billing/register", headers=APP)
    elapsed = time.monotonic() - started
    release.set()
    assert answer.status_code == 202, answer.text
    # It waited its 0.3 s, and did not wait for the reconcile (blocked until after the answer;
    # the upper bound is loose: a loaded CI machine once took 4.3 s).
    assert 0.3 <= elapsed < 15.0
    body = answer.json()
    assert body == {
        "request_id": runtime.tickets[-1].request_id,
        "status": "pending",
        "reason": "in_progress",
        "message": "recorded; the reconcile with Stripe is still running",
    }
    assert body["request_id"].startswith("rr_")
    assert answer.headers["Location"] == "/v1beta1/organizations/acme/billing"
    # The fact is recorded all the same.
    with store.session() as session:
        account = AccountRepository(session).active_for_org("acme")
    assert account is not None
    assert account.offline is False


def test_stripe_refusing_the_customer_is_409_naming_stripes_field(
    make_client: Callable[..., TestClient], runtime: Runtime
) -> None:
    def refuse(request: ReconcileRequest) -> None:
        raise PermanentStripeError(
            "Invalid phone number", code="parameter_invalid", param="phone", http_status=400
        )

    client = make_client()
    account_id = _offline_acme(client)
    runtime.handler = refuse
    answer = client.post(f"{ORG}/billing/register", headers=APP)
    assert answer.status_code == 409, answer.text
    error = error_of(answer)
    assert error["code"] == "failed_precondition"
    assert "Invalid phone number" in error["message"]
    assert error["message"].startswith("recorded, but the reconcile with Stripe failed")
    assert error["details"] == {
        "request_id": runtime.tickets[-1].request_id,
        "org_id": "acme",
        "account_id": account_id,
        "stripe_code": "parameter_invalid",
        "field": "phone",
    }


def test_stripe_unavailable_past_the_wait_is_503_provider_unavailable(
    make_client: Callable[..., TestClient], runtime: Runtime
) -> None:
    def unavailable(request: ReconcileRequest) -> None:
        raise TransientStripeError("Stripe is down", http_status=500)

    client = make_client(wait=0.5)
    _offline_acme(client)
    runtime.handler = unavailable
    answer = client.post(f"{ORG}/billing/register", headers=APP)
    assert answer.status_code == 503, answer.text
    error = error_of(answer)
    assert error["code"] == "provider_unavailable"
    assert "Stripe is down" in error["message"]
    assert "keeps retrying" in error["message"]
    assert error["details"]["request_id"] == runtime.tickets[-1].request_id


def test_an_unexpected_failure_is_answered_without_its_text(
    make_client: Callable[..., TestClient], runtime: Runtime
) -> None:
    def broken(request: ReconcileRequest) -> None:
        raise RuntimeError("postgresql://user:hunter2@db/billing is gone")

    client = make_client(wait=0.3)
    _offline_acme(client)
    runtime.handler = broken
    answer = client.post(f"{ORG}/billing/register", headers=APP)
    assert answer.status_code == 503, answer.text
    assert "hunter2" not in answer.text
    assert "unexpected RuntimeError" in error_of(answer)["message"]


def test_a_follower_answers_202_at_once(
    make_client: Callable[..., TestClient], runtime: Runtime, store: Store
) -> None:
    client = make_client(wait=5.0)
    _offline_acme(client)
    runtime.leader = False
    runtime.handler = lambda request: time.sleep(2)
    before = dump(store)
    started = time.monotonic()
    answer = client.post(f"{ORG}/billing/register", headers=APP)
    elapsed = time.monotonic() - started
    assert answer.status_code == 202, answer.text
    assert elapsed < 1.0, elapsed
    assert answer.json()["reason"] == "not_leader"
    assert "leader's next refresh" in answer.json()["message"]
    assert dump(store) != before  # recorded for the leader to carry to Stripe


def test_waiters_on_a_coalesced_request_are_all_released(
    make_client: Callable[..., TestClient], runtime: Runtime, store: Store
) -> None:
    """Three registers of one org while its run is busy: the queue merges the later two into
    one run; each of the three answers after a run that started after its write."""
    gate = threading.Event()
    entered = threading.Event()
    creates = _creates_customer(store, delay=0.0)

    def slow(request: ReconcileRequest) -> None:
        entered.set()
        gate.wait(10)
        creates(request)

    client = make_client(wait=10.0)
    _offline_acme(client)
    runtime.handler = slow
    runtime.requests.clear()
    runtime.tickets.clear()
    answers: list[int] = []

    def register() -> None:
        answers.append(client.post(f"{ORG}/billing/register", headers=APP).status_code)

    first = threading.Thread(target=register)
    first.start()
    assert entered.wait(5)
    later = [threading.Thread(target=register) for _ in range(2)]
    for thread in later:
        thread.start()
    deadline = time.monotonic() + 5
    while len(runtime.tickets) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    gate.set()
    for thread in (first, *later):
        thread.join(15)
    assert answers == [200, 200, 200]
    # Per domain (customers, then subscriptions: DESIGN §14): the running one, then one for
    # the two merged.
    customers = [r for r in runtime.requests if r.domain == "customers"]
    assert len(customers) == 2


def test_past_the_cap_of_waiting_requests_a_write_answers_202_at_once(
    make_client: Callable[..., TestClient], runtime: Runtime, store: Store
) -> None:
    release = threading.Event()
    client = make_client(wait=10.0, waiters=1)
    _offline_acme(client)
    assert client.put(f"{ORG}x", json={"title": "X"}, headers=APP).status_code == 201
    assert client.post(f"{ORG}x/billing", json={"offline": True}, headers=APP).is_success
    _idle(client)
    blocked, creates = _blocked_until(release), _creates_customer(store, delay=0.0)

    def handle(request: ReconcileRequest) -> None:
        blocked(request)
        creates(request)

    runtime.handler = handle
    answers: list[int] = []
    first = threading.Thread(
        target=lambda: answers.append(
            client.post(f"{ORG}/billing/register", headers=APP).status_code
        )
    )
    first.start()
    deadline = time.monotonic() + 5
    while not runtime.requests[-1:] or runtime.requests[-1].scope != frozenset({"customer/acme"}):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    started = time.monotonic()
    second = client.post(f"{ORG}x/billing/register", headers=APP)
    assert time.monotonic() - started < 1.0
    assert second.status_code == 202, second.text
    assert second.json()["reason"] == "in_progress"
    release.set()
    first.join(10)
    assert answers == [200]


def test_a_refused_tax_id_is_named_by_its_place_in_the_account(
    make_client: Callable[..., TestClient], runtime: Runtime
) -> None:
    # The gateway counts tax ids in canonical order (eu_vat before us_ein); the answer names
    # the one refused by its place in the account as the client sent it.
    def refuse(request: ReconcileRequest) -> None:
        raise PermanentStripeError(
            "Invalid value for eu_vat.",
            code="tax_id_invalid",
            param="tax_ids[0].value",
            http_status=400,
        )

    client = make_client()
    _offline_acme(client)
    tax_ids = [
        {"type": "us_ein", "value": "12-3456789"},
        {"type": "eu_vat", "value": "XX123"},
    ]
    assert client.patch(f"{ORG}/billing", json={"tax_ids": tax_ids}, headers=APP).is_success
    _idle(client)
    runtime.handler = refuse
    answer = client.post(f"{ORG}/billing/register", headers=APP)
    assert answer.status_code == 409, answer.text
    assert error_of(answer)["details"]["field"] == "tax_ids[1].value"

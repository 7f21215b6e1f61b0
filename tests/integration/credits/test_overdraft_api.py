"""`POST /v1beta1/admin/billing/invoices/generate` (DESIGN §19): the admin's overdraft
invoicing now, answered once the invoices exist. The API is wired to a runtime stand-in that
runs the credits domain's targeted pass for the customers it is asked about (as serve's
queue would, synchronously), against the emulator over HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import FastAPI
from fastapi.testclient import TestClient

from billing_reconciler.api import ApiContext, ApiTokens, api_router, install_error_handlers
from billing_reconciler.api.pending import ReconcileTicket
from billing_reconciler.config import Secret
from billing_reconciler.desired import load_desired
from billing_reconciler.store.accounts import AccountRepository
from billing_reconciler.store.ledger import LedgerRepository
from tests.integration.credits.overdraft_world import OverdraftWorld, at, overdraft

__all__ = ["overdraft"]

ADMIN = {"Authorization": "Bearer admin-token-0123456789"}
APP = {"Authorization": "Bearer app-token-0123456789"}
GENERATE = "/v1beta1/admin/billing/invoices/generate"


def _client(
    world: OverdraftWorld,
    asked: list[frozenset[str]],
    runtime: Callable[[str, frozenset[str], str], ReconcileTicket | None] | None = None,
) -> TestClient:
    """The API on `world`; its reconciles run the credits pass at once (`asked` lists their
    scopes), or go to `runtime` when given."""
    state = load_desired(world.directory).state
    assert state is not None

    def run_here(domain: str, scope: frozenset[str], reason: str) -> None:
        assert domain == "customer"
        asked.append(scope)
        world.reconcile(frozenset(f"customer/{org}" for org in scope))

    context = ApiContext(
        store=world.store,
        tokens=ApiTokens(
            app=(Secret("app-token-0123456789"),), admin=(Secret("admin-token-0123456789"),)
        ),
        config=lambda: state.config,
        request_reconcile=runtime or run_here,
        clock=lambda: datetime.fromtimestamp(world.now(), UTC),
    )
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(api_router(context))
    return TestClient(app)


def test_generate_answers_the_invoice_ids_and_twice_is_once(overdraft: OverdraftWorld) -> None:
    world = overdraft
    world.set_clock(at("2027-01-01T01:00:00"))
    world.open("acme")
    world.open("zero")
    world.debit("acme", 600, id="u-1")
    asked: list[frozenset[str]] = []
    client = _client(world, asked)

    answer = client.post(GENERATE, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    (invoice,) = world.invoices()
    assert body["invoices"] == [invoice.id]
    assert body["window_end"] == "2027-01-01T00:00:00Z"
    assert body["state"] == "done"
    assert [(w["org_id"], w["deficit"], w["invoice_id"]) for w in body["data"]] == [
        ("acme", 600, invoice.id),
        ("zero", 0, None),
    ]
    assert asked == [frozenset({"acme", "zero"})]
    assert body["waiting"] == []

    again = client.post(GENERATE, headers=ADMIN)
    assert again.status_code == 200
    assert again.json()["invoices"] == [invoice.id]
    assert asked == [frozenset({"acme", "zero"})]  # nothing left to evaluate: no reconcile
    assert len(world.invoices()) == 1


def test_generate_needs_the_admin_scope(overdraft: OverdraftWorld) -> None:
    world = overdraft
    world.set_clock(at("2027-01-01T01:00:00"))
    client = _client(world, [])
    answer = client.post(GENERATE, headers=APP)
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "forbidden"
    assert client.post(GENERATE).status_code == 401


def test_generate_lists_overdrawn_accounts_without_a_stripe_customer_as_waiting(
    overdraft: OverdraftWorld,
) -> None:
    """Tester T1 F15: an account the customers domain has not made a customer for yet (an
    org PUT through a follower) was silently absent from the answer."""
    world = overdraft
    world.set_clock(at("2027-01-01T01:00:00"))
    world.open("acme")
    world.debit("acme", 600, id="u-1")
    with world.store.session() as session:
        late = AccountRepository(session).create(
            "late", name="Org late", email="billing@late.example", currency="usd", credit_min=-1000
        )
        LedgerRepository(session).debit(
            late.id, id="u-late", amount=40, source="usage", credit_min=-1000
        )
        AccountRepository(session).create(
            "idle", name="Org idle", email="billing@idle.example", currency="usd", credit_min=-1000
        )
    client = _client(world, [])
    answer = client.post(GENERATE, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [w["org_id"] for w in body["data"]] == ["acme"]
    assert body["waiting"] == ["late"]  # idle owes nothing: not waiting for anything
    (invoice,) = world.invoices()
    assert body["invoices"] == [invoice.id]


def test_generate_takes_no_body(overdraft: OverdraftWorld) -> None:
    """Tester T1 F15: any body was accepted (and the invoicing ran)."""
    world = overdraft
    world.set_clock(at("2027-01-01T01:00:00"))
    world.open("acme")
    world.debit("acme", 600, id="u-1")
    asked: list[frozenset[str]] = []
    client = _client(world, asked)
    json_type = {"Content-Type": "application/json"}
    for body, headers in (
        ('{"x":1}', json_type),
        ("not json", json_type),
        ("not json", {"Content-Type": "text/plain"}),
    ):
        answer = client.post(GENERATE, headers={**ADMIN, **headers}, content=body)
        assert answer.status_code == 422, (body, answer.text)
        error = answer.json()["error"]
        assert (error["code"], error["details"]["field"]) == ("invalid_argument", "body")
    # Tester T3-4: a scope in the query was ignored as well (every account invoiced).
    answer = client.post(f"{GENERATE}?org_id=acme", headers=ADMIN)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert (error["code"], error["details"]["field"]) == ("invalid_argument", "org_id")
    assert asked == []
    assert world.invoices() == []
    for body in ("", "{}", " {} "):
        answer = client.post(GENERATE, headers={**ADMIN, **json_type}, content=body)
        assert answer.status_code == 200, (body, answer.text)
    assert len(world.invoices()) == 1


def test_generate_names_the_next_window_for_an_account_overdrawn_since_the_due_one(
    overdraft: OverdraftWorld,
) -> None:
    """An account overdrawn only in the window not due yet was in no list of the answer, which
    read as "nothing owed": the answer names the next window and when it falls due."""
    world = overdraft
    # Now (the ledger's clock is the wall clock): the due window ended on the 1st of this
    # month, so the debit below falls in the next one.
    now = int(time.time())
    world.set_clock(now)
    world.open("acme")
    world.debit("acme", 600, id="u-1")
    client = _client(world, [])
    answer = client.post(GENERATE, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    moment = datetime.fromtimestamp(now, UTC)
    due = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    following = datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)
    assert body["window_end"] == _iso(due)
    assert (body["invoices"], body["waiting"]) == ([], [])
    assert all(w["deficit"] == 0 for w in body["data"]), body["data"]
    assert body["next_window_end"] == _iso(following)
    assert body["next_invoice_at"] == _iso(following)
    assert world.invoices() == []

    # Once that window is due, the same call invoices it.
    world.set_clock(int(following.timestamp()) + 3600)
    later = client.post(GENERATE, headers=ADMIN).json()
    assert later["window_end"] == _iso(following)
    (invoice,) = world.invoices()
    assert later["invoices"] == [invoice.id]
    assert [(w["org_id"], w["deficit"]) for w in later["data"]] == [("acme", 600)]


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_generate_on_a_replica_that_does_not_lead_is_202_not_leader(
    overdraft: OverdraftWorld,
) -> None:
    """Tester T3-12: a follower answered 200 with empty lists and a bare `deferred`, which an
    operator behind a load balancer read as "no invoices" while the leader made one. It is
    202 `not_leader` with the request id, as every other write on a follower."""
    world = overdraft
    world.set_clock(at("2027-01-01T01:00:00"))
    world.open("acme")
    world.debit("acme", 600, id="u-1")

    def follower(domain: str, scope: frozenset[str], reason: str) -> ReconcileTicket:
        ticket = ReconcileTicket()
        ticket.defer("not_leader")
        return ticket

    answer = _client(world, [], follower).post(GENERATE, headers=ADMIN)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert (body["status"], body["reason"]) == ("pending", "not_leader")
    assert body["request_id"].startswith("rr_")
    assert "Location" not in answer.headers  # nothing to poll but the route itself (T4-3)
    assert "leader" in body["message"]
    assert world.invoices() == []  # the leader makes it

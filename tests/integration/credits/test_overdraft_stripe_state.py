"""Overdraft invoices as Stripe shows them (DESIGN §17, §4 "Stripe is the inventory"), against
the emulator over HTTP, on SQLite and PostgreSQL.

A lost store (a new empty one, the accounts re-onboarded, the same Stripe account) or one
restored from an older copy no longer records which windows were invoiced: the pass reads the
overdraft invoices in Stripe (one paginated list, by `br_key`), rebuilds the rows of the
windows they invoiced and invoices none of them again; a window start forgotten with them is
taken from Stripe. A voided invoice is recorded void (forgiven: no credit back, not billed
again); one marked uncollectible is recorded and still credited back when it is paid.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

from billing_reconciler.domains.credit_overdraft import (
    CREDIT_STEP,
    INVOICE_STEP,
    RESTORE_STEP,
    STATUS_STEP,
)
from billing_reconciler.planning.plan import Reason
from billing_reconciler.store import AccountRepository, Store
from billing_reconciler.store.ledger import LedgerRepository
from billing_reconciler.store.tables import OverdraftWindowModel
from tests.fixtures.postgres import new_postgres_database
from tests.integration.credits.overdraft_world import OverdraftWorld, at, overdraft

__all__ = ["overdraft"]

INVOICE_DAY = at("2027-01-01T01:00:00")
BR_KEY = "invoice/overdraft/acme/2027-01-01T00:00:00Z"


@pytest.fixture
def lose_store(overdraft: OverdraftWorld, tmp_path: Path) -> Iterator[Callable[[], None]]:
    """Replace the world's store by a new empty one (same Stripe account, same desired/)."""
    lost = [0]
    with contextlib.ExitStack() as stack:

        def lose() -> None:
            lost[0] += 1
            if overdraft.backend == "postgresql":
                url = stack.enter_context(new_postgres_database())
            else:
                url = f"sqlite:///{tmp_path / f'lost-{lost[0]}.db'}"
            store = Store.open(url)
            stack.callback(store.close)
            overdraft.store = store
            overdraft.url = url

        yield lose


def _invoiced_at_minus_600(world: OverdraftWorld) -> Any:
    world.set_clock(INVOICE_DAY)
    world.open("acme", credit_min=-1000, due_in_days=14)
    world.debit("acme", 600, id="u-1")
    world.reconcile()
    (invoice,) = world.invoices("acme")
    assert invoice.status == "open"
    return invoice


def _forget_windows(world: OverdraftWorld) -> None:
    """The store as an older copy of it, taken before the window was invoiced: its ledger,
    no overdraft rows."""
    with world.store.session() as session:
        session.execute(delete(OverdraftWindowModel))


def _kinds(plan: Any, kind: str) -> list[Any]:
    return [s for s in (*plan.steps, *plan.restores) if s.kind == kind]


def test_after_a_lost_store_the_invoiced_window_is_rebuilt_not_invoiced_again(
    overdraft: OverdraftWorld, lose_store: Callable[[], None]
) -> None:
    world = overdraft
    invoice = _invoiced_at_minus_600(world)
    lose_store()
    # Re-onboarded: the org, its usage again (the host replays it), the customer linked.
    world.open("acme", credit_min=-1000, due_in_days=14)
    world.debit("acme", 600, id="u-1")
    # Past Stripe's 24 h key window (the new store's salt gives new keys anyway).
    world.emulator.server.emulator.idempotency.clear()
    plan = world.reconcile()
    assert _kinds(plan, INVOICE_STEP) == []
    (restore,) = _kinds(plan, RESTORE_STEP)
    assert (restore.key, restore.reason, restore.stripe_id) == (
        "overdraft_restore/acme/2027-01-01",
        Reason.STORE_LOST,
        invoice.id,
    )
    assert len(world.invoices()) == 1
    assert len(world.invoice_items()) == 1
    (window,) = world.windows()
    assert (window.deficit, window.unit_amount, window.currency) == (600, 10, "usd")
    assert (window.invoice_id, window.invoice_status, window.credited) == (
        invoice.id,
        "open",
        False,
    )
    # Later passes plan nothing for the window, and paying it credits the new store once.
    assert world.reconcile().steps == ()
    world.pay(invoice.id)
    credited = world.reconcile(frozenset({"customer/acme"}))
    assert len(_kinds(credited, CREDIT_STEP)) == 1
    assert world.balance("acme") == 0
    world.reconcile(frozenset({"customer/acme"}))
    assert world.balance("acme") == 0
    assert len(world.invoices()) == 1


@pytest.mark.parametrize("replayed", [True, False], ids=["usage-replayed", "usage-not-replayed"])
def test_a_paid_invoice_found_after_a_lost_store_credits_at_most_the_debt_it_holds(
    overdraft: OverdraftWorld, lose_store: Callable[[], None], replayed: bool
) -> None:
    """Credited back once, and only for a debt this ledger holds: a new empty store that
    never had the window's usage gets no credits for an invoice paid in its former life."""
    world = overdraft
    invoice = _invoiced_at_minus_600(world)
    world.pay(invoice.id)
    world.reconcile(frozenset({"customer/acme"}))
    assert world.balance("acme") == 0
    lose_store()
    world.open("acme", credit_min=-1000, due_in_days=14)
    if replayed:
        world.debit("acme", 600, id="u-1")
    plan = world.reconcile()
    assert _kinds(plan, INVOICE_STEP) == []
    (restore,) = _kinds(plan, RESTORE_STEP)
    assert restore.params["credits"] == (600 if replayed else 0)
    assert world.balance("acme") == 0
    (window,) = world.windows()
    assert (window.invoice_id, window.invoice_status, window.credited) == (invoice.id, "paid", True)
    world.set_clock(INVOICE_DAY + 86_400)
    world.reconcile()
    assert world.balance("acme") == 0
    assert len(world.invoices()) == 1


def test_an_older_store_copy_that_holds_the_credit_is_not_credited_twice(
    overdraft: OverdraftWorld,
) -> None:
    """The ledger kept `overdraft:<invoice>:<line>`, the overdraft rows are gone: the rebuilt
    row is marked credited, the ledger id is not written twice."""
    world = overdraft
    invoice = _invoiced_at_minus_600(world)
    world.pay(invoice.id)
    world.reconcile(frozenset({"customer/acme"}))
    assert world.balance("acme") == 0
    _forget_windows(world)
    plan = world.reconcile()
    assert _kinds(plan, INVOICE_STEP) == []
    assert len(_kinds(plan, RESTORE_STEP)) == 1
    assert world.balance("acme") == 0
    assert len(world.invoices()) == 1


def test_a_forgotten_window_start_is_taken_from_the_invoice_in_stripe(
    overdraft: OverdraftWorld,
) -> None:
    """An older store copy without the January window: February's window starts where the
    January invoice's ended (Stripe shows it), so January's 600 are not billed again."""
    world = overdraft
    _invoiced_at_minus_600(world)
    _forget_windows(world)
    with world.store.session() as session:
        account = AccountRepository(session).active_for_org("acme")
        assert account is not None
        LedgerRepository(session, clock=lambda: datetime(2027, 1, 15, tzinfo=UTC)).debit(
            account.id, id="u-2", amount=100, source="usage", credit_min=account.credit_min
        )
    world.set_clock(at("2027-02-01T01:00:00"))
    plan = world.reconcile()
    (restore,) = _kinds(plan, RESTORE_STEP)
    assert restore.key == "overdraft_restore/acme/2027-01-01"
    (step,) = _kinds(plan, INVOICE_STEP)
    assert (step.params["quantity"], step.params["window_start"]) == (100, "2027-01-01T00:00:00Z")
    quantities = sorted(i.lines.data[0].quantity for i in world.invoices("acme"))
    assert quantities == [100, 600]
    ends = [(w.window_end.strftime("%Y-%m-%d"), w.deficit) for w in world.windows()]
    assert ends == [("2027-01-01", 600), ("2027-02-01", 100)]


def test_a_voided_invoice_is_recorded_void_forgiven_and_not_billed_again(
    overdraft: OverdraftWorld,
) -> None:
    world = overdraft
    invoice = _invoiced_at_minus_600(world)
    world.stripe.v1.invoices.void_invoice(invoice.id)
    world.set_clock(INVOICE_DAY + 3600)  # past refresh_interval.invoice: a whole pass looks
    plan = world.reconcile()
    (status,) = _kinds(plan, STATUS_STEP)
    assert status.params["status"] == "void"
    assert status.impact is not None
    assert "forgiven" in status.impact
    (window,) = world.windows()
    assert (window.invoice_status, window.credited) == ("void", False)
    assert world.balance("acme") == -600  # no credit back
    # No longer watched: later passes neither list invoices for it nor change anything.
    world.emulator.control.clear_requests()
    world.set_clock(INVOICE_DAY + 7200)
    assert world.reconcile().steps == ()
    assert world.emulator.control.requests(method="GET", path_prefix="/v1/invoices") == []
    # Forgiven: the next window starts at the voided one's end, January's debt is not
    # billed in February.
    world.set_clock(at("2027-02-01T01:00:00"))
    world.reconcile()
    assert [(w.window_end.strftime("%Y-%m-%d"), w.deficit) for w in world.windows()] == [
        ("2027-01-01", 600),
        ("2027-02-01", 0),
    ]
    assert len(world.invoices()) == 1


def test_an_uncollectible_invoice_is_recorded_and_credited_back_when_paid_after_all(
    overdraft: OverdraftWorld,
) -> None:
    world = overdraft
    invoice = _invoiced_at_minus_600(world)
    world.stripe.v1.invoices.mark_uncollectible(invoice.id)
    world.set_clock(INVOICE_DAY + 3600)
    plan = world.reconcile()
    (status,) = _kinds(plan, STATUS_STEP)
    assert status.params["status"] == "uncollectible"
    (window,) = world.windows()
    assert (window.invoice_status, window.credited) == ("uncollectible", False)
    world.set_clock(INVOICE_DAY + 7200)
    assert world.reconcile().steps == ()
    world.pay(invoice.id)  # Stripe takes a payment of an uncollectible invoice
    credited = world.reconcile(frozenset({"customer/acme"}))  # its invoice.paid
    assert len(_kinds(credited, CREDIT_STEP)) == 1
    assert world.balance("acme") == 0
    (window,) = world.windows()
    assert (window.invoice_status, window.credited) == ("paid", True)


def test_a_voided_invoice_found_after_a_lost_store_is_not_invoiced_again(
    overdraft: OverdraftWorld, lose_store: Callable[[], None]
) -> None:
    world = overdraft
    invoice = _invoiced_at_minus_600(world)
    world.stripe.v1.invoices.void_invoice(invoice.id)
    lose_store()
    world.open("acme", credit_min=-1000, due_in_days=14)
    world.debit("acme", 600, id="u-1")
    plan = world.reconcile()
    assert _kinds(plan, INVOICE_STEP) == []
    (window,) = world.windows()
    assert (window.invoice_id, window.invoice_status) == (invoice.id, "void")
    assert world.balance("acme") == -600
    assert len(world.invoices()) == 1


def test_a_draft_left_before_a_lost_store_is_finished_not_made_again(
    overdraft: OverdraftWorld, lose_store: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash left the window's draft (no item yet), then the store was lost: the next pass
    finds the draft by its `br_key` and finishes it (its item, finalized): one invoice."""
    from billing_reconciler.registry import CREDITS
    from billing_reconciler.stripe_gateway import overdraft_invoices

    world = overdraft
    world.set_clock(INVOICE_DAY)
    world.open("acme", credit_min=-1000, due_in_days=14)
    world.debit("acme", 600, id="u-1")

    def crash(*args: object, **kwargs: object) -> object:
        raise RuntimeError("crash")

    monkeypatch.setattr(overdraft_invoices, "add_item", crash)
    controller = world.controller(CREDITS)
    with pytest.raises(RuntimeError, match="crash"):
        controller.apply(controller.plan())
    monkeypatch.undo()
    (draft,) = world.invoices("acme")
    assert (draft.status, draft.metadata["br_key"]) == ("draft", BR_KEY)
    lose_store()
    world.open("acme", credit_min=-1000, due_in_days=14)
    world.debit("acme", 600, id="u-1")
    world.emulator.server.emulator.idempotency.clear()
    plan = world.reconcile()
    (step,) = _kinds(plan, INVOICE_STEP)
    assert step.params["invoice_id"] == draft.id
    (invoice,) = world.invoices("acme")
    assert (invoice.id, invoice.status, invoice.total) == (draft.id, "open", 6000)
    assert len(world.invoice_items()) == 1

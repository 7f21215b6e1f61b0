"""Overdraft invoicing (DESIGN §17) against the emulator over HTTP, on SQLite and PostgreSQL.

The clock (the controllers' and the customers' Stripe test clock) stands on the invoice day
of the next month, an hour in: the accounts and their ledger entries, stamped with the real
time, are all inside the window that ends that day.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import event

from billing_reconciler.domains.credit_overdraft import CREDIT_STEP, INVOICE_STEP, WINDOW_STEP
from billing_reconciler.planning.fleet import render_fleet_text
from billing_reconciler.planning.plan import Plan
from billing_reconciler.planning.render import render_text
from billing_reconciler.registry import CREDITS
from billing_reconciler.store.accounts import AccountRepository
from billing_reconciler.store.overdraft import OverdraftRepository
from tests.integration.credits.overdraft_world import OverdraftWorld, at, overdraft

__all__ = ["overdraft"]

INVOICE_DAY = at("2027-01-01T01:00:00")
END = at("2027-01-01T00:00:00")


def _only_invoice(world: OverdraftWorld, org: str) -> object:
    (invoice,) = world.invoices(org)
    return invoice


def _windows_recorded(plan: Plan) -> list[str]:
    return [r.key for r in plan.restores if r.kind == WINDOW_STEP]


def test_an_account_at_minus_600_gets_one_invoice_and_paying_it_credits_600_once(
    overdraft: OverdraftWorld,
) -> None:
    world = overdraft
    world.set_clock(INVOICE_DAY)
    world.open("acme", credit_min=-1000, due_in_days=14)
    world.debit("acme", 600, id="u-1")
    assert world.balance("acme") == -600

    plan = world.plan()
    (step,) = [s for s in plan.steps if s.kind == INVOICE_STEP]
    assert step.key == "overdraft_invoice/acme/2027-01-01"
    assert step.impact is not None
    assert "600 overdrawn credit(s) x 0.10 USD = 60.00 USD to org acme" in step.impact

    world.reconcile()
    invoice = _only_invoice(world, "acme")
    assert invoice.status == "open"  # finalized: Stripe sends it
    assert invoice.collection_method == "send_invoice"
    assert invoice.due_date == invoice.status_transitions.finalized_at + 14 * 86_400
    assert invoice.currency == "usd"
    assert invoice.total == 6000
    assert invoice.payment_settings.payment_method_types == ["card"]
    assert invoice.metadata["br_key"] == "invoice/overdraft/acme/2027-01-01T00:00:00Z"
    assert invoice.metadata["managed_by"] == "billing-reconciler"
    assert invoice.metadata["org_id"] == "acme"
    (line,) = invoice.lines.data
    assert (line.quantity, line.amount) == (600, 6000)
    assert (line.period.start, line.period.end)[1] == END
    (window,) = world.windows()
    assert (window.deficit, window.unit_amount, window.invoice_status) == (600, 10, "open")

    # A rerun (and one a day later) plans nothing for the window: still one invoice.
    assert [s for s in world.reconcile().steps if s.kind == INVOICE_STEP] == []
    world.set_clock(INVOICE_DAY + 86_400)
    assert [s for s in world.reconcile().steps if s.kind == INVOICE_STEP] == []
    assert len(world.invoices("acme")) == 1
    assert len(world.invoice_items()) == 1

    paid = world.pay(invoice.id)
    assert paid.status == "paid"
    # invoice.paid routes to customer/acme: a targeted pass credits it back.
    credited = world.reconcile(frozenset({"customer/acme"}))
    (credit,) = [s for s in credited.steps if s.kind == CREDIT_STEP]
    assert credit.params["ledger_id"] == f"overdraft:{invoice.id}:{line.id}"
    assert world.balance("acme") == 0
    # Once: neither a targeted nor a whole rerun credits it again.
    world.reconcile(frozenset({"customer/acme"}))
    world.set_clock(INVOICE_DAY + 86_400 + 3600)
    world.reconcile()
    assert world.balance("acme") == 0
    (window,) = world.windows()
    assert (window.invoice_status, window.credited) == ("paid", True)


def test_no_deficit_records_the_window_and_invoices_nothing(overdraft: OverdraftWorld) -> None:
    world = overdraft
    world.set_clock(INVOICE_DAY)
    world.open("even")
    world.debit("even", 300, id="u-1")
    world.credit("even", 300, id="g-1")
    plan = world.reconcile()
    assert [s.kind for s in plan.steps] == []
    assert [r.key for r in plan.restores] == ["overdraft_window/even/2027-01-01"]
    (window,) = world.windows()
    assert (window.deficit, window.invoice_id) == (0, None)
    assert world.invoices() == []
    # Recorded: the next passes of the window plan nothing at all.
    again = world.plan()
    assert (again.steps, again.restores) == ((), ())


def test_accounts_without_an_overdraft_allowance_or_offline_get_nothing(
    overdraft: OverdraftWorld,
) -> None:
    world = overdraft
    world.set_clock(INVOICE_DAY)
    world.open("plain", credit_min=0)
    world.open("away", credit_min=-1000, offline=True)
    world.debit("away", 50, id="u-1")
    plan = world.reconcile()
    assert (plan.steps, plan.restores) == ((), ())
    assert world.windows() == []
    assert world.invoices() == []


def test_a_debt_is_invoiced_after_credit_min_was_raised_back_to_0(
    overdraft: OverdraftWorld,
) -> None:
    """Tester T1 F13: closing a bad payer's overdraft (credit_min back to 0) is exactly when
    the debt must be billed; only accounts with credit_min < 0 were evaluated."""
    world = overdraft
    world.set_clock(INVOICE_DAY)
    account_id = world.open("acme", credit_min=-1000)
    world.debit("acme", 600, id="u-1")
    with world.store.session() as session:
        AccountRepository(session).update(account_id, credit_min=0)
    world.open("plain", credit_min=0)
    world.credit("plain", 50, id="g-1")
    world.reconcile()
    (line,) = _only_invoice(world, "acme").lines.data  # type: ignore[attr-defined]
    assert line.quantity == 600
    assert [w.org_id for w in world.windows()] == ["acme"]  # no debt, no limit: not evaluated


def test_the_accounts_due_are_read_in_one_query(overdraft: OverdraftWorld) -> None:
    """Observation stays cheap with many accounts: one statement, not one per account."""
    world = overdraft
    world.set_clock(INVOICE_DAY)
    for index in range(4):
        account_id = world.open(f"org{index}", credit_min=-1000)
        world.credit(f"org{index}", 10, id=f"g-{index}")
        world.debit(f"org{index}", 10 + index, id=f"u-{index}")
        if index % 2 == 0:  # org0 owes nothing, org2 owes 2 (both credit_min 0 now)
            with world.store.session() as session:
                AccountRepository(session).update(account_id, credit_min=0)
    statements: list[str] = []

    def record(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(world.store.engine, "before_cursor_execute", record)
    try:
        with world.store.session() as session:
            end = datetime.fromtimestamp(END, UTC)
            due = OverdraftRepository(session).due(window_end=end, org_ids=None)
    finally:
        event.remove(world.store.engine, "before_cursor_execute", record)
    assert [(d.org_id, d.balance) for d in due] == [("org1", -1), ("org2", -2), ("org3", -3)]
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1


def test_system_overdraft_credits_are_left_out_of_the_deficit(overdraft: OverdraftWorld) -> None:
    world = overdraft
    world.set_clock(INVOICE_DAY)
    world.open("acme")
    world.debit("acme", 600, id="u-1")
    world.credit("acme", 400, id="overdraft:in_old:il_old", source="system.overdraft")
    world.reconcile()
    (line,) = _only_invoice(world, "acme").lines.data  # type: ignore[attr-defined]
    assert line.quantity == 600


def test_a_remainder_is_warned_about(overdraft: OverdraftWorld) -> None:
    world = overdraft
    world.configure(amount=1001)
    world.set_clock(INVOICE_DAY)
    world.open("acme")
    world.debit("acme", 600, id="u-1")
    plan = world.plan()
    assert any("remainder 0.01 USD per 100 credits not invoiced" in w for w in plan.warnings)
    world.reconcile()
    (line,) = _only_invoice(world, "acme").lines.data  # type: ignore[attr-defined]
    assert (line.quantity, line.amount) == (600, 6000)


def test_before_the_invoice_day_nothing_fires_and_the_day_fires_once(
    overdraft: OverdraftWorld,
) -> None:
    """Invoice day 31 in February 2027 (28 days): the window fires on Feb 28, not before.
    The January window (Jan 31) is due first and takes the debt made before it."""
    world = overdraft
    world.configure(day=31)
    world.set_clock(at("2027-01-31T00:00:00"))
    world.open("acme")
    world.debit("acme", 600, id="u-1")
    world.reconcile()
    assert len(world.invoices("acme")) == 1
    world.set_clock(at("2027-02-27T23:59:59"))
    plan = world.reconcile()
    assert plan.steps == ()
    assert _windows_recorded(plan) == []
    world.set_clock(at("2027-02-28T00:00:00"))
    plan = world.reconcile()
    assert _windows_recorded(plan) == ["overdraft_window/acme/2027-02-28"]
    ends = [w.window_end.strftime("%Y-%m-%d") for w in world.windows()]
    assert ends == ["2027-01-31", "2027-02-28"]
    assert [w.deficit for w in world.windows()] == [600, 0]
    assert len(world.invoices("acme")) == 1


def test_range_shift_minus_one_ends_the_window_a_month_earlier(overdraft: OverdraftWorld) -> None:
    world = overdraft
    world.configure(day=1, shift=-1)
    world.set_clock(at("2027-02-01T01:00:00"))
    world.open("acme")
    world.debit("acme", 250, id="u-1")
    world.reconcile()
    (window,) = world.windows()
    assert window.window_end.strftime("%Y-%m-%d") == "2027-01-01"
    invoice = _only_invoice(world, "acme")
    assert invoice.metadata["br_key"] == "invoice/overdraft/acme/2027-01-01T00:00:00Z"  # type: ignore[attr-defined]


def test_after_downtime_over_the_invoice_day_the_window_is_caught_up(
    overdraft: OverdraftWorld,
) -> None:
    world = overdraft
    world.set_clock(INVOICE_DAY - 86_400 * 10)
    world.open("acme")
    world.debit("acme", 600, id="u-1")
    world.set_clock(at("2027-01-20T12:00:00"))  # no pass ran on Jan 1
    world.reconcile()
    (window,) = world.windows()
    assert window.window_end.strftime("%Y-%m-%d") == "2027-01-01"
    assert len(world.invoices("acme")) == 1


@pytest.mark.parametrize("fail", ["add_item", "finalize"])
def test_a_crash_mid_invoice_and_a_rerun_still_make_one_invoice_with_one_item(
    overdraft: OverdraftWorld, monkeypatch: pytest.MonkeyPatch, fail: str
) -> None:
    from billing_reconciler.stripe_gateway import overdraft_invoices

    world = overdraft
    world.set_clock(INVOICE_DAY)
    world.open("acme")
    world.debit("acme", 600, id="u-1")
    real = getattr(overdraft_invoices, fail)

    def crash(*args: object, **kwargs: object) -> object:
        real(*args, **kwargs)  # the write reaches Stripe, its answer is lost
        raise RuntimeError("crash")

    monkeypatch.setattr(overdraft_invoices, fail, crash)
    controller = world.controller(CREDITS)
    with pytest.raises(RuntimeError, match="crash"):
        controller.apply(controller.plan())
    monkeypatch.setattr(overdraft_invoices, fail, real)
    world.reconcile()
    invoice = _only_invoice(world, "acme")
    assert invoice.status == "open"  # type: ignore[attr-defined]
    assert len(world.invoice_items()) == 1
    (line,) = invoice.lines.data  # type: ignore[attr-defined]
    assert line.quantity == 600


def test_a_crash_before_the_invoice_id_reached_the_store_finds_the_draft_by_br_key(
    overdraft: OverdraftWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past Stripe's 24 h key window a replayed create would make a second invoice: the
    rerun finds the draft by its br_key among the customer's invoices instead."""
    world = overdraft
    world.set_clock(INVOICE_DAY)
    world.open("acme")
    world.debit("acme", 600, id="u-1")
    real = OverdraftRepository.set_invoice

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("crash")

    monkeypatch.setattr(OverdraftRepository, "set_invoice", crash)
    controller = world.controller(CREDITS)
    with pytest.raises(RuntimeError, match="crash"):
        controller.apply(controller.plan())
    monkeypatch.setattr(OverdraftRepository, "set_invoice", real)
    (window,) = world.windows()
    assert window.invoice_id is None  # claimed, its invoice unknown to the store
    # The key window passed: a create with the same key would no longer be replayed.
    world.emulator.server.emulator.idempotency.clear()
    world.reconcile()
    assert len(world.invoices("acme")) == 1
    assert len(world.invoice_items()) == 1


def test_the_dry_run_shows_the_invoice_it_would_create(overdraft: OverdraftWorld) -> None:
    world = overdraft
    world.set_clock(INVOICE_DAY)
    world.open("acme")
    world.debit("acme", 600, id="u-1")
    plan = world.plan()
    line = "! invoice 600 overdrawn credit(s) x 0.10 USD = 60.00 USD to org acme for "
    # Both renderers: `reconcile --dry-run` prints the fleet one (tester T1 F8: its impact
    # line came twice, and the total was raw minor units).
    for text in (render_text(plan), render_fleet_text(plan)):
        assert "+ overdraft_invoice/acme/2027-01-01  (new)" in text
        assert "quantity: 600" in text
        assert "unit_amount: 0.10 USD" in text
        assert "total: 60.00 USD" in text
        assert text.count(line) == 1
    assert world.invoices() == []  # planned, nothing sent

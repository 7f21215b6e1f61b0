"""The overdraft part reading Stripe's invoices (DESIGN §17, §4): which invoice stands for a
window, how far back the list reaches, and the void/uncollectible status steps. Pure: a fake
reader."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime

from billing_reconciler.config import BillingConfig
from billing_reconciler.desired.state import DesiredState
from billing_reconciler.domains.base import PlanContext, PlanOptions
from billing_reconciler.domains.credit_overdraft import (
    INVOICE_STEP,
    RESTORE_STEP,
    STATUS_STEP,
    Candidate,
    OverdraftDesired,
    OverdraftObserved,
    OverdraftPart,
    OverdraftPrice,
    RemoteInvoice,
    StoredWindow,
    overdraft_plan,
)


def at(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


NOW = at("2026-12-01T01:00:00")
END = at("2026-12-01T00:00:00")
PREVIOUS = at("2026-11-01T00:00:00")
CREATED = at("2026-10-05T00:00:00")
DESIRED = OverdraftDesired(
    product="credits", price=OverdraftPrice("credits", "pack", "usd", 1000, 100), invoice_day=1
)


def _context(now: int, scope: frozenset[str] | None = None) -> PlanContext:
    state = DesiredState(
        root=".", config=BillingConfig(), features=(), products=(), plans=(), revision="r"
    )
    return PlanContext(
        state=state,
        options=PlanOptions(scope=scope),
        applied={},
        spent_keys=frozenset(),
        key_salt="salt",
        now=now,
    )


def _invoice(invoice_id: str, status: str, end: int, *, created: int = 0) -> RemoteInvoice:
    return RemoteInvoice(
        invoice_id, status, "acme", end, CREATED, f"il_{invoice_id}", 600, 10, "usd", created
    )


@dataclasses.dataclass
class FakeReader:
    listed: Sequence[RemoteInvoice] = ()
    candidate: Candidate | None = None
    awaiting: Sequence[StoredWindow] = ()
    owed: int = 0
    since: list[int] = dataclasses.field(default_factory=list)

    def candidates(self, *, window_end: int, org_ids: frozenset[str] | None) -> Sequence[Candidate]:
        return () if self.candidate is None else (self.candidate,)

    def unfinished(self, org_ids: frozenset[str] | None) -> Sequence[StoredWindow]:
        return ()

    def awaiting_payment(self, org_ids: frozenset[str] | None) -> Sequence[StoredWindow]:
        return self.awaiting

    def overdraft_invoices(
        self, *, created_since: int, installation_id: str
    ) -> Sequence[RemoteInvoice]:
        self.since.append(created_since)
        return self.listed

    def deficit_between(self, account_id: str, start: int, end: int) -> int:
        return self.owed

    def product_id(self, product: str, *, installation_id: str) -> str | None:
        return "prod_credits"


def _candidate(*, evaluated_until: int | None = None) -> Candidate:
    return Candidate("acc_acme", "acme", "cus_acme", 14, CREATED, 600, evaluated_until)


def test_a_paid_invoice_stands_for_its_window_among_duplicates_and_voids() -> None:
    reader = FakeReader(
        listed=(
            _invoice("in_void", "void", END, created=1),
            _invoice("in_open", "open", END, created=2),
            _invoice("in_paid", "paid", END, created=3),
        ),
        candidate=_candidate(),
        owed=600,
    )
    observed = OverdraftPart().observe(reader, DESIRED, _context(NOW))
    assert observed.candidates == ()
    (found,) = observed.found
    assert (found.invoice.invoice_id, found.credits) == ("in_paid", 600)
    planned = overdraft_plan(DESIRED, observed, _context(NOW))
    assert [s.kind for s in planned.steps] == []
    (restore,) = planned.restores
    assert restore.kind == RESTORE_STEP
    assert restore.params["ledger_id"] == "overdraft:in_paid:il_in_paid"


def test_an_earlier_invoiced_window_moves_the_start_and_the_deficit_is_read_again() -> None:
    reader = FakeReader(listed=(_invoice("in_nov", "open", PREVIOUS),), candidate=_candidate())
    reader.owed = 250
    observed = OverdraftPart().observe(reader, DESIRED, _context(NOW))
    (candidate,) = observed.candidates
    assert (candidate.window_start, candidate.deficit) == (PREVIOUS, 250)
    planned = overdraft_plan(DESIRED, observed, _context(NOW))
    (step,) = planned.steps
    assert (step.kind, step.params["quantity"]) == (INVOICE_STEP, 250)
    assert [r.kind for r in planned.restores] == [RESTORE_STEP]


def test_windows_the_store_evaluated_are_not_taken_from_stripe_and_the_list_starts_there() -> None:
    reader = FakeReader(
        listed=(_invoice("in_nov", "open", PREVIOUS),),
        candidate=_candidate(evaluated_until=PREVIOUS),
    )
    observed = OverdraftPart().observe(reader, DESIRED, _context(NOW))
    assert observed.found == ()
    assert observed.candidates == (_candidate(evaluated_until=PREVIOUS),)
    assert reader.since == [PREVIOUS - 2 * 86_400]
    # A positive range shift: a window's invoice is made before its end; the list reaches
    # back that many months more.
    reader.since.clear()
    OverdraftPart().observe(reader, dataclasses.replace(DESIRED, range_shift=1), _context(NOW))
    assert reader.since == [PREVIOUS - 31 * 86_400 - 2 * 86_400]


def test_a_draft_for_the_due_window_is_resumed_an_earlier_one_ignored() -> None:
    reader = FakeReader(
        listed=(_invoice("in_draft", "draft", END), _invoice("in_old", "draft", PREVIOUS)),
        candidate=_candidate(),
    )
    observed = OverdraftPart().observe(reader, DESIRED, _context(NOW))
    assert observed.found == ()
    assert observed.resume == {"acc_acme": "in_draft"}
    (step,) = overdraft_plan(DESIRED, observed, _context(NOW)).steps
    assert (step.params["invoice_id"], step.params["resume"]) == ("in_draft", True)


def _awaiting(status: str) -> StoredWindow:
    return StoredWindow(
        "acc_acme", "acme", "cus_acme", 14, CREATED, END, 600, 10, "usd", "in_1", status, 0
    )


def test_void_and_uncollectible_are_status_steps_once() -> None:
    for status in ("void", "uncollectible"):
        observed = OverdraftObserved(
            window_end=END,
            awaiting=(_awaiting("open"),),
            checked=True,
            statuses={"in_1": status},
        )
        (step,) = overdraft_plan(DESIRED, observed, _context(NOW)).steps
        assert (step.kind, step.params["status"]) == (STATUS_STEP, status)
        assert OverdraftPart().scope_of(step.key) == "customer/acme"
    # Recorded: the same status again is no step.
    same = OverdraftObserved(
        window_end=END,
        awaiting=(_awaiting("uncollectible"),),
        checked=True,
        statuses={"in_1": "uncollectible"},
    )
    assert overdraft_plan(DESIRED, same, _context(NOW)).steps == ()


def test_a_whole_pass_watches_open_invoices_a_targeted_one_also_uncollectible() -> None:
    reader = FakeReader(awaiting=(_awaiting("uncollectible"),))
    whole = OverdraftPart().observe(reader, DESIRED, _context(NOW))
    assert (whole.awaiting, whole.checked, reader.since) == ((), False, [])
    targeted = OverdraftPart().observe(reader, DESIRED, _context(NOW, frozenset({"customer/acme"})))
    assert (len(targeted.awaiting), targeted.checked) == (1, True)

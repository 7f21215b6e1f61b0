"""The overdraft part's pure rules (DESIGN §17): window math, the price per credit, the plan."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from billing_reconciler.config import BillingConfig
from billing_reconciler.desired.state import DesiredState, PriceSpec, ProductSpec
from billing_reconciler.domains.base import PlanContext, PlanOptions
from billing_reconciler.domains.credit_overdraft import (
    CHECKED_STEP,
    CREDIT_STEP,
    INVOICE_STEP,
    WINDOW_STEP,
    Candidate,
    OverdraftDesired,
    OverdraftObserved,
    OverdraftPart,
    OverdraftPrice,
    PaidLine,
    PaymentBound,
    StoredWindow,
    due_window,
    invoice_br_key,
    overdraft_plan,
    overdraft_price,
    payment_method_types,
)


def at(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def day_of(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d")


@pytest.mark.parametrize(
    ("day", "now", "fires_on"),
    [
        # February of a non-leap year: 29, 30 and 31 mean Feb 28.
        (29, "2027-02-28T00:00:00", "2027-02-28"),
        (30, "2027-02-28T00:00:00", "2027-02-28"),
        (31, "2027-02-28T00:00:00", "2027-02-28"),
        # A leap year: Feb 29.
        (29, "2028-02-29T00:00:00", "2028-02-29"),
        (30, "2028-02-29T00:00:00", "2028-02-29"),
        (31, "2028-02-29T00:00:00", "2028-02-29"),
        # April has 30 days: 31 means April 30.
        (31, "2027-04-30T00:00:00", "2027-04-30"),
        (30, "2027-04-30T00:00:00", "2027-04-30"),
        # A long month keeps the day.
        (31, "2027-03-31T00:00:00", "2027-03-31"),
    ],
)
def test_a_day_past_the_months_end_fires_on_its_last_day(day: int, now: str, fires_on: str) -> None:
    invoice_day, end = due_window(at(now), day=day, shift=0)
    assert day_of(invoice_day) == fires_on
    assert day_of(end) == fires_on
    # A second before, the window due is still last month's.
    before_day, before_end = due_window(at(now) - 1, day=day, shift=0)
    assert before_day < invoice_day
    assert before_end < end


def test_before_the_invoice_day_the_latest_due_window_is_last_months() -> None:
    """Catch-up: a controller down over the invoice day evaluates that window later."""
    invoice_day, end = due_window(at("2026-12-03T10:00:00"), day=15, shift=0)
    assert (day_of(invoice_day), day_of(end)) == ("2026-11-15", "2026-11-15")
    invoice_day, end = due_window(at("2026-12-20T10:00:00"), day=15, shift=0)
    assert (day_of(invoice_day), day_of(end)) == ("2026-12-15", "2026-12-15")
    # January before its day: December of the previous year.
    _, end = due_window(at("2027-01-01T00:00:00"), day=2, shift=0)
    assert day_of(end) == "2026-12-02"


def test_range_shift_moves_the_window_end_by_months_clamped_in_the_shifted_month() -> None:
    invoice_day, end = due_window(at("2027-03-31T08:00:00"), day=31, shift=-1)
    # Fires on March 31; the window ends on day 31 of February, that is Feb 28.
    assert (day_of(invoice_day), day_of(end)) == ("2027-03-31", "2027-02-28")
    _, end = due_window(at("2027-01-05T00:00:00"), day=1, shift=-1)
    assert day_of(end) == "2026-12-01"
    _, end = due_window(at("2027-01-05T00:00:00"), day=1, shift=2)
    assert day_of(end) == "2027-03-01"


def test_br_key_names_org_and_window_end() -> None:
    assert invoice_br_key("acme", at("2026-12-01T00:00:00")) == (
        "invoice/overdraft/acme/2026-12-01T00:00:00Z"
    )


def _product(amount: int, credits: int | None, **price: object) -> ProductSpec:
    return ProductSpec.model_validate(
        {
            "name": "credits",
            "title": "Credits",
            "behavior": "credits",
            "config": {"credit_amount": credits},
            "prices": [{"name": "pack", "amount": amount, "currency": "usd", "interval": None}]
            + ([price] if price else []),
        }
    )


def test_unit_amount_is_the_first_price_over_credit_amount_with_its_remainder() -> None:
    price, problem = overdraft_price(_product(1000, 100), "usd")
    assert problem is None
    assert price is not None
    assert (price.unit_amount, price.remainder) == (10, 0)
    price, _ = overdraft_price(_product(1001, 100), "usd")
    assert price is not None
    assert (price.unit_amount, price.remainder) == (10, 1)


def test_price_in_the_default_currency_through_currency_options() -> None:
    product = ProductSpec(
        name="credits",
        title="Credits",
        behavior="credits",
        config={"credit_amount": 100},  # type: ignore[arg-type]
        prices=(
            PriceSpec(
                name="pack",
                amount=1000,
                currency="usd",
                interval=None,
                currency_options={"eur": {"amount": 900}},  # type: ignore[dict-item]
            ),
        ),
    )
    price, _ = overdraft_price(product, "eur")
    assert price is not None
    assert (price.currency, price.unit_amount) == ("eur", 9)
    price, problem = overdraft_price(product, "gbp")
    assert price is None
    assert problem == "has no active price in the default currency GBP"


def test_payment_method_types_whose_bounds_hold_the_total() -> None:
    bounds = (PaymentBound("card", 0, 5_000_000), PaymentBound("customer_balance", 100_000, 0))
    assert payment_method_types(bounds, 6000) == ["card"]
    assert payment_method_types(bounds, 200_000) == ["card", "customer_balance"]
    assert payment_method_types((), 6000) is None


def _context(now: int) -> PlanContext:
    state = DesiredState(
        root=".", config=BillingConfig(), features=(), products=(), plans=(), revision="r"
    )
    return PlanContext(
        state=state,
        options=PlanOptions(),
        applied={},
        spent_keys=frozenset(),
        key_salt="salt",
        now=now,
    )


PRICE = OverdraftPrice("credits", "pack", "usd", 1000, 100)
DESIRED = OverdraftDesired(product="credits", price=PRICE, invoice_day=1)
END = at("2026-12-01T00:00:00")


def _candidate(org: str, deficit: int) -> Candidate:
    return Candidate(f"acc_{org}", org, f"cus_{org}", 14, at("2026-10-05T00:00:00"), deficit)


def test_plan_invoices_a_deficit_and_records_a_window_that_owed_nothing() -> None:
    observed = OverdraftObserved(
        window_end=END,
        candidates=(_candidate("acme", 600), _candidate("zero", 0)),
        product_id="prod_1",
    )
    planned = overdraft_plan(DESIRED, observed, _context(END + 60))
    (step,) = planned.steps
    assert step.kind == INVOICE_STEP
    assert step.key == "overdraft_invoice/acme/2026-12-01"
    p = step.params
    assert (p["quantity"], p["unit_amount"], p["total"], p["currency"]) == (600, 10, 6000, "usd")
    assert (p["collection_method"], p["days_until_due"]) == ("send_invoice", 14)
    assert p["br_key"] == "invoice/overdraft/acme/2026-12-01T00:00:00Z"
    assert (p["window_start"], p["window_end"]) == ("2026-10-05T00:00:00Z", "2026-12-01T00:00:00Z")
    assert step.impact == (
        "invoice 600 overdrawn credit(s) x 0.10 USD = 60.00 USD to org acme for "
        "2026-10-05 -> 2026-12-01"
    )
    (restore,) = planned.restores
    assert (restore.kind, restore.key) == (WINDOW_STEP, "overdraft_window/zero/2026-12-01")
    assert planned.warnings == ()
    assert OverdraftPart().scope_of(step.key) == "customer/acme"


def test_a_remainder_is_a_plan_warning() -> None:
    desired = OverdraftDesired(
        product="credits", price=OverdraftPrice("credits", "pack", "usd", 1001, 100)
    )
    planned = overdraft_plan(desired, OverdraftObserved(window_end=END), _context(END))
    (warning,) = planned.warnings
    assert "remainder 0.01 USD per 100 credits not invoiced" in warning


def test_a_paid_invoice_is_credited_back_and_the_check_stamped() -> None:
    waiting = StoredWindow(
        "acc_acme", "acme", "cus_acme", 14, END - 86_400 * 30, END, 600, 10, "usd",
        "in_1", "open", END,
    )  # fmt: skip
    observed = OverdraftObserved(
        window_end=END,
        awaiting=(waiting,),
        checked=True,
        paid={"in_1": PaidLine("in_1", "il_1", 600)},
    )
    planned = overdraft_plan(DESIRED, observed, _context(END + 3600))
    (step,) = planned.steps
    assert step.kind == CREDIT_STEP
    assert (step.params["ledger_id"], step.params["credits"]) == ("overdraft:in_1:il_1", 600)
    assert [r.kind for r in planned.restores] == [CHECKED_STEP]


def test_no_product_in_stripe_yet_waits_with_a_notice() -> None:
    observed = OverdraftObserved(window_end=END, candidates=(_candidate("acme", 5),))
    planned = overdraft_plan(DESIRED, observed, _context(END))
    assert planned.steps == ()
    (notice,) = planned.notices
    assert "not invoiced until the catalog has made product 'credits'" in notice.message

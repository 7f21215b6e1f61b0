"""The next overdraft window `POST /admin/billing/invoices/generate` names (`next_window_end`,
`next_invoice_at`): the one after the due window, with the invoice day clamped to the month's
length and the range shift applied as for the due window (DESIGN §17)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from billing_reconciler.api.overdraft import next_window
from billing_reconciler.domains.credit_overdraft import due_window


def _at(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


@pytest.mark.parametrize(
    ("now", "day", "shift", "due_end", "next_end", "next_invoice"),
    [
        ("2027-01-10T12:00:00", 1, 0, "2027-01-01", "2027-02-01", "2027-02-01"),
        ("2027-12-02T00:00:00", 1, 0, "2027-12-01", "2028-01-01", "2028-01-01"),
        # Before this month's invoice day: last month's window is the due one.
        ("2027-01-10T12:00:00", 15, 0, "2026-12-15", "2027-01-15", "2027-01-15"),
        # Day 31: the last day of a short month.
        ("2027-01-31T01:00:00", 31, 0, "2027-01-31", "2027-02-28", "2027-02-28"),
        ("2028-02-29T01:00:00", 30, 0, "2028-02-29", "2028-03-30", "2028-03-30"),
        ("2027-03-31T01:00:00", 31, 0, "2027-03-31", "2027-04-30", "2027-04-30"),
        # Shift -1: each window ends a month before its invoice day.
        ("2027-02-10T00:00:00", 1, -1, "2027-01-01", "2027-02-01", "2027-03-01"),
        ("2027-03-01T00:00:00", 31, -1, "2027-01-31", "2027-02-28", "2027-03-31"),
    ],
)
def test_the_next_window_follows_the_due_one(
    now: str, day: int, shift: int, due_end: str, next_end: str, next_invoice: str
) -> None:
    invoice_day, end = due_window(_at(now), day=day, shift=shift)
    assert _iso(datetime.fromtimestamp(end, UTC)) == due_end
    following_end, following_invoice = next_window(invoice_day, day=day, shift=shift)
    assert (_iso(following_end), _iso(following_invoice)) == (next_end, next_invoice)
    assert following_invoice.timestamp() > _at(now) >= invoice_day

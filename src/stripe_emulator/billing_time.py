"""Billing period arithmetic: period ends from a billing cycle anchor, and proration.

Stripe anchors every period of a subscription at its `billing_cycle_anchor`: the n-th period
ends n intervals after the anchor, on the anchor's day of month and time of day, clamped to
the last day of shorter months (an anchor on 31 January renews on 28/29 February, then on
31 March). Proration is to the second: the fraction of the period left at the proration
date, `(period_end - at) / (period_end - period_start)`, applied to each amount and rounded
half away from zero to the minor unit.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

DAY = 24 * 3600


def add_intervals(anchor: int, interval: str, count: int) -> int:
    """`anchor` moved by `count` intervals (`day`, `week`, `month`, `year`), month-end
    clamped for months and years."""
    start = datetime.fromtimestamp(anchor, UTC)
    if interval == "day":
        return int((start + timedelta(days=count)).timestamp())
    if interval == "week":
        return int((start + timedelta(weeks=count)).timestamp())
    months = count * (12 if interval == "year" else 1)
    if interval not in ("month", "year"):
        raise ValueError(f"unknown interval {interval!r}")
    total = start.month - 1 + months
    year, month = start.year + total // 12, total % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return int(start.replace(year=year, month=month, day=day).timestamp())


def period_containing(anchor: int, interval: str, count: int, at: int) -> tuple[int, int]:
    """The period `[start, end)` of a cycle anchored at `anchor` that contains `at`
    (`at` before the anchor gives the period ending at the anchor)."""
    if at < anchor:
        n = 0
        while add_intervals(anchor, interval, -(n + 1) * count) > at:
            n += 1
        return add_intervals(anchor, interval, -(n + 1) * count), add_intervals(
            anchor, interval, -n * count
        )
    n = 0
    while add_intervals(anchor, interval, (n + 1) * count) <= at:
        n += 1
    return add_intervals(anchor, interval, n * count), add_intervals(
        anchor, interval, (n + 1) * count
    )


def prorated(amount: int, start: int, end: int, at: int) -> int:
    """`amount` for the part `[at, end)` of the period `[start, end)`, to the minor unit."""
    if end <= start:
        return 0
    at = min(max(at, start), end)
    exact = Decimal(amount) * Decimal(end - at) / Decimal(end - start)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))

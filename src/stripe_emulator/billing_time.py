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


# The last moment the emulator's calendar arithmetic reaches (9999-12-31T23:59:59Z); test
# clocks are refused beyond it, and a period that would end later is a 400, never a 500.
MAX_TIMESTAMP = 253_402_300_799


def add_intervals(
    anchor: int, interval: str, count: int, *, day_of_month: int | None = None
) -> int:
    """`anchor` moved by `count` intervals (`day`, `week`, `month`, `year`), month-end
    clamped for months and years. `day_of_month` (a `billing_cycle_anchor_config`) is the
    day the cycle keeps when the anchor itself was clamped (31 -> 28 February -> 31 March).
    A result outside 1970..9999 is Stripe's 400 (`StripeError`), not a crash."""
    try:
        moved = _add_intervals(anchor, interval, count, day_of_month=day_of_month)
    except (OverflowError, OSError) as error:
        raise _out_of_range() from error
    except ValueError as error:
        if "interval" in str(error):
            raise
        raise _out_of_range() from error
    if not 0 <= moved <= MAX_TIMESTAMP:
        raise _out_of_range()
    return moved


def _out_of_range() -> Exception:
    from stripe_emulator.errors import invalid

    return invalid(
        "This billing period would end outside the supported range of timestamps "
        f"(0 to {MAX_TIMESTAMP}, the end of year 9999)."
    )


def _add_intervals(anchor: int, interval: str, count: int, *, day_of_month: int | None) -> int:
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
    day = min(day_of_month or start.day, calendar.monthrange(year, month)[1])
    return int(start.replace(year=year, month=month, day=day).timestamp())


def period_containing(
    anchor: int, interval: str, count: int, at: int, *, day_of_month: int | None = None
) -> tuple[int, int]:
    """The period `[start, end)` of a cycle anchored at `anchor` that contains `at`
    (`at` before the anchor gives the period ending at the anchor)."""

    def moved(n: int) -> int:
        return add_intervals(anchor, interval, n * count, day_of_month=day_of_month)

    if at < anchor:
        n = 0
        while moved(-(n + 1)) > at:
            n += 1
        return moved(-(n + 1)), moved(-n)
    n = 0
    while moved(n + 1) <= at:
        n += 1
    return moved(n), moved(n + 1)


def next_occurrence(
    after: int,
    *,
    day_of_month: int,
    hour: int,
    minute: int,
    second: int,
    month: int | None = None,
) -> int:
    """The first moment strictly after `after` on `day_of_month` (clamped to shorter months)
    at `hour:minute:second` UTC, in `month` when given: how Stripe turns a
    `billing_cycle_anchor_config` into the `billing_cycle_anchor`."""
    start = datetime.fromtimestamp(after, UTC)
    for offset in range(25):
        total = start.month - 1 + offset
        year, candidate_month = start.year + total // 12, total % 12 + 1
        if month is not None and candidate_month != month:
            continue
        day = min(day_of_month, calendar.monthrange(year, candidate_month)[1])
        moment = datetime(year, candidate_month, day, hour, minute, second, tzinfo=UTC)
        if moment.timestamp() > after:
            return int(moment.timestamp())
    raise ValueError("no occurrence within two years")


def prorated(amount: int, start: int, end: int, at: int) -> int:
    """`amount` for the part `[at, end)` of the period `[start, end)`, to the minor unit."""
    if end <= start:
        return 0
    at = min(max(at, start), end)
    exact = Decimal(amount) * Decimal(end - at) / Decimal(end - start)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))

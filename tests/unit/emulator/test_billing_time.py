"""Period arithmetic and proration of the emulator's billing."""

from __future__ import annotations

from datetime import UTC, datetime

from stripe_emulator.billing_time import (
    add_intervals,
    next_occurrence,
    period_containing,
    prorated,
)


def _ts(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())  # type: ignore[misc]


def test_months_clamp_to_month_end_and_keep_the_anchor_day() -> None:
    anchor = _ts(2026, 1, 31, 12, 30)
    assert add_intervals(anchor, "month", 1) == _ts(2026, 2, 28, 12, 30)
    assert add_intervals(anchor, "month", 2) == _ts(2026, 3, 31, 12, 30)
    assert add_intervals(_ts(2024, 2, 29), "year", 1) == _ts(2025, 2, 28)
    assert add_intervals(anchor, "week", 2) == _ts(2026, 2, 14, 12, 30)
    assert add_intervals(anchor, "day", 1) == _ts(2026, 2, 1, 12, 30)


def test_period_containing_walks_from_the_anchor() -> None:
    anchor = _ts(2026, 1, 15)
    assert period_containing(anchor, "month", 1, _ts(2026, 3, 20)) == (
        _ts(2026, 3, 15),
        _ts(2026, 4, 15),
    )
    assert period_containing(anchor, "month", 1, anchor) == (anchor, _ts(2026, 2, 15))


def test_proration_is_to_the_second_and_rounds_half_up() -> None:
    start, end = 0, 30 * 86400
    mid = 15 * 86400
    assert prorated(1000, start, end, mid) == 500
    assert prorated(2000, start, end, mid) == 1000
    assert prorated(1000, start, end, start) == 1000
    assert prorated(1000, start, end, end) == 0
    assert prorated(1, 0, 2, 1) == 1


def test_a_day_of_month_keeps_the_cycle_on_that_day_after_a_clamped_month() -> None:
    feb = _ts(2026, 2, 28, 9)
    assert add_intervals(feb, "month", 1) == _ts(2026, 3, 28, 9)
    assert add_intervals(feb, "month", 1, day_of_month=31) == _ts(2026, 3, 31, 9)
    assert period_containing(feb, "month", 1, _ts(2026, 4, 5), day_of_month=31) == (
        _ts(2026, 3, 31, 9),
        _ts(2026, 4, 30, 9),
    )


def test_next_occurrence_of_an_anchor_config() -> None:
    now = _ts(2026, 1, 15, 12)
    assert next_occurrence(now, day_of_month=1, hour=0, minute=0, second=0) == _ts(2026, 2, 1)
    assert next_occurrence(now, day_of_month=20, hour=8, minute=30, second=5) == _ts(
        2026, 1, 20, 8, 30, 5
    )
    assert next_occurrence(now, day_of_month=31, hour=0, minute=0, second=0) == _ts(2026, 1, 31)
    assert next_occurrence(_ts(2026, 1, 31, 1), day_of_month=31, hour=0, minute=0, second=0) == (
        _ts(2026, 2, 28)
    )
    assert next_occurrence(now, day_of_month=1, hour=0, minute=0, second=0, month=1) == _ts(
        2027, 1, 1
    )
    # The same moment is not "after": the next month's.
    assert next_occurrence(_ts(2026, 1, 20), day_of_month=20, hour=0, minute=0, second=0) == _ts(
        2026, 2, 20
    )

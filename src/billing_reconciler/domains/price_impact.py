"""What sits on a price the catalog retires (DESIGN §16, price migration). Pure.

The catalog's supersede and archive steps of a price state how many live subscriptions of
ours bill it and the monthly revenue they bring, per currency: the catalog domain asks its
reader for the `PriceUsage` of each price it retires (the edge reads the store's mirror of
the subscriptions and the price's last-applied amounts, no Stripe call) and renders it here.

Monthly revenue of an item = unit amount in the subscription's currency × quantity,
normalised to a month by the price's interval: `month` / interval_count, `year` / (12 ×
count), `week` × 52 / (12 × count), `day` × 365 / (12 × count). The items' exact fractions
are summed per currency and the sum is rounded once, half up, to an integer of minor units
(so 20 yearly seats at 100.00 USD are 166.67 USD/month, not 20 × 8.33). Metered items have
no quantity and bill usage afterwards: they are counted apart and left out of the revenue,
and a price whose amount is unknown (tiered, or no last-applied amounts) gets no revenue.

Not every subscription on a superseded price is moved: `held_back` is the subscriptions
domain's own rule (a pending plan change or cancel moves or ends it at its period end anyway;
under `now` one on a subscription schedule waits, its phases would put the old price back),
and the line says how many it moves and how many it holds back, and why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Final

from billing_reconciler.money import format_amount

#: The `reconcile.price_migration` policies.
MIGRATION_NONE: Final = "none"
MIGRATION_AT_RENEWAL: Final = "at_renewal"
MIGRATION_NOW: Final = "now"
SETTING_PRICE_MIGRATION: Final = "reconcile.price_migration"

#: Why a price migration holds a subscription back (`held_back`).
HOLD_PENDING_CHANGE: Final = "a pending plan change"
HOLD_PENDING_CANCEL: Final = "a pending cancel"
HOLD_SCHEDULED: Final = "a subscription schedule"

_MONTHS_PER: Final[Mapping[str, Fraction]] = {
    "month": Fraction(1),
    "year": Fraction(12),
    "week": Fraction(12, 52),
    "day": Fraction(12, 365),
}


@dataclass(frozen=True, slots=True)
class PriceAmounts:
    """A price's unit amount per currency (its own and `currency_options`) and interval."""

    amounts: Mapping[str, int]
    interval: str | None
    interval_count: int = 1


@dataclass(frozen=True, slots=True)
class MigrationHold:
    """What of a subscription can keep a price migration off it: its intent's pending plan
    change, its cancel (now or at period end), a subscription schedule on it."""

    pending_change: bool = False
    cancel: bool = False
    scheduled: bool = False


def held_back(policy: str, hold: MigrationHold) -> str | None:
    """Why the subscriptions domain does not move a subscription off a superseded price under
    `policy` (`HOLD_*`), None when it moves it (or the policy moves nothing): a pending cancel
    or plan change ends or moves it at its period end anyway; under `now` one on a schedule
    waits (its phases would put the old items back; `at_renewal` rewrites our schedule)."""
    if policy == MIGRATION_NONE:
        return None
    if hold.cancel:
        return HOLD_PENDING_CANCEL
    if hold.pending_change:
        return HOLD_PENDING_CHANGE
    if hold.scheduled and policy == MIGRATION_NOW:
        return HOLD_SCHEDULED
    return None


@dataclass(frozen=True, slots=True)
class UsageLine:
    """One item of a live subscription on the price: the subscription's currency and the
    item's quantity (None: metered)."""

    currency: str
    quantity: int | None


@dataclass(frozen=True, slots=True)
class PriceUsage:
    """The live subscriptions of ours on one price: how many, their items on it, and the
    price's amounts when known."""

    subscriptions: int
    lines: tuple[UsageLine, ...] = ()
    amounts: PriceAmounts | None = None
    # One per subscription counted: what could hold its migration back.
    holds: tuple[MigrationHold, ...] = ()


@dataclass(frozen=True, slots=True)
class PriceImpact:
    subscriptions: int
    monthly: Mapping[str, int] = field(default_factory=dict)
    metered_items: int = 0
    # Items whose currency the price has no amount for, or all of them when it is unknown.
    unpriced_items: int = 0
    holds: tuple[MigrationHold, ...] = ()


def monthly_amount(amount: int, interval: str | None, interval_count: int = 1) -> Fraction:
    """`amount` (minor units per interval) per month, exact; a one-time price is 0."""
    if interval is None or interval not in _MONTHS_PER:
        return Fraction(0)
    return Fraction(amount) / (_MONTHS_PER[interval] * max(interval_count, 1))


def _round_half_up(value: Fraction) -> int:
    return int((value * 2 + 1) // 2) if value >= 0 else -int((-value * 2 + 1) // 2)


def price_impact(usage: PriceUsage) -> PriceImpact:
    sums: dict[str, Fraction] = {}
    metered = unpriced = 0
    amounts = usage.amounts
    for line in usage.lines:
        if line.quantity is None:
            metered += 1
            continue
        unit = None if amounts is None else amounts.amounts.get(line.currency.lower())
        if unit is None or amounts is None:
            unpriced += 1
            continue
        per_month = monthly_amount(unit, amounts.interval, amounts.interval_count)
        currency = line.currency.lower()
        sums[currency] = sums.get(currency, Fraction(0)) + per_month * line.quantity
    return PriceImpact(
        subscriptions=usage.subscriptions,
        monthly={c: _round_half_up(v) for c, v in sorted(sums.items())},
        metered_items=metered,
        unpriced_items=unpriced,
        holds=usage.holds,
    )


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def render_impact(impact: PriceImpact, *, price_id: str, policy: str, superseded: bool) -> str:
    """`20 live subscriptions, 1960.00 USD/month on price_1: ...` and what the policy does
    with them (a price archived without a successor keeps them whatever the policy)."""
    revenue = ", ".join(f"{format_amount(a, c)}/month" for c, a in impact.monthly.items())
    parts = [_plural(impact.subscriptions, "live subscription")]
    if revenue:
        parts.append(revenue)
    text = ", ".join(parts) + f" on {price_id}"
    extras = []
    if impact.metered_items:
        extras.append(f"{_plural(impact.metered_items, 'metered item')} not counted")
    if impact.unpriced_items:
        extras.append(f"{_plural(impact.unpriced_items, 'item')} of unknown amount not counted")
    if extras:
        text += f" ({'; '.join(extras)})"
    held = Counter(
        reason
        for hold in impact.holds
        if superseded and (reason := held_back(policy, hold)) is not None
    )
    if not held:
        return f"{text}: {_fate(policy, superseded)}"
    moved = max(impact.subscriptions - sum(held.values()), 0)
    why = ", ".join(
        f"{count:,} with {reason}"
        for reason, count in sorted(held.items(), key=lambda pair: (-pair[1], pair[0]))
    )
    return (
        f"{text}: {moved:,} {_fate(policy, superseded)}; {sum(held.values()):,} held back "
        f"({why}: {_why(held)})"
    )


def _why(held: Counter[str]) -> str:
    reasons = []
    if held[HOLD_PENDING_CHANGE] or held[HOLD_PENDING_CANCEL]:
        reasons.append("the pending change or cancel moves or ends it at its period end")
    if held[HOLD_SCHEDULED]:
        reasons.append("the schedule's phases would put the old price back")
    return "; ".join(reasons)


def _fate(policy: str, superseded: bool) -> str:
    if not superseded:
        return "they stay on it (archived without a successor: nothing to migrate to)"
    if policy == MIGRATION_NOW:
        return f"moved to the new price now ({SETTING_PRICE_MIGRATION}: now)"
    if policy == MIGRATION_AT_RENEWAL:
        return (
            f"moved to the new price at their next renewal ({SETTING_PRICE_MIGRATION}: at_renewal)"
        )
    return f"they stay on it, grandfathered ({SETTING_PRICE_MIGRATION}: none)"


def usage_of(
    price_ids: Sequence[str],
    subscriptions: Sequence[tuple[str, Sequence[tuple[str, int | None]]]],
    holds: Sequence[MigrationHold] | None = None,
) -> dict[str, PriceUsage]:
    """Per price id of `price_ids`: how many of `subscriptions` (currency, items as (price
    id, quantity)) bill it, their items on it and what could hold each back (`holds`, one
    per subscription, in the same order; none: nothing)."""
    wanted = set(price_ids)
    counts: dict[str, int] = {}
    lines: dict[str, list[UsageLine]] = {}
    held: dict[str, list[MigrationHold]] = {}
    for index, (currency, items) in enumerate(subscriptions):
        seen: set[str] = set()
        for price_id, quantity in items:
            if price_id not in wanted:
                continue
            lines.setdefault(price_id, []).append(UsageLine(currency, quantity))
            seen.add(price_id)
        hold = MigrationHold() if holds is None else holds[index]
        for price_id in seen:
            counts[price_id] = counts.get(price_id, 0) + 1
            held.setdefault(price_id, []).append(hold)
    return {p: PriceUsage(counts[p], tuple(lines[p]), holds=tuple(held[p])) for p in counts}

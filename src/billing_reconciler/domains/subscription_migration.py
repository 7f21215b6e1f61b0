"""Price migration (`reconcile.price_migration`, DESIGN §16): which items of a subscription
move off a superseded price and to what (`price_moves`), and the `at_renewal` schedule that
moves them at the period end. The `now` policy's item swap is an update
(`subscription_items`). Pure."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from billing_reconciler.domains.price_impact import (
    HOLD_SCHEDULED,
    MIGRATION_NONE,
    SETTING_PRICE_MIGRATION,
    MigrationHold,
    held_back,
)
from billing_reconciler.domains.subscription_draft import Draft
from billing_reconciler.domains.subscription_keys import REPLACES, SCHEDULES
from billing_reconciler.domains.subscription_phases import (
    Phase,
    current_phase_items,
    current_phase_of,
    phase_params,
    write_schedule,
)
from billing_reconciler.domains.subscription_types import AccountSubscriptions
from billing_reconciler.model_subscriptions import (
    DesiredSubscription,
    ItemRecord,
    ScheduleRecord,
    SubscriptionRecord,
)
from billing_reconciler.planning.plan import FieldChange, Ref


def move_params(target: str | Ref, item: ItemRecord) -> dict[str, Any]:
    return {"price": target, **({REPLACES: item.price_id} if isinstance(target, Ref) else {})}


def shown_target(target: str | Ref) -> str:
    return f"new {target.key}" if isinstance(target, Ref) else target


def price_moves(
    draft: Draft, bundle: AccountSubscriptions, sub: SubscriptionRecord, *, hold: MigrationHold
) -> dict[str, str | Ref]:
    """Per item id of `sub`, the price it moves to under `reconcile.price_migration`
    (DESIGN §16): an item on a superseded id of a catalog price moves to the price's current
    id; one on a price the catalog's next apply supersedes (`CatalogPrice.replacing`, in a
    plan made before that apply) to a `Ref` to the price's key, resolved when the move runs
    (after the catalog's apply). None under `none`, nor off a protected price (a warning
    counts them), nor off an inactive one, nor while `price_impact.held_back` holds it (the
    rule the catalog's impact line counts by): a pending change or cancel (it moves or ends
    at its period end anyway), or under `now` a schedule on it (a notice: its phases would
    put the old items back)."""
    held = held_back(draft.migration, hold)
    if draft.migration == MIGRATION_NONE or (held is not None and held != HOLD_SCHEDULED):
        return {}
    moves: dict[str, str | Ref] = {}
    protected: list[str] = []
    for item in sub.items:
        price = draft.price_of(item)
        if price is None or item.item_id is None or not price.active:
            continue
        target: str | Ref | None = None
        if price.replacing:
            target = Ref(price.key)
        elif price.stripe_id and item.price_id != price.stripe_id:
            target = price.stripe_id
        if target is None:
            continue
        if price.protect:
            protected.append(price.key)
            continue
        moves[item.item_id] = target
    for key in set(protected):
        draft.protected[key] = draft.protected.get(key, 0) + 1
    if moves and held == HOLD_SCHEDULED:
        draft.notice(
            bundle.org_id,
            sub.stripe_id,
            f"price migration waits: {sub.stripe_id} is on a subscription schedule",
        )
        return {}
    return moves


def migrate_at_renewal(
    draft: Draft,
    bundle: AccountSubscriptions,
    sub: SubscriptionRecord,
    schedule: ScheduleRecord | None,
    plan: str,
    desired: DesiredSubscription,
    moves: Mapping[str, str | Ref],
) -> None:
    """`at_renewal`: a schedule whose current phase (the items as they are) ends at the
    period end and whose next phase bills the moved items for one interval, then releases
    the subscription: Stripe swaps the prices at the renewal, nothing is prorated, and the
    renewal's invoice is the first on the new price."""
    end = sub.current_period_end
    if end is None:
        draft.notice(bundle.org_id, sub.stripe_id, "price migration waits: no current period seen")
        return
    start, _ = current_phase_of(sub, schedule, draft.context.now)
    items = current_phase_items(draft, bundle, sub, plan)
    moved = tuple(
        (
            moves[i.item_id] if i.item_id is not None and i.item_id in moves else i.price_id,
            quantity,
        )
        for i, (_, quantity) in zip(sub.items, items, strict=True)
    )
    extra = {
        "proration_behavior": "none",
        "duration": {"interval": desired.interval, "interval_count": 1},
    }
    renewal = phase_params(plan=plan, items=moved, extra=extra)  # type: ignore[arg-type]
    renewal["items"] = [
        {**written, **({REPLACES: i.price_id} if isinstance(written["price"], Ref) else {})}
        for written, i in zip(renewal["items"], sub.items, strict=True)
    ]
    phases = (
        Phase(plan, items, end, phase_params(plan=plan, items=items, start=start, end=end)),
        Phase(plan, moved, None, renewal),  # type: ignore[arg-type]
    )
    changes = tuple(
        FieldChange(f"price[{price.key}]", i.price_id, shown_target(moves[i.item_id]))
        for i in sub.items
        if i.item_id is not None and i.item_id in moves and (price := draft.price_of(i))
    )
    before = len(draft.phases.get(SCHEDULES, ()))
    write_schedule(
        draft,
        bundle,
        sub,
        schedule,
        phases=phases,
        end_behavior="release",
        changes=(*changes, FieldChange("effective_at", None, end)),
    )
    written = draft.phases.get(SCHEDULES, [])
    if len(written) > before:
        step = written[-1]
        written[-1] = dataclasses.replace(
            step,
            params={**step.params, "settings": [SETTING_PRICE_MIGRATION]},
            causes=(SETTING_PRICE_MIGRATION,),
        )

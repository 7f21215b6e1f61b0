"""What a schedule holds for an account (DESIGN §16): a pending plan change (the current
phase ending at the period end, or now, then the new plan's for one interval), a cancel at
period end (the current phase only, `end_behavior: cancel`), and a cancelled upcoming change
(the current phase only, `end_behavior: release`). Pure."""

from __future__ import annotations

from typing import Any

from billing_reconciler.domains.subscription_draft import Draft
from billing_reconciler.domains.subscription_phases import (
    Phase,
    current_phase_items,
    current_phase_of,
    observed_phases,
    phase_params,
    refuse_for_another_intent,
    write_schedule,
)
from billing_reconciler.domains.subscription_shape import Refusal
from billing_reconciler.domains.subscription_types import AccountSubscriptions
from billing_reconciler.model_subscriptions import (
    CollectionMethod,
    PendingChange,
    ScheduleRecord,
    SubscriptionRecord,
)
from billing_reconciler.planning.plan import FieldChange


def write_change(
    draft: Draft,
    bundle: AccountSubscriptions,
    sub: SubscriptionRecord,
    schedule: ScheduleRecord | None,
    plan: str,
    pending: PendingChange,
) -> None:
    """A pending plan change: the current phase ends at the period end (or now), the new
    plan's phase follows for one interval and the schedule then releases the subscription."""
    assert pending.plan is not None
    if refuse_for_another_intent(draft, bundle, sub, "plan change"):
        return
    target_name = pending.plan.lower()
    refused = _refuse_change(draft, plan, target_name)
    if refused is not None:
        draft.notice(bundle.org_id, sub.stripe_id, f"refused: {refused}")
        return
    target = draft.desired(bundle, target_name, target=True)
    if isinstance(target, Refusal):
        draft.notice(bundle.org_id, sub.stripe_id, f"refused: {target.reason}")
        return
    now = draft.context.now
    if schedule is not None:
        observed = observed_phases(schedule, now)
        if observed and observed[0].plan == target_name:
            # The change's phase is the current one: it took effect (the boundary passed
            # while nothing reconciled); the mirror follows the subscription, nothing to write.
            return
    start, _ = current_phase_of(sub, schedule, now)
    items = current_phase_items(draft, bundle, sub, plan)
    period_end = sub.current_period_end
    end: int | str | None = "now" if pending.immediate else period_end
    if end is None:
        draft.notice(bundle.org_id, sub.stripe_id, "plan change waits: no current period seen")
        return
    if isinstance(end, int) and start is not None and end <= start:
        draft.notice(
            bundle.org_id,
            sub.stripe_id,
            "plan change waits: the current phase would end before it starts (a period Stripe "
            "has moved on from; the next observe sees the new one)",
        )
        return
    change = draft.billing.plan_change
    proration = (
        change.immediate_proration_behavior if pending.immediate else change.proration_behavior
    )
    next_extra: dict[str, Any] = {
        "proration_behavior": proration,
        "collection_method": change.collection_method,
        "automatic_tax": {"enabled": target.automatic_tax},
        "duration": {"interval": target.interval, "interval_count": 1},
    }
    if change.collection_method == CollectionMethod.SEND_INVOICE.value:
        next_extra["invoice_settings"] = {"days_until_due": bundle.account.due_in_days}
    target_items = tuple((i.price_id, i.quantity) for i in target.items)
    phases = (
        Phase(plan, items, end, phase_params(plan=plan, items=items, start=start, end=end)),
        Phase(
            target_name,
            target_items,
            None,
            phase_params(plan=target_name, items=target_items, extra=next_extra),
        ),
    )
    extra = {"proration_behavior": proration} if pending.immediate else {}
    write_schedule(
        draft,
        bundle,
        sub,
        schedule,
        phases=phases,
        end_behavior="release",
        changes=(
            FieldChange("plan", plan, target_name),
            FieldChange("effective_at", None, end),
        ),
        extra=extra,
    )


def _refuse_change(draft: Draft, plan: str, target: str) -> str | None:
    if target == plan:
        return f"plan change to {target!r}: it is the current plan"
    catalog_plan = draft.catalog.plan(target)
    if catalog_plan is None:
        return f"plan change to {target!r}: not in the catalog"
    if not catalog_plan.active:
        return f"plan change to {target!r}: the plan is inactive"
    return None


def write_period_end_cancel(
    draft: Draft,
    bundle: AccountSubscriptions,
    sub: SubscriptionRecord,
    schedule: ScheduleRecord | None,
    plan: str,
) -> None:
    """The schedule's last (current) phase ends at the period end, `end_behavior: cancel`."""
    if refuse_for_another_intent(draft, bundle, sub, "cancel at period end"):
        return
    if schedule is None and sub.cancel_at_period_end:
        return  # already cancelling at period end (set in Stripe)
    end = sub.current_period_end
    if end is None:
        draft.notice(bundle.org_id, sub.stripe_id, "cancel waits: no current period seen")
        return
    start, _ = current_phase_of(sub, schedule, draft.context.now)
    items = current_phase_items(draft, bundle, sub, plan)
    phase = Phase(plan, items, end, phase_params(plan=plan, items=items, start=start, end=end))
    write_schedule(
        draft,
        bundle,
        sub,
        schedule,
        phases=(phase,),
        end_behavior="cancel",
        changes=(FieldChange("cancel_at", sub.cancel_at, end),),
    )


def write_cancel_upcoming(
    draft: Draft,
    bundle: AccountSubscriptions,
    sub: SubscriptionRecord,
    schedule: ScheduleRecord,
    plan: str,
) -> None:
    """No change is pending: a schedule holding one (a later phase, or a cancel at its end)
    is put back to the current phase only, which then releases the subscription."""
    observed = observed_phases(schedule, draft.context.now)
    if len(observed) <= 1 and schedule.end_behavior == "release":
        return
    start, _ = current_phase_of(sub, schedule, draft.context.now)
    items = current_phase_items(draft, bundle, sub, plan)
    end = observed[0].end if observed and observed[0].end is not None else sub.current_period_end
    upcoming = observed[1].plan if len(observed) > 1 else None
    phase = Phase(plan, items, end, phase_params(plan=plan, items=items, start=start, end=end))
    changes = (
        (FieldChange("upcoming_plan", upcoming, None),)
        if upcoming is not None
        else (FieldChange("cancel_at", sub.cancel_at, None),)
    )
    write_schedule(
        draft,
        bundle,
        sub,
        schedule,
        phases=(phase,),
        end_behavior="release",
        changes=changes,
    )

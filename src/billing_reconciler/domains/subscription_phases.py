"""Subscription schedules as the rules see and write them (DESIGN §16): the schedule of ours
in force on a subscription, its phases from the current one on, how desired phases compare
with observed ones, and the schedule step that writes them (`from_subscription` then the
phases and our marker: two calls, the executor's). Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from billing_reconciler.domains.subscription_draft import Draft
from billing_reconciler.domains.subscription_keys import (
    OP_SCHEDULE_CREATE,
    OP_SCHEDULE_UPDATE,
    SCHEDULE_STEP,
    SCHEDULES,
    SETTING_AUTO_TAX,
    subscription_schedule_key,
)
from billing_reconciler.domains.subscription_shape import Refusal
from billing_reconciler.domains.subscription_types import AccountSubscriptions, CatalogPrice
from billing_reconciler.model_subscriptions import (
    ItemRecord,
    SchedulePhase,
    ScheduleRecord,
    SubscriptionOwner,
    SubscriptionRecord,
)
from billing_reconciler.planning.plan import Action, FieldChange, Reason, Step, canonical_json


def schedule_of(
    draft: Draft, bundle: AccountSubscriptions, sub: SubscriptionRecord
) -> tuple[ScheduleRecord | None, bool]:
    """The schedule of ours in force on `sub` (None: none), and whether one not ours is
    (then left alone: no schedule work)."""
    for schedule in bundle.schedules:
        if not schedule.in_force:
            continue
        if schedule.subscription_id != sub.stripe_id and schedule.stripe_id != sub.schedule_id:
            continue
        owner = schedule.owner
        if owner is not None and owner.installation_id == draft.installation_id:
            return schedule, False
        draft.notice(
            bundle.org_id,
            schedule.stripe_id,
            f"schedule {schedule.stripe_id} on {sub.stripe_id} was not made by us: left alone",
        )
        return None, True
    return None, False


def of_another_intent(bundle: AccountSubscriptions, sub: SubscriptionRecord) -> bool:
    """`sub` was made for another intent than the account's, on another plan: the live free
    subscription of the default intent beside a paid intent Stripe refused (no subscription
    made for it). The intent's pending change or cancel is not this one's to carry out. (An
    adopted one under a new intent id bills the intent's plan: it is the intent's.)"""
    intent, owner = bundle.intent, sub.owner
    if intent is None or owner is None or not owner.intent_id:
        return False
    if owner.intent_id == intent.intent_id:
        return False
    return (owner.plan or "").lower() != (intent.plan or "").lower()


def refuse_for_another_intent(
    draft: Draft, bundle: AccountSubscriptions, sub: SubscriptionRecord, what: str
) -> bool:
    """True (and a notice) when `sub` is another intent's (`of_another_intent`): no
    schedule is written on it for this intent's `what`."""
    if not of_another_intent(bundle, sub):
        return False
    intent_id = bundle.intent.intent_id if bundle.intent is not None else ""
    draft.notice(
        bundle.org_id,
        sub.stripe_id,
        f"the {what} of intent {intent_id} has no subscription of its own: nothing is "
        f"scheduled on {sub.stripe_id} (another intent's)",
    )
    return True


@dataclass(frozen=True, slots=True)
class Phase:
    """A phase as the rules compare it: plan, items, end (None: not compared), and its
    `automatic_tax` (None: not set on the phase; `write_schedule` sets it on every phase it
    writes from the phase plan's desired subscription)."""

    plan: str
    items: tuple[tuple[str, int | None], ...]
    end: int | str | None
    params: Mapping[str, Any]
    automatic_tax: bool | None = None


def current_phase_of(
    sub: SubscriptionRecord, schedule: ScheduleRecord | None, now: int
) -> tuple[int | None, tuple[tuple[str, int | None], ...]]:
    """The start of the current phase (the schedule's, or the subscription's period) and the
    items it bills (the subscription's)."""
    start = sub.current_period_start
    if schedule is not None:
        if schedule.current_phase is not None:
            start = schedule.current_phase[0]
        else:
            for phase in schedule.phases:
                if phase.start <= now and (phase.end is None or phase.end > now):
                    start = phase.start
    return start, tuple((i.price_id, i.quantity) for i in sub.items)


def wanted_quantity(price: CatalogPrice, item: ItemRecord, seats: int, *, incremental: bool) -> int:
    """The quantity a licensed item should bill: the seats (`incremental`: never fewer than
    it has) for a per-seat price, else 1."""
    wanted = seats if price.per_seat else 1
    if price.per_seat and incremental and item.quantity is not None:
        wanted = max(wanted, item.quantity)
    return wanted


def current_phase_items(
    draft: Draft, bundle: AccountSubscriptions, sub: SubscriptionRecord, plan: str
) -> tuple[tuple[str, int | None], ...]:
    """The items a schedule's current phase is written with: the subscription's prices, at the
    quantities this plan's update of the subscription sets (the seats as they are now), so
    a schedule write after a member change never puts the old quantity back."""
    desired = draft.desired(bundle, plan)
    incremental = draft.billing.product.seat_change_behavior == "incremental"
    items: list[tuple[str, int | None]] = []
    for item in sub.items:
        price = draft.price_of(item)
        if (
            isinstance(desired, Refusal)
            or price is None
            or price.metered
            or item.item_id is None
            or item.quantity is None
        ):
            items.append((item.price_id, item.quantity))
            continue
        items.append(
            (
                item.price_id,
                wanted_quantity(price, item, desired.seats or 1, incremental=incremental),
            )
        )
    return tuple(items)


def phase_params(
    *,
    plan: str,
    items: Iterable[tuple[str, int | None]],
    start: int | None = None,
    end: int | str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "items": [{"price": p, **({} if q is None else {"quantity": q})} for p, q in items],
        "metadata": {"plan": plan},
    }
    if start is not None:
        params["start_date"] = start
    if end is not None:
        params["end_date"] = end
    return {**params, **(extra or {})}


def observed_phases(schedule: ScheduleRecord, now: int) -> tuple[Phase, ...]:
    """The schedule's phases from the current one on: Stripe's `current_phase` when it
    names one (the customer's test clock may be ahead of `now`: a phase boundary the clock
    passed while nothing reconciled is behind it), else the phases not ended by `now`."""
    if schedule.current_phase is not None:
        start, end = schedule.current_phase
        # A phase ended at its own start (an immediate change's) is not the current one.
        phases = [
            p
            for p in schedule.phases
            if p.start >= start and (p.end is None or p.end > p.start or p.end == end)
        ]
    else:
        phases = [p for p in schedule.phases if p.end is None or p.end > now]
    return tuple(_observed_phase(p) for p in phases)


def _observed_phase(phase: SchedulePhase) -> Phase:
    return Phase(
        plan=(phase.plan or "").lower(),
        items=tuple((i.price_id, i.quantity) for i in phase.items),
        end=phase.end,
        params={},
        automatic_tax=phase.automatic_tax,
    )


def _same(observed: Sequence[Phase], desired: Sequence[Phase]) -> bool:
    """Phases agree on plan and (but the current phase's, which follows the subscription)
    items, and on ends where the desired one names a time. Proration and collection are
    `plan_change.*` settings, read when a change is made: never compared."""
    if len(observed) != len(desired):
        return False
    for index, (seen, wanted) in enumerate(zip(observed, desired, strict=True)):
        if seen.plan != wanted.plan:
            return False
        if index > 0 and seen.items != wanted.items:
            return False
        if wanted.end == "now":
            return False  # an immediate change not taken effect yet (else no change pends)
        if isinstance(wanted.end, int) and seen.end != wanted.end:
            return False
    return True


def _tax_changes(observed: Sequence[Phase], desired: Sequence[Phase]) -> tuple[FieldChange, ...]:
    """Where a later phase's `automatic_tax` is not the one its plan asks for (the current
    phase's is the subscription's own, the update step's). Every phase we write carries it;
    a phase that leaves it unset (not written by these rules) is not compared: it takes the
    schedule's `default_settings`, which is not observed."""
    changes: list[FieldChange] = []
    for seen, wanted in list(zip(observed, desired, strict=True))[1:]:
        if (
            wanted.automatic_tax is not None
            and seen.automatic_tax is not None
            and seen.automatic_tax != wanted.automatic_tax
        ):
            changes.append(FieldChange("automatic_tax", seen.automatic_tax, wanted.automatic_tax))
    return tuple(changes[:1])


def _with_tax(
    draft: Draft, bundle: AccountSubscriptions, sub: SubscriptionRecord, phase: Phase, first: bool
) -> Phase:
    """`phase` with `automatic_tax` as its plan's desired subscription has it
    (`billing.stripe_auto_tax`, forced off for a plan that costs 0), on the phase itself:
    a phase without it takes the schedule's `default_settings`, and a write of the current
    phase puts that on the subscription at once."""
    params = dict(phase.params)
    if "automatic_tax" in params:
        enabled = bool((params["automatic_tax"] or {}).get("enabled"))
    else:
        desired = draft.desired(bundle, phase.plan, target=not first)
        if not isinstance(desired, Refusal):
            enabled = desired.automatic_tax
        elif first:
            enabled = sub.automatic_tax
        else:
            return phase
        params["automatic_tax"] = {"enabled": enabled}
    return Phase(phase.plan, phase.items, phase.end, params, automatic_tax=enabled)


def write_schedule(
    draft: Draft,
    bundle: AccountSubscriptions,
    sub: SubscriptionRecord,
    schedule: ScheduleRecord | None,
    *,
    phases: Sequence[Phase],
    end_behavior: str,
    changes: tuple[FieldChange, ...],
    extra: Mapping[str, Any] | None = None,
) -> None:
    phases = tuple(_with_tax(draft, bundle, sub, p, i == 0) for i, p in enumerate(phases))
    settings: list[str] = []
    if schedule is not None and schedule.end_behavior == end_behavior:
        observed = observed_phases(schedule, draft.context.now)
        if _same(observed, phases):
            taxed = _tax_changes(observed, phases)
            if not taxed:
                return
            # Only the fleet setting differs: a rewrite `billing.stripe_auto_tax` causes (the
            # subscription's own flag is the update step's), shown and guarded as one.
            changes, settings = taxed, [SETTING_AUTO_TAX]
    intent_id = bundle.intent.intent_id if bundle.intent is not None else ""
    owner = SubscriptionOwner(
        installation_id=draft.installation_id,
        org_id=bundle.org_id,
        plan=phases[-1].plan,
        intent_id=intent_id,
        revision=draft.context.state.revision,
    )
    written = [dict(p.params) for p in phases]
    end = phases[0].end
    if sub.status == "trialing" and sub.trial_end is not None and isinstance(end, int):
        # The current phase keeps the running trial (a phase written without one is no
        # trial: Stripe would end it now and bill); an immediate change ("now") ends it.
        written[0]["trial_end"] = min(sub.trial_end, end)
    params: dict[str, Any] = {
        "op": OP_SCHEDULE_UPDATE if schedule is not None else OP_SCHEDULE_CREATE,
        "end_behavior": end_behavior,
        "phases": written,
        **(extra or {}),
        "settings": settings,
    }
    # The marker goes with every phase write (Stripe's `from_subscription` takes none).
    params["metadata"] = owner.as_metadata()
    if schedule is None:
        params["from_subscription"] = sub.stripe_id
    else:
        params["schedule"] = schedule.stripe_id
    draft.add(
        SCHEDULES,
        Step(
            action=Action.UPDATE if schedule is not None else Action.CREATE,
            kind=SCHEDULE_STEP,
            key=subscription_schedule_key(bundle.org_id),
            reason=Reason.DESIRED_CHANGED,
            params=params,
            changes=changes,
            stripe_id=schedule.stripe_id if schedule is not None else sub.stripe_id,
            idempotency_key=draft.key(
                "schedule",
                sub.stripe_id,
                intent_id,
                canonical_json({k: v for k, v in params.items() if k != "metadata"}),
            ),
            causes=tuple(settings),
        ),
    )

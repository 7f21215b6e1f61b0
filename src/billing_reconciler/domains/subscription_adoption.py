"""Adoption after a lost store (Stripe is the inventory): an active account whose intent is
none, or only the default plan's, takes a live subscription of ours on its customer made for
another intent as its intent, with what our schedule on it (or Stripe's cancel at period end)
holds: a pending plan change, or a cancel at period end. Until the host sends the org's
members again, the adopted subscription's seat quantity is held at what Stripe shows
(`held_seats`): an empty member list after a lost store is no proof the seats are gone. Pure."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from billing_reconciler.domains.subscription_draft import Draft, phase_plan, plan_of
from billing_reconciler.domains.subscription_types import (
    SOURCE_CONTRACT,
    SOURCE_DEFAULT_PLAN,
    AccountSubscriptions,
    CancelRequest,
    SubscriptionIntent,
)
from billing_reconciler.model_subscriptions import PendingChange, ScheduleRecord, SubscriptionRecord

#: `requested_by` of an adopted intent (`adopted <sub_id>`; the store writes the same).
ADOPTED_BY: Final = "adopted "


@dataclass(frozen=True, slots=True)
class Adoption:
    """A live subscription of ours the store has no intent for (Stripe is the inventory): its
    plan becomes the account's intent, under the intent id it was created for."""

    sub: SubscriptionRecord
    intent: SubscriptionIntent
    replaces: str | None  # the store's current intent (a default plan's), None: none

    def params(self) -> dict[str, Any]:
        pending = self.intent.pending_change
        params: dict[str, Any] = {
            "intent_id": self.intent.intent_id,
            "plan": self.intent.plan,
            "replaces": self.replaces,
        }
        if pending is not None and self.intent.cancel is not None:
            # A cancel at period end (DESIGN §16: the store's cancel request and its pending
            # `{plan: null, reason: cancel}`), recovered from Stripe's state.
            params["cancel"] = {"immediate": False, "effective_at": pending.effective_at}
        elif pending is not None:
            params["pending_change"] = {"plan": pending.plan, "effective_at": pending.effective_at}
        return params


def adoption_of(
    draft: Draft, bundle: AccountSubscriptions, ours: Sequence[SubscriptionRecord]
) -> Adoption | None:
    """After a lost store (or with a store that never knew it), an active online account
    whose intent is none, or only the default plan's with nothing pending (what re-creating
    the org records), adopts a live subscription of ours on its customer made for another
    intent: a paid one before a free one (a default plan never replaces a paid subscription),
    else the newest; nothing is created beside it. A free one of the default intent's own
    that is live keeps the intent when every other live one is free too (those are replaced
    by it)."""
    account, intent = bundle.account, bundle.intent
    if account.state != "active" or account.offline or account.stripe_customer_id is None:
        return None
    if intent is not None and (
        intent.source != SOURCE_DEFAULT_PLAN
        or intent.pending_change is not None
        or intent.cancel is not None
    ):
        return None
    mine = intent.intent_id if intent is not None else None
    live = [s for s in ours if s.live and s.owner is not None]
    others = [
        (s, plan)
        for s in live
        if s.owner is not None
        and s.owner.intent_id
        and s.owner.intent_id != mine
        and (plan := plan_of(draft, s)) is not None
    ]
    if not others:
        return None
    paid = [(s, plan) for s, plan in others if not draft.free(bundle, plan)]
    if not paid and any(s.owner is not None and s.owner.intent_id == mine for s in live):
        return None
    sub, plan = max(paid or others, key=lambda pair: (pair[0].created, pair[0].stripe_id))
    assert sub.owner is not None
    pending = _adopted_change(draft, bundle, sub, plan)
    adopted = SubscriptionIntent(
        intent_id=sub.owner.intent_id,
        plan=plan,
        source="subscribe",
        pending_change=pending,
        cancel=(
            CancelRequest(immediate=False)
            if pending is not None and pending.reason == "cancel"
            else None
        ),
        requested_by=f"{ADOPTED_BY}{sub.stripe_id}",
        created_at=sub.created or 0,
    )
    return Adoption(sub=sub, intent=adopted, replaces=mine)


def _adopted_change(
    draft: Draft, bundle: AccountSubscriptions, sub: SubscriptionRecord, plan: str
) -> PendingChange | None:
    """What our schedule on an adopted subscription holds (a lost store's pending change or
    cancel at period end): the plan of the phase after the current one (its `plan` marker,
    else its items' prices), effective at that phase's start; else, for a schedule that
    ends with `end_behavior: cancel`, a cancel (`plan` None, reason `cancel`) at its last
    phase's end (how a cancel at period end is held while a schedule exists, DESIGN §16).
    Without a schedule, a subscription Stripe cancels at its period end (not a trial's
    end: that is the trial's `behavior_after_trial`) is a cancel then too. None: nothing
    pending, a schedule not ours, or no later phase on another plan (the next plan keeps
    what the schedule holds)."""
    for schedule in bundle.schedules:
        if not schedule.in_force:
            continue
        if schedule.subscription_id != sub.stripe_id and schedule.stripe_id != sub.schedule_id:
            continue
        owner = schedule.owner
        if owner is None or owner.installation_id != draft.installation_id:
            return None
        return _scheduled_change(draft, schedule, plan)
    if sub.cancel_at_period_end and sub.status != "trialing":
        return PendingChange(
            plan=None, effective_at=sub.cancel_at or sub.current_period_end, reason="cancel"
        )
    return None


def _scheduled_change(draft: Draft, schedule: ScheduleRecord, plan: str) -> PendingChange | None:
    """A later phase on another plan is the change (we never write one that then cancels);
    else `end_behavior: cancel` is the cancel at the last phase's end."""
    upcoming = sorted(
        (p for p in schedule.phases if p.start > draft.context.now), key=lambda p: p.start
    )
    target = phase_plan(draft, upcoming[0]) if upcoming else None
    if target is not None and target != plan:
        return PendingChange(plan=target, effective_at=upcoming[0].start)
    if schedule.end_behavior != "cancel":
        return None
    ends = [p.end for p in schedule.phases if p.end is not None]
    return PendingChange(plan=None, effective_at=max(ends) if ends else None, reason="cancel")


def held_seats(
    draft: Draft, bundle: AccountSubscriptions, current: SubscriptionRecord
) -> AccountSubscriptions:
    """`bundle` with its seats held at `current`'s per-seat quantity in Stripe while its
    intent is an adopted one (`requested_by` `adopted <sub_id>`: a lost store's) and the
    store knows no member of the org: after a lost store the host re-sends the org before
    its members, and the rules must not cut every per-seat customer to one seat and credit
    the difference meanwhile (the subscription's update, and the phases of a schedule
    written for it, keep Stripe's quantity). The first member the host sends ends it: from
    then on the quantity follows the members (`seat_change_behavior`). A notice says so.
    A contract customer's (its declared `seats`, or its own intent) is never held."""
    intent = bundle.intent
    if (
        intent is None
        or intent.source == SOURCE_CONTRACT
        or not (intent.requested_by or "").startswith(ADOPTED_BY)
        or bundle.seats > 0
    ):
        return bundle
    quantity = next(
        (
            item.quantity
            for item in current.items
            if item.quantity is not None
            and (price := draft.price_of(item)) is not None
            and price.per_seat
        ),
        None,
    )
    if quantity is None or quantity <= 1:
        return bundle
    draft.notice(
        bundle.org_id,
        current.stripe_id,
        f"seats held at {quantity} (Stripe's quantity): the subscription was adopted after a "
        "lost store and the store knows no member of the org yet; re-send the org's members "
        "(PUT .../members/{user}) and the quantity follows them",
    )
    return dataclasses.replace(bundle, seats=quantity)

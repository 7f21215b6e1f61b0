"""The store's mirror of each subscription of ours (DESIGN §16): a bookkeeping restore when
Stripe shows other facts than the mirror, carrying the intent's move when a pending change
took effect and the adoption of a lost store's subscription. Pure."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from billing_reconciler.domains.subscription_adoption import Adoption
from billing_reconciler.domains.subscription_draft import Draft
from billing_reconciler.domains.subscription_keys import MIRROR_STEP
from billing_reconciler.domains.subscription_types import AccountSubscriptions, SubscriptionMirror
from billing_reconciler.model_subscriptions import SubscriptionRecord
from billing_reconciler.planning.plan import Action, Reason, Step, canonical_json


def plan_mirrors(
    draft: Draft,
    bundle: AccountSubscriptions,
    ours: Sequence[SubscriptionRecord],
    adoption: Adoption | None = None,
) -> None:
    """The store's mirror of each subscription of ours written again where Stripe shows
    other facts (status, periods, trial end, cancel times, schedule, seats: DESIGN §16), and
    the intent moved on when its pending change took effect (the subscription bills the
    change's plan): `params["intent"]` = the plan now held, no pending change. The store adds
    a mirrored `active`/`trialing` plan to the account's plan history."""
    stored = {m.stripe_subscription_id: m for m in bundle.mirrors}
    intent = bundle.intent
    for sub in ours:
        seen = _mirror_of(draft, sub)
        moved = (
            intent is not None
            and sub.live
            and intent.pending_change is not None
            and intent.pending_change.plan is not None
            and intent.pending_change.plan.lower() == seen.plan
            and (intent.plan or "").lower() != seen.plan
        )
        adopted = adoption is not None and adoption.sub.stripe_id == sub.stripe_id
        if stored.get(sub.stripe_id) == seen and not moved and not adopted:
            continue
        params: dict[str, Any] = {
            "org_id": bundle.org_id,
            "account_id": bundle.account.account_id,
            "mirror": {f.name: getattr(seen, f.name) for f in dataclasses.fields(seen)},
        }
        if adopted and adoption is not None:
            params["adopt"] = adoption.params()
        if moved and intent is not None:
            params["intent"] = {
                "intent_id": intent.intent_id,
                "plan": seen.plan,
                "pending_change": None,
            }
        draft.restores.append(
            Step(
                action=Action.UPDATE if sub.stripe_id in stored else Action.CREATE,
                kind=MIRROR_STEP,
                key=f"{MIRROR_STEP}/{bundle.org_id}/{sub.stripe_id}",
                reason=Reason.BOOKKEEPING,
                params=params,
                stripe_id=sub.stripe_id,
                idempotency_key=draft.key("mirror", sub.stripe_id, canonical_json(params)),
            )
        )


def _mirror_of(draft: Draft, sub: SubscriptionRecord) -> SubscriptionMirror:
    seats = None
    for item in sub.items:
        price = draft.price_of(item)
        if price is not None and price.per_seat:
            seats = item.quantity
            break
    return SubscriptionMirror(
        stripe_subscription_id=sub.stripe_id,
        plan=(sub.owner.plan if sub.owner is not None else "").lower(),
        status=sub.status,
        seats=seats,
        trial_end=sub.trial_end,
        current_period_start=sub.current_period_start,
        current_period_end=sub.current_period_end,
        cancel_at=sub.cancel_at,
        canceled_at=sub.canceled_at,
        schedule_id=sub.schedule_id,
    )

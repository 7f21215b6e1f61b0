"""Contract customers' declared plans (DESIGN §15: the YAML wins): an account declaring a
plan in `desired/customers/` is planned under a synthetic intent for that plan, derived from
org and plan, instead of the store's intent. Pure."""

from __future__ import annotations

import dataclasses
import hashlib

from billing_reconciler.domains.subscription_draft import Draft, billed_plan
from billing_reconciler.domains.subscription_types import (
    SOURCE_CONTRACT,
    AccountSubscriptions,
    SubscriptionIntent,
)
from billing_reconciler.model_subscriptions import PendingChange


def contract_intent_id(org_id: str, plan: str) -> str:
    """The synthetic intent id of a contract customer's declared plan: derived from the org
    and the plan (never random), so a rerun after a crash derives the same creation key."""
    part = hashlib.sha256(f"{org_id}\x1f{plan.lower()}".encode()).hexdigest()[:20]
    return f"contract_{part}"


def contract_bundle(
    installation_id: str, bundle: AccountSubscriptions, plan: str, seats: int | None
) -> AccountSubscriptions:
    """`bundle` as its contract customer declares it (DESIGN §15: the YAML wins): the
    intent is the declared `plan` whatever the store's intent says (a subscribe, change or
    cancel through the API is not followed), under a synthetic intent id derived from org and
    plan, without a trial. A live subscription of ours on another plan gets a pending change
    to the declared plan at its period end (`billing.plan_change` has no immediate policy).
    A declared `seats` is the per-seat quantity instead of the member count."""
    target = plan.lower()
    live = [
        s
        for s in bundle.subscriptions
        if s.live and s.owner is not None and s.owner.installation_id == installation_id
    ]
    intent: SubscriptionIntent
    if live:
        current = max(live, key=lambda s: (s.created, s.stripe_id))
        assert current.owner is not None
        intent_id = current.owner.intent_id or contract_intent_id(bundle.org_id, target)
        current_plan = billed_plan(current, target)
        intent = SubscriptionIntent(
            intent_id=intent_id,
            plan=current_plan,
            source=SOURCE_CONTRACT,
            skip_trial=True,
            pending_change=(
                None if current_plan == target else PendingChange(plan=target, effective_at=None)
            ),
        )
    else:
        intent = SubscriptionIntent(
            intent_id=contract_intent_id(bundle.org_id, target),
            plan=target,
            source=SOURCE_CONTRACT,
            skip_trial=True,
        )
    return dataclasses.replace(
        bundle, intent=intent, seats=bundle.seats if seats is None else seats
    )


def apply_contract(draft: Draft, bundle: AccountSubscriptions) -> AccountSubscriptions:
    spec = draft.contracts.get(bundle.org_id)
    if spec is None or spec.plan is None:
        return bundle  # not a contract customer, or one without a declared plan: as today
    return contract_bundle(draft.installation_id, bundle, spec.plan, spec.seats)

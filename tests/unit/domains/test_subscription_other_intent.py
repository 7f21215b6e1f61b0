"""A schedule is never written on a subscription that belongs to another intent (tester T1
finding 7, rules part): the paid intent Stripe refused (no subscription made for it) with a
pending change, or a cancel at period end, beside the live free subscription of the default
intent it was to replace; nothing of that pending change lands on the free one."""

from __future__ import annotations

import dataclasses

import pytest

from billing_reconciler.domains.subscription_rules import SCHEDULE_STEP
from billing_reconciler.model_subscriptions import (
    PendingChange,
    SubscriptionOwner,
    SubscriptionRecord,
)
from tests.unit.domains.test_subscription_rules import (
    INSTALLATION,
    _bundle,
    _intent,
    _plan,
    _sub,
)


def _free_of_the_default_intent() -> SubscriptionRecord:
    owner = SubscriptionOwner(
        installation_id=INSTALLATION, org_id="org-0", plan="free_monthly", intent_id="int_b"
    )
    return dataclasses.replace(_sub("free_monthly"), stripe_id="sub_free", owner=owner)


@pytest.mark.parametrize(
    "pending",
    [
        PendingChange(plan="team_yearly", effective_at=None),
        PendingChange(plan="team_yearly", effective_at=None, immediate=True),
        PendingChange(plan=None, effective_at=None, reason="cancel"),
    ],
    ids=["period-end change", "immediate change", "cancel at period end"],
)
def test_a_refused_intents_pending_change_writes_nothing_on_another_intents_subscription(
    pending: PendingChange,
) -> None:
    free = _free_of_the_default_intent()
    refused = _intent("team_monthly", intent_id="int_a", pending_change=pending)
    plan = _plan(_bundle(intent=refused, subs=(free,)))
    assert [s for s in plan.steps if s.kind == SCHEDULE_STEP] == []
    # Nor the yearly plan's monthly seat billing, nor any other write on it.
    assert [s for s in plan.steps if s.stripe_id == free.stripe_id] == []
    assert any(free.stripe_id in n.message and "int_a" in n.message for n in plan.notices), (
        plan.notices
    )


def test_the_intents_own_subscription_still_gets_its_change() -> None:
    own = dataclasses.replace(
        _sub("team_monthly"),
        owner=SubscriptionOwner(
            installation_id=INSTALLATION, org_id="org-0", plan="team_monthly", intent_id="int_a"
        ),
    )
    intent = _intent(
        "team_monthly",
        intent_id="int_a",
        pending_change=PendingChange(plan="team_yearly", effective_at=None),
    )
    plan = _plan(_bundle(intent=intent, subs=(own,)))
    assert [s.stripe_id for s in plan.steps if s.kind == SCHEDULE_STEP] == [own.stripe_id]

"""Plans: records of the local store (no Stripe object)."""

from __future__ import annotations

from collections.abc import Sequence

from billing_reconciler.model import (
    Kind,
    PlanRecord,
)
from billing_reconciler.planning.builder import Phase, PlanBuilder
from billing_reconciler.planning.fields import (
    comparable_fields,
    three_way,
)
from billing_reconciler.planning.plan import Action, Reason, Step
from billing_reconciler.planning.rules.common import (
    remove,
)

# --- plans (local store records) -----------------------------------------------------------


def plan_plans(
    builder: PlanBuilder, desired: Sequence[PlanRecord], observed: Sequence[PlanRecord]
) -> None:
    live_by_key = {plan.key: plan for plan in observed}
    for plan in desired:
        live = live_by_key.get(plan.key)
        record = comparable_fields(plan)
        if live is None:
            builder.add(Phase.PLANS, Step(Action.CREATE, Kind.PLAN, plan.key, Reason.NEW, record))
            continue
        fd = three_way(record, comparable_fields(live), None)
        if fd.changes or not live.active:
            action = Action.UPDATE if live.active else Action.REACTIVATE
            reason = Reason.DESIRED_CHANGED if live.active else Reason.READDED
            builder.add(
                Phase.PLANS,
                Step(action, Kind.PLAN, plan.key, reason, record, fd.changes),
                before=live,
            )
    wanted = {plan.key for plan in desired}
    for plan in observed:
        if plan.key not in wanted and plan.active:
            remove(builder, Phase.ARCHIVE_PLANS, Kind.PLAN, plan.key, None, protected=False)

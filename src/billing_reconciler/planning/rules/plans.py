"""Plans: records of the local store (no Stripe object)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from billing_reconciler.model import (
    META_PLANS,
    Kind,
    PlanRecord,
    ProductRecord,
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
    builder: PlanBuilder,
    desired: Sequence[PlanRecord],
    observed: Sequence[PlanRecord],
    products: Sequence[ProductRecord],
) -> None:
    live_by_key = {plan.key: plan for plan in observed}
    # With no plan in the store (a new or lost one), Stripe tells which plans were applied:
    # our products carry their plan names. Those are restored, not planned as new.
    applied_before = _plans_named_in_stripe(builder, products) if not observed else set()
    for plan in desired:
        live = live_by_key.get(plan.key)
        record = comparable_fields(plan)
        if live is None:
            step = Step(Action.CREATE, Kind.PLAN, plan.key, Reason.NEW, record)
            if plan.name in applied_before:
                builder.restore(dataclasses.replace(step, reason=Reason.STORE_LOST))
            else:
                builder.add(Phase.PLANS, step)
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
    if applied_before:
        builder.warnings.append(
            "the store holds no plan records; plans Stripe's products name are recorded from "
            "desired/ at the next apply (their earlier titles, trials and credits are unknown)"
        )
    for plan in observed:
        if plan.key not in wanted and plan.active:
            remove(builder, Phase.ARCHIVE_PLANS, Kind.PLAN, plan.key, None, protected=False)


def _plans_named_in_stripe(builder: PlanBuilder, products: Sequence[ProductRecord]) -> set[str]:
    names: set[str] = set()
    for product in products:
        owner = product.owner
        if owner is not None and owner.installation_id == builder.policy.installation_id:
            names.update(n for n in product.metadata.get(META_PLANS, "").split(",") if n)
    return names

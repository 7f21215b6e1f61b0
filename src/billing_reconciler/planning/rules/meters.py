"""Billing meters: identity by event name, ownership from our inventory (no metadata)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from billing_reconciler.model import (
    Kind,
    MeterRecord,
)
from billing_reconciler.planning import params as p
from billing_reconciler.planning.builder import AppliedState, Phase, PlanBuilder
from billing_reconciler.planning.fields import (
    comparable_fields,
    three_way,
)
from billing_reconciler.planning.plan import Action, Reason, Step
from billing_reconciler.planning.rules.common import (
    effective_changes,
    remove,
)

# --- meters --------------------------------------------------------------------------------


def plan_meters(
    builder: PlanBuilder,
    desired: Sequence[MeterRecord],
    observed: Sequence[MeterRecord],
    applied: Mapping[str, AppliedState],
) -> None:
    by_event = {m.event_name: m for m in observed}
    wanted = {m.key for m in desired}
    for meter in desired:
        live = by_event.get(meter.event_name)
        state = applied.get(meter.key)
        if live is None:
            builder.add(
                Phase.METERS,
                Step(
                    Action.CREATE, Kind.METER, meter.key, Reason.NEW, p.meter_create_params(meter)
                ),
            )
            continue
        assert live.stripe_id is not None
        if state is None or state.stripe_id != live.stripe_id:
            _adopt_or_report_meter(builder, meter, live)
            continue
        builder.known_ids[meter.key] = live.stripe_id
        _update_meter(builder, meter, live, state)
    for live in observed:
        state = applied.get(live.key)
        if live.key in wanted or state is None or state.stripe_id != live.stripe_id:
            continue
        if live.active:
            remove(
                builder, Phase.ARCHIVE_METERS, Kind.METER, live.key, live.stripe_id, protected=False
            )


def _adopt_or_report_meter(builder: PlanBuilder, meter: MeterRecord, live: MeterRecord) -> None:
    # Event names are unique per account: we cannot create a second meter, only adopt this one.
    if builder.policy.adopts(meter.key):
        builder.known_ids[meter.key] = live.stripe_id or ""
        builder.add(
            Phase.METERS,
            Step(
                Action.ADOPT,
                Kind.METER,
                meter.key,
                Reason.ADOPT_REQUESTED,
                {},
                stripe_id=live.stripe_id,
            ),
            before=live,
        )
        return
    builder.notice_adoptable(
        key=meter.key,
        kind=Kind.METER,
        stripe_id=live.stripe_id,
        why=f"a meter with event_name {meter.event_name!r} exists and is not ours",
    )


def _update_meter(
    builder: PlanBuilder, meter: MeterRecord, live: MeterRecord, state: AppliedState
) -> None:
    fd = three_way(comparable_fields(meter), comparable_fields(live), state.fields)
    changes = effective_changes(builder, meter.key, fd, dict(state.fields))
    fixed = [c for c in changes if c.path != "display_name"]
    if fixed:
        builder.refusals.append(
            f"meter {meter.key}: {', '.join(c.path for c in fixed)} cannot change on a Stripe "
            "meter; deactivate it and use a new event_name"
        )
        return
    if not live.active:
        builder.add(
            Phase.METERS,
            Step(
                Action.REACTIVATE,
                Kind.METER,
                meter.key,
                Reason.READDED,
                {},
                stripe_id=live.stripe_id,
            ),
            before=live,
        )
    if changes:
        builder.add(
            Phase.METERS,
            Step(
                Action.UPDATE,
                Kind.METER,
                meter.key,
                Reason.DRIFT if all(c.drift for c in changes) else Reason.DESIRED_CHANGED,
                {"display_name": meter.display_name},
                changes=tuple(changes),
                stripe_id=live.stripe_id,
            ),
            before=live,
        )

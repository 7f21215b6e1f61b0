"""Billing meters: identity by event name, ownership from our inventory (no metadata)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from billing_reconciler.model import (
    Catalog,
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
    observed: Catalog,
    applied: Mapping[str, AppliedState],
) -> None:
    by_event = {m.event_name: m for m in observed.meters}
    wanted = {m.key for m in desired}
    ours = _our_meter_ids(builder, observed, applied)
    foreign = {
        meter_id: installation
        for meter_id, installation in _billing_installations(observed).items()
        if installation != builder.policy.installation_id and meter_id not in ours
    }
    for meter in desired:
        live = by_event.get(meter.event_name)
        if live is None:
            builder.add(
                Phase.METERS,
                Step(
                    Action.CREATE, Kind.METER, meter.key, Reason.NEW, p.meter_create_params(meter)
                ),
            )
            continue
        assert live.stripe_id is not None
        if live.stripe_id in foreign:
            builder.refusals.append(
                f"meter {meter.key}: the meter with event_name {meter.event_name!r} "
                f"({live.stripe_id}) belongs to installation {foreign[live.stripe_id]!r} (its "
                "prices bill it); event names are unique per Stripe account, so use another "
                "event_name for this installation"
            )
            continue
        if live.stripe_id not in ours:
            _adopt_or_report_meter(builder, meter, live)
            continue
        builder.known_ids[meter.key] = live.stripe_id
        _update_meter(builder, meter, live, applied.get(meter.key))
    for live in observed.meters:
        if live.key in wanted or live.stripe_id not in ours:
            continue
        if live.active:
            remove(
                builder, Phase.ARCHIVE_METERS, Kind.METER, live.key, live.stripe_id, protected=False
            )


def _billing_installations(observed: Catalog) -> dict[str, str]:
    """Meter id -> the installation whose managed price bills it."""
    by_key = {m.key: m.stripe_id for m in observed.meters if m.stripe_id}
    found: dict[str, str] = {}
    for price in observed.prices:
        meter_key = price.recurring.meter_key if price.recurring else None
        if price.owner is not None and meter_key in by_key:
            found.setdefault(by_key[meter_key] or "", price.owner.installation_id)
    return found


def _our_meter_ids(
    builder: PlanBuilder, observed: Catalog, applied: Mapping[str, AppliedState]
) -> set[str]:
    """Meters carry no metadata. One is ours when the store says we applied it, or when a price
    of ours bills it (`recurring.meter`): prices are never deleted, so Stripe itself keeps that
    record once the meter's first price exists, and a lost store loses nothing."""
    by_key = {m.key: m.stripe_id for m in observed.meters if m.stripe_id}
    ids = {
        by_key[price.recurring.meter_key]
        for price in observed.prices
        if price.owner is not None
        and price.owner.installation_id == builder.policy.installation_id
        and price.recurring is not None
        and price.recurring.meter_key in by_key
    }
    for meter in observed.meters:
        state = applied.get(meter.key)
        if state is not None and state.stripe_id == meter.stripe_id and meter.stripe_id:
            ids.add(meter.stripe_id)
    return ids


def _adopt_or_report_meter(builder: PlanBuilder, meter: MeterRecord, live: MeterRecord) -> None:
    # Event names are unique per account: we cannot create a second meter, only adopt this one.
    if not builder.policy.adopts(meter.key):
        builder.notice_adoptable(
            key=meter.key,
            kind=Kind.METER,
            stripe_id=live.stripe_id,
            why=f"a meter with event_name {meter.event_name!r} exists and is not ours",
        )
        return
    # Adoption brings the meter to the desired fields in the same apply (only its display name
    # can change on Stripe), so what is recorded as applied is what is live.
    changes = three_way(comparable_fields(meter), comparable_fields(live), None).changes
    fixed = [c.path for c in changes if c.path != "display_name"]
    if fixed:
        builder.refusals.append(
            f"meter {meter.key} cannot be adopted: its {', '.join(fixed)} differ from desired "
            "and cannot change on a Stripe meter; align desired/ with the live meter"
        )
        return
    builder.known_ids[meter.key] = live.stripe_id or ""
    builder.add(
        Phase.METERS,
        Step(
            Action.ADOPT,
            Kind.METER,
            meter.key,
            Reason.ADOPT_REQUESTED,
            {"display_name": meter.display_name} if changes else {},
            changes=changes,
            stripe_id=live.stripe_id,
        ),
        before=live,
    )


def _update_meter(
    builder: PlanBuilder, meter: MeterRecord, live: MeterRecord, state: AppliedState | None
) -> None:
    applied = None if state is None else dict(state.fields)
    fd = three_way(comparable_fields(meter), comparable_fields(live), applied)
    changes = effective_changes(builder, meter.key, fd, applied)
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

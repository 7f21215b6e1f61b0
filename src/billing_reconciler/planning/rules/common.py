"""Rules shared by every kind: ownership, three-way changes, adoption, removal."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from billing_reconciler.model import (
    FeatureRecord,
    JSONValue,
    Kind,
    PriceRecord,
    ProductRecord,
)
from billing_reconciler.planning.builder import AppliedState, Phase, PlanBuilder
from billing_reconciler.planning.fields import (
    FieldDiff,
    comparable_fields,
    three_way,
)
from billing_reconciler.planning.plan import Action, FieldChange, Reason, Step

R = TypeVar("R", FeatureRecord, ProductRecord, PriceRecord)


# --- helpers -------------------------------------------------------------------------------


def ours_by_key(builder: PlanBuilder, records: Iterable[R]) -> dict[str, list[R]]:
    """Our installation's objects by key, active ones first."""
    grouped: dict[str, list[R]] = defaultdict(list)
    for record in records:
        owner = record.owner
        if owner is not None and owner.installation_id == builder.policy.installation_id:
            grouped[owner.key].append(record)
    for records_of_key in grouped.values():
        records_of_key.sort(key=lambda r: (not r.active, r.stripe_id or ""))
    return grouped


def applied_fields(applied: Mapping[str, AppliedState], key: str) -> dict[str, Any] | None:
    state = applied.get(key)
    return None if state is None else dict(state.fields)


def effective_changes(
    builder: PlanBuilder, key: str, fd: FieldDiff, applied: dict[str, Any] | None
) -> list[FieldChange]:
    """The changes to apply: desired changes, plus drift corrections unless drift is `warn`."""
    builder.record_drift(key, fd.drift, applied or {})
    return [*fd.changes, *(fd.drift if builder.policy.correct_drift else ())]


def metadata_update(changes: Sequence[FieldChange]) -> dict[str, str]:
    # Stripe unsets a metadata key when it is sent as an empty string.
    return {
        change.path.split(".", 1)[1]: "" if change.after is None else str(change.after)
        for change in changes
        if change.path.startswith("metadata.")
    }


def update_params(
    builder: PlanBuilder, key: str, changes: Sequence[FieldChange], renames: Mapping[str, str]
) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for change in changes:
        if change.path.startswith("metadata."):
            continue
        name = renames.get(change.path, change.path)
        params[name] = "" if change.after is None else change.after
    params["metadata"] = {**metadata_update(changes), **builder.policy.owner(key).as_metadata()}
    return params


def previous_id(applied: Mapping[str, AppliedState], key: str) -> str | None:
    """The Stripe id we last applied for a key that must now be created again (deleted in the
    dashboard). It goes into the create's idempotency key: re-sending the first create's key
    would replay Stripe's first response, the deleted object, instead of creating one."""
    state = applied.get(key)
    return None if state is None else state.stripe_id


def is_protected(record: ProductRecord | PriceRecord) -> bool:
    return record.protect or record.metadata.get("br_protect") == "true"


def adopt(
    builder: PlanBuilder,
    phase: Phase,
    kind: Kind,
    key: str,
    live: FeatureRecord | ProductRecord | PriceRecord,
    desired: Mapping[str, JSONValue],
    renames: Mapping[str, str],
) -> None:
    """Stamp our marker on an unmarked look-alike (only when asked), or report it."""
    if not builder.policy.adopts(key):
        builder.notice_adoptable(
            key=key,
            kind=kind,
            stripe_id=live.stripe_id,
            why="an unmanaged object matches; adopt it with --adopt or `reconcile.adopt`",
        )
        return
    assert live.stripe_id is not None
    builder.known_ids[key] = live.stripe_id
    fd = three_way(desired, comparable_fields(live), None)
    changes = [c for c in fd.changes if c.path not in ("product", "lookup_key", "default_price")]
    builder.add(
        phase,
        Step(
            Action.ADOPT,
            kind,
            key,
            Reason.ADOPT_REQUESTED,
            update_params(builder, key, changes, renames),
            changes=tuple(changes),
            stripe_id=live.stripe_id,
        ),
        before=live,
    )


def update_simple(
    builder: PlanBuilder,
    *,
    phase: Phase,
    kind: Kind,
    desired: Mapping[str, JSONValue],
    live_record: FeatureRecord | ProductRecord,
    applied: dict[str, Any] | None,
    renames: Mapping[str, str],
) -> None:
    key = live_record.owner.key if live_record.owner else live_record.key
    live = comparable_fields(live_record)
    fd = three_way(desired, live, applied)
    changes = effective_changes(builder, key, fd, applied)
    if not live_record.active:
        step_params = update_params(builder, key, changes, renames)
        step_params["active"] = True
        builder.add(
            phase,
            Step(
                Action.REACTIVATE,
                kind,
                key,
                Reason.READDED,
                step_params,
                tuple(changes),
                live_record.stripe_id,
            ),
            before=live_record,
        )
        return
    if not changes:
        return
    reason = Reason.DRIFT if all(c.drift for c in changes) else Reason.DESIRED_CHANGED
    builder.add(
        phase,
        Step(
            Action.UPDATE,
            kind,
            key,
            reason,
            update_params(builder, key, changes, renames),
            tuple(changes),
            live_record.stripe_id,
        ),
        before=live_record,
    )


def remove_unwanted(
    builder: PlanBuilder,
    ours: Mapping[str, Sequence[FeatureRecord | ProductRecord | PriceRecord]],
    wanted: set[str],
    kind: Kind,
    phase: Phase,
) -> None:
    for key, records in sorted(ours.items()):
        if key in wanted:
            continue
        for record in records:
            if record.active:
                protected = isinstance(record, ProductRecord | PriceRecord) and is_protected(record)
                remove(builder, phase, kind, key, record.stripe_id, protected=protected)


def remove(
    builder: PlanBuilder,
    phase: Phase,
    kind: Kind,
    key: str,
    stripe_id: str | None,
    *,
    protected: bool,
) -> None:
    """Archive an object removed from desired (prune), or report it as an orphan."""
    if protected:
        builder.notice_orphan(
            key=key, kind=kind, stripe_id=stripe_id, why="protected: never archived"
        )
    elif builder.policy.prune:
        builder.add(
            phase,
            Step(
                Action.ARCHIVE,
                kind,
                key,
                Reason.REMOVED_FROM_DESIRED,
                {"active": False},
                stripe_id=stripe_id,
            ),
        )
    else:
        builder.notice_orphan(
            key=key,
            kind=kind,
            stripe_id=stripe_id,
            why="not in desired; archived only with reconcile.prune",
        )

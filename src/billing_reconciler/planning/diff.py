"""`diff(desired, observed, applied, policy) -> Plan`: the pure heart of the reconciler.

Rules (DESIGN §4, §5):
- we act only on objects marked with our installation id (meters, which carry no metadata, are
  ours when our inventory holds their id); unmarked look-alikes are adoptable, never modified
  without `--adopt`; objects of another installation are never touched;
- a price's immutable fields change by superseding: create the new price (taking over the lookup
  key), repoint the product's default price, archive the old one — in that order;
- an archived price whose fields match the desired ones again is reactivated, not duplicated;
- removal from YAML archives only with `prune`; otherwise the object is reported as an orphan;
  `protect` objects are never archived or superseded; a mass archive is refused.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from billing_reconciler.model import (
    Catalog,
    FeatureRecord,
    JSONValue,
    Kind,
    MeterRecord,
    PlanRecord,
    PriceRecord,
    ProductFeatureRecord,
    ProductRecord,
)
from billing_reconciler.planning import params as p
from billing_reconciler.planning.builder import AppliedState, Phase, PlanBuilder, PlanPolicy
from billing_reconciler.planning.fields import (
    FieldDiff,
    comparable_fields,
    immutable_price_changes,
    mutable_price_view,
    three_way,
)
from billing_reconciler.planning.plan import Action, FieldChange, Plan, Reason, Ref, Step

__all__ = ["AppliedState", "PlanPolicy", "diff"]

R = TypeVar("R", FeatureRecord, ProductRecord, PriceRecord)


def diff(
    desired: Catalog,
    observed: Catalog,
    applied: Mapping[str, AppliedState],
    policy: PlanPolicy,
) -> Plan:
    """Compare desired with observed (and what we last applied) and return the ordered Plan."""
    builder = PlanBuilder(policy)
    _plan_meters(builder, desired.meters, observed.meters, applied)
    _plan_features(builder, desired.features, observed.features, applied)
    products = _plan_products(builder, desired.products, observed.products, applied)
    _plan_prices(builder, desired, observed, applied, products)
    _plan_product_features(builder, desired, observed, applied)
    _plan_plans(builder, desired.plans, observed.plans)
    _guard_mass_archive(builder, observed, applied)
    return builder.build(observed=observed)


# --- helpers -------------------------------------------------------------------------------


def _ours(builder: PlanBuilder, records: Iterable[R]) -> dict[str, list[R]]:
    """Our installation's objects by key, active ones first."""
    grouped: dict[str, list[R]] = defaultdict(list)
    for record in records:
        owner = record.owner
        if owner is not None and owner.installation_id == builder.policy.installation_id:
            grouped[owner.key].append(record)
    for records_of_key in grouped.values():
        records_of_key.sort(key=lambda r: (not r.active, r.stripe_id or ""))
    return grouped


def _applied_fields(applied: Mapping[str, AppliedState], key: str) -> dict[str, Any] | None:
    state = applied.get(key)
    return None if state is None else dict(state.fields)


def _effective(
    builder: PlanBuilder, key: str, fd: FieldDiff, applied: dict[str, Any] | None
) -> list[FieldChange]:
    """The changes to apply: desired changes, plus drift corrections unless drift is `warn`."""
    builder.record_drift(key, fd.drift, applied or {})
    return [*fd.changes, *(fd.drift if builder.policy.correct_drift else ())]


def _metadata_update(changes: Sequence[FieldChange]) -> dict[str, str]:
    # Stripe unsets a metadata key when it is sent as an empty string.
    return {
        change.path.split(".", 1)[1]: "" if change.after is None else str(change.after)
        for change in changes
        if change.path.startswith("metadata.")
    }


def _update_params(
    builder: PlanBuilder, key: str, changes: Sequence[FieldChange], renames: Mapping[str, str]
) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for change in changes:
        if change.path.startswith("metadata."):
            continue
        name = renames.get(change.path, change.path)
        params[name] = "" if change.after is None else change.after
    params["metadata"] = {**_metadata_update(changes), **builder.policy.owner(key).as_metadata()}
    return params


def _previous_id(applied: Mapping[str, AppliedState], key: str) -> str | None:
    """The Stripe id we last applied for a key that must now be created again (deleted in the
    dashboard). It goes into the create's idempotency key: re-sending the first create's key
    would replay Stripe's first response, the deleted object, instead of creating one."""
    state = applied.get(key)
    return None if state is None else state.stripe_id


def _protected(record: ProductRecord | PriceRecord) -> bool:
    return record.protect or record.metadata.get("br_protect") == "true"


# --- meters --------------------------------------------------------------------------------


def _plan_meters(
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
            _remove(
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
    changes = _effective(builder, meter.key, fd, dict(state.fields))
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


# --- features ------------------------------------------------------------------------------


def _plan_features(
    builder: PlanBuilder,
    desired: Sequence[FeatureRecord],
    observed: Sequence[FeatureRecord],
    applied: Mapping[str, AppliedState],
) -> None:
    ours = _ours(builder, observed)
    unmarked = {f.lookup_key: f for f in observed if f.owner is None and f.active}
    for feature in desired:
        # Stripe never unarchives a feature: an archived one is history, and a new feature
        # (its lookup key is free again) takes its place.
        live = next((f for f in ours.get(feature.key, []) if f.active), None)
        if live is None:
            _create_or_adopt_feature(builder, feature, unmarked.get(feature.lookup_key))
            continue
        assert live.stripe_id is not None
        builder.known_ids[feature.key] = live.stripe_id
        _update_simple(
            builder,
            phase=Phase.FEATURES,
            kind=Kind.FEATURE,
            desired=comparable_fields(feature),
            live_record=live,
            applied=_applied_fields(applied, feature.key),
            renames={"title": "name"},
        )
    _remove_unwanted(builder, ours, {f.key for f in desired}, Kind.FEATURE, Phase.ARCHIVE_FEATURES)


def _create_or_adopt_feature(
    builder: PlanBuilder, feature: FeatureRecord, match: FeatureRecord | None
) -> None:
    if match is None:
        builder.add(
            Phase.FEATURES,
            Step(
                Action.CREATE,
                Kind.FEATURE,
                feature.key,
                Reason.NEW,
                p.feature_create_params(feature, builder.policy.owner(feature.key)),
            ),
        )
        return
    _adopt(
        builder,
        Phase.FEATURES,
        Kind.FEATURE,
        feature.key,
        match,
        comparable_fields(feature),
        {"title": "name"},
    )


def _adopt(
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
            _update_params(builder, key, changes, renames),
            changes=tuple(changes),
            stripe_id=live.stripe_id,
        ),
        before=live,
    )


def _update_simple(
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
    changes = _effective(builder, key, fd, applied)
    if not live_record.active:
        step_params = _update_params(builder, key, changes, renames)
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
            _update_params(builder, key, changes, renames),
            tuple(changes),
            live_record.stripe_id,
        ),
        before=live_record,
    )


def _remove_unwanted(
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
                protected = isinstance(record, ProductRecord | PriceRecord) and _protected(record)
                _remove(builder, phase, kind, key, record.stripe_id, protected=protected)


def _remove(
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


# --- products ------------------------------------------------------------------------------


def _product_view(product: ProductRecord) -> dict[str, JSONValue]:
    view = comparable_fields(product)
    view.pop("default_price")
    return view


def _plan_products(
    builder: PlanBuilder,
    desired: Sequence[ProductRecord],
    observed: Sequence[ProductRecord],
    applied: Mapping[str, AppliedState],
) -> dict[str, ProductRecord]:
    """Plan products; returns the live product each desired key maps to (for default prices)."""
    ours = _ours(builder, observed)
    unmarked = [prod for prod in observed if prod.owner is None and prod.active]
    current: dict[str, ProductRecord] = {}
    for product in desired:
        live = next(iter(ours.get(product.key, [])), None)
        if live is None:
            match = _unmarked_product(product, unmarked)
            if match is None:
                owner = builder.policy.owner(product.key)
                builder.add(
                    Phase.PRODUCTS,
                    Step(
                        Action.CREATE,
                        Kind.PRODUCT,
                        product.key,
                        Reason.NEW,
                        p.product_create_params(product, owner),
                    ),
                    before=_previous_id(applied, product.key),
                )
            else:
                current[product.key] = match
                _adopt(
                    builder,
                    Phase.PRODUCTS,
                    Kind.PRODUCT,
                    product.key,
                    match,
                    _product_view(product),
                    {"title": "name"},
                )
            continue
        assert live.stripe_id is not None
        builder.known_ids[product.key] = live.stripe_id
        current[product.key] = live
        _update_simple(
            builder,
            phase=Phase.PRODUCTS,
            kind=Kind.PRODUCT,
            desired=_product_view(product),
            live_record=live,
            applied=_applied_fields(applied, product.key),
            renames={"title": "name"},
        )
    _remove_unwanted(
        builder, ours, {prod.key for prod in desired}, Kind.PRODUCT, Phase.ARCHIVE_PRODUCTS
    )
    return current


def _unmarked_product(
    product: ProductRecord, candidates: Sequence[ProductRecord]
) -> ProductRecord | None:
    names = {product.title.lower(), product.name.lower()}
    return next((c for c in candidates if c.title.lower() in names), None)


# --- prices --------------------------------------------------------------------------------


def _same_price(desired: PriceRecord, live: PriceRecord) -> bool:
    removed_options = set(live.currency_options) - set(desired.currency_options)
    return not immutable_price_changes(desired, live) and not removed_options


def _plan_prices(
    builder: PlanBuilder,
    desired: Catalog,
    observed: Catalog,
    applied: Mapping[str, AppliedState],
    products: Mapping[str, ProductRecord],
) -> None:
    ours = _ours(builder, observed.prices)
    lookup_holders = {pr.lookup_key: pr for pr in observed.prices if pr.lookup_key and pr.active}
    replaced: set[str] = set()  # price keys whose current Stripe id changes in this plan
    for price in desired.prices:
        if _plan_price(builder, price, ours.get(price.key, []), lookup_holders, applied):
            replaced.add(price.key)
    _plan_default_prices(builder, desired.products, products, replaced)
    _remove_unwanted(
        builder, ours, {pr.key for pr in desired.prices}, Kind.PRICE, Phase.ARCHIVE_PRICES
    )
    _unset_defaults_of_archived(builder, observed.products)


def _plan_price(
    builder: PlanBuilder,
    price: PriceRecord,
    candidates: Sequence[PriceRecord],
    lookup_holders: Mapping[str, PriceRecord],
    applied: Mapping[str, AppliedState],
) -> bool:
    """Plan one desired price. True when the price's current Stripe id changes (new or other)."""
    same = [c for c in candidates if _same_price(price, c)]
    others = [c for c in candidates if c.active and not _same_price(price, c)]
    active_same = [c for c in same if c.active]
    if active_same:
        target = active_same[0]
        assert target.stripe_id is not None
        builder.known_ids[price.key] = target.stripe_id
        _update_price(builder, price, target, applied)
        _archive_superseded(builder, [*active_same[1:], *others])
        return False
    if same:
        _reactivate_price(builder, price, same[0])
        _archive_superseded(builder, others)
        return True
    if others:
        return _supersede_price(builder, price, others)
    holder = lookup_holders.get(price.lookup_key or "")
    if holder is not None and holder.owner is None:
        if _same_price(price, holder):
            _adopt(
                builder, Phase.PRICES, Kind.PRICE, price.key, holder, mutable_price_view(price), {}
            )
            return False
        builder.notice_adoptable(
            key=price.key,
            kind=Kind.PRICE,
            stripe_id=holder.stripe_id,
            why=f"lookup key {price.lookup_key!r} is held by an unmanaged price with other fields",
        )
        return False
    if holder is not None and holder.owner is not None and holder.owner.key != price.key:
        builder.refusals.append(
            f"price {price.key}: lookup key {price.lookup_key!r} is held by {holder.stripe_id} "
            f"({holder.owner.key} of installation {holder.owner.installation_id!r})"
        )
        return False
    builder.add(
        Phase.PRICES,
        Step(
            Action.CREATE,
            Kind.PRICE,
            price.key,
            Reason.NEW,
            p.price_create_params(price, builder.policy.owner(price.key)),
        ),
    )
    return True


def _update_price(
    builder: PlanBuilder, price: PriceRecord, live: PriceRecord, applied: Mapping[str, AppliedState]
) -> None:
    fd = three_way(
        mutable_price_view(price), mutable_price_view(live), _applied_fields(applied, price.key)
    )
    changes = _effective(builder, price.key, fd, _applied_fields(applied, price.key))
    if not changes:
        return
    step_params = _price_update_params(builder, price, changes)
    reason = Reason.DRIFT if all(c.drift for c in changes) else Reason.DESIRED_CHANGED
    builder.add(
        Phase.PRICES,
        Step(
            Action.UPDATE,
            Kind.PRICE,
            price.key,
            reason,
            step_params,
            tuple(changes),
            live.stripe_id,
        ),
        before=live,
    )


def _price_update_params(
    builder: PlanBuilder, price: PriceRecord, changes: Sequence[FieldChange]
) -> dict[str, Any]:
    step_params = _update_params(
        builder, price.key, [c for c in changes if c.path.startswith("metadata.")], {}
    )
    paths = {c.path for c in changes}
    if "currency_options" in paths:
        step_params["currency_options"] = p.currency_options_params(price.currency_options)
    if "lookup_key" in paths:
        step_params["lookup_key"] = price.lookup_key or ""
        step_params["transfer_lookup_key"] = True
    if "nickname" in paths:
        step_params["nickname"] = price.nickname or ""
    if "tax_behavior" in paths and price.tax_behavior:
        step_params["tax_behavior"] = price.tax_behavior
    return step_params


def _reactivate_price(builder: PlanBuilder, price: PriceRecord, archived: PriceRecord) -> None:
    changes = list(three_way(mutable_price_view(price), mutable_price_view(archived), None).changes)
    step_params = _price_update_params(builder, price, changes)
    step_params["active"] = True
    if price.lookup_key:
        # The key may sit on the price this one replaced; take it back.
        step_params["lookup_key"] = price.lookup_key
        step_params["transfer_lookup_key"] = True
    builder.add(
        Phase.PRICES,
        Step(
            Action.REACTIVATE,
            Kind.PRICE,
            price.key,
            Reason.READDED,
            step_params,
            tuple(changes),
            archived.stripe_id,
        ),
        before=archived,
    )


def _supersede_price(builder: PlanBuilder, price: PriceRecord, old: Sequence[PriceRecord]) -> bool:
    if price.protect or any(_protected(o) for o in old):
        fields = [c.path for c in immutable_price_changes(price, old[0])] or ["currency_options"]
        builder.refusals.append(
            f"price {price.key} is protected, and its change needs a supersede (a new price): "
            f"{', '.join(fields)}; revert the change or remove `protect`"
        )
        return False
    changes = immutable_price_changes(price, old[0])
    removed = sorted(set(old[0].currency_options) - set(price.currency_options))
    if removed:
        gone: JSONValue = list[JSONValue](removed)
        changes = (
            *changes,
            FieldChange(path="currency_options", before=gone, after=None, forces_supersede=True),
        )
    builder.add(
        Phase.PRICES,
        Step(
            Action.SUPERSEDE,
            Kind.PRICE,
            price.key,
            Reason.REPLACE_BECAUSE_IMMUTABLE,
            p.price_create_params(price, builder.policy.owner(price.key)),
            changes,
            old[0].stripe_id,
        ),
        before=old[0],
    )
    _archive_superseded(builder, old)
    return True


def _archive_superseded(builder: PlanBuilder, prices: Sequence[PriceRecord]) -> None:
    for old in prices:
        builder.add(
            Phase.ARCHIVE_PRICES,
            Step(
                Action.ARCHIVE,
                Kind.PRICE,
                old.key,
                Reason.SUPERSEDED,
                {"active": False},
                stripe_id=old.stripe_id,
            ),
            before=old,
        )


def _plan_default_prices(
    builder: PlanBuilder,
    desired: Sequence[ProductRecord],
    live_products: Mapping[str, ProductRecord],
    replaced: set[str],
) -> None:
    """Point each product's default price at the current price of its desired default key.

    Runs after prices are created and before anything is archived: Stripe refuses to archive a
    product's default price.
    """
    for product in desired:
        live = live_products.get(product.key)
        want = product.default_price_key
        if want is None:
            continue
        current_id = builder.known_ids.get(want)
        if live is not None and want not in replaced and live.default_price_id == current_id:
            continue
        builder.add(
            Phase.REPOINT,
            Step(
                Action.UPDATE,
                Kind.PRODUCT,
                product.key,
                Reason.DEFAULT_PRICE_REPOINT,
                {"default_price": Ref(want)},
                (FieldChange("default_price", live.default_price_key if live else None, want),),
                stripe_id=live.stripe_id if live else None,
                parent=Ref(product.key),
            ),
            before=live,
        )


def _unset_defaults_of_archived(builder: PlanBuilder, products: Sequence[ProductRecord]) -> None:
    """Stripe refuses to archive a product's default price: unset the default first."""
    archived = {
        step.stripe_id
        for step in builder.steps()
        if step.kind is Kind.PRICE and step.action is Action.ARCHIVE
    }
    repointed = {
        step.key for step in builder.steps() if step.reason is Reason.DEFAULT_PRICE_REPOINT
    }
    for product in products:
        if product.default_price_id not in archived or product.key in repointed:
            continue
        if product.owner is None or product.owner.installation_id != builder.policy.installation_id:
            continue
        builder.add(
            Phase.REPOINT,
            Step(
                Action.UPDATE,
                Kind.PRODUCT,
                product.key,
                Reason.DEFAULT_PRICE_REPOINT,
                {"default_price": ""},
                (FieldChange("default_price", product.default_price_key, None),),
                stripe_id=product.stripe_id,
            ),
            before=product,
        )


# --- product features ----------------------------------------------------------------------


def _plan_product_features(
    builder: PlanBuilder,
    desired: Catalog,
    observed: Catalog,
    applied: Mapping[str, AppliedState],
) -> None:
    live_by_key: dict[str, ProductFeatureRecord] = {pf.key: pf for pf in observed.product_features}
    wanted = {pf.key for pf in desired.product_features}
    for attachment in desired.product_features:
        if attachment.key in live_by_key:
            continue
        builder.add(
            Phase.ATTACH,
            Step(
                Action.CREATE,
                Kind.PRODUCT_FEATURE,
                attachment.key,
                Reason.NEW,
                {"entitlement_feature": Ref(attachment.feature_key)},
                (FieldChange("feature", None, attachment.feature_key),),
                parent=Ref(attachment.product_key),
            ),
            before=_previous_id(applied, attachment.key),
        )
    desired_products = {prod.key for prod in desired.products}
    for key, live in sorted(live_by_key.items()):
        # Only attachments we made, on products still desired: the rest are someone else's.
        if key in wanted or key not in applied or live.product_key not in desired_products:
            continue
        builder.add(
            Phase.DETACH,
            Step(
                Action.ARCHIVE,
                Kind.PRODUCT_FEATURE,
                key,
                Reason.REMOVED_FROM_DESIRED,
                {},
                (FieldChange("feature", live.feature_key, None),),
                stripe_id=live.stripe_id,
                parent=Ref(live.product_key),
            ),
        )


# --- plans (local store records) -----------------------------------------------------------


def _plan_plans(
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
            _remove(builder, Phase.ARCHIVE_PLANS, Kind.PLAN, plan.key, None, protected=False)


# --- the mass-archive guard ----------------------------------------------------------------


def _guard_mass_archive(
    builder: PlanBuilder, observed: Catalog, applied: Mapping[str, AppliedState]
) -> None:
    removals = [
        step
        for step in builder.steps()
        if step.action is Action.ARCHIVE and step.reason is Reason.REMOVED_FROM_DESIRED
    ]
    if not removals or builder.policy.allow_mass_archive:
        return
    managed = _managed_count(builder, observed, applied)
    fraction = len(removals) / max(managed, 1)
    if len(removals) == managed:
        builder.refusals.append(
            f"the plan would archive every managed object ({managed}); the desired state may be "
            "empty by mistake. Re-run with --allow-mass-archive if this is intended"
        )
    elif fraction > builder.policy.max_archive_fraction:
        builder.refusals.append(
            f"the plan would archive {len(removals)} of {managed} managed objects "
            f"({fraction:.0%} > reconcile.max_archive_fraction "
            f"{builder.policy.max_archive_fraction:.0%}). Re-run with --allow-mass-archive "
            "if this is intended"
        )


def _managed_count(
    builder: PlanBuilder, observed: Catalog, applied: Mapping[str, AppliedState]
) -> int:
    installation = builder.policy.installation_id
    records: list[FeatureRecord | ProductRecord | PriceRecord] = [
        *observed.features,
        *observed.products,
        *observed.prices,
    ]
    marked = [
        r
        for r in records
        if r.active and r.owner is not None and r.owner.installation_id == installation
    ]
    meters = [m for m in observed.meters if m.active and m.key in applied]
    plans = [plan for plan in observed.plans if plan.active]
    return len(marked) + len(meters) + len(plans)

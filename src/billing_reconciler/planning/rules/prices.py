"""Prices: supersede on immutable changes, reactivation, default-price repoints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from billing_reconciler.model import (
    Catalog,
    JSONValue,
    Kind,
    PriceRecord,
    ProductRecord,
)
from billing_reconciler.planning import params as p
from billing_reconciler.planning.builder import AppliedState, Phase, PlanBuilder
from billing_reconciler.planning.fields import (
    immutable_price_changes,
    mutable_price_view,
    three_way,
)
from billing_reconciler.planning.plan import Action, FieldChange, Reason, Ref, Step
from billing_reconciler.planning.rules.common import (
    adopt,
    applied_fields,
    effective_changes,
    is_protected,
    ours_by_key,
    remove_unwanted,
    update_params,
)

# --- prices --------------------------------------------------------------------------------


def _same_price(desired: PriceRecord, live: PriceRecord) -> bool:
    removed_options = set(live.currency_options) - set(desired.currency_options)
    return not immutable_price_changes(desired, live) and not removed_options


def plan_prices(
    builder: PlanBuilder,
    desired: Catalog,
    observed: Catalog,
    applied: Mapping[str, AppliedState],
    products: Mapping[str, ProductRecord],
) -> None:
    ours = ours_by_key(builder, observed.prices)
    lookup_holders = {pr.lookup_key: pr for pr in observed.prices if pr.lookup_key and pr.active}
    replaced: set[str] = set()  # price keys whose current Stripe id changes in this plan
    for price in desired.prices:
        if _plan_price(builder, price, ours.get(price.key, []), lookup_holders, applied):
            replaced.add(price.key)
    _plan_default_prices(builder, desired.products, products, replaced)
    remove_unwanted(
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
            adopt(
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
    mine = builder.policy.installation_id
    if (
        holder is not None
        and holder.owner is not None
        and (holder.owner.key != price.key or holder.owner.installation_id != mine)
    ):
        # Another installation's price (or another key of ours) holds the lookup key; a
        # create with transfer_lookup_key would take it from them.
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
        mutable_price_view(price), mutable_price_view(live), applied_fields(applied, price.key)
    )
    changes = effective_changes(builder, price.key, fd, applied_fields(applied, price.key))
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
    step_params = update_params(
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
    if price.protect or any(is_protected(o) for o in old):
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
        # Shown as Stripe ids where they exist, so a reviewer sees which price becomes default.
        before = live.default_price_id if live else None
        after = f"new {want}" if want in replaced or current_id is None else current_id
        builder.add(
            Phase.REPOINT,
            Step(
                Action.UPDATE,
                Kind.PRODUCT,
                product.key,
                Reason.DEFAULT_PRICE_REPOINT,
                {"default_price": Ref(want)},
                (FieldChange("default_price", before, after),),
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

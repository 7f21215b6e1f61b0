"""The subscription create and update steps (DESIGN §16): a create of the desired
subscription under its derived idempotency key, and an update of what differs on a live one
(seat and other licensed quantities, items moved by a price migration, `automatic_tax`, the
monthly billing of a yearly plan's seats, the `plan` marker, the cancel at a trial's end).
Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from billing_reconciler.domains.customer_rules import last_spent_key, unspent_key
from billing_reconciler.domains.price_impact import SETTING_PRICE_MIGRATION
from billing_reconciler.domains.subscription_draft import Draft
from billing_reconciler.domains.subscription_keys import (
    OP_CREATE,
    OP_UPDATE,
    SETTING_AUTO_TAX,
    SETTING_SEAT_CHANGE,
    SUBSCRIPTION_STEP,
    UPDATES,
    subscription_creation_key,
)
from billing_reconciler.domains.subscription_migration import move_params, shown_target
from billing_reconciler.domains.subscription_phases import of_another_intent, wanted_quantity
from billing_reconciler.domains.subscription_shape import Refusal
from billing_reconciler.domains.subscription_types import AccountSubscriptions
from billing_reconciler.model_subscriptions import (
    DesiredItem,
    DesiredSubscription,
    SubscriptionRecord,
)
from billing_reconciler.planning.plan import Action, FieldChange, Reason, Ref, Step, canonical_json


def refused_before(draft: Draft, desired: DesiredSubscription) -> bool:
    """Stripe refused this create's latest attempt (a declined card, no payment method). A
    whole-domain pass does not send it again: every scheduled pass would be another declined
    charge on the customer's card. A targeted run (the subscribe sent again, a member change)
    still does; so does any pass once the refusal is older than Stripe's key window."""
    last = last_spent_key(_creation_key(draft, desired), draft.context.spent_keys)
    return last is not None and last in draft.context.refused_keys


def _creation_key(draft: Draft, desired: DesiredSubscription) -> str:
    return subscription_creation_key(
        installation_id=draft.installation_id,
        org_id=desired.org_id,
        plan=desired.plan,
        intent_id=desired.intent_id,
        salt=draft.context.key_salt,
    )


def create_step(draft: Draft, desired: DesiredSubscription) -> Step:
    params: dict[str, Any] = {
        "op": OP_CREATE,
        "customer": desired.customer_id,
        "currency": desired.currency,
        "items": [_item_params(i) for i in desired.items],
        "collection_method": desired.collection_method,
        "automatic_tax": {"enabled": desired.automatic_tax},
        "billing_mode": {"type": "flexible"},
        "metadata": dict(desired.metadata),
        "plan": desired.plan,
        "settings": [],
    }
    if desired.days_until_due is not None:
        params["days_until_due"] = desired.days_until_due
    if desired.trial_days:
        params["trial_period_days"] = desired.trial_days
        behavior = "cancel" if desired.trial_end_behavior == "cancel" else "create_invoice"
        params["trial_settings"] = {"end_behavior": {"missing_payment_method": behavior}}
        if behavior == "cancel":
            # Cancelled at the trial's end with a card too: the trial is the first period, so
            # `cancel_at_period_end` with the create (Stripe fixes the time, no clock in the
            # params) and one pass converges; `_trial_cancel_at` is for trials made elsewhere.
            params["cancel_at_period_end"] = True
    if desired.pending_invoice_item_interval is not None:
        interval, count = desired.pending_invoice_item_interval
        params["pending_invoice_item_interval"] = {"interval": interval, "interval_count": count}
    return Step(
        action=Action.CREATE,
        kind=SUBSCRIPTION_STEP,
        key=desired.key,
        reason=Reason.NEW,
        params=params,
        idempotency_key=unspent_key(_creation_key(draft, desired), draft.context.spent_keys),
    )


def _item_params(item: DesiredItem) -> dict[str, Any]:
    return {
        "price": item.price_id,
        **({} if item.quantity is None else {"quantity": item.quantity}),
    }


def plan_update(
    draft: Draft,
    bundle: AccountSubscriptions,
    sub: SubscriptionRecord,
    desired: DesiredSubscription,
    *,
    marker: bool,
    moves: Mapping[str, str | Ref] | None = None,
) -> None:
    params: dict[str, Any] = {}
    changes: list[FieldChange] = []
    settings: set[str] = set()
    items = _item_updates(draft, sub, desired, changes, settings, moves or {})
    if items:
        params["items"] = items
        params["proration_behavior"] = (
            draft.billing.plan_change.immediate_proration_behavior if moves else "create_prorations"
        )
    if sub.automatic_tax != desired.automatic_tax:
        params["automatic_tax"] = {"enabled": desired.automatic_tax}
        changes.append(FieldChange("automatic_tax", sub.automatic_tax, desired.automatic_tax))
        settings.add(SETTING_AUTO_TAX)
    wanted = _pending_interval(draft, bundle, sub, desired)
    if sub.pending_invoice_item_interval != wanted:
        params["pending_invoice_item_interval"] = (
            "" if wanted is None else {"interval": wanted[0], "interval_count": wanted[1]}
        )
        changes.append(
            FieldChange(
                "pending_invoice_item_interval",
                _interval_text(sub.pending_invoice_item_interval),
                _interval_text(wanted),
            )
        )
    if marker:
        params["metadata"] = {"plan": desired.plan}
        changes.append(FieldChange("metadata.plan", None, desired.plan))
    trial_cancel = _trial_cancel_at(sub)
    if trial_cancel is not None:
        params["cancel_at"] = trial_cancel
        changes.append(FieldChange("cancel_at", sub.cancel_at, trial_cancel))
    if not params:
        return
    params = {"op": OP_UPDATE, "subscription": sub.stripe_id, **params}
    params["settings"] = sorted(settings)
    draft.add(
        UPDATES,
        Step(
            action=Action.UPDATE,
            kind=SUBSCRIPTION_STEP,
            key=desired.key,
            reason=Reason.DESIRED_CHANGED,
            params=params,
            changes=tuple(changes),
            stripe_id=sub.stripe_id,
            idempotency_key=draft.key(
                "update", sub.stripe_id, desired.intent_id, canonical_json(params)
            ),
            causes=tuple(sorted(settings)),
        ),
    )


def _item_updates(
    draft: Draft,
    sub: SubscriptionRecord,
    desired: DesiredSubscription,
    changes: list[FieldChange],
    settings: set[str],
    moves: Mapping[str, str | Ref],
) -> list[dict[str, Any]]:
    """Quantities that differ from the desired ones, by item (also on a grandfathered price
    id the catalog still knows; items on prices it does not know are left alone), and the
    items `moves` puts on their price's current id (`price` on the item id: Stripe replaces
    the item's price in place, its quantity kept or set)."""
    seats = desired.seats or 1
    incremental = draft.billing.product.seat_change_behavior == "incremental"
    updates: list[dict[str, Any]] = []
    for item in sub.items:
        price = draft.price_of(item)
        target = None if item.item_id is None else moves.get(item.item_id)
        if price is not None and target is not None:
            changes.append(FieldChange(f"price[{price.key}]", item.price_id, shown_target(target)))
            settings.add(SETTING_PRICE_MIGRATION)
        # No quantity observed: a metered item (whatever a price of its key is now).
        if price is None or price.metered or item.item_id is None or item.quantity is None:
            if target is not None:
                updates.append({"id": item.item_id, **move_params(target, item)})
            continue
        wanted = wanted_quantity(price, item, seats, incremental=incremental)
        if wanted == item.quantity:
            if target is not None:
                updates.append(
                    {"id": item.item_id, **move_params(target, item), "quantity": wanted}
                )
            continue
        updates.append(
            {
                "id": item.item_id,
                **({} if target is None else move_params(target, item)),
                "quantity": wanted,
            }
        )
        path = "quantity" if price.per_seat else f"quantity[{price.key}]"
        changes.append(FieldChange(path, item.quantity, wanted))
        if price.per_seat and item.quantity is not None and wanted < item.quantity:
            settings.add(SETTING_SEAT_CHANGE)  # `exact` follows members down
    return updates


def _pending_interval(
    draft: Draft,
    bundle: AccountSubscriptions,
    sub: SubscriptionRecord,
    desired: DesiredSubscription,
) -> tuple[str, int] | None:
    """The `pending_invoice_item_interval` the subscription is to have: the plan's (yearly
    plans bill added seats monthly, DESIGN §16), or, while an immediate change to another
    plan waits (its schedule step follows this update in the same plan), the new plan's, so
    the change settles in one pass instead of a follow-up update once it is yearly."""
    intent = bundle.intent
    pending = intent.pending_change if intent is not None else None
    if (
        pending is None
        or of_another_intent(bundle, sub)
        or not pending.immediate
        or pending.plan is None
        or pending.plan.lower() == desired.plan.lower()
    ):
        return desired.pending_invoice_item_interval
    target = draft.desired(bundle, pending.plan.lower(), target=True)
    if isinstance(target, Refusal):
        return desired.pending_invoice_item_interval
    return target.pending_invoice_item_interval


def _interval_text(value: tuple[str, int] | None) -> str | None:
    return None if value is None else f"{value[1]} {value[0]}"


def _trial_cancel_at(sub: SubscriptionRecord) -> int | None:
    """A trial created to cancel at its end (`missing_payment_method=cancel`) also cancels
    with a payment method (DESIGN §16): `cancel_at` = the trial end, set once Stripe has
    fixed that time (never derived from the plan's clock, so replays send equal params)."""
    if (
        sub.status != "trialing"
        or sub.trial_missing_payment_method != "cancel"
        or sub.trial_end is None
        or sub.cancel_at == sub.trial_end
        or sub.schedule_id is not None
    ):
        return None
    return sub.trial_end

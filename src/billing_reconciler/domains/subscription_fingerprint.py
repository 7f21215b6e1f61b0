"""The digest of what a subscriptions plan was computed from (a saved plan is compared with
its re-plan by it): every account's facts, its Stripe objects, and the catalog. Pure."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from billing_reconciler.domains.subscription_types import (
    AccountSubscriptions,
    CatalogPrice,
    PlanCatalog,
    SubscriptionsObserved,
)
from billing_reconciler.model_subscriptions import (
    PendingChange,
    ScheduleRecord,
    SubscriptionOwner,
    SubscriptionRecord,
)


def fingerprint_of(observed: SubscriptionsObserved) -> str:
    """A digest of what the plan was computed from (a saved plan is compared with its re-plan
    by it): every account's facts and its Stripe objects, and the catalog. As the customers'
    (`customer_rules._fingerprint`): records as tuples of plain values, sorted `repr`s hashed;
    a unit test changes each field and sees the digest change."""
    hasher = hashlib.sha256()
    for item in sorted([repr(_bundle_values(b)) for b in observed.accounts]):
        hasher.update(item.encode())
        hasher.update(b"\x1e")
    hasher.update(b"\x1d")
    hasher.update(repr(_catalog_values(observed.catalog)).encode())
    return hasher.hexdigest()[:32]


def _bundle_values(b: AccountSubscriptions) -> tuple[object, ...]:
    """Spelled out per record type (dataclass reprs were half of a 100k plan's CPU); a unit
    test changes every field of every record type and sees the digest change."""
    a, i = b.account, b.intent
    return (
        (
            a.account_id,
            a.org_id,
            a.stripe_customer_id,
            a.currency,
            a.offline,
            a.state,
            a.test_clock,
            a.due_in_days,
        ),
        None
        if i is None
        else (
            i.intent_id,
            i.plan,
            i.source,
            _pending_values(i.pending_change),
            None if i.cancel is None else (i.cancel.immediate, i.cancel.requested_at),
            i.skip_trial,
            i.cancel_after_trial,
            i.requested_by,
            i.created_at,
        ),
        b.seats,
        tuple(sorted(b.plan_history)),
        tuple([_sub_values(s) for s in b.subscriptions]),
        tuple([_schedule_values(s) for s in b.schedules]),
        tuple(
            [
                (
                    m.stripe_subscription_id,
                    m.plan,
                    m.status,
                    m.seats,
                    m.trial_end,
                    m.current_period_start,
                    m.current_period_end,
                    m.cancel_at,
                    m.canceled_at,
                    m.schedule_id,
                )
                for m in b.mirrors
            ]
        ),
    )


def _pending_values(p: PendingChange | None) -> tuple[object, ...] | None:
    return None if p is None else (p.plan, p.effective_at, p.immediate, p.reason)


def _owner_values(o: SubscriptionOwner | None) -> tuple[object, ...] | None:
    return None if o is None else (o.installation_id, o.org_id, o.plan, o.intent_id, o.revision)


def _sub_values(s: SubscriptionRecord) -> tuple[object, ...]:
    return (
        s.stripe_id,
        s.customer_id,
        s.status,
        s.currency,
        tuple(
            [
                (
                    i.price_id,
                    i.quantity,
                    i.item_id,
                    i.current_period_start,
                    i.current_period_end,
                    i.price_key,
                )
                for i in s.items
            ]
        ),
        s.collection_method,
        s.days_until_due,
        s.automatic_tax,
        s.trial_start,
        s.trial_end,
        s.cancel_at,
        s.cancel_at_period_end,
        s.canceled_at,
        s.ended_at,
        s.schedule_id,
        s.pending_invoice_item_interval,
        s.latest_invoice_id,
        s.test_clock,
        s.created,
        _items(s.metadata),
        _owner_values(s.owner),
        s.trial_missing_payment_method,
        s.cancellation_reason,
    )


def _schedule_values(s: ScheduleRecord) -> tuple[object, ...]:
    return (
        s.stripe_id,
        s.subscription_id,
        s.customer_id,
        s.status,
        s.end_behavior,
        tuple(
            [
                (
                    p.start,
                    p.end,
                    tuple([(i.price_id, i.quantity) for i in p.items]),
                    p.proration_behavior,
                    p.collection_method,
                    p.automatic_tax,
                    p.plan,
                )
                for p in s.phases
            ]
        ),
        _items(s.metadata),
        _owner_values(s.owner),
        s.current_phase,
        s.released_subscription,
        s.created,
    )


def _catalog_values(catalog: PlanCatalog) -> tuple[object, ...]:
    plans = tuple(
        (
            name,
            plan.name,
            plan.interval,
            plan.trial_days,
            plan.active,
            tuple(_price_values(p) for p in plan.prices),
        )
        for name, plan in sorted(catalog.plans.items())
    )
    prices = tuple(sorted((k, _price_values(v)) for k, v in catalog.prices_by_id.items()))
    return (plans, prices)


def _price_values(p: CatalogPrice) -> tuple[object, ...]:
    return (
        p.key,
        p.product,
        p.stripe_id,
        p.interval,
        _items(p.amounts),
        p.usage_type,
        p.behavior,
        p.seat_limit,
        p.active,
        p.interval_count,
        p.replacing,
        p.protect,
    )


def _items(mapping: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(mapping.items())) if mapping else ()

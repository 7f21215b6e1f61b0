"""The store's mirror against Stripe: each subscription as the store holds it equals the
subscription as Stripe shows it now, read through the product's own reader (the record the
next pass would compare), less the two facts the mirror does not keep (the trial's end
behavior and the cancellation reason), plus the plain Stripe fields checked one by one."""

from __future__ import annotations

import dataclasses
from typing import Any

from billing_reconciler.model_subscriptions import SubscriptionRecord
from billing_reconciler.store import SubscriptionMirrorRepository
from billing_reconciler.stripe_gateway import RetryPolicy, StripeGateway
from billing_reconciler.stripe_gateway.subscriptions import retrieve_subscription

from .conftest import World


def _comparable(record: SubscriptionRecord) -> SubscriptionRecord:
    return dataclasses.replace(record, trial_missing_payment_method=None, cancellation_reason=None)


def assert_mirror_is_stripe(world: World, subscriptions: list[Any]) -> None:
    """`subscriptions` (SDK objects, as listed) are mirrored exactly as Stripe has them."""
    gateway = StripeGateway(
        api_key="sk_test_emulator",
        api_base=world.emulator.url,
        rate_limit_per_second=10_000,
        retry=RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0),
    )
    with world.store.session() as session:
        mirror = SubscriptionMirrorRepository(session)
        stored = {sub.id: mirror.get(sub.id) for sub in subscriptions}
    for sub in subscriptions:
        held = stored[sub.id]
        assert held is not None, f"{sub.id} is not mirrored"
        record = held.record
        assert _comparable(record) == _comparable(
            retrieve_subscription(gateway, sub.id, installation_id="test")
        ), sub.id
        # The same, field by field, from the SDK's object.
        schedule = sub.schedule if isinstance(sub.schedule, str | None) else sub.schedule.id
        assert (record.status, record.cancel_at, record.canceled_at, record.schedule_id) == (
            sub.status,
            sub.cancel_at,
            sub.canceled_at,
            schedule,
        ), sub.id
        assert record.cancel_at_period_end == sub.cancel_at_period_end, sub.id
        assert held.plan == sub.metadata.to_dict().get("plan"), sub.id
        assert sorted((i.price_id, i.quantity, i.current_period_end) for i in record.items) == (
            sorted((i.price.id, i.quantity, i.current_period_end) for i in sub["items"].data)
        ), sub.id

"""The Stripe events the subscriptions domain reconciles on (DESIGN §14, §16).

`customer.subscription.*` (created, updated, deleted, trial_will_end, paused, ...) and
`subscription_schedule.*` of an object of ours reconcile that org (`customer/<org_id>`, the
customer-scoped request key every customer-scoped domain shares), from our `org_id` marker,
else from the `br_key` (`subscription/<org_id>`). A schedule carries no marker until we write
its phases (`from_subscription` takes no metadata), so an unmarked schedule may be ours: it
asks for the domain as a whole, whose events cursor then names its customer. An unmarked
subscription is foreign (ours are created with the marker): nothing to reconcile.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from billing_reconciler.domains.event_routes import EventRoute, Target, ours, whole_domain
from billing_reconciler.model import META_KEY
from billing_reconciler.model_customers import META_ORG_ID, customer_key
from billing_reconciler.model_subscriptions import org_id_of_subscription_key


def _org_of(metadata: Mapping[str, Any]) -> str | None:
    org_id = metadata.get(META_ORG_ID)
    if isinstance(org_id, str) and org_id:
        return org_id
    key = metadata.get(META_KEY)
    return org_id_of_subscription_key(key) if isinstance(key, str) else None


def _the_subscription(obj: Mapping[str, Any]) -> Target | None:
    metadata = ours(obj)
    if metadata is None:
        return None
    org_id = _org_of(metadata)
    # Marked but without a usable org (someone edited our metadata): the whole domain.
    return Target(None if org_id is None else frozenset({customer_key(org_id)}))


def _the_schedule(obj: Mapping[str, Any]) -> Target:
    metadata = ours(obj)
    org_id = None if metadata is None else _org_of(metadata)
    if org_id is None:
        return whole_domain(obj)
    return Target(frozenset({customer_key(org_id)}))


SUBSCRIPTION_ROUTES: Final = (
    EventRoute("customer.subscription.", _the_subscription),
    EventRoute("subscription_schedule.", _the_schedule),
)

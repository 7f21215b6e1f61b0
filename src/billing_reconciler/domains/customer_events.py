"""The Stripe events the customers domain reconciles on (DESIGN §15).

`customer.created|updated|deleted` of a customer of ours reconcile that org's customer
(`customer/<org_id>`, from our `org_id` marker, else from `br_key`); a foreign customer is
ignored. A `customer.tax_id.*` event names only the Stripe customer, so it asks for the
domain as a whole, whose events cursor then names that one customer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from billing_reconciler.domains.event_routes import EventRoute, Target, ours, whole_domain
from billing_reconciler.model import META_KEY
from billing_reconciler.model_customers import META_ORG_ID, customer_key, org_id_of_key


def _the_customer(obj: Mapping[str, Any]) -> Target | None:
    metadata = ours(obj)
    if metadata is None:
        return None
    org_id = metadata.get(META_ORG_ID)
    if not isinstance(org_id, str) or not org_id:
        key = metadata.get(META_KEY)
        org_id = org_id_of_key(key) if isinstance(key, str) else None
    if not org_id:
        return None
    return Target(frozenset({customer_key(org_id)}))


CUSTOMER_ROUTES: Final = (
    EventRoute("customer.created", _the_customer),
    EventRoute("customer.updated", _the_customer),
    EventRoute("customer.deleted", _the_customer),
    EventRoute("customer.tax_id.", whole_domain),
)

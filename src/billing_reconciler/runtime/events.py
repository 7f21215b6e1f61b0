"""Which reconcile a Stripe event asks for: a pure, table-driven router.

Webhooks are hints, never state (DESIGN §11, STYLE 11): an event only names *what* to look at
again. The reconcile it triggers re-reads Stripe; nothing in the payload is applied. So the
router reads just enough of the event to target the work: the event type, and the object's
identity (our `br_key` marker for catalog objects, our `org_id` marker for customers, the
customer id for customer-owned ones).

Domains are named as registered (`catalog`, `customers`) or, for the ones not built yet, as
in `billing.refresh_interval` (`subscription`, `checkout`, `invoice`: requests for them are
dropped by the runtime). Scopes are request keys: `product/<name>` for the catalog,
`customer/<org_id>` for the customers domain (a customer without our marker is foreign and
ignored; a `customer.tax_id.*` event names only the Stripe customer, so it asks for the
customers domain as a whole, whose events cursor then names that one customer); Stripe
customer ids for the domains not built yet. `scope=None` means the whole domain.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from billing_reconciler.model import MANAGED_BY, META_KEY, META_MANAGED_BY
from billing_reconciler.model_customers import META_ORG_ID, customer_key, org_id_of_key
from billing_reconciler.planning.scope import product_of

CATALOG: Final = "catalog"
CUSTOMERS: Final = "customers"
SUBSCRIPTION: Final = "subscription"
CHECKOUT: Final = "checkout"
INVOICE: Final = "invoice"


@dataclass(frozen=True, slots=True)
class ReconcileRequest:
    """Reconcile `domain`, limited to `scope` (None: all of it); `reason` is for logs."""

    domain: str
    scope: frozenset[str] | None
    reason: str


_Router = Callable[[str, Mapping[str, Any], str], "ReconcileRequest | None"]


def _object_of(event: Mapping[str, Any]) -> Mapping[str, Any]:
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    return obj if isinstance(obj, Mapping) else {}


def _ours(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The object's metadata when it carries our marker; objects without it are not ours."""
    metadata = obj.get("metadata")
    if isinstance(metadata, Mapping) and metadata.get(META_MANAGED_BY) == MANAGED_BY:
        return metadata
    return None


def _catalog_product(domain: str, obj: Mapping[str, Any], reason: str) -> ReconcileRequest | None:
    """A product or price of ours: reconcile the product it belongs to."""
    metadata = _ours(obj)
    if metadata is None:
        return None
    key = metadata.get(META_KEY)
    product = product_of(key) if isinstance(key, str) else None
    # Marked but without a usable key (someone edited our metadata): the whole catalog is
    # the safe target, since we cannot tell which desired product it was.
    scope = None if product is None else frozenset({product})
    return ReconcileRequest(domain=domain, scope=scope, reason=reason)


def _whole_domain(domain: str, obj: Mapping[str, Any], reason: str) -> ReconcileRequest | None:
    del obj
    return ReconcileRequest(domain=domain, scope=None, reason=reason)


def _id_of(value: object) -> str | None:
    """An id, whether Stripe sent it as a string or as an expanded object."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _the_customer(domain: str, obj: Mapping[str, Any], reason: str) -> ReconcileRequest | None:
    """A customer of ours: reconcile that org's customer (`customer/<org_id>`)."""
    metadata = _ours(obj)
    if metadata is None:
        return None
    org_id = metadata.get(META_ORG_ID)
    if not isinstance(org_id, str) or not org_id:
        key = metadata.get(META_KEY)
        org_id = org_id_of_key(key) if isinstance(key, str) else None
    if not org_id:
        return None
    return ReconcileRequest(domain=domain, scope=frozenset({customer_key(org_id)}), reason=reason)


def _owning_customer(domain: str, obj: Mapping[str, Any], reason: str) -> ReconcileRequest | None:
    """An object owned by a customer (invoice, subscription, session, payment intent).

    Without a customer it cannot belong to any billing customer of ours (we always create
    them with one), so there is nothing to reconcile.
    """
    customer = _id_of(obj.get("customer"))
    if customer is None:
        return None
    return ReconcileRequest(domain=domain, scope=frozenset({customer}), reason=reason)


# Prefix routes: every event type under the prefix (`product.` covers created, updated,
# deleted). `plan.*` is deliberately absent: Stripe emits it alongside `price.*` for the
# same recurring price, which already routes.
_PREFIX_ROUTES: Final[tuple[tuple[str, str, _Router], ...]] = (
    ("product.", CATALOG, _catalog_product),
    ("price.", CATALOG, _catalog_product),
    ("entitlements.feature.", CATALOG, _whole_domain),
    ("billing.meter.", CATALOG, _whole_domain),
    ("customer.tax_id.", CUSTOMERS, _whole_domain),
)

# The 13 event types our billing docs list (Frontier's webhook handling).
_EXACT_ROUTES: Final[Mapping[str, tuple[str, _Router]]] = {
    "customer.created": (CUSTOMERS, _the_customer),
    "customer.updated": (CUSTOMERS, _the_customer),
    "customer.deleted": (CUSTOMERS, _the_customer),
    "invoice.created": (INVOICE, _owning_customer),
    "invoice.finalized": (INVOICE, _owning_customer),
    "invoice.paid": (INVOICE, _owning_customer),
    "invoice.payment_failed": (INVOICE, _owning_customer),
    "customer.subscription.created": (SUBSCRIPTION, _owning_customer),
    "customer.subscription.updated": (SUBSCRIPTION, _owning_customer),
    "customer.subscription.deleted": (SUBSCRIPTION, _owning_customer),
    "checkout.session.completed": (CHECKOUT, _owning_customer),
    "payment_intent.succeeded": (INVOICE, _owning_customer),
    "payment_intent.payment_failed": (INVOICE, _owning_customer),
}

ROUTED_EVENT_TYPES: Final[frozenset[str]] = frozenset(_EXACT_ROUTES)
"""The exact event types routed (besides the catalog prefixes)."""


def _route_for(event_type: str) -> tuple[str, _Router] | None:
    exact = _EXACT_ROUTES.get(event_type)
    if exact is not None:
        return exact
    for prefix, domain, router in _PREFIX_ROUTES:
        if event_type.startswith(prefix):
            return domain, router
    return None


def route_event(event: Mapping[str, Any]) -> ReconcileRequest | None:
    """The reconcile `event` asks for; None when it is not ours or of a type we ignore."""
    event_type = event.get("type")
    if not isinstance(event_type, str):
        return None
    route = _route_for(event_type)
    if route is None:
        return None
    domain, router = route
    reason = f"webhook {event_type} {event.get('id', '?')}"
    return router(domain, _object_of(event), reason)

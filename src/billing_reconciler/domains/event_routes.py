"""How a domain names the Stripe events it reconciles on: pure routes over event payloads.

Webhooks are hints, never state (DESIGN §11, STYLE 11): an event only names *what* to look at
again; the reconcile it triggers re-reads Stripe and nothing in the payload is applied. So a
route reads just enough of the event's object to target the work: our markers, or the owning
customer's id.

Each domain declares its routes (`Domain.event_routes`); `runtime.events` joins the routes of
the registered domains into one table and never spells a domain's name. A route is an exact
event type (`customer.updated`) or a prefix ending in a dot (`product.`: created, updated,
deleted), and a function from the event's object to a `Target`:
- `None`: the object is not ours (no marker, a foreign customer): nothing to reconcile;
- `Target(None)`: the whole domain;
- `Target(frozenset(keys))`: those request keys only (`product/<name>`, `customer/<org_id>`).

The helpers below are shared by every domain's routes (the marker test, an id whether Stripe
sent it bare or expanded, "the owning customer" for invoices, subscriptions and sessions).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from billing_reconciler.model import MANAGED_BY, META_MANAGED_BY


@dataclass(frozen=True, slots=True)
class Target:
    """What an event asks the domain to reconcile: `scope` keys, or None for all of it."""

    scope: frozenset[str] | None


TargetOf = Callable[[Mapping[str, Any]], Target | None]


@dataclass(frozen=True, slots=True)
class EventRoute:
    """`event_type` exactly, or every type under it when it ends in a dot."""

    event_type: str
    target: TargetOf

    @property
    def is_prefix(self) -> bool:
        return self.event_type.endswith(".")

    def matches(self, event_type: str) -> bool:
        if self.is_prefix:
            return event_type.startswith(self.event_type)
        return event_type == self.event_type


def ours(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The object's metadata when it carries our marker; objects without it are not ours."""
    metadata = obj.get("metadata")
    if isinstance(metadata, Mapping) and metadata.get(META_MANAGED_BY) == MANAGED_BY:
        return metadata
    return None


def id_of(value: object) -> str | None:
    """An id, whether Stripe sent it as a string or as an expanded object."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def whole_domain(obj: Mapping[str, Any]) -> Target:
    del obj
    return Target(None)


def owning_customer(obj: Mapping[str, Any]) -> Target | None:
    """An object owned by a customer (invoice, subscription, session, payment intent): that
    customer's id. Without a customer it cannot belong to any billing customer of ours (we
    always create them with one), so there is nothing to reconcile."""
    customer = id_of(obj.get("customer"))
    return None if customer is None else Target(frozenset({customer}))

"""Which reconcile a Stripe event asks for: a pure, table-driven router.

Webhooks are hints, never state (DESIGN §11, STYLE 11): an event only names *what* to look at
again. Every domain declares the events it reconciles on (`Domain.event_routes`, see
`domains.event_routes`); this module joins the routes of the registered domains into one
table, exact types before prefixes, and never spells a domain's name. An event no registered
domain routes (an `invoice.paid` before the invoices domain exists, `charge.succeeded`) asks
for nothing: the intake stores it and marks it done.

Scopes are request keys (`product/<name>`, `customer/<org_id>`); `scope=None` means the whole
domain.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from billing_reconciler.domains.event_routes import EventRoute
from billing_reconciler.registry import DOMAINS


@dataclass(frozen=True, slots=True)
class ReconcileRequest:
    """Reconcile `domain`, limited to `scope` (None: all of it); `reason` is for logs."""

    domain: str
    scope: frozenset[str] | None
    reason: str


class RoutingDomain(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def event_routes(self) -> Iterable[EventRoute]: ...


class EventRouter:
    """The registered domains' routes as one table; two domains routing one type is refused."""

    def __init__(self, domains: Iterable[RoutingDomain]) -> None:
        self._exact: dict[str, tuple[str, EventRoute]] = {}
        self._prefixes: list[tuple[str, EventRoute]] = []
        claimed: dict[str, str] = {}
        for domain in domains:
            for route in domain.event_routes:
                if route.event_type in claimed:
                    raise ValueError(
                        f"event type {route.event_type!r} is routed by both "
                        f"{claimed[route.event_type]} and {domain.name}"
                    )
                claimed[route.event_type] = domain.name
                if route.is_prefix:
                    self._prefixes.append((domain.name, route))
                else:
                    self._exact[route.event_type] = (domain.name, route)
        # The longest prefix wins (`customer.tax_id.` before a future `customer.`).
        self._prefixes.sort(key=lambda entry: -len(entry[1].event_type))

    @property
    def event_types(self) -> frozenset[str]:
        """Every exact type and prefix routed (a prefix ends in a dot)."""
        return frozenset(self._exact) | {route.event_type for _, route in self._prefixes}

    def _route_for(self, event_type: str) -> tuple[str, EventRoute] | None:
        exact = self._exact.get(event_type)
        if exact is not None:
            return exact
        for domain, route in self._prefixes:
            if route.matches(event_type):
                return domain, route
        return None

    def route(self, event: Mapping[str, Any]) -> ReconcileRequest | None:
        """The reconcile `event` asks for; None when it is not ours or of a type not routed."""
        event_type = event.get("type")
        if not isinstance(event_type, str):
            return None
        found = self._route_for(event_type)
        if found is None:
            return None
        domain, route = found
        target = route.target(_object_of(event))
        if target is None:
            return None
        reason = f"webhook {event_type} {event.get('id', '?')}"
        return ReconcileRequest(domain=domain, scope=target.scope, reason=reason)


def _object_of(event: Mapping[str, Any]) -> Mapping[str, Any]:
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    return obj if isinstance(obj, Mapping) else {}


@functools.cache
def registered_router() -> EventRouter:
    """The router over the registered domains (`registry.DOMAINS`), built once."""
    return EventRouter(registration.domain for registration in DOMAINS)


def route_event(event: Mapping[str, Any]) -> ReconcileRequest | None:
    """`EventRouter.route` over the registered domains."""
    return registered_router().route(event)

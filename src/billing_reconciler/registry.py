"""The registered domains, in apply order (DESIGN §14): the one place that lists them.

Each entry joins a domain's pure rules (`domains/<name>`) with its I/O edge
(`effects/<name>`: the reader it observes through and the executors of its step kinds). The
controller, the applier, the runtime and the CLI iterate this tuple and never spell a domain's
name. After `customers` come subscriptions, credits, checkouts, invoices.

Adding a domain (e.g. `customers`) touches no shared code:
1. `domains/customers.py`: the pure `Domain` (`domains.base`): its records, rules, step kinds,
   `scope_of` mapping object keys to `customer/<org_id>`, its refresh interval, and a
   `Protocol` of what it reads;
2. gateway list/write functions and store repositories it needs (the only SDK caller and the
   only SQL writer stay the only ones);
3. `effects/customers.py`: the reader over them and a `StepExecutor` per step kind;
4. one `Registration` below, in apply order; `check_unique_kinds` refuses a kind two domains
   claim. The CLI, `serve`, `status` and metrics pick it up from `DOMAINS`.
"""

from __future__ import annotations

from collections.abc import Sequence

from billing_reconciler.controller import Registration
from billing_reconciler.domains.catalog_domain import CatalogDomain
from billing_reconciler.domains.credits import CreditsDomain
from billing_reconciler.domains.customers import CustomersDomain
from billing_reconciler.domains.subscriptions import SubscriptionsDomain
from billing_reconciler.effects import catalog as catalog_effects
from billing_reconciler.effects import credits as credits_effects
from billing_reconciler.effects import customers as customers_effects
from billing_reconciler.effects import subscriptions as subscriptions_effects

CATALOG = Registration(
    domain=CatalogDomain(),
    open_reader=catalog_effects.open_reader,
    executors=catalog_effects.EXECUTORS,
)

CUSTOMERS = Registration(
    domain=CustomersDomain(),
    open_reader=customers_effects.open_reader,
    executors=customers_effects.EXECUTORS,
)

SUBSCRIPTIONS = Registration(
    domain=SubscriptionsDomain(),
    open_reader=subscriptions_effects.open_reader,
    executors=subscriptions_effects.EXECUTORS,
)

CREDITS = Registration(
    domain=CreditsDomain(),
    open_reader=credits_effects.open_reader,
    executors=credits_effects.EXECUTORS,
    facts=credits_effects.facts,
)

DOMAINS: tuple[Registration, ...] = (CATALOG, CUSTOMERS, SUBSCRIPTIONS, CREDITS)


def by_name(registrations: Sequence[Registration] = DOMAINS) -> dict[str, Registration]:
    return {registration.name: registration for registration in registrations}


def check_unique_kinds(registrations: Sequence[Registration]) -> None:
    """Two domains planning the same step kind would share one executor: refuse it."""
    seen: dict[str, str] = {}
    for registration in registrations:
        for kind in registration.domain.kinds:
            if kind in seen:
                raise ValueError(
                    f"step kind {kind!r} is planned by both {seen[kind]} and {registration.name}"
                )
            seen[kind] = registration.name


check_unique_kinds(DOMAINS)

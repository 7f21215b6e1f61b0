"""The catalog as a `Domain`: meters, features, products, prices, attachments, plan records.

The catalog's rules are `planning.diff`; its desired records come from `domains.catalog`. It
reads through a `CatalogReader` (implemented over the gateway and the store by
`effects.catalog`): the live catalog (attachments listed only for the products the planner
picks, so observation stays at ceil(N/100) calls per type), the plan records of the store, and
the active-subscription count of a price a step retires (the plan states that impact).
Targeted requests name products (`product/<name>`); a product's prices and attachments belong
to it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, Final, Protocol

from billing_reconciler.desired.state import DesiredState
from billing_reconciler.domains.base import PlanContext
from billing_reconciler.domains.catalog import desired_catalog
from billing_reconciler.domains.catalog_events import CATALOG_ROUTES
from billing_reconciler.model import Catalog, CatalogRecord, Kind, PlanRecord, ProductRecord
from billing_reconciler.planning.builder import PlanPolicy
from billing_reconciler.planning.diff import diff
from billing_reconciler.planning.fields import comparable_fields
from billing_reconciler.planning.plan import Action, Plan, Step
from billing_reconciler.planning.rules.attachments import products_to_list
from billing_reconciler.planning.scope import product_of

NAME: Final = "catalog"


class CatalogReader(Protocol):
    """What the catalog reads; `effects.catalog.CatalogIO` implements it."""

    def live_catalog(
        self, *, products_with_features: Callable[[Sequence[ProductRecord]], Iterable[str]]
    ) -> Catalog: ...

    def plan_records(self) -> tuple[PlanRecord, ...]: ...

    def active_subscriptions(self, price_id: str) -> int | None: ...


class CatalogDomain:
    """See the module docstring."""

    name: Final = NAME
    kinds: Final = frozenset(kind.value for kind in Kind)
    event_routes: Final = CATALOG_ROUTES

    def refresh_seconds(self, state: DesiredState) -> int:
        return int(state.config.billing.refresh_interval.catalog)

    def desired(self, state: DesiredState, context: PlanContext) -> Catalog:
        return desired_catalog(state, installation_id=context.installation_id)

    def observe(self, reader: CatalogReader, desired: Catalog, context: PlanContext) -> Catalog:
        observed = reader.live_catalog(
            products_with_features=functools.partial(
                products_to_list,
                desired,
                applied_keys=context.applied,
                installation_id=context.installation_id,
                verify=context.state.config.reconcile.verify_attachments,
            )
        )
        return replace(observed, plans=reader.plan_records())

    def plan(self, desired: Catalog, observed: Catalog, context: PlanContext) -> Plan:
        return diff(desired, observed, context.applied, _policy(context))

    def annotate(self, plan: Plan, reader: CatalogReader) -> Plan:
        """State how many active subscriptions sit on each price a step supersedes or archives."""
        return replace(plan, steps=tuple(_with_impact(step, reader) for step in plan.steps))

    def desired_fields(self, desired: Catalog) -> dict[str, dict[str, Any]]:
        records: tuple[CatalogRecord, ...] = (
            *desired.meters,
            *desired.features,
            *desired.products,
            *desired.prices,
            *desired.product_features,
            *desired.plans,
        )
        return {record.key: comparable_fields(record) for record in records}

    def scope_of(self, key: str) -> str | None:
        return product_of(key)


def _policy(context: PlanContext) -> PlanPolicy:
    settings = context.state.config.reconcile
    return PlanPolicy(
        installation_id=settings.installation_id,
        revision=context.state.revision,
        prune=settings.prune,
        max_archive_fraction=float(settings.max_archive_fraction),
        correct_drift=settings.drift == "correct",
        adopt_all=context.options.adopt_all,
        adopt_keys=frozenset(settings.adopt),
        allow_mass_archive=context.options.allow_mass_archive,
        now=context.now,
        verify_attachments=settings.verify_attachments,
        spent_keys=context.spent_keys,
        key_salt=context.key_salt,
    )


def _with_impact(step: Step, reader: CatalogReader) -> Step:
    leaving = step.kind is Kind.PRICE and step.action in (Action.SUPERSEDE, Action.ARCHIVE)
    if not (leaving and step.stripe_id):
        return step
    count = reader.active_subscriptions(step.stripe_id)
    if not count:
        return step
    return replace(
        step, impact=f"{count} active subscription(s) stay on {step.stripe_id} (grandfathered)"
    )

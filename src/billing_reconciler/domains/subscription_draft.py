"""The plan being built (`Draft`): the pass's context and catalog, the steps by batch, the
notices, warnings and bookkeeping restores, and the per-pass caches (plan shapes, prices by
key, contract customers). Beside it the lookups every rule shares: whether a subscription is
ours, and which plan a subscription or a schedule phase bills. Pure."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from billing_reconciler.config import BillingSettings
from billing_reconciler.desired.state import CustomerSpec
from billing_reconciler.domains.base import PlanContext
from billing_reconciler.domains.customer_rules import unspent_key
from billing_reconciler.domains.subscription_keys import SUBSCRIPTION_STEP
from billing_reconciler.domains.subscription_shape import Refusal, Shape, derive, shape_of
from billing_reconciler.domains.subscription_types import (
    BEHAVIOR_CREDITS,
    AccountSubscriptions,
    CatalogPrice,
    PlanCatalog,
)
from billing_reconciler.model_subscriptions import (
    CollectionMethod,
    DesiredSubscription,
    ItemRecord,
    SchedulePhase,
    SubscriptionRecord,
    subscription_key,
)
from billing_reconciler.planning.plan import Notice, Step, digest


@dataclass(slots=True)
class Draft:
    """One pass's plan as the rules build it (see the module docstring)."""

    context: PlanContext
    catalog: PlanCatalog
    phases: dict[int, list[Step]] = field(default_factory=dict)
    notices: list[Notice] = field(default_factory=list)
    restores: list[Step] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    shapes: dict[tuple[str | None, str], Shape | str] = field(default_factory=dict)
    prices_by_key: dict[str, CatalogPrice] | None = None
    # Protected price keys with live subscriptions not migrated off them, and how many.
    protected: dict[str, int] = field(default_factory=dict)
    _contracts: dict[str, CustomerSpec] | None = None

    @property
    def billing(self) -> BillingSettings:
        return self.context.state.config.billing

    @property
    def contracts(self) -> Mapping[str, CustomerSpec]:
        """The contract customers (`desired/customers/`) by org id."""
        if self._contracts is None:
            self._contracts = {c.org_id: c for c in self.context.state.customers}
        return self._contracts

    @property
    def migration(self) -> str:
        return str(self.context.state.config.reconcile.price_migration)

    @property
    def installation_id(self) -> str:
        return self.context.installation_id

    def add(self, phase: int, step: Step) -> None:
        self.phases.setdefault(phase, []).append(dataclasses.replace(step, batch=phase))

    def key(self, *parts: str) -> str:
        return unspent_key(
            "br:" + digest(self.context.key_salt, self.installation_id, *parts),
            self.context.spent_keys,
        )

    def notice(self, org_id: str, stripe_id: str | None, message: str) -> None:
        self.notices.append(Notice(subscription_key(org_id), SUBSCRIPTION_STEP, stripe_id, message))

    def desired(
        self, bundle: AccountSubscriptions, plan: str | None, *, target: bool = False
    ) -> DesiredSubscription | Refusal:
        currency = (bundle.account.currency or self.billing.currency).lower()
        cache_key = (plan, currency)
        shape = self.shapes.get(cache_key)
        if shape is None:
            shape = self.shapes[cache_key] = shape_of(self.catalog, plan, currency)
        if isinstance(shape, str):
            return Refusal(bundle.org_id, plan, shape)
        return derive(
            bundle,
            shape,
            currency=currency,
            billing=self.billing,
            installation_id=self.installation_id,
            revision=self.context.state.revision,
            target=target,
            collection_method=CollectionMethod.CHARGE_AUTOMATICALLY.value,
        )

    def price_of(self, item: ItemRecord) -> CatalogPrice | None:
        """The catalog's price an item bills: by its id, else (a superseded id the catalog
        no longer has: a grandfathered item) by the price's key from its marker."""
        price = self.catalog.price(item.price_id)
        if price is not None or item.price_key is None:
            return price
        if self.prices_by_key is None:
            self.prices_by_key = {
                p.key: p
                for p in (
                    *self.catalog.prices_by_id.values(),
                    *(p for plan in self.catalog.plans.values() for p in plan.prices),
                )
            }
        return self.prices_by_key.get(item.price_key)

    def free(self, bundle: AccountSubscriptions, plan: str) -> bool:
        currency = (bundle.account.currency or self.billing.currency).lower()
        shape = self.shapes.get((plan, currency))
        if shape is None:
            shape = self.shapes[(plan, currency)] = shape_of(self.catalog, plan, currency)
        return isinstance(shape, Shape) and shape.free


def is_ours(draft: Draft, sub: SubscriptionRecord) -> bool:
    owner = sub.owner
    return owner is not None and owner.installation_id == draft.installation_id


def billed_plan(sub: SubscriptionRecord, intent_plan: str) -> str:
    """The plan `sub` bills (its marker; the intent's when a checkout-made one lacks it)."""
    owner = sub.owner
    return (owner.plan if owner is not None and owner.plan else intent_plan).lower()


def plan_of(draft: Draft, sub: SubscriptionRecord) -> str | None:
    """The plan a subscription of ours bills: its `plan` marker, else the one catalog plan
    whose billed prices are its items' (by their price keys); None: cannot tell."""
    if sub.owner is not None and sub.owner.plan:
        return sub.owner.plan.lower()
    keys = {i.price_key for i in sub.items}
    if None in keys:
        return None
    return plan_billing(draft, {key for key in keys if key is not None})


def phase_plan(draft: Draft, phase: SchedulePhase) -> str | None:
    """The plan a schedule phase bills: its `plan` marker, else the one catalog plan whose
    billed prices are its items' (by their price ids); None: cannot tell."""
    if phase.plan:
        return phase.plan.lower()
    keys: set[str] = set()
    for item in phase.items:
        price = draft.catalog.price(item.price_id)
        if price is None:
            return None
        keys.add(price.key)
    return plan_billing(draft, keys)


def plan_billing(draft: Draft, keys: set[str]) -> str | None:
    """The one catalog plan whose billed prices (active, of its interval, no credits) are
    exactly `keys`; None when none or several are."""
    if not keys:
        return None
    found = [
        plan.name.lower()
        for plan in draft.catalog.plans.values()
        if keys
        == {
            p.key
            for p in plan.prices
            if p.behavior != BEHAVIOR_CREDITS and p.interval == plan.interval and p.active
        }
    ]
    return found[0] if len(found) == 1 else None

"""The records the subscriptions domain's rules read (DESIGN §16). Pure, frozen values.

The edge (`effects/`) builds them: per account, the store's account, its subscription intent,
its seat count and plan history, and the Stripe subscriptions and schedules listed on its
customer (`subscriptions.list(status=all)`, `subscription_schedules.list`); once per pass, the
`PlanCatalog` (the desired plans with the Stripe ids of their prices, from the catalog's
last-applied records). The rules never see a store row or an SDK object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from billing_reconciler.desired.state import DesiredState, PriceSpec
from billing_reconciler.model_subscriptions import (
    PendingChange,
    ScheduleRecord,
    SubscriptionRecord,
)

BEHAVIOR_PER_SEAT: Final = "per_seat"
BEHAVIOR_CREDITS: Final = "credits"
USAGE_METERED: Final = "metered"
#: Intent sources (who set the plan): `default_plan` subscribes directly, never with a trial.
SOURCE_DEFAULT_PLAN: Final = "default_plan"
#: A contract customer's declared plan (`desired/customers/`, DESIGN §15): never a trial.
SOURCE_CONTRACT: Final = "contract"


@dataclass(frozen=True, slots=True)
class CatalogPrice:
    """A price of a plan's product, as the rules need it.

    `key` is `price/<product>/<name>`; `stripe_id` the id of the catalog's last-applied price
    (None: not created yet: a plan using it cannot be subscribed this pass); `amounts` maps
    every currency the price has (its own and `currency_options`) to its unit amount in minor
    units (for a tiered price: the sum of its tiers' amounts, so 0 means free).

    `replacing`: the catalog's next apply supersedes the price (its desired immutable fields
    differ from the last-applied ones), so `stripe_id` is the id about to be retired and a
    price migration targets the price's key, resolved when it runs; `protect`: the desired
    price is protected (its subscriptions are never migrated off it)."""

    key: str
    product: str
    stripe_id: str | None
    interval: str | None
    amounts: Mapping[str, int]
    usage_type: str = "licensed"  # licensed | metered
    behavior: str = "basic"  # basic | credits | per_seat (the product's)
    seat_limit: int | None = None  # the product's `config.seat_limit` (None: unlimited)
    active: bool = True
    interval_count: int = 1
    replacing: bool = False
    protect: bool = False

    @property
    def per_seat(self) -> bool:
        return self.behavior == BEHAVIOR_PER_SEAT and self.usage_type != USAGE_METERED

    @property
    def metered(self) -> bool:
        return self.usage_type == USAGE_METERED


@dataclass(frozen=True, slots=True)
class CatalogPlan:
    """A plan: its interval, trial, state and every price of its products (the rules pick the
    active ones at the plan's interval, skipping `credits` products)."""

    name: str
    interval: str
    prices: tuple[CatalogPrice, ...]
    trial_days: int = 0
    active: bool = True


@dataclass(frozen=True, slots=True)
class PlanCatalog:
    """The plans by name, and every price id the edge knows (current and superseded ones of
    the same price key) -> its price: a grandfathered item on an old price id is still known
    to be per-seat or metered."""

    plans: Mapping[str, CatalogPlan]
    prices_by_id: Mapping[str, CatalogPrice] = field(default_factory=dict)

    def plan(self, name: str | None) -> CatalogPlan | None:
        return None if name is None else self.plans.get(name.lower())

    def price(self, stripe_id: str) -> CatalogPrice | None:
        return self.prices_by_id.get(stripe_id)


def plan_catalog(
    state: DesiredState,
    price_ids: Mapping[str, str],
    *,
    old_price_ids: Mapping[str, str] | None = None,
    replacing: frozenset[str] = frozenset(),
) -> PlanCatalog:
    """The catalog of `state` with the Stripe ids of its prices (`price_ids`: price key ->
    id, from the last-applied records; `old_price_ids`: superseded id -> price key;
    `replacing`: the keys the catalog's next apply supersedes)."""
    products = {p.name: p for p in state.products}
    plans: dict[str, CatalogPlan] = {}
    by_key: dict[str, CatalogPrice] = {}
    for product in state.products:
        for spec in product.prices:
            key = f"price/{product.name}/{spec.name}"
            by_key[key] = CatalogPrice(
                key=key,
                product=product.name,
                stripe_id=price_ids.get(key),
                interval=spec.interval,
                interval_count=spec.interval_count,
                amounts=_amounts(spec),
                usage_type=spec.usage_type,
                behavior=product.behavior,
                seat_limit=product.config.seat_limit or None,  # 0: unlimited
                active=spec.active and product.active,
                replacing=key in replacing,
                protect=spec.protect or product.protect,
            )
    for plan in state.plans:
        prices = tuple(
            by_key[f"price/{name}/{spec.name}"]
            for name in plan.products
            if name in products
            for spec in products[name].prices
        )
        plans[plan.name] = CatalogPlan(
            name=plan.name,
            interval=plan.interval,
            prices=prices,
            trial_days=plan.trial_days,
            active=plan.active,
        )
    by_id = {p.stripe_id: p for p in by_key.values() if p.stripe_id}
    for old_id, key in (old_price_ids or {}).items():
        if key in by_key:
            by_id.setdefault(old_id, by_key[key])
    return PlanCatalog(plans=plans, prices_by_id=by_id)


def _amounts(spec: PriceSpec) -> dict[str, int]:
    tiers = sum((t.unit_amount or 0) + (t.flat_amount or 0) for t in spec.tiers)
    amounts = {spec.currency.lower(): spec.amount + tiers}
    for code, option in spec.currency_options.items():
        option_tiers = sum((t.unit_amount or 0) + (t.flat_amount or 0) for t in option.tiers)
        amounts[code.lower()] = (option.amount or 0) + option_tiers
    return amounts


@dataclass(frozen=True, slots=True)
class SubscriptionAccount:
    """The stored billing account (its Stripe customer None while offline)."""

    account_id: str
    org_id: str
    stripe_customer_id: str | None
    currency: str | None
    offline: bool = False
    state: str = "active"  # active | disabled
    test_clock: str | None = None
    due_in_days: int = 30


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """The account asked to cancel: now (`invoice_now` and `prorate`, as Frontier) or at the
    current period end."""

    immediate: bool
    requested_at: int = 0


@dataclass(frozen=True, slots=True)
class SubscriptionIntent:
    """The account's subscription intent (DESIGN §16): the plan it should be on (None: none),
    who set it, a pending change (`PendingChange`; `reason: cancel` is a period-end cancel),
    a cancel request, and the trial options of a checkout or a direct subscribe."""

    intent_id: str
    plan: str | None
    source: str = "subscribe"  # default_plan | checkout | subscribe | contract
    pending_change: PendingChange | None = None
    cancel: CancelRequest | None = None
    skip_trial: bool = False
    cancel_after_trial: bool = False
    requested_by: str | None = None
    created_at: int = 0


@dataclass(frozen=True, slots=True)
class SubscriptionMirror:
    """What the store holds of one of the account's Stripe subscriptions (DESIGN §16's
    mirror): the rules compare it with what Stripe lists and write it again when they
    differ (a bookkeeping restore, `subscription_mirror`)."""

    stripe_subscription_id: str
    plan: str
    status: str
    seats: int | None = None
    trial_end: int | None = None
    current_period_start: int | None = None
    current_period_end: int | None = None
    cancel_at: int | None = None
    canceled_at: int | None = None
    schedule_id: str | None = None


@dataclass(frozen=True, slots=True)
class AccountSubscriptions:
    """One account's facts: the store's account, intent, seats (active members) and plan
    history (every plan it had, trials included), and the subscriptions and schedules Stripe
    lists on its customer (ours, other installations' and foreign ones, any status)."""

    account: SubscriptionAccount
    intent: SubscriptionIntent | None
    seats: int
    plan_history: frozenset[str] = frozenset()
    subscriptions: tuple[SubscriptionRecord, ...] = ()
    schedules: tuple[ScheduleRecord, ...] = ()
    # The store's mirror of the account's subscriptions of ours (any status).
    mirrors: tuple[SubscriptionMirror, ...] = ()

    @property
    def org_id(self) -> str:
        return self.account.org_id


@dataclass(frozen=True, slots=True)
class SubscriptionsObserved:
    """What one pass saw: every account in scope, and the catalog its plans come from."""

    accounts: tuple[AccountSubscriptions, ...]
    catalog: PlanCatalog

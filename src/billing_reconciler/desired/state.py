"""The canonical desired state the planner consumes: normalized, frozen specs.

Whatever spelling a plan file used (Frontier's flat form, its document form, `flat` for
`per_unit`, `upto` for `up_to`), it ends up as these values. Names are identities and are
stored lower-cased (DESIGN §3); amounts are integers in minor units.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from billing_reconciler.config import BillingConfig
from billing_reconciler.model_customers import Address, CustomerFields, TaxId

Interval = Literal["day", "week", "month", "year"]
TaxBehavior = Literal["inclusive", "exclusive", "unspecified"]


class Spec(BaseModel):
    """Base of the specs: frozen, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class TierSpec(Spec):
    """One tier; `up_to` None is the unbounded last tier."""

    up_to: int | None
    unit_amount: int | None = None
    flat_amount: int | None = None


class CurrencyOptionSpec(Spec):
    """The price in another currency."""

    amount: int | None = None
    tiers: tuple[TierSpec, ...] = ()
    tax_behavior: TaxBehavior | None = None


class MeterSpec(Spec):
    """The Stripe Billing Meter behind a metered price."""

    event_name: str
    display_name: str
    aggregation: Literal["sum", "count", "last"] = "sum"
    value_key: str = "value"
    customer_key: str = "stripe_customer_id"


class PriceSpec(Spec):
    """A price; identity is (product name, price name)."""

    name: str
    amount: int
    currency: str
    interval: Interval | None
    interval_count: int = 1
    usage_type: Literal["licensed", "metered"] = "licensed"
    billing_scheme: Literal["per_unit", "tiered"] = "per_unit"
    tier_mode: Literal["graduated", "volume"] | None = None
    tiers: tuple[TierSpec, ...] = ()
    meter: MeterSpec | None = None
    lookup_key: str | None = None
    """As written; None means the planner's default `<product>_<price>`."""
    nickname: str | None = None
    tax_behavior: TaxBehavior | None = None
    currency_options: dict[str, CurrencyOptionSpec] = {}
    metadata: dict[str, str] = {}
    protect: bool = False
    active: bool = True
    """False for Frontier's `state: inactive`: kept archived, never offered."""

    def effective_lookup_key(self, product: str) -> str:
        """The lookup key the price carries in Stripe (DESIGN §4)."""
        return self.lookup_key or f"{product}_{self.name}"

    def is_free(self) -> bool:
        """True when no currency or tier of this price charges anything."""
        amounts = [self.amount, *(t.unit_amount or 0 for t in self.tiers)]
        amounts += [t.flat_amount or 0 for t in self.tiers]
        for option in self.currency_options.values():
            amounts.append(option.amount or 0)
            amounts += [(t.unit_amount or 0) + (t.flat_amount or 0) for t in option.tiers]
        return not any(amounts)


class ProductConfigSpec(Spec):
    """Behaviour settings of a product."""

    credit_amount: int | None = None
    seat_limit: int | None = None
    min_quantity: int | None = None
    max_quantity: int | None = None


class ProductSpec(Spec):
    """A product; identity is its (lower-cased) name."""

    name: str
    title: str
    description: str = ""
    behavior: Literal["basic", "credits", "per_seat"] = "basic"
    config: ProductConfigSpec = ProductConfigSpec()
    prices: tuple[PriceSpec, ...] = ()
    features: tuple[str, ...] = ()
    metadata: dict[str, str] = {}
    protect: bool = False
    active: bool = True


class FeatureSpec(Spec):
    """A feature; declared, or implied by a product that grants it."""

    name: str
    title: str
    metadata: dict[str, str] = {}


class PlanSpec(Spec):
    """A plan: products sold together at one interval."""

    name: str
    title: str
    description: str = ""
    interval: Interval
    products: tuple[str, ...]
    trial_days: int = 0
    on_start_credits: int = 0
    metadata: dict[str, str] = {}
    active: bool = True


class AddressSpec(Spec):
    """A contract customer's postal address; the country upper-cased."""

    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None


class TaxIdSpec(Spec):
    """A tax id (`eu_vat`, `DE123456789`)."""

    type: str
    value: str


class CustomerSpec(Spec):
    """A contract customer (`desired/customers/*.yaml`): an account declared by org id."""

    org_id: str
    name: str
    email: str | None = None
    phone: str | None = None
    address: AddressSpec | None = None
    tax_ids: tuple[TaxIdSpec, ...] = ()
    offline: bool = False
    plan: str | None = None
    seats: int | None = None
    credit_min: int = 0
    due_in_days: int = 30
    currency: str

    def customer_fields(self) -> CustomerFields:
        """The merged fields, as the local side of the customer merge."""
        address = self.address
        return CustomerFields(
            name=self.name,
            email=self.email,
            phone=self.phone,
            address=None if address is None else Address(**address.model_dump()),
            tax_ids=tuple(TaxId(type=t.type, value=t.value) for t in self.tax_ids),
        ).canonical()


class DesiredState(Spec):
    """Everything desired/ says, validated and cross-checked."""

    root: Path
    config: BillingConfig
    features: tuple[FeatureSpec, ...]
    products: tuple[ProductSpec, ...]
    plans: tuple[PlanSpec, ...]
    revision: str
    """First 12 hex digits of the sha256 of the canonical content (stamped as br_revision)."""
    customers: tuple[CustomerSpec, ...] = ()
    """Contract customers (`desired/customers/`), sorted by org id."""


def content_revision(
    *,
    config: BillingConfig,
    features: tuple[FeatureSpec, ...],
    products: tuple[ProductSpec, ...],
    plans: tuple[PlanSpec, ...],
    customers: tuple[CustomerSpec, ...] = (),
) -> str:
    """Hash of the canonical content: independent of file layout, comments and key order.
    Settings count only where they differ from their defaults, so a setting a new version adds
    (at its default) leaves every existing revision as it was; customers count only when
    declared, so a catalog without them keeps its revision."""
    canonical: dict[str, object] = {
        "config": config.model_dump(mode="json", exclude_defaults=True),
        "features": [f.model_dump(mode="json") for f in features],
        "products": [p.model_dump(mode="json") for p in products],
        "plans": [p.model_dump(mode="json") for p in plans],
    }
    if customers:
        canonical["customers"] = [c.model_dump(mode="json") for c in customers]
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]

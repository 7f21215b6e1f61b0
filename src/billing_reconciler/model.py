"""Normalized, comparable records of managed objects: what desired and observed state become.

The desired side (YAML, via `domains.catalog`) and the observed side (Stripe, via the gateway)
are both turned into these frozen records so the planner compares like with like. A record
holds only the fields we own; Stripe-side bookkeeping (ids, ownership marker) rides alongside.

Conventions:
- amounts are integers in minor units, currencies lower-case ISO 4217 codes;
- `metadata` is the metadata we want on the object *without* the ownership marker keys, which
  live in `owner` (the revision changes on every commit and must not look like a change);
- identities (`key`) are `<kind>/<name>[/<name>]`, lower-cased (DESIGN §3, §4).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeAlias

MANAGED_BY = "billing-reconciler"

META_MANAGED_BY = "managed_by"
META_KEY = "br_key"
META_INSTALLATION = "br_installation"
META_REVISION = "br_revision"
OWNERSHIP_METADATA_KEYS = frozenset({META_MANAGED_BY, META_KEY, META_INSTALLATION, META_REVISION})

# Descriptive metadata we keep on products so host applications can read the catalog from Stripe.
META_PLANS = "br_plans"
META_BEHAVIOR = "br_behavior"
META_PROTECT = "br_protect"
# The features we attached to a product, written after its attachments changed: the inventory
# that spares observation one `/v1/products/{id}/features` call per product (Stripe has no
# account-wide list of product features). Not user metadata: never diffed as such.
META_FEATURES = "br_features"
INVENTORY_METADATA_KEYS = frozenset({META_FEATURES})
# `br_features` of a product with no attachments: an empty value would unset the key, and an
# absent key means "not recorded" (a product from before the inventory, or not ours).
NO_FEATURES = "-"
# Stripe caps a metadata value at 500 characters; a longer list is recorded as its digest.
_INVENTORY_MAX = 500

JSONScalar: TypeAlias = str | int | bool | None
JSONValue: TypeAlias = JSONScalar | list["JSONValue"] | dict[str, "JSONValue"]


class Kind(StrEnum):
    """The kinds of object the catalog domain manages, in apply (dependency) order."""

    METER = "meter"
    FEATURE = "feature"
    PRODUCT = "product"
    PRICE = "price"
    PRODUCT_FEATURE = "product_feature"
    PLAN = "plan"


def object_key(kind: Kind, *names: str) -> str:
    """The identity of an object: `price/team_seat/monthly`. Names are case-insensitive."""
    return "/".join([kind.value, *(name.lower() for name in names)])


@dataclass(frozen=True, slots=True)
class Ownership:
    """The marker we stamp into the metadata of every Stripe object we create (DESIGN §4)."""

    installation_id: str
    key: str
    revision: str = ""

    def as_metadata(self) -> dict[str, str]:
        return {
            META_MANAGED_BY: MANAGED_BY,
            META_KEY: self.key,
            META_INSTALLATION: self.installation_id,
            META_REVISION: self.revision,
        }

    @staticmethod
    def from_metadata(metadata: Mapping[str, str]) -> Ownership | None:
        """The marker found in live metadata, or None for an object we do not manage."""
        if metadata.get(META_MANAGED_BY) != MANAGED_BY or not metadata.get(META_KEY):
            return None
        return Ownership(
            installation_id=metadata.get(META_INSTALLATION, ""),
            key=metadata[META_KEY],
            revision=metadata.get(META_REVISION, ""),
        )


def user_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """Live metadata without the ownership marker and inventory keys."""
    return {
        k: v
        for k, v in metadata.items()
        if k not in OWNERSHIP_METADATA_KEYS and k not in INVENTORY_METADATA_KEYS
    }


def features_inventory(feature_keys: Iterable[str]) -> str:
    """The `br_features` value recording these attached features (`feature/<name>` keys)."""
    names = sorted({key.split("/", 1)[1] for key in feature_keys})
    if not names:
        return NO_FEATURES
    value = ",".join(names)
    if len(value) <= _INVENTORY_MAX:
        return value
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()


def recorded_features(value: str | None) -> frozenset[str] | None:
    """Feature keys a `br_features` value names; None when it names none we can read (absent,
    or a digest)."""
    if value is None or value.startswith("sha256:"):
        return None
    if value == NO_FEATURES:
        return frozenset()
    return frozenset(object_key(Kind.FEATURE, name) for name in value.split(",") if name)


@dataclass(frozen=True, slots=True)
class Tier:
    """One tier of a tiered price; `up_to=None` is Stripe's `inf`."""

    up_to: int | None
    unit_amount: int | None = None
    flat_amount: int | None = None


@dataclass(frozen=True, slots=True)
class CurrencyOption:
    """The same price in another currency (Stripe `currency_options[<cur>]`)."""

    unit_amount: int | None
    tiers: tuple[Tier, ...] = ()
    tax_behavior: str | None = None


@dataclass(frozen=True, slots=True)
class Recurring:
    """Stripe `recurring`; `meter_key` names the meter record backing a metered price."""

    interval: str
    interval_count: int = 1
    usage_type: str = "licensed"
    meter_key: str | None = None


@dataclass(frozen=True, slots=True)
class MeterRecord:
    """A Stripe billing meter. Meters carry no metadata: ownership comes from our inventory."""

    key: str
    event_name: str
    display_name: str
    aggregation: str = "sum"
    customer_key: str = "stripe_customer_id"
    value_key: str = "value"
    active: bool = True
    stripe_id: str | None = None


@dataclass(frozen=True, slots=True)
class FeatureRecord:
    """A Stripe entitlements feature; `lookup_key` is unique per account and immutable."""

    key: str
    lookup_key: str
    title: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    active: bool = True
    stripe_id: str | None = None
    owner: Ownership | None = None


@dataclass(frozen=True, slots=True)
class ProductRecord:
    """A Stripe product. `title` is Stripe's `name`; `name` is our identity."""

    key: str
    name: str
    title: str
    description: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    active: bool = True
    default_price_key: str | None = None
    stripe_id: str | None = None
    default_price_id: str | None = None
    owner: Ownership | None = None
    protect: bool = False
    # The live `br_features` value (see META_FEATURES); None when absent.
    features_record: str | None = None


@dataclass(frozen=True, slots=True)
class PriceRecord:
    """A Stripe price. Fields in `PRICE_IMMUTABLE_FIELDS` can only change by superseding."""

    key: str
    product_key: str
    name: str
    currency: str
    unit_amount: int | None
    lookup_key: str | None = None
    billing_scheme: str = "per_unit"
    tiers_mode: str | None = None
    tiers: tuple[Tier, ...] = ()
    recurring: Recurring | None = None
    currency_options: Mapping[str, CurrencyOption] = field(default_factory=dict)
    nickname: str | None = None
    tax_behavior: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    active: bool = True
    stripe_id: str | None = None
    product_stripe_id: str | None = None
    owner: Ownership | None = None
    protect: bool = False


# Stripe refuses to update these on a price; a change means create a new price (DESIGN §5).
PRICE_IMMUTABLE_FIELDS = (
    "product_key",
    "currency",
    "unit_amount",
    "billing_scheme",
    "tiers_mode",
    "tiers",
    "recurring",
)


@dataclass(frozen=True, slots=True)
class ProductFeatureRecord:
    """The attachment of an entitlements feature to a product."""

    key: str
    product_key: str
    feature_key: str
    stripe_id: str | None = None
    product_stripe_id: str | None = None
    feature_stripe_id: str | None = None


@dataclass(frozen=True, slots=True)
class PlanRecord:
    """A plan: no Stripe object, kept in the local store; products carry plan names."""

    key: str
    name: str
    title: str
    description: str | None
    interval: str | None
    product_keys: tuple[str, ...]
    trial_days: int | None = None
    on_start_credits: int | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    active: bool = True


CatalogRecord: TypeAlias = (
    MeterRecord | FeatureRecord | ProductRecord | PriceRecord | ProductFeatureRecord | PlanRecord
)


@dataclass(frozen=True, slots=True)
class Catalog:
    """A whole catalog, desired or observed. Observed catalogs may hold several objects per key
    (an archived price and the active one that superseded it), and unmarked objects."""

    meters: tuple[MeterRecord, ...] = ()
    features: tuple[FeatureRecord, ...] = ()
    products: tuple[ProductRecord, ...] = ()
    prices: tuple[PriceRecord, ...] = ()
    product_features: tuple[ProductFeatureRecord, ...] = ()
    plans: tuple[PlanRecord, ...] = ()

    def size(self) -> int:
        return (
            len(self.meters)
            + len(self.features)
            + len(self.products)
            + len(self.prices)
            + len(self.product_features)
            + len(self.plans)
        )

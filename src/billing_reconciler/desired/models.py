"""Pydantic models of plan files as written: Frontier's keys plus our optional extensions.

These models are the input contract (and the source of `schemas/plans.schema.json`). They
accept Frontier's spellings (`billing_scheme: flat`, `metered_aggregate`, tier keys `upto` /
`flatamount`, read-only `id`s); `normalize.py` turns them into the canonical specs of
`state.py`. Rules that need only one object are checked here; rules across objects live in
`references.py`.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from billing_reconciler.money import MAX_UNIT_AMOUNT, is_valid_currency

# Stripe's limits on metadata and lookup keys (https://docs.stripe.com/api/metadata).
MAX_METADATA_KEYS: Final[int] = 50
MAX_METADATA_KEY_LENGTH: Final[int] = 40
MAX_METADATA_VALUE_LENGTH: Final[int] = 500
MAX_LOOKUP_KEY_LENGTH: Final[int] = 200
# Keys the reconciler stamps on every object it owns (DESIGN §4); a user value would forge it.
RESERVED_METADATA_KEYS: Final[frozenset[str]] = frozenset(
    {"managed_by", "br_key", "br_installation", "br_revision"}
)
# Stripe allows a recurring interval of at most one year.
MAX_INTERVAL_COUNT: Final[dict[str, int]] = {"day": 365, "week": 52, "month": 12, "year": 1}

NAME_PATTERN: Final[str] = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


def _amount(value: object) -> object:
    # Hand-written messages: pydantic's "Input should be a valid integer" does not say that
    # amounts are minor units, which is the usual cause of `9.99`.
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float):
            raise ValueError(
                f"amounts are whole numbers of minor units (e.g. 999 for 9.99 USD), got {value!r}"
            )
        raise ValueError(f"amounts are whole numbers of minor units, got {_kind(value)}")
    if value < 0:
        raise ValueError(f"amount must not be negative, got {value}")
    if value > MAX_UNIT_AMOUNT:
        raise ValueError(
            f"amount {value} is above Stripe's maximum unit_amount of {MAX_UNIT_AMOUNT}"
        )
    return value


def _currency(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError(f"a currency is a three-letter ISO 4217 code, got {_kind(value)}")
    if not is_valid_currency(value):
        raise ValueError(f"unknown currency {value!r}: not an active ISO 4217 code")
    return value.lower()


def _metadata(value: object) -> object:
    if not isinstance(value, dict):
        return value
    if len(value) > MAX_METADATA_KEYS:
        raise ValueError(f"Stripe allows at most {MAX_METADATA_KEYS} metadata keys")
    result: dict[str, str] = {}
    for key, item in value.items():
        _check_metadata_key(str(key))
        result[str(key)] = _metadata_value(str(key), item)
    return result


def _check_metadata_key(key: str) -> None:
    if len(key) > MAX_METADATA_KEY_LENGTH:
        raise ValueError(f"metadata key '{key}' is longer than {MAX_METADATA_KEY_LENGTH} chars")
    if "[" in key or "]" in key:
        raise ValueError(f"metadata key '{key}' must not contain square brackets")
    if key in RESERVED_METADATA_KEYS:
        raise ValueError(f"metadata key '{key}' is reserved for the reconciler's ownership mark")


def _metadata_value(key: str, item: object) -> str:
    # Stripe stores metadata as strings; numbers and booleans are written as text.
    if isinstance(item, bool):
        text = "true" if item else "false"
    elif isinstance(item, str | int | float):
        text = str(item)
    else:
        raise ValueError(f"metadata value of '{key}' must be text, got {_kind(item)}")
    if len(text) > MAX_METADATA_VALUE_LENGTH:
        raise ValueError(
            f"metadata value of '{key}' is longer than {MAX_METADATA_VALUE_LENGTH} chars"
        )
    return text


def _up_to(value: object) -> object:
    return None if value == "inf" else value


def _kind(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "text"}
    names |= {list: "a list", dict: "a mapping", type(None): "nothing (null)"}
    return names.get(type(value), type(value).__name__)


_UP_TO_SCHEMA: Final[dict[str, Any]] = {
    "anyOf": [{"type": "integer", "minimum": 1}, {"const": "inf"}, {"type": "null"}]
}
Amount = Annotated[
    int,
    BeforeValidator(_amount),
    WithJsonSchema({"type": "integer", "minimum": 0, "maximum": MAX_UNIT_AMOUNT}),
]
Currency = Annotated[
    str, BeforeValidator(_currency), WithJsonSchema({"type": "string", "pattern": "^[A-Za-z]{3}$"})
]
Metadata = Annotated[
    dict[str, str],
    BeforeValidator(_metadata),
    WithJsonSchema(
        {
            "type": "object",
            "maxProperties": MAX_METADATA_KEYS,
            "propertyNames": {"maxLength": MAX_METADATA_KEY_LENGTH},
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        }
    ),
]
Name = Annotated[StrictStr, Field(min_length=1, max_length=100, pattern=NAME_PATTERN)]
# Frontier's server refuses product and plan names shorter than three characters.
LongName = Annotated[StrictStr, Field(min_length=3, max_length=100, pattern=NAME_PATTERN)]
LookupKey = Annotated[StrictStr, Field(min_length=1, max_length=MAX_LOOKUP_KEY_LENGTH)]
Title = Annotated[StrictStr, Field(min_length=1, max_length=250)]
Count = Annotated[StrictInt, Field(ge=0)]
Interval = Literal["day", "week", "month", "year"]
State = Literal["active", "inactive"]
ReadOnlyId = Annotated[
    StrictStr | None,
    Field(description="Frontier's read-only id; ignored (identity is the name)."),
]


class Strict(BaseModel):
    """Base of every plan-file model: frozen, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class MeterModel(Strict):
    """The Stripe Billing Meter that feeds a metered price (ours)."""

    event_name: Annotated[StrictStr, Field(min_length=1, max_length=100)] | None = None
    """Meter event name the host application reports usage under (default: PRODUCT_PRICE)."""
    display_name: Annotated[StrictStr, Field(min_length=1, max_length=250)] | None = None
    """Name shown in the Stripe dashboard (default: the product's title)."""
    aggregation: Literal["sum", "count", "last"] | None = None
    """How events add up within a period (default: from metered_aggregate, else sum)."""
    value_key: Annotated[StrictStr, Field(min_length=1, max_length=100)] = "value"
    """Payload key holding the usage quantity."""
    customer_key: Annotated[StrictStr, Field(min_length=1, max_length=100)] = "stripe_customer_id"
    """Payload key holding the Stripe customer id."""


class TierModel(Strict):
    """One tier of a tiered price (ours; Frontier's `upto`/`flatamount` spellings accepted)."""

    up_to: Annotated[
        StrictInt | None,
        BeforeValidator(_up_to),
        WithJsonSchema(_UP_TO_SCHEMA),
    ] = None
    """Upper bound of units in this tier, or `inf` for the last tier."""
    unit_amount: Amount | None = None
    """Price per unit in this tier, in minor units."""
    flat_amount: Amount | None = None
    """Flat fee for this tier, in minor units."""
    upto: Annotated[
        StrictInt | None,
        BeforeValidator(_up_to),
        WithJsonSchema(_UP_TO_SCHEMA),
    ] = None
    """Frontier's spelling of up_to."""
    flatamount: Amount | None = None
    """Frontier's spelling of flat_amount."""

    @model_validator(mode="after")
    def _one_spelling_and_an_amount(self) -> TierModel:
        if "upto" in self.model_fields_set and "up_to" in self.model_fields_set:
            raise ValueError("write either up_to or upto, not both")
        if "flatamount" in self.model_fields_set and "flat_amount" in self.model_fields_set:
            raise ValueError("write either flat_amount or flatamount, not both")
        if self.unit_amount is None and self.flat_amount is None and self.flatamount is None:
            raise ValueError("a tier needs unit_amount, flat_amount or both")
        return self

    @property
    def bound(self) -> int | None:
        """The tier's upper bound whichever spelling was used (None = infinity)."""
        return self.upto if "upto" in self.model_fields_set else self.up_to

    @property
    def flat(self) -> int | None:
        """The tier's flat fee whichever spelling was used."""
        return self.flatamount if self.flat_amount is None else self.flat_amount


class CurrencyOptionModel(Strict):
    """The same price in another currency (ours)."""

    amount: Amount | None = None
    """Unit amount in this currency's minor units (JPY has none: 1200 means ¥1200)."""
    tiers: list[TierModel] | None = None
    """Tiers in this currency, for tiered prices."""
    tax_behavior: Literal["inclusive", "exclusive", "unspecified"] | None = None
    """Whether the amount includes tax."""


class PriceModel(Strict):
    """A price of a product (Frontier's `prices[]` entry plus our extensions)."""

    name: Name | None = None
    """Identity within the product (Frontier default: default_<index>)."""
    amount: Amount = 0
    """Unit amount in minor units (cents; no decimals for zero-decimal currencies)."""
    currency: Currency | None = None
    """ISO 4217 code (default: billing.default_currency, else usd)."""
    interval: Interval | None = None
    """Recurring interval; omit for a one-time price."""
    interval_count: Annotated[StrictInt, Field(ge=1, le=365)] = 1
    """Bill every N intervals (at most one year in total)."""
    usage_type: Literal["licensed", "metered"] = "licensed"
    """licensed (quantity) or metered (usage reported through a meter)."""
    billing_scheme: Literal["flat", "per_unit", "tiered"] = "flat"
    """flat/per_unit (one unit amount) or tiered."""
    metered_aggregate: (
        Literal["sum", "last_during_period", "last_ever", "max", "count", "last"] | None
    ) = None
    """Frontier's aggregation for metered prices; mapped onto the meter's aggregation."""
    tier_mode: Literal["graduated", "volume"] | None = None
    """For tiered prices: graduated (default) or volume."""
    tiers: list[TierModel] | None = None
    """For tiered prices: the tiers, ascending, the last one up_to: inf."""
    meter: MeterModel | None = None
    """For metered prices: the meter settings (defaults apply when omitted)."""
    lookup_key: LookupKey | None = None
    """Stable key host apps resolve the price by (default: PRODUCT_PRICE)."""
    nickname: Annotated[StrictStr, Field(max_length=250)] | None = None
    """Internal name shown in the Stripe dashboard."""
    tax_behavior: Literal["inclusive", "exclusive", "unspecified"] | None = None
    """Whether the amount includes tax."""
    currency_options: dict[str, CurrencyOptionModel] | None = None
    """The same price in other currencies, keyed by ISO 4217 code."""
    metadata: Metadata | None = None
    """Stripe metadata (50 keys, key ≤ 40 chars, value ≤ 500 chars)."""
    protect: StrictBool = False
    """Never archive or supersede this price."""
    state: State = "active"
    """inactive prices are archived and never offered."""
    id: ReadOnlyId = None
    provider_id: ReadOnlyId = None
    feature_id: ReadOnlyId = None

    @field_validator("currency_options")
    @classmethod
    def _option_currencies(
        cls, value: dict[str, CurrencyOptionModel] | None
    ) -> dict[str, CurrencyOptionModel] | None:
        if value is None:
            return None
        for code in value:
            if not is_valid_currency(code):
                raise ValueError(f"currency_options: unknown currency {code!r}")
        return {code.lower(): option for code, option in value.items()}

    @model_validator(mode="after")
    def _consistent(self) -> PriceModel:
        _check_interval_count(self)
        _check_usage(self)
        _check_scheme(self)
        return self


def _check_interval_count(price: PriceModel) -> None:
    if price.interval is None:
        if price.interval_count != 1:
            raise ValueError("interval_count needs an interval")
        return
    limit = MAX_INTERVAL_COUNT[price.interval]
    if price.interval_count > limit:
        raise ValueError(
            f"interval_count {price.interval_count} with interval {price.interval} is longer "
            "than Stripe's one-year maximum"
        )


def _check_usage(price: PriceModel) -> None:
    if price.usage_type == "metered":
        if price.interval is None:
            raise ValueError("a metered price must be recurring: set interval")
        if price.metered_aggregate == "max":
            raise ValueError(
                "metered_aggregate 'max' has no Stripe meter equivalent; use sum, count or last"
            )
        return
    if price.meter is not None or price.metered_aggregate is not None:
        raise ValueError("meter and metered_aggregate apply only to usage_type: metered")


def _check_scheme(price: PriceModel) -> None:
    if price.billing_scheme != "tiered":
        if price.tiers is not None or price.tier_mode is not None:
            raise ValueError("tiers and tier_mode need billing_scheme: tiered")
        return
    _check_tiers(price.tiers)
    for code, option in (price.currency_options or {}).items():
        if option.tiers is None:
            raise ValueError(f"currency_options.{code}: a tiered price needs tiers here too")
        _check_tiers(option.tiers)


def _check_tiers(tiers: list[TierModel] | None) -> None:
    if not tiers:
        raise ValueError("billing_scheme: tiered needs at least one tier")
    bounds = [tier.bound for tier in tiers]
    if bounds[-1] is not None or None in bounds[:-1]:
        raise ValueError("only the last tier, and it always, has up_to: inf")
    finite = [b for b in bounds if b is not None]
    if any(low >= high for low, high in itertools.pairwise(finite)):
        raise ValueError("tier up_to bounds must increase")


class BehaviorConfigModel(Strict):
    """Frontier's behavior config of a product."""

    credit_amount: Count | None = None
    """Credits granted per unit bought (credits products)."""
    seat_limit: Count | None = None
    """Most seats a subscription may hold (per_seat products; 0 = unlimited)."""
    min_quantity: Count | None = None
    """Smallest quantity that can be bought."""
    max_quantity: Count | None = None
    """Largest quantity that can be bought."""

    @model_validator(mode="after")
    def _min_below_max(self) -> BehaviorConfigModel:
        low, high = self.min_quantity, self.max_quantity
        if low is not None and high is not None and high and low > high:
            raise ValueError(f"min_quantity ({low}) is larger than max_quantity ({high})")
        return self


class FeatureRefModel(Strict):
    """A feature a product grants, by name (created implicitly if not declared)."""

    name: Name
    title: Title | None = None
    """Title used when the feature is created implicitly."""
    metadata: Metadata | None = None
    id: ReadOnlyId = None
    product_ids: list[StrictStr] | None = Field(
        default=None, description="Frontier's read-only product ids; ignored."
    )


class FeatureModel(Strict):
    """A feature (Frontier's top-level `features[]` entry)."""

    name: Name
    """Identity (case-insensitive)."""
    title: Title | None = None
    """Human title (default: the name)."""
    metadata: Metadata | None = None
    """Free-form metadata."""
    id: ReadOnlyId = None
    product_ids: list[StrictStr] | None = Field(
        default=None, description="Frontier's read-only product ids; ignored."
    )


class ProductModel(Strict):
    """A product (Frontier's `products[]` entry plus our extensions)."""

    name: LongName
    """Identity (case-insensitive, at least three characters)."""
    title: Title
    """Name shown to customers (Stripe's product name)."""
    description: StrictStr | None = None
    """Description shown to customers."""
    behavior: Literal["basic", "credits", "per_seat"] = "basic"
    """basic, credits (buys credits) or per_seat (quantity follows members)."""
    config: BehaviorConfigModel = BehaviorConfigModel()
    """Behavior settings."""
    prices: list[PriceModel] = []
    """The product's prices."""
    features: list[FeatureRefModel] = []
    """Features this product grants, by name."""
    metadata: Metadata | None = None
    """Stripe metadata."""
    protect: StrictBool = False
    """Never archive this product."""
    state: State = "active"
    """inactive products are archived."""
    delete: StrictBool = False
    """Frontier's document form: must be false (products cannot be deleted)."""
    id: ReadOnlyId = None
    provider_id: ReadOnlyId = None

    @model_validator(mode="after")
    def _coherent(self) -> ProductModel:
        if self.delete:
            raise ValueError(
                "products cannot be deleted; remove the entry (it is archived when "
                "reconcile.prune is true) or set state: inactive"
            )
        credits = self.config.credit_amount
        if credits and self.behavior != "credits":
            raise ValueError(
                f"config.credit_amount is set but behavior is {self.behavior!r}; credits are "
                "only granted by behavior: credits"
            )
        return self


class ProductRefModel(Strict):
    """A product of a plan, by name."""

    name: Name


class PlanModel(Strict):
    """A plan (Frontier's `plans[]` entry): a named group of products at one interval."""

    name: LongName
    """Identity (case-insensitive, at least three characters)."""
    title: Title
    """Human title."""
    description: StrictStr | None = None
    """Description."""
    interval: Interval
    """Billing interval; every non-credits product needs an active price at it."""
    products: Annotated[list[ProductRefModel], Field(min_length=1)]
    """Products of the plan, by name."""
    trial_days: Annotated[StrictInt, Field(ge=0, le=730)] = 0
    """Free trial length in days (Stripe allows up to 730)."""
    on_start_credits: Count = 0
    """Credits granted when a subscription starts."""
    metadata: Metadata | None = None
    """Free-form metadata."""
    state: State = "active"
    """inactive plans take no new subscriptions."""
    delete: StrictBool = False
    """Frontier's document form: must be false (plans cannot be deleted)."""
    id: ReadOnlyId = None

    @model_validator(mode="after")
    def _not_deleted(self) -> PlanModel:
        if self.delete:
            raise ValueError("plans cannot be deleted; set state: inactive instead")
        return self


class PlansFileModel(Strict):
    """Frontier's flat plans file: top-level features, products and plans."""

    features: list[FeatureModel] | None = None
    products: list[ProductModel] | None = None
    plans: list[PlanModel] | None = None


class DocumentModel(Strict):
    """Frontier's document form: `apiVersion: v1`, `kind`, `spec: [...]`."""

    apiVersion: Literal["v1"] = "v1"
    kind: Literal["BillingProduct", "BillingPlan"]
    spec: list[Any]

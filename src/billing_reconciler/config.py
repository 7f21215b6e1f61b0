"""Controller settings: the `billing:` block of billing.yaml plus the environment.

`billing.yaml` has two top-level blocks:

- `billing:` — Raystack Frontier's billing configuration, key for key, with Frontier's
  defaults, so Frontier's own sample loads unmodified.
- `reconcile:` — our policy knobs (installation id, prune, drift, rate budget, adoption).

Secrets never live in YAML (DESIGN §8): they come from the environment (`Environment`) and
are held in `Secret`, whose `repr`/`str` are redacted. `redact()` scrubs key-shaped text from
any string before it reaches a log line or an error message.
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from billing_reconciler.money import is_valid_currency

# --------------------------------------------------------------------------------------------
# Durations
# --------------------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+)(h|m|s)")
_DURATION_FULL = re.compile(r"^(?:\d+[hms])+$")
_UNIT_SECONDS: Final[dict[str, int]] = {"h": 3600, "m": 60, "s": 1}
DURATION_PATTERN: Final[str] = r"^(0|(\d+[hms])+)$"


def parse_duration(value: object) -> int:
    """Parse `45s`, `2m`, `1h`, `1h30m` or `0` (disabled) into whole seconds.

    A bare non-zero number is refused: Frontier reads it as nanoseconds (Go's time.Duration),
    so `60` would silently mean 60 ns there; asking for a unit avoids that trap.
    """
    if isinstance(value, bool):
        raise ValueError("a duration must be text like 45s, 2m or 1h, not a boolean")
    if value == 0 or value == "0":
        return 0
    if isinstance(value, int):
        raise ValueError(f"duration {value} has no unit; write e.g. {value}s, or 0 to disable")
    if not isinstance(value, str) or not _DURATION_FULL.match(value.strip()):
        raise ValueError("a duration looks like 45s, 2m, 1h or 1h30m (0 disables)")
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(value))


Duration = Annotated[
    int,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": DURATION_PATTERN}, {"const": 0}],
            "description": "A duration: 45s, 2m, 1h, 1h30m; 0 disables.",
        }
    ),
]

# --------------------------------------------------------------------------------------------
# The billing: block (Frontier's keys)
# --------------------------------------------------------------------------------------------

ProrationBehavior = Literal["create_prorations", "none", "always_invoice"]
CollectionMethod = Literal["charge_automatically", "send_invoice"]
AfterTrial = Literal["release", "cancel"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class PaymentMethodConfig(_Frozen):
    """Bounds for one payment method, in minor units of the default currency."""

    type: Literal["card", "customer_balance"]
    """Payment method type."""
    min: StrictInt = Field(default=0, ge=0)
    """Smallest amount this method may be charged (0 = no minimum)."""
    max: StrictInt = Field(default=0, ge=0)
    """Largest amount this method may be charged (0 = no maximum)."""

    @model_validator(mode="after")
    def _min_below_max(self) -> PaymentMethodConfig:
        if self.max and self.min > self.max:
            raise ValueError(f"min ({self.min}) is larger than max ({self.max})")
        return self


class CustomerConfig(_Frozen):
    """Billing customer accounts (Frontier's `customer:` block)."""

    auto_create_with_org: StrictBool = False
    """Create a billing customer automatically when an organization is created."""
    default_plan: StrictStr = ""
    """Plan every new customer is subscribed to; must be a free plan ("" = none)."""
    default_offline: StrictBool = False
    """New customers are offline (not registered with Stripe)."""
    onboard_credits_with_org: StrictInt = Field(default=0, ge=0)
    """Free credits granted to a new organization's customer."""
    credit_overdraft_product: StrictStr = ""
    """A `behavior: credits` product whose first price values overdrawn credits ("" = none)."""
    credit_overdraft_invoice_day: StrictInt = Field(default=1, ge=1, le=31)
    """Day of the month (1-31) on which overdrawn credits are invoiced."""
    credit_overdraft_invoice_range_shift: StrictInt = 0
    """Months to shift the overdraft invoice range (negative = into the past)."""


class PlanChangeConfig(_Frozen):
    """What happens when a customer changes plan."""

    proration_behavior: ProrationBehavior = "create_prorations"
    """Proration at the next cycle: create_prorations, none or always_invoice."""
    immediate_proration_behavior: ProrationBehavior = "create_prorations"
    """Proration for an immediate change: create_prorations, none or always_invoice."""
    collection_method: CollectionMethod = "charge_automatically"
    """charge_automatically or send_invoice."""


class SubscriptionConfig(_Frozen):
    """Subscription behaviour."""

    behavior_after_trial: AfterTrial = "release"
    """release (start billing) or cancel when a trial ends."""
    behaviour_after_trial: AfterTrial | None = Field(
        default=None, exclude=True, json_schema_extra={"deprecated": True}
    )
    """British spelling found in Frontier's sample config; accepted with a warning."""

    @model_validator(mode="after")
    def _merge_british_spelling(self) -> SubscriptionConfig:
        british = self.behaviour_after_trial
        if british is None:
            return self
        if "behavior_after_trial" in self.model_fields_set and british != self.behavior_after_trial:
            raise ValueError(
                "behavior_after_trial and behaviour_after_trial disagree; keep only "
                "behavior_after_trial"
            )
        object.__setattr__(self, "behavior_after_trial", british)
        return self


class ProductConfig(_Frozen):
    """Product behaviour."""

    seat_change_behavior: Literal["exact", "incremental"] = "exact"
    """exact (follow the member count) or incremental (never decrease seats)."""


class RefreshInterval(_Frozen):
    """How often `reconcile serve` re-reads each domain from Stripe, in seconds (0 = never)."""

    customer: Duration = 60
    subscription: Duration = 60
    checkout: Duration = 60
    invoice: Duration = 300
    catalog: Duration = 300
    """Ours (not Frontier's): products, prices, meters."""


class BillingSettings(_Frozen):
    """The `billing:` block: Frontier's billing configuration."""

    stripe_key: StrictStr = ""
    """Must stay empty: the key comes from STRIPE_API_KEY or STRIPE_API_KEY_FILE."""
    stripe_auto_tax: StrictBool = False
    """Let Stripe Tax compute taxes (configure tax registrations in Stripe first)."""
    stripe_webhook_secrets: tuple[StrictStr, ...] = ()
    """Must stay empty: secrets come from BILLING_WEBHOOK_SECRETS(_FILE)."""
    default_currency: StrictStr = ""
    """ISO 4217 code used when a price names none ("" = usd, Frontier's default)."""
    plans_path: StrictStr = "plans"
    """Directory of plan files, relative to billing.yaml's directory; file:// URLs accepted."""
    payment_method_config: tuple[PaymentMethodConfig, ...] = ()
    """Allowed payment methods with optional min/max amounts."""
    customer: CustomerConfig = CustomerConfig()
    plan_change: PlanChangeConfig = PlanChangeConfig()
    subscription: SubscriptionConfig = SubscriptionConfig()
    product: ProductConfig = ProductConfig()
    refresh_interval: RefreshInterval = RefreshInterval()

    @field_validator("stripe_key")
    @classmethod
    def _no_key_in_yaml(cls, value: str) -> str:
        if value:
            # The message must never quote the value: it is a live credential.
            raise ValueError(
                "a Stripe key must not be written in billing.yaml; remove it and set "
                "STRIPE_API_KEY (or STRIPE_API_KEY_FILE) instead"
            )
        return value

    @field_validator("stripe_webhook_secrets")
    @classmethod
    def _no_webhook_secret_in_yaml(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(value):
            raise ValueError(
                "webhook secrets must not be written in billing.yaml; remove them and set "
                "BILLING_WEBHOOK_SECRETS (or BILLING_WEBHOOK_SECRETS_FILE) instead"
            )
        return value

    @field_validator("default_currency")
    @classmethod
    def _currency_is_iso(cls, value: str) -> str:
        if value and not is_valid_currency(value):
            raise ValueError(f"unknown ISO 4217 currency {value!r}")
        return value.lower()

    @property
    def currency(self) -> str:
        """The effective default currency (Frontier falls back to usd)."""
        return self.default_currency or "usd"


# --------------------------------------------------------------------------------------------
# The reconcile: block (ours)
# --------------------------------------------------------------------------------------------

INSTALLATION_ID_PATTERN: Final[str] = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
BR_KEY_PATTERN: Final[str] = (
    r"^(?:(?:product|plan|feature|meter)/[a-z0-9_.-]+|price/[a-z0-9_.-]+/[a-z0-9_.-]+)$"
)
TEST_MODE_RATE: Final[int] = 25
LIVE_MODE_RATE: Final[int] = 100


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


class UsageConfig(_Frozen):
    """Meter events sent to Stripe from the usage outbox (DESIGN §17)."""

    aggregate: StrictBool = False
    """Send one meter event per (customer, `sum` meter, flush window), its value the window's
    total, instead of one per usage (other meters: always one per usage)."""
    flush_window: Annotated[Duration, Field(ge=1, le=86400)] = 60
    """The aggregation window (aligned to the epoch); a window is sent once it is closed."""


class ReconcileConfig(_Frozen):
    """Our policy knobs (not Frontier's)."""

    installation_id: Annotated[
        StrictStr, BeforeValidator(_lower), Field(pattern=INSTALLATION_ID_PATTERN)
    ] = "default"
    """Stamped on every object as br_installation; installations never touch each other's."""
    prune: StrictBool = False
    """Archive managed objects that were removed from YAML (otherwise: list them as orphans)."""
    max_archive_fraction: Annotated[StrictFloat | StrictInt, Field(ge=0, le=1)] = 0.25
    """Refuse a plan archiving more than this fraction of managed objects (a ratio 0-1)."""
    max_fleet_change_fraction: Annotated[StrictFloat | StrictInt, Field(ge=0, le=1)] = 0.1
    """Refuse a plan that cancels, downgrades or reprices more than this fraction of a fleet
    domain's live objects (subscriptions; a ratio 0-1) without --allow-mass-change."""
    price_migration: Literal["none", "at_renewal", "now"] = "none"
    """Live subscriptions on a price the catalog supersedes: `none` leaves them on the old
    price (grandfathered), `at_renewal` moves them at their next period end (a schedule
    phase), `now` swaps the item's price at once (billing.plan_change's immediate proration)."""
    drift: Literal["correct", "warn"] = "correct"
    """What to do when someone edited a field we manage in Stripe."""
    rate_limit_per_second: Annotated[StrictInt, Field(ge=1, le=10_000)] | None = None
    """Client-side request budget; null = 25 with a test key, 100 with a live key."""
    apply_concurrency: Annotated[StrictInt, Field(ge=1, le=32)] = 16
    """Steps of one plan phase (independent of each other) sent at once; 1 = one at a time.
    The request budget still paces them; concurrency only hides Stripe's latency."""
    verify_attachments: StrictBool = False
    """List every managed product's features on each plan (one call per product) instead of
    trusting the `br_features` record: finds attachments removed in the dashboard."""
    adopt: tuple[
        Annotated[StrictStr, BeforeValidator(_lower), Field(pattern=BR_KEY_PATTERN)], ...
    ] = ()
    """Unmarked Stripe objects to take over, by br_key: product/NAME, price/PRODUCT/NAME, ..."""
    full_resync_interval: Duration = 3600
    """How often a fleet domain (customers) lists every object (ceil(N/100) calls); between
    full resyncs it reads Stripe's events after its stored cursor (0 = always list in full)."""
    usage: UsageConfig = UsageConfig()
    """The usage outbox's meter events (`usage.aggregate`, `usage.flush_window`)."""

    def rate_limit_for(self, mode: Literal["test", "live"]) -> int:
        """The request budget for a key of `mode`."""
        if self.rate_limit_per_second is not None:
            return self.rate_limit_per_second
        return LIVE_MODE_RATE if mode == "live" else TEST_MODE_RATE


class BillingConfig(_Frozen):
    """The whole of billing.yaml: Frontier's `billing:` block and our `reconcile:` block."""

    billing: BillingSettings = BillingSettings()
    reconcile: ReconcileConfig = ReconcileConfig()


def deprecated_spellings(raw: object) -> list[tuple[tuple[str, ...], str]]:
    """Warnings for accepted-but-discouraged keys in raw billing.yaml data, with their paths."""
    subscription = _dig(raw, "billing", "subscription")
    if isinstance(subscription, Mapping) and "behaviour_after_trial" in subscription:
        return [
            (
                ("billing", "subscription", "behaviour_after_trial"),
                "'behaviour_after_trial' (British spelling) is read as 'behavior_after_trial'; "
                "Frontier itself ignores this spelling, so rename it",
            )
        ]
    return []


def _dig(raw: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(raw, Mapping):
            return None
        raw = raw.get(key)
    return raw


# --------------------------------------------------------------------------------------------
# Secrets and the environment (DESIGN §8)
# --------------------------------------------------------------------------------------------

_SECRET_PREFIX = re.compile(r"^(?:(?:sk|rk)_(?:test|live)_|whsec_)")
_SECRET_IN_TEXT = re.compile(r"(?:sk|rk)_(?:test|live)_[A-Za-z0-9]+|whsec_[A-Za-z0-9+/=]+")


class ConfigError(ValueError):
    """The environment or configuration cannot be used; the message is safe to print."""


def mask(secret: str) -> str:
    """`sk_test_…abcd`: the secret's kind prefix and its last four characters only."""
    match = _SECRET_PREFIX.match(secret)
    prefix = match.group(0) if match else ""
    rest = secret[len(prefix) :]
    # A short secret would be mostly revealed by its last four characters.
    tail = rest[-4:] if len(rest) >= 12 else ""
    return f"{prefix}…{tail}"


def redact(text: str) -> str:
    """Replace every Stripe key or webhook secret inside `text` by its masked form."""
    return _SECRET_IN_TEXT.sub(lambda m: mask(m.group(0)), text)


class Secret:
    """A credential whose `repr` and `str` never show it; `reveal()` is the one way out."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one call that needs it (the SDK client)."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({mask(self._value)!r})"

    def __str__(self) -> str:
        return mask(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)


def key_mode(key: str | Secret) -> Literal["test", "live"]:
    """Whether a Stripe secret or restricted key is a test-mode or a live-mode key."""
    raw = key.reveal() if isinstance(key, Secret) else key
    if raw.startswith(("sk_live_", "rk_live_")):
        return "live"
    if raw.startswith(("sk_test_", "rk_test_")):
        return "test"
    raise ConfigError(f"not a Stripe secret or restricted key: {mask(raw)!r}")


@dataclass(frozen=True, slots=True)
class Environment:
    """Settings that come from the environment, never from YAML."""

    stripe_api_key: Secret | None
    webhook_secrets: tuple[Secret, ...]
    database_url: str = field(repr=False)
    api_base: str | None = None

    @property
    def database_url_redacted(self) -> str:
        """The database URL with any password replaced, for logs."""
        return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", self.database_url)


def default_database_url(desired_dir: Path | None) -> str:
    """`sqlite:///<dir>/.billing/state.db`, beside the desired/ directory (else in cwd).

    The state lives next to desired/ (usually the repository root) rather than inside it, so
    it is never committed along with the YAML it describes.
    """
    base = desired_dir.resolve().parent if desired_dir is not None else Path.cwd().resolve()
    return f"sqlite:///{base / '.billing' / 'state.db'}"


def load_environment(
    env: Mapping[str, str] | None = None, *, desired_dir: Path | None = None
) -> Environment:
    """Read secrets and the database URL from `env` (default: `os.environ`)."""
    source = os.environ if env is None else env
    key_text = _value_or_file(source, "STRIPE_API_KEY")
    api_key = _stripe_key(key_text) if key_text else None
    secrets_text = _value_or_file(source, "BILLING_WEBHOOK_SECRETS") or ""
    webhook = tuple(Secret(s) for s in re.split(r"[,\s]+", secrets_text) if s)
    return Environment(
        stripe_api_key=api_key,
        webhook_secrets=webhook,
        database_url=source.get("BILLING_DATABASE_URL") or default_database_url(desired_dir),
        api_base=source.get("STRIPE_API_BASE") or None,
    )


def _value_or_file(env: Mapping[str, str], name: str) -> str | None:
    value, path = env.get(name, ""), env.get(f"{name}_FILE", "")
    if value and path:
        raise ConfigError(f"set {name} or {name}_FILE, not both")
    if not path:
        return value.strip() or None
    try:
        return Path(path).read_text(encoding="utf-8").strip() or None
    except OSError as exc:
        raise ConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None


def _stripe_key(text: str) -> Secret:
    problem = key_problem(text)
    if problem is not None:
        raise ConfigError(f"STRIPE_API_KEY {problem}")
    return Secret(text)


_KEY_PREFIX = re.compile(r"^(?:sk|rk)_(?:test|live)_")
_ANY_PREFIX = re.compile(r"^[a-z]{2,6}_(?:(?:test|live)_)?")
_KEY_BODY = re.compile(r"^[A-Za-z0-9]*$")
_MIN_KEY_BODY = 8
_PREFIXES = "sk_test_, sk_live_, rk_test_ or rk_live_"


def key_problem(text: str) -> str | None:
    """What is wrong with `text` as a Stripe secret or restricted key, or None.

    Each answer names one concrete fault and agrees with the masked value shown beside it (a
    short `sk_test_` key is "too short", not "does not look like a secret key"); none quotes
    more of the key than its kind prefix.
    """
    if text[:1] in ("'", '"'):
        return "starts with a quote: set the key without quotes"
    prefix = _KEY_PREFIX.match(text)
    if prefix is None:
        return _bad_prefix(text)
    body = text[prefix.end() :]
    if not _KEY_BODY.match(body):
        return (
            f"contains characters a Stripe key never has (after {prefix.group(0)} come only "
            "letters and digits): check for spaces or a pasted line break"
        )
    if len(body) < _MIN_KEY_BODY:
        shown = mask(text)
        count = f"{len(body)} character{'' if len(body) == 1 else 's'}"
        return f"is too short to be a Stripe key ({shown}: {count} after the prefix)"
    return None


def _bad_prefix(text: str) -> str:
    found = _ANY_PREFIX.match(text)
    if found is None:
        return f"does not start with {_PREFIXES}"
    prefix = found.group(0)
    if prefix in ("sk_", "rk_"):
        return f"starts with {prefix!r} but not {prefix}test_ or {prefix}live_"
    kind = _KNOWN_OTHER_KINDS.get(prefix[:3], "")
    return f"starts with {prefix!r}{kind}; a secret or restricted key starts with {_PREFIXES}"


_KNOWN_OTHER_KINDS: Final[dict[str, str]] = {
    "pk_": " (a publishable key, which cannot manage a catalog)",
    "whs": " (a webhook secret: it belongs in BILLING_WEBHOOK_SECRETS)",
}


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema of billing.yaml (draft 2020-12), generated from the models."""
    schema = BillingConfig.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://billing-reconciler.dev/schemas/billing.schema.json",
        "title": "billing.yaml",
        "description": "billing-reconciler controller configuration: Frontier's billing: "
        "block plus the reconcile: block. See docs/configuration.md.",
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }

"""Request and response bodies of the host API (DESIGN §19), as pydantic models.

Requests forbid unknown fields and use strict types (an amount of `1.0`, `"1"` or `true` is
refused, never coerced), so a body that validates is exactly what the store will record.
Responses are snake_case; timestamps are RFC 3339 in UTC (`...Z`), amounts integers.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictInt,
    StrictStr,
    WrapValidator,
    field_validator,
    model_validator,
)

from billing_reconciler.customer_validation import INT64_MAX as INT64_MAX
from billing_reconciler.customer_validation import INT64_MIN as INT64_MIN
from billing_reconciler.customer_validation import (
    MAX_TAX_IDS,
    AccountMetadata,
    AddressPart,
    Country,
    CreditMin,
    DueInDays,
    Email,
    MetadataMap,
    Name,
    Phone,
    TaxIdType,
    TaxIdValue,
    unique_tax_ids,
)
from billing_reconciler.money import is_valid_currency


def _rfc3339(value: datetime) -> str:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")


Timestamp = Annotated[datetime, PlainSerializer(_rfc3339, return_type=str)]


def _currency(value: str) -> str:
    if not is_valid_currency(value):
        raise ValueError(f"unknown ISO 4217 currency {value!r}")
    return value.lower()


Currency = Annotated[StrictStr, AfterValidator(_currency)]

Metadata = MetadataMap
TestClock = Annotated[StrictStr, Field(pattern=r"^clock_[A-Za-z0-9]+$", max_length=255)]


def is_unicode(value: str) -> bool:
    """Whether `value` is Unicode text (JSON's `\\ud800` escape decodes to a lone surrogate,
    which no store, log nor answer can encode)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text_problem(value: object) -> str | None:
    """What is wrong with a string anywhere in `value` (dict keys and values, list items):
    a NUL character (PostgreSQL cannot store it) or a lone surrogate; None when nothing."""
    if isinstance(value, str):
        if "\x00" in value:
            return "must not contain NUL characters"
        if not is_unicode(value):
            return "must be valid Unicode text (a lone surrogate such as \\ud800 is not)"
    elif isinstance(value, dict):
        for key, item in value.items():
            # `repr` escapes a surrogate, so the message itself can always be encoded.
            if (problem := _text_problem(key)) is not None:
                return f"key {key!r}: {problem}"
            if (problem := _text_problem(item)) is not None:
                return f"value of {key!r}: {problem}"
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if (problem := _text_problem(item)) is not None:
                return f"[{index}]: {problem}"
    return None


class RequestBody(BaseModel):
    """A request body: unknown fields are errors, and no string anywhere in it (scalar
    fields, dict keys and values, list items) may hold a NUL character, which PostgreSQL
    cannot store, or a lone surrogate, which is not Unicode text. Pydantic refuses a lone
    surrogate in a `str` field itself (`string_unicode`) but not inside a dict."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _refuse_bad_text(cls, value: Any) -> Any:
        # Nested request models check their own fields (so the error names the inner field).
        if (problem := _text_problem(value)) is not None:
            raise ValueError(problem)
        return value


class ResponseBody(BaseModel):
    model_config = ConfigDict(frozen=True)


# --- errors -------------------------------------------------------------------------------


class ErrorDetail(ResponseBody):
    code: str = Field(description="One of the closed set of §19 codes.")
    message: str
    details: dict[str, Any] = Field(description="Names the offending field or id.")


class ErrorBody(ResponseBody):
    error: ErrorDetail


# --- 202: recorded, Stripe's verdict not in yet ----------------------------------------------


class Accepted(ResponseBody):
    """202: the request is recorded and its reconcile with Stripe was not finished when the
    answer was due. `GET` the resource (the `Location` header) to see the outcome later."""

    request_id: str = Field(description="Names the request in the controller's logs.")
    status: Literal["pending"]
    reason: Literal["in_progress", "not_leader", "stopping", "not_applied"] = Field(
        description="in_progress: still running after the wait; not_leader: this replica does "
        "not write, the leader's next refresh carries it to Stripe; stopping: the replica is "
        "shutting down, the next leader reconciles it; not_applied: the reconcile ran but did "
        "not write (`reconcile suspend`, or leadership lost mid-run)."
    )
    message: str


# --- lists --------------------------------------------------------------------------------

T = TypeVar("T")


class Page(ResponseBody, Generic[T]):
    data: list[T]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null: last.")


# --- organizations and members -------------------------------------------------------------


class OrganizationIn(RequestBody):
    title: Annotated[StrictStr, Field(min_length=1, max_length=250)]
    owner_email: Email | None = None
    metadata: Metadata | None = None


class Organization(ResponseBody):
    id: str
    title: str
    owner_email: str | None
    metadata: dict[str, str]
    created_at: Timestamp
    updated_at: Timestamp


class MemberIn(RequestBody):
    email: Email | None = None
    role: Annotated[StrictStr, Field(max_length=64)] | None = None


class Member(ResponseBody):
    user_id: str
    email: str | None
    role: str | None
    created_at: Timestamp


# --- billing accounts ----------------------------------------------------------------------


class AddressIn(RequestBody):
    line1: AddressPart | None = None
    line2: AddressPart | None = None
    city: AddressPart | None = None
    state: AddressPart | None = None
    postal_code: AddressPart | None = None
    country: Country | None = Field(
        default=None, description="ISO 3166-1 alpha-2 (either case; stored upper-case)."
    )


class TaxIdIn(RequestBody):
    type: TaxIdType = Field(description="One of Stripe's tax id types (eu_vat, us_ein, ...).")
    value: TaxIdValue


TaxIds = Annotated[list[TaxIdIn], Field(max_length=MAX_TAX_IDS), WrapValidator(unique_tax_ids)]
"""At most 20 tax ids, each type and value once."""


class AccountCreate(RequestBody):
    """`POST .../billing`: fields left out default to the org's title and owner email."""

    name: Name | None = None
    email: Email | None = None
    phone: Phone | None = None
    address: AddressIn | None = None
    tax_ids: TaxIds = []
    currency: Currency | None = None
    offline: StrictBool | None = None
    test_clock: TestClock | None = None
    metadata: AccountMetadata | None = None


class AccountPatch(RequestBody):
    """`PATCH .../billing`: only the fields sent change (null clears an optional one)."""

    name: Name | None = None
    email: Email | None = None
    phone: Phone | None = None
    address: AddressIn | None = None
    tax_ids: TaxIds | None = None
    currency: Currency | None = None
    metadata: AccountMetadata | None = None
    test_clock: TestClock | None = Field(
        default=None,
        description="Test mode only: replace (or clear, null) the test clock while no Stripe "
        "customer is linked (409 `failed_precondition` after).",
    )


class Address(ResponseBody):
    line1: str | None
    line2: str | None
    city: str | None
    state: str | None
    postal_code: str | None
    country: str | None


class TaxId(ResponseBody):
    type: str
    value: str


class Account(ResponseBody):
    id: str
    org_id: str
    stripe_customer_id: str | None
    state: Literal["active", "disabled"]
    offline: bool
    name: str | None
    email: str | None
    phone: str | None
    address: Address | None
    tax_ids: list[TaxId]
    currency: str | None
    credit_min: int
    due_in_days: int
    test_clock: str | None
    metadata: Annotated[
        dict[str, str],
        Field(
            description="The account's metadata keys (pushed to its Stripe customer); never "
            "the marker keys nor `auto_created`, which are the controller's."
        ),
    ]
    created_at: Timestamp


class AccountDetailsIn(RequestBody):
    """`PUT /admin/.../billing/details`: partial; `credit_min` <= 0 (negative allows an
    overdraft of that many credits), within the signed 64-bit range."""

    credit_min: CreditMin | None = None
    due_in_days: DueInDays | None = None


# --- ledger -------------------------------------------------------------------------------

Source = Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


RESERVED_ID_PREFIXES: Final = ("system.", "onboard:", "on_start:", "overdraft:")
"""The engine's derived ledger ids begin with these (reverts and purchases `system.`, an
org's onboard credits `onboard:<org>`, a plan's on-start credits `on_start:`, a paid
overdraft invoice's credits `overdraft:`): a caller's grant or usage id may not, in any
case, so it can never take (and so block or forge) one of them."""


def caller_ledger_id(value: str) -> str:
    """A grant's or a usage's id: not one of the engine's derived ids (`RESERVED_ID_PREFIXES`,
    compared case-insensitively)."""
    lowered = value.lower()
    for prefix in RESERVED_ID_PREFIXES:
        if lowered.startswith(prefix):
            reserved = ", ".join(repr(p) for p in RESERVED_ID_PREFIXES)
            raise ValueError(
                f"ids beginning with {prefix!r} are reserved for the engine's own entries "
                f"(reserved, in any case: {reserved})"
            )
    return value


class CreditGrantIn(RequestBody):
    id: Annotated[
        StrictStr, Field(min_length=1, max_length=255), AfterValidator(caller_ledger_id)
    ] = Field(
        description="The grant's idempotency key, its transaction's id (not beginning with "
        "`system.`, `onboard:`, `on_start:` nor `overdraft:`, in any case: the engine's)."
    )
    amount: Annotated[StrictInt, Field(gt=0, le=2**62)]
    source: Source | None = None
    description: Annotated[StrictStr, Field(max_length=1000)] | None = None


class Balance(ResponseBody):
    amount: int
    updated_at: Timestamp | None


class Transaction(ResponseBody):
    id: str
    type: Literal["credit", "debit"]
    amount: int
    source: str
    description: str | None
    user_id: str | None
    metadata: dict[str, Any]
    created_at: Timestamp
    reverts: str | None = Field(
        default=None, description="For a revert (a credit): the id of the usage it reverts."
    )


# --- catalog ------------------------------------------------------------------------------


class Plan(ResponseBody):
    name: str
    title: str
    description: str | None
    interval: str | None
    trial_days: int
    on_start_credits: int
    products: list[str]
    metadata: dict[str, Any]


class Price(ResponseBody):
    name: str
    stripe_price_id: str | None
    currency: str | None
    amount: int | None
    interval: str | None
    lookup_key: str | None


class Product(ResponseBody):
    name: str
    title: str | None
    description: str | None
    stripe_product_id: str | None
    prices: list[Price]


class Feature(ResponseBody):
    name: str
    title: str | None
    stripe_feature_id: str | None
    lookup_key: str | None


# --- delegated credit purchases (DESIGN §17, §19; the admin subscribe with a product) -------

MAX_PURCHASE_QUANTITY = 100_000
"""The most units one delegated purchase buys (Frontier's checkout maximum)."""


def _purchase_id(value: str) -> str:
    if value != value.strip() or not value.strip():
        raise ValueError("must not be blank nor begin or end with whitespace")
    return value


PurchaseId = Annotated[StrictStr, Field(min_length=1, max_length=255), AfterValidator(_purchase_id)]


class PurchaseProductIn(RequestBody):
    """The product a delegated purchase buys: a `behavior: credits` product of the applied
    catalog, `quantity` units of it (`quantity x credit_amount` credits)."""

    name: Annotated[StrictStr, Field(min_length=1, max_length=255)]
    quantity: Annotated[StrictInt, Field(ge=1, le=MAX_PURCHASE_QUANTITY)] = Field(
        default=1,
        description=f"1..{MAX_PURCHASE_QUANTITY}, within the product's min_quantity and "
        "max_quantity when it sets them.",
    )


class Purchase(ResponseBody):
    """A purchase of a product. A delegated one (admin, no checkout) has no `checkout_id`."""

    id: str = Field(description="The purchase's id: the request's `id`, else a generated one.")
    product: str
    quantity: int
    checkout_id: str | None = Field(description="The checkout that paid it; null if delegated.")
    created_at: Timestamp
    credits: int = Field(description="Credits it added (`quantity x credit_amount`).")
    transaction_id: str = Field(
        description="Its ledger transaction (source `system.awarded` when delegated)."
    )
    account_id: str = Field(
        description="The billing account its credits went to: the org's account when it was "
        "bought (a replay after the org opened a new account names the earlier one)."
    )


# --- subscriptions (DESIGN §16, §19) ------------------------------------------------------

PlanName = Annotated[StrictStr, Field(min_length=1, max_length=255)]


class SubscribeIn(RequestBody):
    """`POST .../subscriptions` (admin): subscribe without a checkout (`{plan, skip_trial?,
    cancel_after_trial?}`), or buy a credits product without a checkout, a delegated purchase
    (`{product: {name, quantity?}, id?}`); exactly one of `plan` and `product`."""

    plan: PlanName | None = None
    skip_trial: StrictBool = False
    cancel_after_trial: StrictBool = False
    product: PurchaseProductIn | None = Field(
        default=None, description="A delegated purchase of a credits product (no payment)."
    )
    id: PurchaseId | None = Field(
        default=None,
        description="With `product`: the purchase's idempotency key (the same id again "
        "answers the stored purchase and adds nothing). Without it each request is a new "
        "purchase.",
    )

    @model_validator(mode="after")
    def _plan_or_product(self) -> SubscribeIn:
        if (self.plan is None) == (self.product is None):
            raise ValueError(
                "send exactly one of plan (a subscription) and product (a delegated "
                f"purchase of a credits product); got {'both' if self.plan else 'neither'}"
            )
        trial_options = sorted({"skip_trial", "cancel_after_trial"} & self.model_fields_set)
        if self.product is not None and trial_options:
            raise ValueError(f"{' and '.join(trial_options)} go with plan, not with product")
        if self.plan is not None and self.id is not None:
            raise ValueError("id goes with product (a purchase's idempotency key), not with plan")
        return self

    @property
    def plan_name(self) -> str:
        """The plan of a subscribe (validated: present when `product` is not)."""
        assert self.plan is not None
        return self.plan


class PlanChangeIn(RequestBody):
    """Frontier's `{plan_change: {plan, immediate}}` form of a change."""

    plan: PlanName
    immediate: StrictBool = False


class ChangeIn(RequestBody):
    """`POST .../subscriptions/{id}/change`: `{plan, immediate?, preview?}` (or Frontier's
    `{plan_change: {plan, immediate?}, preview?}`), or `{cancel_upcoming_changes: true}`;
    exactly one. `preview: true` changes nothing and answers what the change would invoice."""

    plan: PlanName | None = None
    immediate: StrictBool | None = None
    plan_change: PlanChangeIn | None = None
    cancel_upcoming_changes: StrictBool | None = None
    preview: StrictBool = False

    @model_validator(mode="after")
    def _one_form(self) -> ChangeIn:
        forms = [
            name
            for name, given in (
                ("plan", self.plan is not None),
                ("plan_change", self.plan_change is not None),
                ("cancel_upcoming_changes", self.cancel_upcoming_changes is not None),
            )
            if given
        ]
        if len(forms) != 1:
            raise ValueError(
                "send exactly one of {plan, immediate?}, {plan_change: {plan, immediate?}} "
                f"and {{cancel_upcoming_changes: true}} (got {', '.join(forms) or 'none'})"
            )
        if self.cancel_upcoming_changes is False:
            raise ValueError("cancel_upcoming_changes can only be true")
        if self.immediate is not None and self.plan is None:
            raise ValueError("immediate goes with plan")
        if self.preview and self.cancel_upcoming_changes is not None:
            raise ValueError("preview goes with a plan change, not cancel_upcoming_changes")
        return self

    @property
    def target(self) -> tuple[str, bool] | None:
        """The plan to change to and whether at once; None for cancel_upcoming_changes."""
        if self.plan_change is not None:
            return self.plan_change.plan, self.plan_change.immediate
        if self.plan is not None:
            return self.plan, bool(self.immediate)
        return None


class CancelIn(RequestBody):
    """`POST .../subscriptions/{id}/cancel`: now, or at the current period end (default).
    Every field is optional: no body is `{}`."""

    immediate: StrictBool = False


class PendingChangeOut(ResponseBody):
    plan: str | None = Field(description="The plan changed to; null for a cancel.")
    effective_at: Timestamp | None = Field(
        description="When it takes effect (the period end, or the request's time when "
        "immediate); null while the period end is not known yet."
    )
    reason: Literal["change", "cancel"]


class Subscription(ResponseBody):
    """An account's subscription: `id` is the intent recorded in the store; the Stripe
    fields are the store's mirror of the Stripe subscription, null until it is mirrored."""

    id: str
    org_id: str
    stripe_subscription_id: str | None
    plan: str
    state: str | None = Field(description="Stripe's status; null until mirrored.")
    seats: int | None
    trial_ends_at: Timestamp | None
    current_period_start: Timestamp | None
    current_period_end: Timestamp | None
    cancel_at: Timestamp | None
    canceled_at: Timestamp | None
    pending_change: PendingChangeOut | None
    created_at: Timestamp
    refusal: str | None = Field(
        default=None,
        description="Why the subscription is not in Stripe while it should be (the account "
        "is offline, its plan cannot be priced in the account's currency, or Stripe refused "
        "its create: send the subscribe again, or another one, which replaces it); null once "
        "it is in Stripe, and for one that ended.",
    )


class PreviewLine(ResponseBody):
    """One proration line of a previewed plan change (Stripe's invoice line)."""

    description: str
    quantity: int | None
    amount: int = Field(description="Minor units; a credit for unused time is negative.")
    period_start: Timestamp
    period_end: Timestamp


class ChangePreview(ResponseBody):
    """What a plan change would invoice (`preview: true`; nothing changed): Stripe's
    `create_preview` with the configured proration (`billing.plan_change`)."""

    subscription_id: str
    plan: str = Field(description="The plan changed to.")
    current_plan: str
    immediate: bool
    effective_at: Timestamp | None = Field(
        description="When the change would take effect: now, or the current period end "
        "(null while it is not known)."
    )
    proration_behavior: Literal["create_prorations", "none", "always_invoice"] = Field(
        description="The configured proration that applies: "
        "`billing.plan_change.immediate_proration_behavior` for an immediate change, "
        "`proration_behavior` at the period end."
    )
    currency: str
    amount_due_now: int = Field(
        description="Invoiced at once, minor units: with `always_invoice`, and for an "
        "immediate change of billing interval (Stripe restarts the billing cycle now and "
        "invoices the new interval in full, whatever the proration); 0 otherwise."
    )
    proration_lines: list[PreviewLine] = Field(
        description="The prorations: invoiced now (`always_invoice`, or an immediate change "
        "of billing interval) or on the next renewal (`create_prorations`); none at the "
        "period end or with `none`."
    )
    next_renewal_total: int = Field(
        description="The total of the next renewal invoice on the new plan, minor units "
        "(with the prorations it carries); at the period end, the new plan's first invoice."
    )
    next_renewal_at: Timestamp | None = Field(
        description="When that invoice is made: the current period end, or after an "
        "immediate change of billing interval the end of the new period that starts now."
    )


class Trialed(ResponseBody):
    plan: str
    trialed: bool = Field(description="The account had a trial of the plan.")
    had_plan: bool = Field(
        description="The account held the plan (now or before): its trial is used up."
    )


class Entitlement(ResponseBody):
    feature: str
    entitled: bool = Field(
        description="An active or trialing subscription's plan has a product carrying it."
    )
    allowed: bool = Field(description="The same as `entitled` (DESIGN §19's name).")
    plan: str | None = Field(description="The plan granting it; null when not entitled.")


# --- usage, credit checks, reverts (DESIGN §17, §19) ----------------------------------------

MAX_USAGES = 1000
"""The most usages one `POST .../billing/usages` records."""
MAX_USAGE_AMOUNT = 2**53
"""The largest usage, check or revert amount (exact in every JSON client)."""

UsageAmount = Annotated[StrictInt, Field(gt=0, le=MAX_USAGE_AMOUNT)]
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339_text(value: Any) -> Any:
    if not isinstance(value, str) or _RFC3339.fullmatch(value) is None:
        raise ValueError(
            "must be an RFC 3339 timestamp with a time zone, e.g. 2026-01-31T12:00:00Z"
        )
    return value


Rfc3339 = Annotated[datetime, BeforeValidator(_rfc3339_text)]


MAX_METER_IDENTIFIER = 100
"""The longest id of a usage with a meter: it is the meter event's `identifier`, which Stripe
takes up to 100 characters."""


def _usage_id(value: str) -> str:
    if value != value.strip() or not value.strip():
        raise ValueError("must not be blank nor begin or end with whitespace")
    if "/" in value:
        raise ValueError("must not contain '/' (the revert route takes the id as one path part)")
    if not value.strip("."):
        raise ValueError("must not be only dots (the revert route cannot take '.' or '..')")
    return caller_ledger_id(value)


class MeterIn(RequestBody):
    """The Stripe meter event a usage also reports (`billing/meter_events`, identifier = the
    usage id)."""

    event_name: Annotated[StrictStr, Field(min_length=1, max_length=100)] = Field(
        description="A meter of the applied catalog (its `event_name`)."
    )
    value: Annotated[StrictInt, Field(ge=0, le=MAX_USAGE_AMOUNT)] | None = Field(
        default=None, description="A non-negative integer; default: the usage's amount."
    )
    timestamp: Rfc3339 | None = Field(
        default=None,
        description="RFC 3339; default: when the usage is recorded. Stripe accepts events of "
        "the last 35 days, up to 5 minutes ahead.",
    )


class UsageIn(RequestBody):
    id: Annotated[StrictStr, Field(min_length=1, max_length=255), AfterValidator(_usage_id)] = (
        Field(
            description="The usage's idempotency key, its transaction's id: no '/', not only "
            "dots, not beginning with `system.`, `onboard:`, `on_start:` nor `overdraft:` "
            f"(in any case: the engine's ids); with a `meter` (it is Stripe's meter event "
            f"identifier) at most {MAX_METER_IDENTIFIER} characters and not beginning with "
            "`agg_` (in any case: aggregated meter events' identifiers)."
        )
    )
    amount: UsageAmount = Field(description="Credits to debit, 1..2^53.")
    source: Source | None = Field(
        default=None, description="Lower-cased; default `usage`; `system.*` is reserved."
    )
    description: Annotated[StrictStr, Field(max_length=1000)] | None = None
    user_id: Annotated[StrictStr, Field(min_length=1, max_length=255)] | None = None
    metadata: Metadata | None = None
    meter: MeterIn | None = None


class UsagesIn(RequestBody):
    usages: list[UsageIn] = Field(min_length=1, max_length=MAX_USAGES)

    @field_validator("usages", mode="after")
    @classmethod
    def _distinct_ids(cls, value: list[UsageIn]) -> list[UsageIn]:
        seen: dict[str, int] = {}
        for index, usage in enumerate(value):
            if usage.id in seen:
                raise ValueError(
                    f"duplicate usage id {usage.id!r} (usages[{seen[usage.id]}] and "
                    f"usages[{index}]): ids of one batch must be distinct"
                )
            seen[usage.id] = index
        return value


class UsagesRecorded(ResponseBody):
    data: list[Transaction] = Field(description="The usages' transactions, in request order.")
    created: list[str] = Field(description="Ids of the usages this request recorded.")
    replayed: list[str] = Field(
        description="Ids of usages recorded before with the same content (nothing changed)."
    )
    balance: int = Field(description="The balance after the batch.")


class CheckIn(RequestBody):
    amount: UsageAmount


class CreditCheck(ResponseBody):
    allowed: bool = Field(description="`balance - amount >= credit_min`.")
    balance: int
    credit_min: int


class RevertIn(RequestBody):
    amount: UsageAmount = Field(description="Credits to give back (at most what is left).")
    id: PurchaseId | None = Field(
        default=None,
        description="The revert's idempotency key (per usage): the same id again answers "
        "the stored revert (200) and gives back nothing more; another amount is 409 "
        "`id_conflict`. Without it each request is a new revert.",
    )


class Revert(ResponseBody):
    transaction: Transaction = Field(description="The revert: a credit, `reverts` = the usage.")
    usage_id: str
    reverted: int = Field(description="The usage's amount reverted so far, this one included.")
    remaining: int = Field(description="What is left to revert.")


# --- overdraft invoices (DESIGN §17; POST /admin/billing/invoices/generate) ----------------


class OverdraftWindowOut(ResponseBody):
    org_id: str
    window_start: datetime
    window_end: datetime
    deficit: int = Field(description="Overdrawn credits invoiced (0: nothing was owed).")
    unit_amount: int | None = Field(description="Minor units per credit.")
    currency: str | None
    invoice_id: str | None = Field(description="The Stripe invoice, when one was owed.")
    state: str | None = Field(description="The invoice's last known Stripe status.")
    credited: bool = Field(description="Its payment was credited back.")


class OverdraftGenerated(ResponseBody):
    window_end: datetime = Field(description="The latest window due now.")
    invoices: list[str] = Field(description="Stripe ids of the window's overdraft invoices.")
    data: list[OverdraftWindowOut] = Field(description="The accounts' windows evaluated.")
    waiting: list[str] = Field(
        description="Org ids of accounts overdrawn in the window whose Stripe customer does "
        "not exist yet (the customers domain makes it at its next pass): not invoiced yet, "
        "their window is evaluated at a later pass."
    )
    next_window_end: datetime = Field(
        description="The end of the window after `window_end`, the next to fall due (at "
        "`next_invoice_at`): what an account overdraws from `window_end` until then is "
        "invoiced at that pass (with `credit_overdraft_invoice_range_shift` 0, all it "
        "overdraws now). Empty lists mean nothing is owed for `window_end`, not that nothing "
        "is owed."
    )
    next_invoice_at: datetime = Field(
        description="When the next window falls due (its invoice day, 00:00 UTC): the first "
        "pass from then on invoices it."
    )
    state: str = Field(
        description="The reconcile's verdict: done (still running, or on a replica that does "
        "not lead, is 202 with its reason; refused 409; Stripe unreachable 503)."
    )

"""Comparable records of the subscriptions domain: an account's Stripe subscription and the
schedule of its pending change (DESIGN §16).

Kept apart from `model` (the catalog) and `model_customers` like them: standard library and
marker constants only. The gateway maps Stripe's subscriptions and schedules into
`SubscriptionRecord` / `ScheduleRecord`; the rules (`domains.subscription_rules`) derive a
`DesiredSubscription` per account from the store's intent, the catalog and `billing.yaml`, and
compare the two.

Conventions (the pinned API, `2026-10-28.endive`):
- the key is `subscription/<org_id>` (one live subscription per account, DESIGN §16), the
  request key of the customers domain's `customer/<org_id>` counterpart;
- periods live on the items (`items.data[].current_period_start|end`), not the subscription;
- times are Unix seconds; amounts never appear here (prices carry them);
- quantities: a licensed item has one (per-seat = seats, else 1), a metered item None;
- `metadata` excludes the marker keys, which ride in `owner`; absent values are None, never "".
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from billing_reconciler.model import (
    MANAGED_BY,
    META_INSTALLATION,
    META_KEY,
    META_MANAGED_BY,
    META_REVISION,
)
from billing_reconciler.model_customers import META_ORG_ID

SUBSCRIPTION_KIND: Final[str] = "subscription"
#: The plan a subscription (or a schedule phase) bills, in its metadata (DESIGN §19).
META_PLAN: Final[str] = "plan"
#: The intent a subscription was created for: its creation's idempotency key derives from it.
META_INTENT: Final[str] = "br_intent"
SUBSCRIPTION_MARKER_KEYS: Final[frozenset[str]] = frozenset(
    {
        META_MANAGED_BY,
        META_KEY,
        META_INSTALLATION,
        META_REVISION,
        META_ORG_ID,
        META_PLAN,
        META_INTENT,
    }
)

#: Statuses in which a subscription is live: it holds the account's plan (DESIGN §16).
LIVE_STATUSES: Final[frozenset[str]] = frozenset(
    {"active", "trialing", "past_due", "unpaid", "incomplete", "paused"}
)
#: Statuses that grant the plan's features (DESIGN §16, entitlement).
ENTITLED_STATUSES: Final[frozenset[str]] = frozenset({"active", "trialing"})


def subscription_key(org_id: str) -> str:
    """`subscription/<org_id>`: the object key of an org's subscription."""
    return f"{SUBSCRIPTION_KIND}/{org_id}"


def org_id_of_subscription_key(key: str) -> str | None:
    kind, sep, org_id = key.partition("/")
    return org_id if sep and kind == SUBSCRIPTION_KIND and org_id else None


class CollectionMethod(StrEnum):
    CHARGE_AUTOMATICALLY = "charge_automatically"
    SEND_INVOICE = "send_invoice"


@dataclass(frozen=True, slots=True)
class SubscriptionOwner:
    """The marker of a subscription (or schedule) we created (DESIGN §14): §4's markers, the
    org id, the plan it bills and the intent it was created for."""

    installation_id: str
    org_id: str
    plan: str
    intent_id: str = ""
    revision: str = ""

    @property
    def key(self) -> str:
        return subscription_key(self.org_id)

    def as_metadata(self) -> dict[str, str]:
        return {
            META_MANAGED_BY: MANAGED_BY,
            META_KEY: self.key,
            META_INSTALLATION: self.installation_id,
            META_ORG_ID: self.org_id,
            META_PLAN: self.plan,
            **({META_INTENT: self.intent_id} if self.intent_id else {}),
            **({META_REVISION: self.revision} if self.revision else {}),
        }

    @staticmethod
    def from_metadata(metadata: Mapping[str, str]) -> SubscriptionOwner | None:
        """The marker in live metadata, or None when the object is not one of our
        subscriptions (not ours, or another kind's key)."""
        key = metadata.get(META_KEY, "")
        org_id = org_id_of_subscription_key(key)
        if metadata.get(META_MANAGED_BY) != MANAGED_BY or org_id is None:
            return None
        return SubscriptionOwner(
            installation_id=metadata.get(META_INSTALLATION, ""),
            org_id=org_id,
            plan=metadata.get(META_PLAN, ""),
            intent_id=metadata.get(META_INTENT, ""),
            revision=metadata.get(META_REVISION, ""),
        )


def user_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """Metadata without our marker keys."""
    return {k: v for k, v in metadata.items() if k not in SUBSCRIPTION_MARKER_KEYS}


# --- observed: what Stripe holds ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """One subscription item: its price, quantity (None: metered) and, observed, its id and
    current period (the pinned API's periods are per item), and the catalog key of its price
    when the price is ours (its `br_key` marker): a superseded price id the catalog no longer
    lists is still known by it (a grandfathered seat item follows the members)."""

    price_id: str
    quantity: int | None
    item_id: str | None = None
    current_period_start: int | None = None
    current_period_end: int | None = None
    price_key: str | None = None


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    """A Stripe subscription of ours (`owner` set) or a foreign one on a customer of ours."""

    stripe_id: str
    customer_id: str
    status: str
    currency: str
    items: tuple[ItemRecord, ...]
    collection_method: str = CollectionMethod.CHARGE_AUTOMATICALLY.value
    days_until_due: int | None = None
    automatic_tax: bool = False
    trial_start: int | None = None
    trial_end: int | None = None
    cancel_at: int | None = None
    cancel_at_period_end: bool = False
    canceled_at: int | None = None
    ended_at: int | None = None
    schedule_id: str | None = None
    # `pending_invoice_item_interval` as (interval, count), e.g. ("month", 1), or None.
    pending_invoice_item_interval: tuple[str, int] | None = None
    latest_invoice_id: str | None = None
    test_clock: str | None = None
    created: int = 0
    metadata: Mapping[str, str] = field(default_factory=dict)
    owner: SubscriptionOwner | None = None
    # `trial_settings.end_behavior.missing_payment_method` (create_invoice | cancel | pause).
    trial_missing_payment_method: str | None = None
    # `cancellation_details.reason` (cancellation_requested | payment_failed | ...), or None.
    cancellation_reason: str | None = None

    @property
    def live(self) -> bool:
        return self.status in LIVE_STATUSES

    @property
    def current_period_end(self) -> int | None:
        """The items' common period end (the earliest when they differ)."""
        ends = [i.current_period_end for i in self.items if i.current_period_end is not None]
        return min(ends) if ends else None

    @property
    def current_period_start(self) -> int | None:
        starts = [i.current_period_start for i in self.items if i.current_period_start is not None]
        return max(starts) if starts else None


@dataclass(frozen=True, slots=True)
class PhaseItem:
    price_id: str
    quantity: int | None


@dataclass(frozen=True, slots=True)
class SchedulePhase:
    """One phase of a subscription schedule; `end` None only for an open last phase."""

    start: int
    end: int | None
    items: tuple[PhaseItem, ...]
    proration_behavior: str | None = None
    collection_method: str | None = None
    automatic_tax: bool | None = None
    # The plan the phase bills (phase metadata `plan`), when we wrote it.
    plan: str | None = None


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """A subscription schedule: how a pending plan change (or a period-end cancel) is held."""

    stripe_id: str
    subscription_id: str | None
    customer_id: str
    status: str  # not_started | active | completed | released | canceled
    end_behavior: str  # release | cancel
    phases: tuple[SchedulePhase, ...]
    metadata: Mapping[str, str] = field(default_factory=dict)
    owner: SubscriptionOwner | None = None
    # `current_phase` as (start, end) while the schedule is active, else None.
    current_phase: tuple[int, int] | None = None
    # The subscription a release left behind (`released_subscription`).
    released_subscription: str | None = None
    created: int = 0

    @property
    def in_force(self) -> bool:
        return self.status in {"not_started", "active"}


# --- desired: what the account's intent asks of Stripe --------------------------------------


@dataclass(frozen=True, slots=True)
class DesiredItem:
    """An item the plan bills: the catalog price (`price/<product>/<name>`), its Stripe id,
    and the quantity (per-seat: seats; other licensed: 1; metered: None)."""

    price_key: str
    price_id: str
    quantity: int | None
    per_seat: bool = False


@dataclass(frozen=True, slots=True)
class PendingChange:
    """A plan change waiting for `effective_at` (None: at the current period end), or a
    cancel at period end (`plan` None, DESIGN §16)."""

    plan: str | None
    effective_at: int | None
    immediate: bool = False
    reason: str = "change"  # change | cancel


@dataclass(frozen=True, slots=True)
class DesiredSubscription:
    """The Stripe subscription an account should have (DESIGN §16): its plan's items in the
    account's currency, tax, collection, trial, the pending change, and the markers."""

    org_id: str
    account_id: str
    customer_id: str | None  # None while the account has no Stripe customer yet
    plan: str
    interval: str
    currency: str
    items: tuple[DesiredItem, ...]
    intent_id: str
    automatic_tax: bool = False
    collection_method: str = CollectionMethod.CHARGE_AUTOMATICALLY.value
    days_until_due: int | None = None
    trial_days: int = 0
    # Yearly plans bill added seats monthly (DESIGN §16): ("month", 1); else None.
    pending_invoice_item_interval: tuple[str, int] | None = None
    pending_change: PendingChange | None = None
    cancel_immediately: bool = False
    test_clock: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    # At trial end (DESIGN §16): `release` (the paid subscription starts) or `cancel` (sent
    # as `trial_settings.end_behavior.missing_payment_method=cancel` plus cancel at trial end).
    trial_end_behavior: str = "release"

    @property
    def key(self) -> str:
        return subscription_key(self.org_id)

    @property
    def seats(self) -> int | None:
        per_seat = [item.quantity for item in self.items if item.per_seat]
        return per_seat[0] if per_seat else None


# --- on-start credits (DESIGN §16: once per (account, plan) ever) ----------------------------

#: Prefix of the ledger id of a plan's on-start credits.
ON_START_GRANT_PREFIX: Final[str] = "on_start:"


def on_start_grant_id(account_id: str, plan: str) -> str:
    """The ledger id of the on-start credits of `plan` on `account_id`: derived from the pair,
    so the ledger (idempotent by id) grants them once ever, across subscriptions, restarts and
    replays. Ids fit the ledger's 255 characters: a pair too long for that is hashed."""
    if not account_id or not plan:
        raise ValueError("an on-start grant id needs an account id and a plan")
    plain = f"{ON_START_GRANT_PREFIX}{account_id}:{plan}"
    if len(plain) <= 255:
        return plain
    digest = hashlib.sha256(f"{account_id}\0{plan}".encode()).hexdigest()
    return f"{ON_START_GRANT_PREFIX}{account_id}:sha256:{digest}"

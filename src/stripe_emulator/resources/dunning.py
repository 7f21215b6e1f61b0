"""Automatic payment retries (dunning) of subscription invoices, on Stripe's "custom retry
schedule" model: after a failed automatic attempt on a `charge_automatically` subscription
invoice, the next attempt is `days[k]` days after the previous one (`next_payment_attempt`);
the test clock walk (resources/subscriptions.py) runs it. When the last scheduled retry fails,
the subscription becomes `canceled`, `unpaid` or stays `past_due`, and the invoice stays
`open` or is marked `uncollectible`, per the account's settings (an operator control here:
`POST /_emulator/billing/retries`).

The settings live beside the emulator's `Settings` object: `Emulator.reset()` replaces that
object, which brings the defaults back. They are not saved in the state file.

Sources: https://docs.stripe.com/billing/revenue-recovery/smart-retries (custom retry
schedule, no retry without a payment method or after a hard decline, payment method order),
the SDK's `Subscription.status` docstring (`canceled` or `unpaid` once retries are
exhausted; an `unpaid` subscription's invoices are not attempted), and
https://support.stripe.com/questions/retry-schedules-longer-than-a-subscription-s-billing-period
(the outcome applies only while the failed invoice is the subscription's latest).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

from stripe_emulator.core import Emulator, RequestContext
from stripe_emulator.state import StripeObject

DAY = 24 * 3600
# No Stripe page we could consult gives a default custom schedule; the emulator's default.
DEFAULT_DAYS = (3, 5, 7)
SUBSCRIPTION_OUTCOMES = ("canceled", "unpaid", "past_due")
INVOICE_OUTCOMES = ("open", "uncollectible")
# Issuer decline codes Stripe does not retry ("hard declines"), among those the emulator's
# test cards produce.
HARD_DECLINES = frozenset({"lost_card", "stolen_card", "pickup_card", "incorrect_number"})


@dataclass(slots=True)
class RetrySettings:
    """The account's retry schedule and what happens when every retry failed."""

    days: tuple[int, ...] = DEFAULT_DAYS
    subscription_status: str = "canceled"
    invoice_status: str = "open"
    enabled: bool = True

    def as_json(self) -> dict[str, Any]:
        """The operator API's view."""
        return {
            "days": list(self.days),
            "subscription_status": self.subscription_status,
            "invoice_status": self.invoice_status,
            "enabled": self.enabled,
        }


@dataclass(slots=True)
class _Entry:
    owner: object
    settings: RetrySettings = field(default_factory=RetrySettings)


_SETTINGS: weakref.WeakKeyDictionary[Emulator, _Entry] = weakref.WeakKeyDictionary()


def settings_of(emulator: Emulator) -> RetrySettings:
    """The emulator's retry settings (the defaults after a reset)."""
    entry = _SETTINGS.get(emulator)
    if entry is None or entry.owner is not emulator.settings:
        entry = _Entry(owner=emulator.settings)
        _SETTINGS[emulator] = entry
    return entry.settings


def configure(emulator: Emulator, body: dict[str, Any]) -> RetrySettings:
    """Replace some of the settings from the operator's JSON; ValueError when invalid."""
    current = settings_of(emulator)
    days = current.days
    if "days" in body:
        raw = body["days"]
        if not isinstance(raw, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in raw
        ):
            raise ValueError("days must be a list of whole numbers of days >= 1")
        if len(raw) > 8:
            raise ValueError("a custom retry schedule has at most 8 retries")
        days = tuple(raw)
    sub_status = str(body.get("subscription_status", current.subscription_status))
    if sub_status not in SUBSCRIPTION_OUTCOMES:
        raise ValueError(f"subscription_status must be one of {', '.join(SUBSCRIPTION_OUTCOMES)}")
    inv_status = str(body.get("invoice_status", current.invoice_status))
    if inv_status not in INVOICE_OUTCOMES:
        raise ValueError(f"invoice_status must be one of {', '.join(INVOICE_OUTCOMES)}")
    enabled = body.get("enabled", current.enabled)
    if not isinstance(enabled, bool):
        raise ValueError("enabled must be true or false")
    updated = RetrySettings(days, sub_status, inv_status, enabled)
    _SETTINGS[emulator] = _Entry(owner=emulator.settings, settings=updated)
    return updated


def applies_to(invoice: StripeObject) -> bool:
    """Only `charge_automatically` invoices of subscriptions are retried."""
    return bool(
        invoice.get("_subscription") and invoice["collection_method"] == "charge_automatically"
    )


def after_failure(
    ctx: RequestContext,
    invoice: StripeObject,
    *,
    automatic: bool,
    had_payment_method: bool,
    decline_code: str | None,
) -> None:
    """Set `next_payment_attempt` (and the private `_dunning` state) on `invoice` after a
    failed attempt, before `invoice.payment_failed` is emitted. A manual attempt (`/pay`)
    keeps the schedule as it was; an automatic one moves it on, or exhausts it."""
    if not applies_to(invoice):
        return
    state = dict(invoice.get("_dunning") or {"retries": 0, "at": None, "exhausted": False})
    if not automatic:
        invoice["next_payment_attempt"] = state.get("at")
        if invoice.get("_dunning"):
            invoice["_dunning"] = {**state, "exhausted": False}
        return
    config = settings_of(ctx.emulator)
    retryable = had_payment_method and decline_code not in HARD_DECLINES
    done = int(state.get("retries") or 0)
    if state.get("started"):
        done += 1
    state["started"] = True
    state["retries"] = done
    if config.enabled and retryable and done < len(config.days):
        state["at"] = ctx.now() + config.days[done] * DAY
        state["exhausted"] = False
    else:
        state["at"] = None
        # Without a payment method or after a hard decline Stripe stops retrying; the
        # settings' outcome applies only once a schedule has run to its end.
        state["exhausted"] = config.enabled and retryable
    invoice["next_payment_attempt"] = state["at"]
    invoice["_dunning"] = state


def retry_due(invoice: StripeObject) -> int | None:
    """When the clock walk retries this invoice (None: not scheduled)."""
    if invoice["status"] != "open" or not applies_to(invoice):
        return None
    at = (invoice.get("_dunning") or {}).get("at")
    return None if at is None else int(at)


def exhausted(invoice: StripeObject) -> bool:
    """Whether the invoice's last scheduled retry has just failed."""
    return bool((invoice.get("_dunning") or {}).get("exhausted"))

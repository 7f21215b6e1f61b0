"""The subscriptions domain's plan vocabulary: step kinds and keys, the batches steps are
ordered in, the Stripe call each step names (`params["op"]`), the `billing.yaml` settings
that make a step a fleet rewrite, and the derived idempotency key of a subscription create.
Pure constants and string functions (DESIGN §14, §16)."""

from __future__ import annotations

import hashlib
from typing import Final

from billing_reconciler.domains.price_impact import SETTING_PRICE_MIGRATION
from billing_reconciler.model_subscriptions import subscription_key
from billing_reconciler.planning.plan import Step

SUBSCRIPTION_STEP: Final = "subscription"
SCHEDULE_STEP: Final = "subscription_schedule"
#: The store's mirror of a subscription (and the intent a completed change moves): a
#: bookkeeping restore, written by apply, never a change.
MIRROR_STEP: Final = "subscription_mirror"
ENDS, CREATES, UPDATES, SCHEDULES, CANCELS = 0, 1, 2, 3, 4

#: `params["op"]`: the Stripe call a step's executor makes.
OP_CREATE: Final = "create"  # POST /v1/subscriptions
OP_UPDATE: Final = "update"  # POST /v1/subscriptions/{id}
OP_CANCEL: Final = "cancel"  # DELETE /v1/subscriptions/{id} (invoice_now, prorate)
# POST /v1/subscription_schedules {from_subscription}, then .../{id} {phases, end_behavior}
OP_SCHEDULE_CREATE: Final = "schedule_create"
OP_SCHEDULE_UPDATE: Final = "schedule_update"  # POST /v1/subscription_schedules/{id}

SETTING_AUTO_TAX: Final = "billing.stripe_auto_tax"
SETTING_SEAT_CHANGE: Final = "billing.product.seat_change_behavior"
#: Settings read only when a subscription is created or changed: never a fleet rewrite.
FUTURE_ONLY_SETTINGS: Final = (
    "billing.customer.default_plan",
    "billing.plan_change.proration_behavior",
    "billing.plan_change.immediate_proration_behavior",
    "billing.plan_change.collection_method",
    "billing.subscription.behavior_after_trial",
)

#: The fleet rewrites the mass-change guard counts (`Step.mass_change`, DESIGN §14): a setting
#: that reprices every live subscription it touches. Not `seat_change_behavior`: a seat
#: reduction under `exact` follows a member who left as often as a changed setting and the
#: rules cannot tell which, so counting it would hold back ordinary member removals (one of
#: five subscriptions is already 20%). Nor what an account asks for itself (a cancel, a plan
#: change): those come one account at a time through the API.
#: A price migration (`reconcile.price_migration`, DESIGN §16) reprices every subscription it
#: moves: counted too.
GUARDED_SETTINGS: Final = frozenset({SETTING_AUTO_TAX, SETTING_PRICE_MIGRATION})
#: What `Plan.population` counts: the live subscriptions of ours.
POPULATION_NOUN: Final = "subscription"


#: On a moved item whose target is a `Ref`: the price id it moves off. When the reference
#: resolves to that same id, the catalog has not superseded the price yet (a `serve` pass
#: planned between a desired/ change and the catalog's apply): the executor sends nothing and
#: a later pass moves it.
REPLACES: Final = "replaces"


def subscription_schedule_key(org_id: str) -> str:
    return f"{SCHEDULE_STEP}/{org_id}"


def subscription_creation_key(
    *, installation_id: str, org_id: str, plan: str, intent_id: str, salt: str
) -> str:
    """The idempotency key of an intent's subscription create: derived, never random, so a
    rerun after a crash replays Stripe's first answer. Scoped by installation, org, plan and
    intent (a new intent of the account, e.g. after a cancel, creates a new subscription), and
    salted with the store's identity (a new store never replays an old store's answer; across
    a lost store the listed subscription, marked with the intent, is found instead)."""
    part = hashlib.sha256("\x1f".join((salt, plan, intent_id)).encode()).hexdigest()[:24]
    return f"br:{installation_id}:{subscription_key(org_id)}:create:{part}"


def org_id_of_step_key(key: str) -> str | None:
    """The org a step key of this domain names: `subscription/<org>`,
    `subscription/<org>/<sub_id>` (a replaced free subscription's cancel),
    `subscription_schedule/<org>`, `subscription_mirror/<org>/<sub_id>` (org ids hold no
    `/`)."""
    parts = key.split("/")
    if len(parts) in (2, 3) and parts[0] in (SUBSCRIPTION_STEP, SCHEDULE_STEP, MIRROR_STEP):
        return parts[1] or None
    return None


def fleet_settings(step: Step) -> tuple[str, ...]:
    """The `billing.yaml` settings that make `step` a fleet rewrite (empty: none)."""
    return tuple(step.params.get("settings", ()))

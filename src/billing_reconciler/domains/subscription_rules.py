"""The subscriptions domain's rules: intents + Stripe subscriptions -> the ordered plan. Pure.

`desired_subscription` derives the Stripe subscription an account's intent asks for (DESIGN
§16); `subscriptions_plan` compares it with what Stripe lists on the account's customer and
orders the steps, per account, in these batches (each independent within itself):
1. `subscription` create: an online account with a plan and no live subscription of ours
   (key from installation, org, plan and intent, salted with the store's identity);
2. `subscription` update: seat quantities (`seat_change_behavior`: `exact` up and down,
   `incremental` only up), other licensed quantities back to 1, `automatic_tax`, the monthly
   billing of a yearly plan's seats, the `plan` marker a checkout-made one lacks, the cancel
   at trial end of a `behavior_after_trial: cancel` trial, the items of a price migration
   under `reconcile.price_migration: now` (`price` on the item id);
3. `subscription_schedule` create / update: a pending plan change (the current phase ending
   at the period end, or now when immediate, then the new plan's), a cancel at period end (the
   current phase only, `end_behavior: cancel`), a cancelled upcoming change (the current
   phase only, `end_behavior: release`), a price migration under `at_renewal` (the current
   phase to the period end, then the moved items for one interval, `end_behavior: release`);
4. `subscription` cancel (`Action.ARCHIVE`): an immediate cancel (`invoice_now`, `prorate`),
   or a free subscription a paid one (created in batch 1) replaces.

Beside the steps, a bookkeeping restore (`subscription_mirror`) writes the store's mirror of
each subscription of ours whose Stripe facts differ from it, and moves the intent on when its
pending change took effect.

Every step's `params["op"]` names the Stripe call (see `OP_*`); `params["settings"]` names
the `billing.yaml` settings that make it a fleet rewrite (`billing.stripe_auto_tax`,
`billing.product.seat_change_behavior`, `reconcile.price_migration`), `[]` for a change of
one account's own facts; the
same settings are the step's `causes`, by which a fleet plan groups and names the rewrite
(`~ 37 subscriptions: automatic_tax false -> true  (billing.stripe_auto_tax)`). An untargeted
plan states its population (every live subscription of ours) and marks the rewrites of a
repricing setting (`GUARDED_SETTINGS`) `mass_change`, so the controller's mass-change guard
holds a plan back that rewrites more than `reconcile.max_fleet_change_fraction` of the fleet
without `--allow-mass-change`. Settings that apply only to future events
(`FUTURE_ONLY_SETTINGS`: `customer.default_plan`, `plan_change.*`,
`subscription.behavior_after_trial`) are never compared with live subscriptions: the domain
declares them, and the controller states a change of one on the plan instead.

Left alone, never modified: foreign subscriptions (no marker), other installations'
subscriptions, items on price ids the catalog does not know. Offline accounts (no Stripe
customer) get nothing: the intent waits for `register`. A plan an account cannot have (no
price in its currency, inactive, not applied yet, seats above a `seat_limit`) is a notice in
the plan (`Plan.notices`, message `refused: ...`), never an exception.

The rules are split by job: `subscription_keys` (the plan's vocabulary), `subscription_shape`
(the desired subscription), `subscription_draft` (the plan being built, shared lookups),
`subscription_contract`, `subscription_adoption` (a lost store), `subscription_items`
(create, update), `subscription_cancel`, `subscription_phases` and `subscription_changes`
(schedules), `subscription_migration`, `subscription_mirror` and `subscription_fingerprint`.
This module walks each account through them, and re-exports the names other packages import.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from billing_reconciler.domains.base import PlanContext
from billing_reconciler.domains.price_impact import (
    MIGRATION_AT_RENEWAL,
    MIGRATION_NOW,
    SETTING_PRICE_MIGRATION,
    MigrationHold,
)
from billing_reconciler.domains.subscription_adoption import adoption_of, held_seats
from billing_reconciler.domains.subscription_cancel import cancel_now
from billing_reconciler.domains.subscription_changes import (
    write_cancel_upcoming,
    write_change,
    write_period_end_cancel,
)
from billing_reconciler.domains.subscription_contract import (
    apply_contract,
    contract_bundle,
    contract_intent_id,
)
from billing_reconciler.domains.subscription_draft import Draft, billed_plan, is_ours
from billing_reconciler.domains.subscription_fingerprint import fingerprint_of
from billing_reconciler.domains.subscription_items import create_step, plan_update, refused_before
from billing_reconciler.domains.subscription_keys import (
    CREATES,
    ENDS,
    FUTURE_ONLY_SETTINGS,
    GUARDED_SETTINGS,
    MIRROR_STEP,
    OP_CANCEL,
    OP_CREATE,
    OP_SCHEDULE_CREATE,
    OP_SCHEDULE_UPDATE,
    OP_UPDATE,
    POPULATION_NOUN,
    REPLACES,
    SCHEDULE_STEP,
    SETTING_AUTO_TAX,
    SETTING_SEAT_CHANGE,
    SUBSCRIPTION_STEP,
    fleet_settings,
    org_id_of_step_key,
    subscription_creation_key,
    subscription_schedule_key,
)
from billing_reconciler.domains.subscription_migration import migrate_at_renewal, price_moves
from billing_reconciler.domains.subscription_mirror import plan_mirrors
from billing_reconciler.domains.subscription_phases import of_another_intent, schedule_of
from billing_reconciler.domains.subscription_shape import Refusal, desired_subscription
from billing_reconciler.domains.subscription_types import (
    AccountSubscriptions,
    SubscriptionsObserved,
)
from billing_reconciler.model_subscriptions import (
    DesiredSubscription,
    SubscriptionRecord,
    subscription_key,
)
from billing_reconciler.planning.plan import Plan, Population, Step

# What other packages (and the tests) import from here, defined in the modules above.
__all__ = [
    "FUTURE_ONLY_SETTINGS",
    "GUARDED_SETTINGS",
    "MIRROR_STEP",
    "OP_CANCEL",
    "OP_CREATE",
    "OP_SCHEDULE_CREATE",
    "OP_SCHEDULE_UPDATE",
    "OP_UPDATE",
    "POPULATION_NOUN",
    "REPLACES",
    "SCHEDULE_STEP",
    "SETTING_AUTO_TAX",
    "SETTING_SEAT_CHANGE",
    "SUBSCRIPTION_STEP",
    "Refusal",
    "contract_bundle",
    "contract_intent_id",
    "desired_subscription",
    "fleet_settings",
    "org_id_of_step_key",
    "subscription_creation_key",
    "subscription_schedule_key",
    "subscriptions_plan",
]


def subscriptions_plan(
    desired: object, observed: SubscriptionsObserved, context: PlanContext
) -> Plan:
    """The plan of every account in `observed` (a targeted request's scope: `customer/<org>`
    or `subscription/<org>` keys). `desired` is unused: the intents are observed from the store
    beside Stripe, as the customers domain's accounts are."""
    del desired
    draft = Draft(context, observed.catalog)
    scope = context.options.scope
    for bundle in observed.accounts:
        org = bundle.org_id
        if (
            scope is not None
            and f"customer/{org}" not in scope
            and (subscription_key(org) not in scope)
        ):
            continue
        _plan_account(draft, bundle)
    steps = tuple(step for phase in sorted(draft.phases) for step in draft.phases[phase])
    for key, count in sorted(draft.protected.items()):
        draft.warnings.append(
            f"{key} is protected: {count:,} live subscription(s) on a superseded id of it are "
            f"not migrated ({SETTING_PRICE_MIGRATION}: {draft.migration})"
        )
    population = None
    if scope is None:
        # The fleet (DESIGN §14): every live subscription of ours, what the mass-change guard
        # takes its fraction of; a targeted pass sees a few accounts and states none.
        population = Population(_live_count(draft, observed.accounts), POPULATION_NOUN)
        steps = tuple(_guarded(step) for step in steps)
    return Plan(
        steps=steps,
        installation_id=context.installation_id,
        desired_revision=context.state.revision,
        fingerprint=fingerprint_of(observed),
        created_at=context.now,
        notices=tuple(draft.notices),
        warnings=tuple(draft.warnings),
        restores=tuple(draft.restores),
        population=population,
    )


def _live_count(draft: Draft, accounts: Iterable[AccountSubscriptions]) -> int:
    return sum(1 for b in accounts for s in b.subscriptions if s.live and is_ours(draft, s))


def _guarded(step: Step) -> Step:
    """`step` marked for the mass-change guard when a repricing setting causes it."""
    if GUARDED_SETTINGS.isdisjoint(step.causes):
        return step
    return dataclasses.replace(step, mass_change=True)


def _plan_account(draft: Draft, bundle: AccountSubscriptions) -> None:
    bundle = apply_contract(draft, bundle)
    account = bundle.account
    ours = [s for s in bundle.subscriptions if is_ours(draft, s)]
    adoption = adoption_of(draft, bundle, ours)
    plan_mirrors(draft, bundle, ours, adoption)
    if adoption is not None:
        # From here on the intent is the adopted subscription's (the store's follows it).
        bundle = dataclasses.replace(bundle, intent=adoption.intent)
    intent = bundle.intent
    if account.state != "active" and not account.offline:
        # Disabled (through the API, or a deleted org's): it stops billing. Nothing is created
        # or changed, and every live subscription of ours on its customer is cancelled now
        # (`invoice_now`, `prorate`: what is owed is invoiced, unused time is a credit), before
        # anything else of the plan, so a new account of the org never bills beside it.
        for sub in sorted((s for s in ours if s.live), key=lambda s: s.stripe_id):
            cancel_now(draft, bundle, sub, replaced=False, phase=ENDS)
        return
    if intent is None or account.offline:
        return  # no intent; offline: the intent waits for `register`
    if account.stripe_customer_id is None:
        return  # registered, its customer not created yet: the customers domain's turn
    live = [s for s in ours if s.live]
    current = _current(draft, bundle, live)
    if current is None:
        _without_live(draft, bundle, ours)
        return
    bundle = held_seats(draft, bundle, current)  # an adopted one, its members not re-sent
    if intent.cancel is not None and of_another_intent(bundle, current):
        # The cancel names the intent's subscription: one made for another intent on
        # another plan (the live free one a refused paid plan was to replace) is not it.
        draft.notice(
            bundle.org_id,
            current.stripe_id,
            f"the cancel of intent {intent.intent_id} has no subscription of its own: "
            f"{current.stripe_id} (another intent's) is not cancelled",
        )
        return
    if intent.cancel is not None and intent.cancel.immediate:
        cancel_now(draft, bundle, current, replaced=False)
        return
    if intent.plan is None:
        draft.warnings.append(
            f"{subscription_key(bundle.org_id)}: {current.stripe_id} is live but the intent has "
            "no plan and no cancel request: left as is"
        )
        return
    plan = billed_plan(current, intent.plan)
    pending = intent.pending_change
    moved = pending is not None and pending.plan is not None and pending.plan.lower() == plan
    if moved and plan != intent.plan.lower():
        pending = None  # the schedule moved the subscription: the change took effect
    elif pending is None and plan != intent.plan.lower():
        _replace_or_warn(draft, bundle, current, plan)
        return
    now = draft.desired(bundle, plan)
    schedule, foreign = schedule_of(draft, bundle, current)
    # A price migration (DESIGN §16) of a subscription nothing else is about to change: a
    # pending change or cancel moves or ends it at its period end anyway.
    cancelling = intent.cancel is not None or (pending is not None and pending.reason == "cancel")
    hold = MigrationHold(
        pending_change=pending is not None and not cancelling,
        cancel=cancelling,
        scheduled=schedule is not None or foreign,
    )
    moves = price_moves(draft, bundle, current, hold=hold)
    if isinstance(now, Refusal):
        draft.notice(bundle.org_id, current.stripe_id, f"refused: {now.reason}")
    else:
        plan_update(
            draft,
            bundle,
            current,
            now,
            marker=current.owner is not None and not current.owner.plan,
            moves=moves if draft.migration == MIGRATION_NOW else {},
        )
    if foreign:
        return
    if intent.cancel is not None or (pending is not None and pending.reason == "cancel"):
        write_period_end_cancel(draft, bundle, current, schedule, plan)
    elif pending is not None:
        write_change(draft, bundle, current, schedule, plan, pending)
    elif moves and draft.migration == MIGRATION_AT_RENEWAL and not isinstance(now, Refusal):
        migrate_at_renewal(draft, bundle, current, schedule, plan, now, moves)
    elif schedule is not None:
        write_cancel_upcoming(draft, bundle, current, schedule, plan)


def _current(
    draft: Draft, bundle: AccountSubscriptions, live: Sequence[SubscriptionRecord]
) -> SubscriptionRecord | None:
    """The live subscription of ours the intent acts on: the one created for the intent, else
    the newest. One live subscription per account: more are reported, never touched."""
    if not live:
        return None
    intent_id = bundle.intent.intent_id if bundle.intent is not None else ""
    current = max(
        live,
        key=lambda s: (s.owner is not None and s.owner.intent_id == intent_id, s.created),
    )
    others = sorted(s.stripe_id for s in live if s is not current)
    # A free subscription being replaced is a second live one for one pass: not an anomaly.
    if others and not _replacing(draft, bundle, current, live):
        draft.warnings.append(
            f"{subscription_key(bundle.org_id)}: conflict: more than one live subscription "
            f"of ours ({current.stripe_id} is used; {', '.join(others)} left as is, never "
            "cancelled automatically: cancel the one not wanted in Stripe)"
        )
    return current


def _replacing(
    draft: Draft,
    bundle: AccountSubscriptions,
    current: SubscriptionRecord,
    live: Sequence[SubscriptionRecord],
) -> bool:
    """`current` is the paid subscription of the intent and every other live one is free
    (its cancel is planned below)."""
    others = [s for s in live if s is not current]
    if not all(s.owner is not None and draft.free(bundle, s.owner.plan) for s in others):
        return False
    for other in others:
        cancel_now(draft, bundle, other, replaced=True)
    return True


def _without_live(
    draft: Draft, bundle: AccountSubscriptions, ours: Sequence[SubscriptionRecord]
) -> None:
    intent = bundle.intent
    assert intent is not None
    if intent.plan is None or intent.cancel is not None:
        return
    if intent.pending_change is not None and intent.pending_change.reason == "cancel":
        return
    org = bundle.org_id
    foreign = [s for s in bundle.subscriptions if s.owner is None and s.live]
    if foreign:
        draft.notice(
            org,
            foreign[0].stripe_id,
            f"a subscription not made by us ({foreign[0].stripe_id}) is live on the customer: "
            "left alone, and none of ours is created beside it (one live subscription per "
            "account)",
        )
        return
    ended = [s for s in ours if s.owner is not None and s.owner.intent_id == intent.intent_id]
    if ended:
        draft.notice(
            org,
            ended[0].stripe_id,
            f"the intent's subscription {ended[0].stripe_id} is {ended[0].status} in Stripe: "
            "not re-created silently (a new subscribe starts again)",
        )
        return
    desired = draft.desired(bundle, intent.plan)
    if isinstance(desired, Refusal):
        draft.notice(org, None, f"refused: {desired.reason}")
        return
    if _refused_before(draft, bundle, desired, None):
        return
    draft.add(CREATES, create_step(draft, desired))


def _replace_or_warn(
    draft: Draft, bundle: AccountSubscriptions, current: SubscriptionRecord, plan: str
) -> None:
    """The intent names another plan than the live subscription bills, with no change
    pending: a live free one is replaced (the new one created first, the free one cancelled
    after it); a paid one is left (a change goes through a schedule)."""
    intent = bundle.intent
    assert intent is not None
    assert intent.plan is not None
    if not draft.free(bundle, plan):
        draft.warnings.append(
            f"{subscription_key(bundle.org_id)}: {current.stripe_id} bills plan {plan!r}, the "
            f"intent says {intent.plan!r}: a paid plan is changed through a plan change, "
            "left as is"
        )
        return
    desired = draft.desired(bundle, intent.plan)
    if isinstance(desired, Refusal):
        draft.notice(bundle.org_id, current.stripe_id, f"refused: {desired.reason}")
        return
    if _refused_before(draft, bundle, desired, current.stripe_id):
        return
    draft.add(CREATES, create_step(draft, desired))
    cancel_now(draft, bundle, current, replaced=True)


def _refused_before(
    draft: Draft, bundle: AccountSubscriptions, desired: DesiredSubscription, stripe_id: str | None
) -> bool:
    """A whole-domain pass leaves a create Stripe refused last time alone (see
    `refused_before`), saying so."""
    if draft.context.options.scope is not None or not refused_before(draft, desired):
        return False
    draft.notice(
        bundle.org_id,
        stripe_id,
        "waiting: Stripe refused this subscription's create (the subscribe's answer and "
        "`reconcile status` say why); a scheduled pass does not send it again: send the "
        "subscribe again, or subscribe to another plan",
    )
    return True

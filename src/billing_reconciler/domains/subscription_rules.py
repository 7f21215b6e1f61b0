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
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from billing_reconciler.config import BillingSettings
from billing_reconciler.desired.state import CustomerSpec
from billing_reconciler.domains.base import PlanContext
from billing_reconciler.domains.customer_rules import unspent_key
from billing_reconciler.domains.price_impact import (
    MIGRATION_AT_RENEWAL,
    MIGRATION_NONE,
    MIGRATION_NOW,
    SETTING_PRICE_MIGRATION,
)
from billing_reconciler.domains.subscription_types import (
    BEHAVIOR_CREDITS,
    SOURCE_CONTRACT,
    SOURCE_DEFAULT_PLAN,
    AccountSubscriptions,
    CancelRequest,
    CatalogPlan,
    CatalogPrice,
    PlanCatalog,
    SubscriptionIntent,
    SubscriptionMirror,
    SubscriptionsObserved,
)
from billing_reconciler.model_subscriptions import (
    CollectionMethod,
    DesiredItem,
    DesiredSubscription,
    ItemRecord,
    PendingChange,
    SchedulePhase,
    ScheduleRecord,
    SubscriptionOwner,
    SubscriptionRecord,
    subscription_key,
)
from billing_reconciler.planning.plan import (
    Action,
    FieldChange,
    Notice,
    Plan,
    Population,
    Reason,
    Ref,
    Step,
    canonical_json,
    digest,
)

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

_DAY: Final = 86_400


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


# --- the desired subscription ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an account cannot have a plan (shown as a notice; nothing is sent)."""

    org_id: str
    plan: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class _Shape:
    """A plan's items in one currency, before seats: derived once per (plan, currency)."""

    plan: CatalogPlan
    prices: tuple[CatalogPrice, ...]
    free: bool
    seat_limit: int | None


def _shape(catalog: PlanCatalog, plan_name: str | None, currency: str) -> _Shape | str:
    """The plan's billed prices in `currency`, or why it cannot be billed in it."""
    plan = catalog.plan(plan_name)
    if plan is None:
        return f"plan {plan_name!r} is not in the catalog"
    prices = tuple(
        p
        for p in plan.prices
        if p.active and p.behavior != BEHAVIOR_CREDITS and p.interval == plan.interval
    )
    if not prices:
        return f"plan {plan.name!r} has no active price at its interval ({plan.interval})"
    missing = [p.key for p in prices if currency not in p.amounts]
    if missing:
        return (
            f"plan {plan.name!r} has no price in {currency} ({', '.join(missing)} has "
            f"{', '.join(sorted(set().union(*(p.amounts for p in prices if p.key in missing))))}"
            "); add currency_options for it or subscribe the account to another plan"
        )
    unapplied = [p.key for p in prices if not p.stripe_id]
    if unapplied:
        return f"plan {plan.name!r}: {', '.join(unapplied)} not created in Stripe yet"
    limits = [p.seat_limit for p in prices if p.per_seat and p.seat_limit]
    return _Shape(
        plan=plan,
        prices=prices,
        free=not any(p.amounts[currency] for p in prices),
        seat_limit=min(limits) if limits else None,
    )


def desired_subscription(
    bundle: AccountSubscriptions,
    *,
    catalog: PlanCatalog,
    billing: BillingSettings,
    installation_id: str,
    revision: str = "",
    plan: str | None = None,
    collection_method: str = CollectionMethod.CHARGE_AUTOMATICALLY.value,
) -> DesiredSubscription | Refusal:
    """The subscription `bundle`'s intent asks for (DESIGN §16), on `plan` when given (a
    pending change's target) else the intent's plan; a `Refusal` when the account cannot have
    it. The intent must be set (an account without one has no desired subscription)."""
    intent = bundle.intent
    name = plan if plan is not None else (intent.plan if intent is not None else None)
    currency = (bundle.account.currency or billing.currency).lower()
    shape = _shape(catalog, name, currency)
    if isinstance(shape, str):
        return Refusal(bundle.org_id, name, shape)
    return _derive(
        bundle,
        shape,
        currency=currency,
        billing=billing,
        installation_id=installation_id,
        revision=revision,
        target=plan is not None,
        collection_method=collection_method,
    )


def _derive(
    bundle: AccountSubscriptions,
    shape: _Shape,
    *,
    currency: str,
    billing: BillingSettings,
    installation_id: str,
    revision: str,
    target: bool,
    collection_method: str,
) -> DesiredSubscription | Refusal:
    plan = shape.plan
    seats = max(bundle.seats, 1)
    if shape.seat_limit is not None and seats > shape.seat_limit:
        return Refusal(
            bundle.org_id,
            plan.name,
            f"{seats} seats are above the seat_limit {shape.seat_limit} of plan {plan.name!r}",
        )
    items = tuple(
        DesiredItem(
            price_key=p.key,
            price_id=str(p.stripe_id),
            quantity=None if p.metered else (seats if p.per_seat else 1),
            per_seat=p.per_seat,
        )
        for p in shape.prices
    )
    intent = bundle.intent
    intent_id = intent.intent_id if intent is not None else ""
    owner = SubscriptionOwner(
        installation_id=installation_id,
        org_id=bundle.org_id,
        plan=plan.name,
        intent_id=intent_id,
        revision=revision,
    )
    cancel_after_trial = (intent is not None and intent.cancel_after_trial) or (
        billing.subscription.behavior_after_trial == "cancel"
    )
    send_invoice = collection_method == CollectionMethod.SEND_INVOICE.value
    return DesiredSubscription(
        org_id=bundle.org_id,
        account_id=bundle.account.account_id,
        customer_id=bundle.account.stripe_customer_id,
        plan=plan.name,
        interval=plan.interval,
        currency=currency,
        items=items,
        intent_id=intent_id,
        automatic_tax=billing.stripe_auto_tax and not shape.free,
        collection_method=collection_method,
        days_until_due=bundle.account.due_in_days if send_invoice else None,
        trial_days=_trial_days(bundle, plan),
        pending_invoice_item_interval=(
            ("month", 1) if plan.interval == "year" and any(i.per_seat for i in items) else None
        ),
        pending_change=None if target or intent is None else intent.pending_change,
        cancel_immediately=bool(
            not target and intent is not None and intent.cancel and intent.cancel.immediate
        ),
        test_clock=bundle.account.test_clock,
        metadata=owner.as_metadata(),
        trial_end_behavior="cancel" if cancel_after_trial else "release",
    )


def _trial_days(bundle: AccountSubscriptions, plan: CatalogPlan) -> int:
    """A plan's trial, once per plan per account: not when skipped, not for a default plan
    (subscribed directly), not when the account had the plan (history, or any subscription
    of ours on it)."""
    intent = bundle.intent
    if plan.trial_days <= 0 or intent is None or intent.skip_trial:
        return 0
    if intent.source == SOURCE_DEFAULT_PLAN or plan.name in bundle.plan_history:
        return 0
    if any(s.owner is not None and s.owner.plan == plan.name for s in bundle.subscriptions):
        return 0
    return plan.trial_days


# --- the plan -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Draft:
    context: PlanContext
    catalog: PlanCatalog
    phases: dict[int, list[Step]] = field(default_factory=dict)
    notices: list[Notice] = field(default_factory=list)
    restores: list[Step] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    shapes: dict[tuple[str | None, str], _Shape | str] = field(default_factory=dict)
    prices_by_key: dict[str, CatalogPrice] | None = None
    # Protected price keys with live subscriptions not migrated off them, and how many.
    protected: dict[str, int] = field(default_factory=dict)
    _contracts: dict[str, CustomerSpec] | None = None

    @property
    def billing(self) -> BillingSettings:
        return self.context.state.config.billing

    @property
    def contracts(self) -> Mapping[str, CustomerSpec]:
        """The contract customers (`desired/customers/`) by org id."""
        if self._contracts is None:
            self._contracts = {c.org_id: c for c in self.context.state.customers}
        return self._contracts

    @property
    def migration(self) -> str:
        return str(self.context.state.config.reconcile.price_migration)

    @property
    def installation_id(self) -> str:
        return self.context.installation_id

    def add(self, phase: int, step: Step) -> None:
        self.phases.setdefault(phase, []).append(dataclasses.replace(step, batch=phase))

    def key(self, *parts: str) -> str:
        return unspent_key(
            "br:" + digest(self.context.key_salt, self.installation_id, *parts),
            self.context.spent_keys,
        )

    def notice(self, org_id: str, stripe_id: str | None, message: str) -> None:
        self.notices.append(Notice(subscription_key(org_id), SUBSCRIPTION_STEP, stripe_id, message))

    def desired(
        self, bundle: AccountSubscriptions, plan: str | None, *, target: bool = False
    ) -> DesiredSubscription | Refusal:
        currency = (bundle.account.currency or self.billing.currency).lower()
        cache_key = (plan, currency)
        shape = self.shapes.get(cache_key)
        if shape is None:
            shape = self.shapes[cache_key] = _shape(self.catalog, plan, currency)
        if isinstance(shape, str):
            return Refusal(bundle.org_id, plan, shape)
        return _derive(
            bundle,
            shape,
            currency=currency,
            billing=self.billing,
            installation_id=self.installation_id,
            revision=self.context.state.revision,
            target=target,
            collection_method=CollectionMethod.CHARGE_AUTOMATICALLY.value,
        )

    def price_of(self, item: ItemRecord) -> CatalogPrice | None:
        """The catalog's price an item bills: by its id, else (a superseded id the catalog
        no longer has: a grandfathered item) by the price's key from its marker."""
        price = self.catalog.price(item.price_id)
        if price is not None or item.price_key is None:
            return price
        if self.prices_by_key is None:
            self.prices_by_key = {
                p.key: p
                for p in (
                    *self.catalog.prices_by_id.values(),
                    *(p for plan in self.catalog.plans.values() for p in plan.prices),
                )
            }
        return self.prices_by_key.get(item.price_key)

    def free(self, bundle: AccountSubscriptions, plan: str) -> bool:
        currency = (bundle.account.currency or self.billing.currency).lower()
        shape = self.shapes.get((plan, currency))
        if shape is None:
            shape = self.shapes[(plan, currency)] = _shape(self.catalog, plan, currency)
        return isinstance(shape, _Shape) and shape.free


def subscriptions_plan(
    desired: object, observed: SubscriptionsObserved, context: PlanContext
) -> Plan:
    """The plan of every account in `observed` (a targeted request's scope: `customer/<org>`
    or `subscription/<org>` keys). `desired` is unused: the intents are observed from the store
    beside Stripe, as the customers domain's accounts are."""
    del desired
    draft = _Draft(context, observed.catalog)
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
        fingerprint=_fingerprint(observed),
        created_at=context.now,
        notices=tuple(draft.notices),
        warnings=tuple(draft.warnings),
        restores=tuple(draft.restores),
        population=population,
    )


def _live_count(draft: _Draft, accounts: Iterable[AccountSubscriptions]) -> int:
    return sum(1 for b in accounts for s in b.subscriptions if s.live and _ours(draft, s))


def _guarded(step: Step) -> Step:
    """`step` marked for the mass-change guard when a repricing setting causes it."""
    if GUARDED_SETTINGS.isdisjoint(step.causes):
        return step
    return dataclasses.replace(step, mass_change=True)


def contract_intent_id(org_id: str, plan: str) -> str:
    """The synthetic intent id of a contract customer's declared plan: derived from the org
    and the plan (never random), so a rerun after a crash derives the same creation key."""
    part = hashlib.sha256(f"{org_id}\x1f{plan.lower()}".encode()).hexdigest()[:20]
    return f"contract_{part}"


def contract_bundle(
    installation_id: str, bundle: AccountSubscriptions, plan: str, seats: int | None
) -> AccountSubscriptions:
    """`bundle` as its contract customer declares it (DESIGN §15: the YAML wins): the
    intent is the declared `plan` whatever the store's intent says (a subscribe, change or
    cancel through the API is not followed), under a synthetic intent id derived from org and
    plan, without a trial. A live subscription of ours on another plan gets a pending change
    to the declared plan at its period end (`billing.plan_change` has no immediate policy).
    A declared `seats` is the per-seat quantity instead of the member count."""
    target = plan.lower()
    live = [
        s
        for s in bundle.subscriptions
        if s.live and s.owner is not None and s.owner.installation_id == installation_id
    ]
    intent: SubscriptionIntent
    if live:
        current = max(live, key=lambda s: (s.created, s.stripe_id))
        assert current.owner is not None
        intent_id = current.owner.intent_id or contract_intent_id(bundle.org_id, target)
        current_plan = _current_plan(current, target)
        intent = SubscriptionIntent(
            intent_id=intent_id,
            plan=current_plan,
            source=SOURCE_CONTRACT,
            skip_trial=True,
            pending_change=(
                None if current_plan == target else PendingChange(plan=target, effective_at=None)
            ),
        )
    else:
        intent = SubscriptionIntent(
            intent_id=contract_intent_id(bundle.org_id, target),
            plan=target,
            source=SOURCE_CONTRACT,
            skip_trial=True,
        )
    return dataclasses.replace(
        bundle, intent=intent, seats=bundle.seats if seats is None else seats
    )


def _contract(draft: _Draft, bundle: AccountSubscriptions) -> AccountSubscriptions:
    spec = draft.contracts.get(bundle.org_id)
    if spec is None or spec.plan is None:
        return bundle  # not a contract customer, or one without a declared plan: as today
    return contract_bundle(draft.installation_id, bundle, spec.plan, spec.seats)


def _plan_account(draft: _Draft, bundle: AccountSubscriptions) -> None:
    bundle = _contract(draft, bundle)
    account = bundle.account
    ours = [s for s in bundle.subscriptions if _ours(draft, s)]
    adoption = _adoption(draft, bundle, ours)
    _mirror(draft, bundle, ours, adoption)
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
            _cancel(draft, bundle, sub, replaced=False, phase=ENDS)
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
    if intent.cancel is not None and _of_another_intent(bundle, current):
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
        _cancel(draft, bundle, current, replaced=False)
        return
    if intent.plan is None:
        draft.warnings.append(
            f"{subscription_key(bundle.org_id)}: {current.stripe_id} is live but the intent has "
            "no plan and no cancel request: left as is"
        )
        return
    plan = _current_plan(current, intent.plan)
    pending = intent.pending_change
    moved = pending is not None and pending.plan is not None and pending.plan.lower() == plan
    if moved and plan != intent.plan.lower():
        pending = None  # the schedule moved the subscription: the change took effect
    elif pending is None and plan != intent.plan.lower():
        _replace_or_warn(draft, bundle, current, plan)
        return
    now = draft.desired(bundle, plan)
    schedule, foreign = _schedule_of(draft, bundle, current)
    # A price migration (DESIGN §16) of a subscription nothing else is about to change: a
    # pending change or cancel moves or ends it at its period end anyway.
    moves = (
        _moves(draft, bundle, current, scheduled=schedule is not None or foreign)
        if pending is None and intent.cancel is None
        else {}
    )
    if isinstance(now, Refusal):
        draft.notice(bundle.org_id, current.stripe_id, f"refused: {now.reason}")
    else:
        _update(
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
        _cancel_at_period_end(draft, bundle, current, schedule, plan)
    elif pending is not None:
        _change(draft, bundle, current, schedule, plan, pending)
    elif moves and draft.migration == MIGRATION_AT_RENEWAL and not isinstance(now, Refusal):
        _migrate_at_renewal(draft, bundle, current, schedule, plan, now, moves)
    elif schedule is not None:
        _cancel_upcoming(draft, bundle, current, schedule, plan)


@dataclass(frozen=True, slots=True)
class _Adoption:
    """A live subscription of ours the store has no intent for (Stripe is the inventory): its
    plan becomes the account's intent, under the intent id it was created for."""

    sub: SubscriptionRecord
    intent: SubscriptionIntent
    replaces: str | None  # the store's current intent (a default plan's), None: none

    def params(self) -> dict[str, Any]:
        pending = self.intent.pending_change
        params: dict[str, Any] = {
            "intent_id": self.intent.intent_id,
            "plan": self.intent.plan,
            "replaces": self.replaces,
        }
        if pending is not None and self.intent.cancel is not None:
            # A cancel at period end (DESIGN §16: the store's cancel request and its pending
            # `{plan: null, reason: cancel}`), recovered from Stripe's state.
            params["cancel"] = {"immediate": False, "effective_at": pending.effective_at}
        elif pending is not None:
            params["pending_change"] = {"plan": pending.plan, "effective_at": pending.effective_at}
        return params


def _adoption(
    draft: _Draft, bundle: AccountSubscriptions, ours: Sequence[SubscriptionRecord]
) -> _Adoption | None:
    """After a lost store (or with a store that never knew it), an active online account
    whose intent is none, or only the default plan's with nothing pending (what re-creating
    the org records), adopts a live subscription of ours on its customer made for another
    intent: a paid one before a free one (a default plan never replaces a paid subscription),
    else the newest; nothing is created beside it. A free one of the default intent's own
    that is live keeps the intent when every other live one is free too (those are replaced
    by it)."""
    account, intent = bundle.account, bundle.intent
    if account.state != "active" or account.offline or account.stripe_customer_id is None:
        return None
    if intent is not None and (
        intent.source != SOURCE_DEFAULT_PLAN
        or intent.pending_change is not None
        or intent.cancel is not None
    ):
        return None
    mine = intent.intent_id if intent is not None else None
    live = [s for s in ours if s.live and s.owner is not None]
    others = [
        (s, plan)
        for s in live
        if s.owner is not None
        and s.owner.intent_id
        and s.owner.intent_id != mine
        and (plan := _plan_of(draft, s)) is not None
    ]
    if not others:
        return None
    paid = [(s, plan) for s, plan in others if not draft.free(bundle, plan)]
    if not paid and any(s.owner is not None and s.owner.intent_id == mine for s in live):
        return None
    sub, plan = max(paid or others, key=lambda pair: (pair[0].created, pair[0].stripe_id))
    assert sub.owner is not None
    pending = _adopted_change(draft, bundle, sub, plan)
    adopted = SubscriptionIntent(
        intent_id=sub.owner.intent_id,
        plan=plan,
        source="subscribe",
        pending_change=pending,
        cancel=(
            CancelRequest(immediate=False)
            if pending is not None and pending.reason == "cancel"
            else None
        ),
        created_at=sub.created or 0,
    )
    return _Adoption(sub=sub, intent=adopted, replaces=mine)


def _adopted_change(
    draft: _Draft, bundle: AccountSubscriptions, sub: SubscriptionRecord, plan: str
) -> PendingChange | None:
    """What our schedule on an adopted subscription holds (a lost store's pending change or
    cancel at period end): the plan of the phase after the current one (its `plan` marker,
    else its items' prices), effective at that phase's start; else, for a schedule that
    ends with `end_behavior: cancel`, a cancel (`plan` None, reason `cancel`) at its last
    phase's end (how a cancel at period end is held while a schedule exists, DESIGN §16).
    Without a schedule, a subscription Stripe cancels at its period end (not a trial's
    end: that is the trial's `behavior_after_trial`) is a cancel then too. None: nothing
    pending, a schedule not ours, or no later phase on another plan (the next plan keeps
    what the schedule holds)."""
    for schedule in bundle.schedules:
        if not schedule.in_force:
            continue
        if schedule.subscription_id != sub.stripe_id and schedule.stripe_id != sub.schedule_id:
            continue
        owner = schedule.owner
        if owner is None or owner.installation_id != draft.installation_id:
            return None
        return _scheduled_change(draft, schedule, plan)
    if sub.cancel_at_period_end and sub.status != "trialing":
        return PendingChange(
            plan=None, effective_at=sub.cancel_at or sub.current_period_end, reason="cancel"
        )
    return None


def _scheduled_change(draft: _Draft, schedule: ScheduleRecord, plan: str) -> PendingChange | None:
    """A later phase on another plan is the change (we never write one that then cancels);
    else `end_behavior: cancel` is the cancel at the last phase's end."""
    upcoming = sorted(
        (p for p in schedule.phases if p.start > draft.context.now), key=lambda p: p.start
    )
    target = _phase_plan(draft, upcoming[0]) if upcoming else None
    if target is not None and target != plan:
        return PendingChange(plan=target, effective_at=upcoming[0].start)
    if schedule.end_behavior != "cancel":
        return None
    ends = [p.end for p in schedule.phases if p.end is not None]
    return PendingChange(plan=None, effective_at=max(ends) if ends else None, reason="cancel")


def _phase_plan(draft: _Draft, phase: SchedulePhase) -> str | None:
    """The plan a schedule phase bills: its `plan` marker, else the one catalog plan whose
    billed prices are its items' (by their price ids); None: cannot tell."""
    if phase.plan:
        return phase.plan.lower()
    keys: set[str] = set()
    for item in phase.items:
        price = draft.catalog.price(item.price_id)
        if price is None:
            return None
        keys.add(price.key)
    return _plan_billing(draft, keys)


def _of_another_intent(bundle: AccountSubscriptions, sub: SubscriptionRecord) -> bool:
    """`sub` was made for another intent than the account's, on another plan (an adopted
    one under a new intent id bills the intent's plan: it is the intent's)."""
    intent, owner = bundle.intent, sub.owner
    if intent is None or owner is None or not owner.intent_id:
        return False
    if owner.intent_id == intent.intent_id:
        return False
    return (owner.plan or "").lower() != (intent.plan or "").lower()


def _plan_of(draft: _Draft, sub: SubscriptionRecord) -> str | None:
    """The plan a subscription of ours bills: its `plan` marker, else the one catalog plan
    whose billed prices are its items' (by their price keys); None: cannot tell."""
    if sub.owner is not None and sub.owner.plan:
        return sub.owner.plan.lower()
    keys = {i.price_key for i in sub.items}
    if None in keys:
        return None
    return _plan_billing(draft, {key for key in keys if key is not None})


def _plan_billing(draft: _Draft, keys: set[str]) -> str | None:
    """The one catalog plan whose billed prices (active, of its interval, no credits) are
    exactly `keys`; None when none or several are."""
    if not keys:
        return None
    found = [
        plan.name.lower()
        for plan in draft.catalog.plans.values()
        if keys
        == {
            p.key
            for p in plan.prices
            if p.behavior != BEHAVIOR_CREDITS and p.interval == plan.interval and p.active
        }
    ]
    return found[0] if len(found) == 1 else None


def _ours(draft: _Draft, sub: SubscriptionRecord) -> bool:
    owner = sub.owner
    return owner is not None and owner.installation_id == draft.installation_id


def _current_plan(sub: SubscriptionRecord, intent_plan: str) -> str:
    """The plan `sub` bills (its marker; the intent's when a checkout-made one lacks it)."""
    owner = sub.owner
    return (owner.plan if owner is not None and owner.plan else intent_plan).lower()


def _current(
    draft: _Draft, bundle: AccountSubscriptions, live: Sequence[SubscriptionRecord]
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
    draft: _Draft,
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
        _cancel(draft, bundle, other, replaced=True)
    return True


def _without_live(
    draft: _Draft, bundle: AccountSubscriptions, ours: Sequence[SubscriptionRecord]
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
    draft.add(CREATES, _create_step(draft, desired))


def _create_step(draft: _Draft, desired: DesiredSubscription) -> Step:
    params: dict[str, Any] = {
        "op": OP_CREATE,
        "customer": desired.customer_id,
        "currency": desired.currency,
        "items": [_item_params(i) for i in desired.items],
        "collection_method": desired.collection_method,
        "automatic_tax": {"enabled": desired.automatic_tax},
        "billing_mode": {"type": "flexible"},
        "metadata": dict(desired.metadata),
        "plan": desired.plan,
        "settings": [],
    }
    if desired.days_until_due is not None:
        params["days_until_due"] = desired.days_until_due
    if desired.trial_days:
        params["trial_period_days"] = desired.trial_days
        behavior = "cancel" if desired.trial_end_behavior == "cancel" else "create_invoice"
        params["trial_settings"] = {"end_behavior": {"missing_payment_method": behavior}}
        if behavior == "cancel":
            # Cancelled at the trial's end with a card too: the trial is the first period, so
            # `cancel_at_period_end` with the create (Stripe fixes the time, no clock in the
            # params) and one pass converges; `_trial_cancel_at` is for trials made elsewhere.
            params["cancel_at_period_end"] = True
    if desired.pending_invoice_item_interval is not None:
        interval, count = desired.pending_invoice_item_interval
        params["pending_invoice_item_interval"] = {"interval": interval, "interval_count": count}
    return Step(
        action=Action.CREATE,
        kind=SUBSCRIPTION_STEP,
        key=desired.key,
        reason=Reason.NEW,
        params=params,
        idempotency_key=unspent_key(
            subscription_creation_key(
                installation_id=draft.installation_id,
                org_id=desired.org_id,
                plan=desired.plan,
                intent_id=desired.intent_id,
                salt=draft.context.key_salt,
            ),
            draft.context.spent_keys,
        ),
    )


def _item_params(item: DesiredItem) -> dict[str, Any]:
    return {
        "price": item.price_id,
        **({} if item.quantity is None else {"quantity": item.quantity}),
    }


def _replace_or_warn(
    draft: _Draft, bundle: AccountSubscriptions, current: SubscriptionRecord, plan: str
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
    draft.add(CREATES, _create_step(draft, desired))
    _cancel(draft, bundle, current, replaced=True)


def _cancel(
    draft: _Draft,
    bundle: AccountSubscriptions,
    sub: SubscriptionRecord,
    *,
    replaced: bool,
    phase: int = CANCELS,
) -> None:
    """Cancel now: a cancel request or a disabled account (`invoice_now` and `prorate`, as
    Frontier), or a free subscription a paid one replaces (nothing to invoice)."""
    intent_id = bundle.intent.intent_id if bundle.intent is not None else ""
    params = {
        "op": OP_CANCEL,
        "subscription": sub.stripe_id,
        "invoice_now": not replaced,
        "prorate": not replaced,
        "settings": [],
    }
    draft.add(
        phase,
        Step(
            action=Action.ARCHIVE,
            kind=SUBSCRIPTION_STEP,
            # A replaced one is another object than the intent's subscription (created in
            # this plan under `subscription/<org>`): its own key, so recording its cancel
            # never drops what was recorded for the new one.
            # A disabled account's is too: a new account of the org plans under
            # `subscription/<org>` beside it.
            key=(
                f"{subscription_key(bundle.org_id)}/{sub.stripe_id}"
                if replaced or phase == ENDS
                else subscription_key(bundle.org_id)
            ),
            reason=Reason.DESIRED_CHANGED,
            params=params,
            changes=(FieldChange("status", sub.status, "canceled"),),
            stripe_id=sub.stripe_id,
            impact=(
                f"replaced by the intent's plan {bundle.intent.plan!r}"
                if replaced and bundle.intent is not None
                else f"billing account {bundle.account.account_id} is disabled"
                if phase == ENDS
                else None
            ),
            idempotency_key=draft.key("cancel", sub.stripe_id, intent_id),
        ),
    )


def _update(
    draft: _Draft,
    bundle: AccountSubscriptions,
    sub: SubscriptionRecord,
    desired: DesiredSubscription,
    *,
    marker: bool,
    moves: Mapping[str, str | Ref] | None = None,
) -> None:
    params: dict[str, Any] = {}
    changes: list[FieldChange] = []
    settings: set[str] = set()
    items = _item_updates(draft, sub, desired, changes, settings, moves or {})
    if items:
        params["items"] = items
        params["proration_behavior"] = (
            draft.billing.plan_change.immediate_proration_behavior if moves else "create_prorations"
        )
    if sub.automatic_tax != desired.automatic_tax:
        params["automatic_tax"] = {"enabled": desired.automatic_tax}
        changes.append(FieldChange("automatic_tax", sub.automatic_tax, desired.automatic_tax))
        settings.add(SETTING_AUTO_TAX)
    if sub.pending_invoice_item_interval != desired.pending_invoice_item_interval:
        wanted = desired.pending_invoice_item_interval
        params["pending_invoice_item_interval"] = (
            "" if wanted is None else {"interval": wanted[0], "interval_count": wanted[1]}
        )
        changes.append(
            FieldChange(
                "pending_invoice_item_interval",
                _interval_text(sub.pending_invoice_item_interval),
                _interval_text(wanted),
            )
        )
    if marker:
        params["metadata"] = {"plan": desired.plan}
        changes.append(FieldChange("metadata.plan", None, desired.plan))
    trial_cancel = _trial_cancel_at(sub)
    if trial_cancel is not None:
        params["cancel_at"] = trial_cancel
        changes.append(FieldChange("cancel_at", sub.cancel_at, trial_cancel))
    if not params:
        return
    params = {"op": OP_UPDATE, "subscription": sub.stripe_id, **params}
    params["settings"] = sorted(settings)
    draft.add(
        UPDATES,
        Step(
            action=Action.UPDATE,
            kind=SUBSCRIPTION_STEP,
            key=desired.key,
            reason=Reason.DESIRED_CHANGED,
            params=params,
            changes=tuple(changes),
            stripe_id=sub.stripe_id,
            idempotency_key=draft.key(
                "update", sub.stripe_id, desired.intent_id, canonical_json(params)
            ),
            causes=tuple(sorted(settings)),
        ),
    )


def _item_updates(
    draft: _Draft,
    sub: SubscriptionRecord,
    desired: DesiredSubscription,
    changes: list[FieldChange],
    settings: set[str],
    moves: Mapping[str, str | Ref],
) -> list[dict[str, Any]]:
    """Quantities that differ from the desired ones, by item (also on a grandfathered price
    id the catalog still knows; items on prices it does not know are left alone), and the
    items `moves` puts on their price's current id (`price` on the item id: Stripe replaces
    the item's price in place, its quantity kept or set)."""
    seats = desired.seats or 1
    incremental = draft.billing.product.seat_change_behavior == "incremental"
    updates: list[dict[str, Any]] = []
    for item in sub.items:
        price = draft.price_of(item)
        target = None if item.item_id is None else moves.get(item.item_id)
        if price is not None and target is not None:
            changes.append(FieldChange(f"price[{price.key}]", item.price_id, _shown(target)))
            settings.add(SETTING_PRICE_MIGRATION)
        # No quantity observed: a metered item (whatever a price of its key is now).
        if price is None or price.metered or item.item_id is None or item.quantity is None:
            if target is not None:
                updates.append({"id": item.item_id, **_move(target, item)})
            continue
        wanted = seats if price.per_seat else 1
        if price.per_seat and incremental and item.quantity is not None:
            wanted = max(wanted, item.quantity)
        if wanted == item.quantity:
            if target is not None:
                updates.append({"id": item.item_id, **_move(target, item), "quantity": wanted})
            continue
        updates.append(
            {
                "id": item.item_id,
                **({} if target is None else _move(target, item)),
                "quantity": wanted,
            }
        )
        path = "quantity" if price.per_seat else f"quantity[{price.key}]"
        changes.append(FieldChange(path, item.quantity, wanted))
        if price.per_seat and item.quantity is not None and wanted < item.quantity:
            settings.add(SETTING_SEAT_CHANGE)  # `exact` follows members down
    return updates


def _interval_text(value: tuple[str, int] | None) -> str | None:
    return None if value is None else f"{value[1]} {value[0]}"


def _trial_cancel_at(sub: SubscriptionRecord) -> int | None:
    """A trial created to cancel at its end (`missing_payment_method=cancel`) also cancels
    with a payment method (DESIGN §16): `cancel_at` = the trial end, set once Stripe has
    fixed that time (never derived from the plan's clock, so replays send equal params)."""
    if (
        sub.status != "trialing"
        or sub.trial_missing_payment_method != "cancel"
        or sub.trial_end is None
        or sub.cancel_at == sub.trial_end
        or sub.schedule_id is not None
    ):
        return None
    return sub.trial_end


# --- price migration ------------------------------------------------------------------------


#: On a moved item whose target is a `Ref`: the price id it moves off. When the reference
#: resolves to that same id, the catalog has not superseded the price yet (a `serve` pass
#: planned between a desired/ change and the catalog's apply): the executor sends nothing and
#: a later pass moves it.
REPLACES: Final = "replaces"


def _move(target: str | Ref, item: ItemRecord) -> dict[str, Any]:
    return {"price": target, **({REPLACES: item.price_id} if isinstance(target, Ref) else {})}


def _shown(target: str | Ref) -> str:
    return f"new {target.key}" if isinstance(target, Ref) else target


def _moves(
    draft: _Draft, bundle: AccountSubscriptions, sub: SubscriptionRecord, *, scheduled: bool
) -> dict[str, str | Ref]:
    """Per item id of `sub`, the price it moves to under `reconcile.price_migration`
    (DESIGN §16): an item on a superseded id of a catalog price moves to the price's current
    id; one on a price the catalog's next apply supersedes (`CatalogPrice.replacing`, in a
    plan made before that apply) to a `Ref` to the price's key, resolved when the move runs
    (after the catalog's apply). None under `none`, nor off a protected price (a warning
    counts them), nor off an inactive one; a subscription on a schedule under `now` waits
    (a notice: its phases would put the old items back)."""
    if draft.migration == MIGRATION_NONE:
        return {}
    moves: dict[str, str | Ref] = {}
    protected: list[str] = []
    for item in sub.items:
        price = draft.price_of(item)
        if price is None or item.item_id is None or not price.active:
            continue
        target: str | Ref | None = None
        if price.replacing:
            target = Ref(price.key)
        elif price.stripe_id and item.price_id != price.stripe_id:
            target = price.stripe_id
        if target is None:
            continue
        if price.protect:
            protected.append(price.key)
            continue
        moves[item.item_id] = target
    for key in set(protected):
        draft.protected[key] = draft.protected.get(key, 0) + 1
    if moves and scheduled and draft.migration == MIGRATION_NOW:
        draft.notice(
            bundle.org_id,
            sub.stripe_id,
            f"price migration waits: {sub.stripe_id} is on a subscription schedule",
        )
        return {}
    return moves


def _migrate_at_renewal(
    draft: _Draft,
    bundle: AccountSubscriptions,
    sub: SubscriptionRecord,
    schedule: ScheduleRecord | None,
    plan: str,
    desired: DesiredSubscription,
    moves: Mapping[str, str | Ref],
) -> None:
    """`at_renewal`: a schedule whose current phase (the items as they are) ends at the
    period end and whose next phase bills the moved items for one interval, then releases
    the subscription: Stripe swaps the prices at the renewal, nothing is prorated, and the
    renewal's invoice is the first on the new price."""
    end = sub.current_period_end
    if end is None:
        draft.notice(bundle.org_id, sub.stripe_id, "price migration waits: no current period seen")
        return
    start, items = _current_phase(sub, schedule, draft.context.now)
    moved = tuple(
        (
            moves[i.item_id] if i.item_id is not None and i.item_id in moves else i.price_id,
            i.quantity,
        )
        for i in sub.items
    )
    extra = {
        "proration_behavior": "none",
        "duration": {"interval": desired.interval, "interval_count": 1},
    }
    renewal = _phase_params(plan=plan, items=moved, extra=extra)  # type: ignore[arg-type]
    renewal["items"] = [
        {**written, **({REPLACES: i.price_id} if isinstance(written["price"], Ref) else {})}
        for written, i in zip(renewal["items"], sub.items, strict=True)
    ]
    phases = (
        _Phase(plan, items, end, _phase_params(plan=plan, items=items, start=start, end=end)),
        _Phase(plan, moved, None, renewal),  # type: ignore[arg-type]
    )
    changes = tuple(
        FieldChange(f"price[{price.key}]", i.price_id, _shown(moves[i.item_id]))
        for i in sub.items
        if i.item_id is not None and i.item_id in moves and (price := draft.price_of(i))
    )
    before = len(draft.phases.get(SCHEDULES, ()))
    _write_schedule(
        draft,
        bundle,
        sub,
        schedule,
        phases=phases,
        end_behavior="release",
        changes=(*changes, FieldChange("effective_at", None, end)),
    )
    written = draft.phases.get(SCHEDULES, [])
    if len(written) > before:
        step = written[-1]
        written[-1] = dataclasses.replace(
            step,
            params={**step.params, "settings": [SETTING_PRICE_MIGRATION]},
            causes=(SETTING_PRICE_MIGRATION,),
        )


# --- schedules ------------------------------------------------------------------------------


def _schedule_of(
    draft: _Draft, bundle: AccountSubscriptions, sub: SubscriptionRecord
) -> tuple[ScheduleRecord | None, bool]:
    """The schedule of ours in force on `sub` (None: none), and whether one not ours is
    (then left alone: no schedule work)."""
    for schedule in bundle.schedules:
        if not schedule.in_force:
            continue
        if schedule.subscription_id != sub.stripe_id and schedule.stripe_id != sub.schedule_id:
            continue
        owner = schedule.owner
        if owner is not None and owner.installation_id == draft.installation_id:
            return schedule, False
        draft.notice(
            bundle.org_id,
            schedule.stripe_id,
            f"schedule {schedule.stripe_id} on {sub.stripe_id} was not made by us: left alone",
        )
        return None, True
    return None, False


@dataclass(frozen=True, slots=True)
class _Phase:
    """A phase as the rules compare it: plan, items, end (None: not compared)."""

    plan: str
    items: tuple[tuple[str, int | None], ...]
    end: int | str | None
    params: Mapping[str, Any]


def _current_phase(
    sub: SubscriptionRecord, schedule: ScheduleRecord | None, now: int
) -> tuple[int | None, tuple[tuple[str, int | None], ...]]:
    """The start of the current phase (the schedule's, or the subscription's period) and the
    items it bills (the subscription's)."""
    start = sub.current_period_start
    if schedule is not None:
        if schedule.current_phase is not None:
            start = schedule.current_phase[0]
        else:
            for phase in schedule.phases:
                if phase.start <= now and (phase.end is None or phase.end > now):
                    start = phase.start
    return start, tuple((i.price_id, i.quantity) for i in sub.items)


def _phase_params(
    *,
    plan: str,
    items: Iterable[tuple[str, int | None]],
    start: int | None = None,
    end: int | str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "items": [{"price": p, **({} if q is None else {"quantity": q})} for p, q in items],
        "metadata": {"plan": plan},
    }
    if start is not None:
        params["start_date"] = start
    if end is not None:
        params["end_date"] = end
    return {**params, **(extra or {})}


def _observed_phases(schedule: ScheduleRecord, now: int) -> tuple[_Phase, ...]:
    """The schedule's phases from the current one on."""
    phases = [p for p in schedule.phases if p.end is None or p.end > now]
    return tuple(_observed_phase(p) for p in phases)


def _observed_phase(phase: SchedulePhase) -> _Phase:
    return _Phase(
        plan=(phase.plan or "").lower(),
        items=tuple((i.price_id, i.quantity) for i in phase.items),
        end=phase.end,
        params={},
    )


def _same(observed: Sequence[_Phase], desired: Sequence[_Phase]) -> bool:
    """Phases agree on plan and (but the current phase's, which follows the subscription)
    items, and on ends where the desired one names a time. Proration and collection are
    `plan_change.*` settings, read when a change is made: never compared."""
    if len(observed) != len(desired):
        return False
    for index, (seen, wanted) in enumerate(zip(observed, desired, strict=True)):
        if seen.plan != wanted.plan:
            return False
        if index > 0 and seen.items != wanted.items:
            return False
        if wanted.end == "now":
            return False  # an immediate change not taken effect yet (else no change pends)
        if isinstance(wanted.end, int) and seen.end != wanted.end:
            return False
    return True


def _write_schedule(
    draft: _Draft,
    bundle: AccountSubscriptions,
    sub: SubscriptionRecord,
    schedule: ScheduleRecord | None,
    *,
    phases: Sequence[_Phase],
    end_behavior: str,
    changes: tuple[FieldChange, ...],
    extra: Mapping[str, Any] | None = None,
) -> None:
    if (
        schedule is not None
        and schedule.end_behavior == end_behavior
        and _same(_observed_phases(schedule, draft.context.now), phases)
    ):
        return
    intent_id = bundle.intent.intent_id if bundle.intent is not None else ""
    owner = SubscriptionOwner(
        installation_id=draft.installation_id,
        org_id=bundle.org_id,
        plan=phases[0].plan,
        intent_id=intent_id,
        revision=draft.context.state.revision,
    )
    written = [dict(p.params) for p in phases]
    end = phases[0].end
    if sub.status == "trialing" and sub.trial_end is not None and isinstance(end, int):
        # The current phase keeps the running trial (a phase written without one is no
        # trial: Stripe would end it now and bill); an immediate change ("now") ends it.
        written[0]["trial_end"] = min(sub.trial_end, end)
    params: dict[str, Any] = {
        "op": OP_SCHEDULE_UPDATE if schedule is not None else OP_SCHEDULE_CREATE,
        "end_behavior": end_behavior,
        "phases": written,
        **(extra or {}),
        "settings": [],
    }
    # The marker goes with every phase write (Stripe's `from_subscription` takes none).
    params["metadata"] = owner.as_metadata()
    if schedule is None:
        params["from_subscription"] = sub.stripe_id
    else:
        params["schedule"] = schedule.stripe_id
    draft.add(
        SCHEDULES,
        Step(
            action=Action.UPDATE if schedule is not None else Action.CREATE,
            kind=SCHEDULE_STEP,
            key=subscription_schedule_key(bundle.org_id),
            reason=Reason.DESIRED_CHANGED,
            params=params,
            changes=changes,
            stripe_id=schedule.stripe_id if schedule is not None else sub.stripe_id,
            idempotency_key=draft.key(
                "schedule",
                sub.stripe_id,
                intent_id,
                canonical_json({k: v for k, v in params.items() if k != "metadata"}),
            ),
        ),
    )


def _change(
    draft: _Draft,
    bundle: AccountSubscriptions,
    sub: SubscriptionRecord,
    schedule: ScheduleRecord | None,
    plan: str,
    pending: PendingChange,
) -> None:
    """A pending plan change: the current phase ends at the period end (or now), the new
    plan's phase follows for one interval and the schedule then releases the subscription."""
    assert pending.plan is not None
    target_name = pending.plan.lower()
    refused = _refuse_change(draft, plan, target_name)
    if refused is not None:
        draft.notice(bundle.org_id, sub.stripe_id, f"refused: {refused}")
        return
    target = draft.desired(bundle, target_name, target=True)
    if isinstance(target, Refusal):
        draft.notice(bundle.org_id, sub.stripe_id, f"refused: {target.reason}")
        return
    now = draft.context.now
    start, items = _current_phase(sub, schedule, now)
    period_end = sub.current_period_end
    end: int | str | None = "now" if pending.immediate else period_end
    if end is None:
        draft.notice(bundle.org_id, sub.stripe_id, "plan change waits: no current period seen")
        return
    change = draft.billing.plan_change
    proration = (
        change.immediate_proration_behavior if pending.immediate else change.proration_behavior
    )
    next_extra: dict[str, Any] = {
        "proration_behavior": proration,
        "collection_method": change.collection_method,
        "automatic_tax": {"enabled": target.automatic_tax},
        "duration": {"interval": target.interval, "interval_count": 1},
    }
    if change.collection_method == CollectionMethod.SEND_INVOICE.value:
        next_extra["invoice_settings"] = {"days_until_due": bundle.account.due_in_days}
    target_items = tuple((i.price_id, i.quantity) for i in target.items)
    phases = (
        _Phase(plan, items, end, _phase_params(plan=plan, items=items, start=start, end=end)),
        _Phase(
            target_name,
            target_items,
            None,
            _phase_params(plan=target_name, items=target_items, extra=next_extra),
        ),
    )
    extra = {"proration_behavior": proration} if pending.immediate else {}
    _write_schedule(
        draft,
        bundle,
        sub,
        schedule,
        phases=phases,
        end_behavior="release",
        changes=(
            FieldChange("plan", plan, target_name),
            FieldChange("effective_at", None, end),
        ),
        extra=extra,
    )


def _refuse_change(draft: _Draft, plan: str, target: str) -> str | None:
    if target == plan:
        return f"plan change to {target!r}: it is the current plan"
    catalog_plan = draft.catalog.plan(target)
    if catalog_plan is None:
        return f"plan change to {target!r}: not in the catalog"
    if not catalog_plan.active:
        return f"plan change to {target!r}: the plan is inactive"
    return None


def _cancel_at_period_end(
    draft: _Draft,
    bundle: AccountSubscriptions,
    sub: SubscriptionRecord,
    schedule: ScheduleRecord | None,
    plan: str,
) -> None:
    """The schedule's last (current) phase ends at the period end, `end_behavior: cancel`."""
    if schedule is None and sub.cancel_at_period_end:
        return  # already cancelling at period end (set in Stripe)
    end = sub.current_period_end
    if end is None:
        draft.notice(bundle.org_id, sub.stripe_id, "cancel waits: no current period seen")
        return
    start, items = _current_phase(sub, schedule, draft.context.now)
    phase = _Phase(plan, items, end, _phase_params(plan=plan, items=items, start=start, end=end))
    _write_schedule(
        draft,
        bundle,
        sub,
        schedule,
        phases=(phase,),
        end_behavior="cancel",
        changes=(FieldChange("cancel_at", sub.cancel_at, end),),
    )


def _cancel_upcoming(
    draft: _Draft,
    bundle: AccountSubscriptions,
    sub: SubscriptionRecord,
    schedule: ScheduleRecord,
    plan: str,
) -> None:
    """No change is pending: a schedule holding one (a later phase, or a cancel at its end)
    is put back to the current phase only, which then releases the subscription."""
    observed = _observed_phases(schedule, draft.context.now)
    if len(observed) <= 1 and schedule.end_behavior == "release":
        return
    start, items = _current_phase(sub, schedule, draft.context.now)
    end = observed[0].end if observed and observed[0].end is not None else sub.current_period_end
    upcoming = observed[1].plan if len(observed) > 1 else None
    phase = _Phase(plan, items, end, _phase_params(plan=plan, items=items, start=start, end=end))
    changes = (
        (FieldChange("upcoming_plan", upcoming, None),)
        if upcoming is not None
        else (FieldChange("cancel_at", sub.cancel_at, None),)
    )
    _write_schedule(
        draft,
        bundle,
        sub,
        schedule,
        phases=(phase,),
        end_behavior="release",
        changes=changes,
    )


# --- the mirror -----------------------------------------------------------------------------


def _mirror(
    draft: _Draft,
    bundle: AccountSubscriptions,
    ours: Sequence[SubscriptionRecord],
    adoption: _Adoption | None = None,
) -> None:
    """The store's mirror of each subscription of ours written again where Stripe shows
    other facts (status, periods, trial end, cancel times, schedule, seats: DESIGN §16), and
    the intent moved on when its pending change took effect (the subscription bills the
    change's plan): `params["intent"]` = the plan now held, no pending change. The store adds
    a mirrored `active`/`trialing` plan to the account's plan history."""
    stored = {m.stripe_subscription_id: m for m in bundle.mirrors}
    intent = bundle.intent
    for sub in ours:
        seen = _mirror_of(draft, sub)
        moved = (
            intent is not None
            and sub.live
            and intent.pending_change is not None
            and intent.pending_change.plan is not None
            and intent.pending_change.plan.lower() == seen.plan
            and (intent.plan or "").lower() != seen.plan
        )
        adopted = adoption is not None and adoption.sub.stripe_id == sub.stripe_id
        if stored.get(sub.stripe_id) == seen and not moved and not adopted:
            continue
        params: dict[str, Any] = {
            "org_id": bundle.org_id,
            "account_id": bundle.account.account_id,
            "mirror": {f.name: getattr(seen, f.name) for f in dataclasses.fields(seen)},
        }
        if adopted and adoption is not None:
            params["adopt"] = adoption.params()
        if moved and intent is not None:
            params["intent"] = {
                "intent_id": intent.intent_id,
                "plan": seen.plan,
                "pending_change": None,
            }
        draft.restores.append(
            Step(
                action=Action.UPDATE if sub.stripe_id in stored else Action.CREATE,
                kind=MIRROR_STEP,
                key=f"{MIRROR_STEP}/{bundle.org_id}/{sub.stripe_id}",
                reason=Reason.BOOKKEEPING,
                params=params,
                stripe_id=sub.stripe_id,
                idempotency_key=draft.key("mirror", sub.stripe_id, canonical_json(params)),
            )
        )


def _mirror_of(draft: _Draft, sub: SubscriptionRecord) -> SubscriptionMirror:
    seats = None
    for item in sub.items:
        price = draft.price_of(item)
        if price is not None and price.per_seat:
            seats = item.quantity
            break
    return SubscriptionMirror(
        stripe_subscription_id=sub.stripe_id,
        plan=(sub.owner.plan if sub.owner is not None else "").lower(),
        status=sub.status,
        seats=seats,
        trial_end=sub.trial_end,
        current_period_start=sub.current_period_start,
        current_period_end=sub.current_period_end,
        cancel_at=sub.cancel_at,
        canceled_at=sub.canceled_at,
        schedule_id=sub.schedule_id,
    )


# --- fingerprint ----------------------------------------------------------------------------


def _fingerprint(observed: SubscriptionsObserved) -> str:
    """A digest of what the plan was computed from (a saved plan is compared with its re-plan
    by it): every account's facts and its Stripe objects, and the catalog. As the customers'
    (`customer_rules._fingerprint`): records as tuples of plain values, sorted `repr`s hashed;
    a unit test changes each field and sees the digest change."""
    hasher = hashlib.sha256()
    for item in sorted([repr(_bundle_values(b)) for b in observed.accounts]):
        hasher.update(item.encode())
        hasher.update(b"\x1e")
    hasher.update(b"\x1d")
    hasher.update(repr(_catalog_values(observed.catalog)).encode())
    return hasher.hexdigest()[:32]


def _bundle_values(b: AccountSubscriptions) -> tuple[object, ...]:
    """Spelled out per record type (dataclass reprs were half of a 100k plan's CPU); a unit
    test changes every field of every record type and sees the digest change."""
    a, i = b.account, b.intent
    return (
        (
            a.account_id,
            a.org_id,
            a.stripe_customer_id,
            a.currency,
            a.offline,
            a.state,
            a.test_clock,
            a.due_in_days,
        ),
        None
        if i is None
        else (
            i.intent_id,
            i.plan,
            i.source,
            _pending_values(i.pending_change),
            None if i.cancel is None else (i.cancel.immediate, i.cancel.requested_at),
            i.skip_trial,
            i.cancel_after_trial,
            i.requested_by,
            i.created_at,
        ),
        b.seats,
        tuple(sorted(b.plan_history)),
        tuple([_sub_values(s) for s in b.subscriptions]),
        tuple([_schedule_values(s) for s in b.schedules]),
        tuple(
            [
                (
                    m.stripe_subscription_id,
                    m.plan,
                    m.status,
                    m.seats,
                    m.trial_end,
                    m.current_period_start,
                    m.current_period_end,
                    m.cancel_at,
                    m.canceled_at,
                    m.schedule_id,
                )
                for m in b.mirrors
            ]
        ),
    )


def _pending_values(p: PendingChange | None) -> tuple[object, ...] | None:
    return None if p is None else (p.plan, p.effective_at, p.immediate, p.reason)


def _owner_values(o: SubscriptionOwner | None) -> tuple[object, ...] | None:
    return None if o is None else (o.installation_id, o.org_id, o.plan, o.intent_id, o.revision)


def _sub_values(s: SubscriptionRecord) -> tuple[object, ...]:
    return (
        s.stripe_id,
        s.customer_id,
        s.status,
        s.currency,
        tuple(
            [
                (
                    i.price_id,
                    i.quantity,
                    i.item_id,
                    i.current_period_start,
                    i.current_period_end,
                    i.price_key,
                )
                for i in s.items
            ]
        ),
        s.collection_method,
        s.days_until_due,
        s.automatic_tax,
        s.trial_start,
        s.trial_end,
        s.cancel_at,
        s.cancel_at_period_end,
        s.canceled_at,
        s.ended_at,
        s.schedule_id,
        s.pending_invoice_item_interval,
        s.latest_invoice_id,
        s.test_clock,
        s.created,
        _items(s.metadata),
        _owner_values(s.owner),
        s.trial_missing_payment_method,
        s.cancellation_reason,
    )


def _schedule_values(s: ScheduleRecord) -> tuple[object, ...]:
    return (
        s.stripe_id,
        s.subscription_id,
        s.customer_id,
        s.status,
        s.end_behavior,
        tuple(
            [
                (
                    p.start,
                    p.end,
                    tuple([(i.price_id, i.quantity) for i in p.items]),
                    p.proration_behavior,
                    p.collection_method,
                    p.automatic_tax,
                    p.plan,
                )
                for p in s.phases
            ]
        ),
        _items(s.metadata),
        _owner_values(s.owner),
        s.current_phase,
        s.released_subscription,
        s.created,
    )


def _catalog_values(catalog: PlanCatalog) -> tuple[object, ...]:
    plans = tuple(
        (
            name,
            plan.name,
            plan.interval,
            plan.trial_days,
            plan.active,
            tuple(_price_values(p) for p in plan.prices),
        )
        for name, plan in sorted(catalog.plans.items())
    )
    prices = tuple(sorted((k, _price_values(v)) for k, v in catalog.prices_by_id.items()))
    return (plans, prices)


def _price_values(p: CatalogPrice) -> tuple[object, ...]:
    return (
        p.key,
        p.product,
        p.stripe_id,
        p.interval,
        _items(p.amounts),
        p.usage_type,
        p.behavior,
        p.seat_limit,
        p.active,
        p.interval_count,
        p.replacing,
        p.protect,
    )


def _items(mapping: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(mapping.items())) if mapping else ()

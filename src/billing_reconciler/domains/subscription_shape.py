"""The desired subscription of an account (DESIGN §16): a plan's billed prices in the
account's currency (`shape_of`), and the Stripe subscription the intent asks for on them
(`derive`: items and quantities from seats, tax, collection, trial, markers), or a `Refusal`
saying why the account cannot have the plan. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from billing_reconciler.config import BillingSettings
from billing_reconciler.domains.subscription_types import (
    BEHAVIOR_CREDITS,
    SOURCE_CONTRACT,
    SOURCE_DEFAULT_PLAN,
    AccountSubscriptions,
    CatalogPlan,
    CatalogPrice,
    PlanCatalog,
)
from billing_reconciler.model_subscriptions import (
    CollectionMethod,
    DesiredItem,
    DesiredSubscription,
    SubscriptionOwner,
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an account cannot have a plan (shown as a notice; nothing is sent)."""

    org_id: str
    plan: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Shape:
    """A plan's items in one currency, before seats: derived once per (plan, currency)."""

    plan: CatalogPlan
    prices: tuple[CatalogPrice, ...]
    free: bool
    seat_limit: int | None


def shape_of(catalog: PlanCatalog, plan_name: str | None, currency: str) -> Shape | str:
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
    return Shape(
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
    shape = shape_of(catalog, name, currency)
    if isinstance(shape, str):
        return Refusal(bundle.org_id, name, shape)
    return derive(
        bundle,
        shape,
        currency=currency,
        billing=billing,
        installation_id=installation_id,
        revision=revision,
        target=plan is not None,
        collection_method=collection_method,
    )


def derive(
    bundle: AccountSubscriptions,
    shape: Shape,
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
    if intent is not None and intent.source == SOURCE_CONTRACT:
        # A contract customer (DESIGN §15, §16: collection and `days_until_due` from the
        # account) is invoiced as agreed: `send_invoice`, due in its `due_in_days`, so no
        # card is needed (a charge_automatically create without one fails every pass).
        collection_method = CollectionMethod.SEND_INVOICE.value
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
        trial_days=trial_days_of(bundle, plan),
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


def trial_days_of(bundle: AccountSubscriptions, plan: CatalogPlan) -> int:
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

"""`/organizations/{org}/billing/subscriptions`, trials, entitlements and seat limits
(DESIGN §16, §19).

The API records the account's subscription intent (the store's `IntentRepository`: the plan,
a pending change, a cancel request) and asks for the targeted reconcile of that customer; the
subscriptions domain turns the intent into Stripe's subscription and mirrors it back into the
store. A write (subscribe, change, cancel) waits for that reconcile like `register` does
(`api.verdicts`) and answers the subscription as the reconcile left it, Stripe's refusal, or
202. A subscription's `id` is its intent's id; its Stripe fields come from the mirror (null
until the subscription is mirrored).

Plans are read "as applied": the store's plans table, and the prices and products the
catalog's last applies recorded (a price not applied to Stripe cannot be subscribed to). A
plan is free in a currency when every price it bills costs 0 in it (the rules' definition,
`domains.subscription_rules`: its active non-`credits` prices at the plan's interval).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from billing_reconciler.api.auth import Scope, requires
from billing_reconciler.api.context import ApiContext
from billing_reconciler.api.errors import ApiError, invalid, not_found, precondition
from billing_reconciler.api.models import (
    CancelIn,
    ChangeIn,
    ChangePreview,
    Entitlement,
    Page,
    PendingChangeOut,
    PreviewLine,
    Purchase,
    SubscribeIn,
    Subscription,
    Trialed,
)
from billing_reconciler.api.onboarding import require_active, require_org
from billing_reconciler.api.pending import Verdict
from billing_reconciler.api.purchases import purchase_credits
from billing_reconciler.api.routing import (
    DEFAULT_LIMIT,
    PREFIX,
    ApiRoute,
    Cursor,
    Limit,
    OrgId,
    accepted_response,
    error_responses,
)
from billing_reconciler.api.verdicts import accepted, is_pending, raise_if_refused
from billing_reconciler.config import ProrationBehavior
from billing_reconciler.domains.subscription_types import (
    BEHAVIOR_CREDITS,
    BEHAVIOR_PER_SEAT,
    CatalogPrice,
)
from billing_reconciler.model import META_BEHAVIOR, Kind
from billing_reconciler.model_subscriptions import ENTITLED_STATUSES, PendingChange
from billing_reconciler.store import (
    AccountRecord,
    AccountRepository,
    LastApplied,
    LastAppliedRepository,
    MemberRepository,
    PlanRecord,
    PlanRepository,
)
from billing_reconciler.store.subscriptions import (
    TERMINAL_STATUSES,
    IntentRepository,
    IntentSource,
    IntentState,
    MirroredSubscription,
    PlanHistoryRepository,
    SubscriptionIntent,
    SubscriptionMirrorRepository,
)
from billing_reconciler.stripe_gateway.errors import StripeGatewayError, TransientStripeError
from billing_reconciler.stripe_gateway.invoices import PlanChangePreview, preview_plan_change

#: The product metadata key the catalog writes a product's `config.seat_limit` under.
META_SEAT_LIMIT: Final = "br_seat_limit"
#: Statuses of a subscription that never started billing its plan.
_NEVER_STARTED: Final = frozenset({"incomplete", "incomplete_expired"})

SubscriptionId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9_.:-]{1,255}$",
        description="The subscription's id (its intent's).",
    ),
]
PlanPath = Annotated[str, Path(min_length=1, max_length=255, description="A plan's name.")]
FeaturePath = Annotated[str, Path(min_length=1, max_length=255, description="A feature's name.")]


def subscriptions_path(org_id: str) -> str:
    return f"{PREFIX}/organizations/{org_id}/billing/subscriptions"


# --- the catalog as applied -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shape:
    """A plan's billed prices in one currency: whether it is free, its seat limit."""

    plan: PlanRecord
    currency: str
    prices: tuple[CatalogPrice, ...]
    free: bool
    seat_limit: int | None


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _tiers_total(tiers: object) -> int:
    if not isinstance(tiers, list):
        return 0
    return sum(
        _int(t.get("unit_amount")) + _int(t.get("flat_amount"))
        for t in tiers
        if isinstance(t, Mapping)
    )


def _amounts(fields: Mapping[str, Any]) -> dict[str, int]:
    amounts: dict[str, int] = {}
    currency = fields.get("currency")
    if isinstance(currency, str):
        amounts[currency.lower()] = _int(fields.get("unit_amount")) + _tiers_total(
            fields.get("tiers")
        )
    options = fields.get("currency_options")
    if isinstance(options, Mapping):
        for code, option in options.items():
            if isinstance(option, Mapping):
                amounts[str(code).lower()] = _int(option.get("unit_amount")) + _tiers_total(
                    option.get("tiers")
                )
    return amounts


def _seat_limit(metadata: Mapping[str, Any]) -> int | None:
    raw = metadata.get(META_SEAT_LIMIT)
    try:
        limit = int(str(raw)) if raw is not None else 0
    except ValueError:
        return None
    return limit if limit > 0 else None  # 0: unlimited


class AppliedCatalog:
    """Plans from the store's plans table; prices, products and feature attachments from
    this installation's last-applied records."""

    def __init__(self, session: Session, installation_id: str) -> None:
        self._plans = PlanRepository(session)
        self._entries: Mapping[str, LastApplied] = LastAppliedRepository(session).for_installation(
            installation_id
        )

    def plan(self, name: str) -> PlanRecord | None:
        return self._plans.get(name)

    def _product_meta(self, product: str) -> Mapping[str, Any]:
        entry = self._entries.get(f"{Kind.PRODUCT.value}/{product}")
        metadata = None if entry is None else entry.fields.get("metadata")
        return metadata if isinstance(metadata, Mapping) else {}

    def prices(self, plan: PlanRecord) -> tuple[CatalogPrice, ...]:
        """Every applied price of the plan's products."""
        found: list[CatalogPrice] = []
        for product in plan.products:
            metadata = self._product_meta(product)
            behavior = str(metadata.get(META_BEHAVIOR) or "basic")
            prefix = f"{Kind.PRICE.value}/{product}/"
            for key, entry in self._entries.items():
                if entry.kind != Kind.PRICE.value or not key.startswith(prefix):
                    continue
                recurring = entry.fields.get("recurring")
                recurring = recurring if isinstance(recurring, Mapping) else {}
                interval = recurring.get("interval")
                found.append(
                    CatalogPrice(
                        key=key,
                        product=product,
                        stripe_id=entry.stripe_id,
                        interval=interval if isinstance(interval, str) else None,
                        interval_count=_int(recurring.get("interval_count")) or 1,
                        amounts=_amounts(entry.fields),
                        usage_type=str(recurring.get("usage_type") or "licensed"),
                        behavior=behavior,
                        seat_limit=_seat_limit(metadata),
                    )
                )
        return tuple(found)

    def shape(self, plan: PlanRecord, currency: str) -> Shape | ApiError:
        """The plan's billed prices in `currency`, or the refusal saying why it cannot be."""
        prices = tuple(
            p
            for p in self.prices(plan)
            if p.behavior != BEHAVIOR_CREDITS and p.interval == plan.interval
        )
        if not prices:
            return precondition(
                f"plan {plan.name} has no price applied to Stripe at its interval "
                f"({plan.interval}); apply the catalog first",
                field="plan",
                plan=plan.name,
            )
        missing = sorted(p.key for p in prices if currency not in p.amounts)
        if missing:
            return invalid(
                f"plan {plan.name} has no price in {currency} ({', '.join(missing)}); add "
                "currency_options for it or choose another plan",
                field="plan",
                plan=plan.name,
                currency=currency,
            )
        limits = [
            p.seat_limit
            for p in prices
            if p.behavior == BEHAVIOR_PER_SEAT and not p.metered and p.seat_limit
        ]
        return Shape(
            plan=plan,
            currency=currency,
            prices=prices,
            free=not any(p.amounts[currency] for p in prices),
            seat_limit=min(limits) if limits else None,
        )

    def feature_known(self, feature: str) -> bool:
        return f"{Kind.FEATURE.value}/{feature.lower()}" in self._entries

    def features(self, plan: PlanRecord) -> frozenset[str]:
        """Feature names attached to the plan's products (as applied)."""
        products = {f"{Kind.PRODUCT.value}/{p}" for p in plan.products}
        names: set[str] = set()
        for entry in self._entries.values():
            if entry.kind != Kind.PRODUCT_FEATURE.value:
                continue
            product, feature = entry.fields.get("product"), entry.fields.get("feature")
            if product in products and isinstance(feature, str):
                names.add(feature.split("/", 1)[-1])
        return frozenset(names)


def _currency(context: ApiContext, account: AccountRecord) -> str:
    return (account.currency or context.config().billing.currency).lower()


def _active_plan(catalog: AppliedCatalog, name: str) -> PlanRecord:
    plan = catalog.plan(name)
    if plan is None:
        raise not_found(f"no plan {name}", field="plan", plan=name)
    if plan.state.value != "active":
        raise precondition(
            f"plan {plan.name} is inactive (archived): it cannot be subscribed to",
            field="plan",
            plan=plan.name,
        )
    return plan


def _shape(catalog: AppliedCatalog, plan: PlanRecord, currency: str) -> Shape:
    shape = catalog.shape(plan, currency)
    if isinstance(shape, ApiError):
        raise shape
    return shape


def _is_free(catalog: AppliedCatalog, name: str, currency: str) -> bool:
    """A plan that cannot be priced (removed, not applied) counts as paid: never replaced."""
    plan = catalog.plan(name)
    if plan is None:
        return False
    shape = catalog.shape(plan, currency)
    return isinstance(shape, Shape) and shape.free


# --- seats ------------------------------------------------------------------------------------


def seat_limit_error(
    org_id: str, plan: str, seat_limit: int, members: int, *, adding: bool
) -> ApiError:
    what = "adding a member would make" if adding else "the organization has"
    return ApiError(
        409,
        "seat_limit_reached",
        f"{what} {members} members, above the seat_limit {seat_limit} of plan {plan}",
        {"org_id": org_id, "plan": plan, "seat_limit": seat_limit, "members": members},
    )


def check_seat_limit(context: ApiContext, session: Session, org_id: str) -> None:
    """After a member was added in this transaction (the org row locked): 409
    `seat_limit_reached` when the members exceed a per-seat product's `seat_limit` of the
    account's plan (or of its pending change's plan); the caller's transaction then rolls
    back, so nothing is recorded."""
    account = AccountRepository(session).active_for_org(org_id)
    if account is None:
        return
    intent = IntentRepository(session).current(account.id)
    if intent is None:
        return
    plans = [intent.plan]
    if intent.pending_change is not None and intent.pending_change.plan is not None:
        plans.append(intent.pending_change.plan)
    catalog = AppliedCatalog(session, context.installation_id())
    currency = _currency(context, account)
    members: int | None = None
    for name in plans:
        plan = catalog.plan(name)
        shape = None if plan is None else catalog.shape(plan, currency)
        if not isinstance(shape, Shape) or shape.seat_limit is None:
            continue
        if members is None:
            members = MemberRepository(session).count(org_id)
        if members > shape.seat_limit:
            raise seat_limit_error(org_id, shape.plan.name, shape.seat_limit, members, adding=True)


# --- the resource -----------------------------------------------------------------------------


def _at(seconds: int | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def mirror_of(
    intent: SubscriptionIntent, mirrors: Sequence[MirroredSubscription]
) -> MirroredSubscription | None:
    """The Stripe subscription made for the intent (its `br_intent`); for the current intent
    without one, a live subscription of the account that names no intent (a checkout's), or
    one on the intent's plan made for an intent it replaced (the live free subscription a
    refused paid subscribe left, which a free subscribe after it, or the intent the next
    reconcile adopts, keeps: the subscriptions domain makes nothing beside it)."""
    for mirrored in mirrors:
        if mirrored.intent_id == intent.id:
            return mirrored
    if intent.current:
        for mirrored in mirrors:
            if mirrored.intent_id is None and mirrored.live:
                return mirrored
        plan = intent.plan.lower()
        for mirrored in mirrors:
            if mirrored.live and (mirrored.plan or "").lower() == plan:
                return mirrored
    return None


def _one_per_subscription(
    intents: Sequence[SubscriptionIntent], mirrors: Sequence[MirroredSubscription]
) -> list[SubscriptionIntent]:
    """`intents` (newest first) a caller can see: the current one, and each other one with a
    Stripe subscription no newer intent holds."""
    seen: set[str] = set()
    kept: list[SubscriptionIntent] = []
    for intent in intents:
        mirrored = mirror_of(intent, mirrors)
        if mirrored is None:
            if intent.state != IntentState.CURRENT:
                continue
        elif mirrored.stripe_id in seen:
            continue
        else:
            seen.add(mirrored.stripe_id)
        kept.append(intent)
    return kept


def set_to_cancel(mirrored: MirroredSubscription | None) -> int | None:
    """When the live Stripe subscription is set to cancel by Stripe's own fields (`cancel_at`,
    `cancel_at_period_end`: a `cancel_after_trial` subscribe sets them at its trial end), the
    time it ends; None when it is not (a period-end cancel of ours is the schedule's, recorded
    on the intent as its pending cancel)."""
    if mirrored is None or not mirrored.live:
        return None
    record = mirrored.record
    if record.cancel_at is not None:
        return record.cancel_at
    if record.cancel_at_period_end:
        return record.current_period_end
    return None


def _pending_of(
    intent: SubscriptionIntent, mirrored: MirroredSubscription | None
) -> PendingChange | None:
    """The intent's pending change or cancel; else the cancel Stripe's subscription is set to
    (DESIGN §16: a cancel at period end is `{plan: null, reason: cancel, effective_at}`)."""
    if intent.pending_change is not None:
        return intent.pending_change
    ends = set_to_cancel(mirrored)
    return None if ends is None else PendingChange(plan=None, effective_at=ends, reason="cancel")


def subscription(
    intent: SubscriptionIntent,
    mirrored: MirroredSubscription | None,
    *,
    refusal: str | None = None,
) -> Subscription:
    """The resource. `canceled_at` is when it ended (Stripe's, once the subscription is
    canceled; the time the intent ended for one canceled before Stripe had it), never the
    time a cancel at period end was asked for (Stripe's `canceled_at` while still live)."""
    record = None if mirrored is None else mirrored.record
    pending = _pending_of(intent, mirrored)
    cancel_at = None if record is None else record.cancel_at
    if cancel_at is None and pending is not None and pending.reason == "cancel":
        cancel_at = pending.effective_at  # DESIGN §16: locally cancel_at = the period end
    state = None if record is None else record.status
    canceled_at = None
    if record is not None and record.status in TERMINAL_STATUSES:
        canceled_at = _at(record.canceled_at or record.ended_at)
    elif record is None and intent.state == IntentState.ENDED:
        # Ended (cancelled, or its account disabled) before Stripe ever had it.
        state, canceled_at = "canceled", intent.ended_at
    return Subscription(
        id=intent.id,
        org_id=intent.org_id,
        stripe_subscription_id=None if record is None else record.stripe_id,
        plan=intent.plan,
        state=state,
        seats=None if mirrored is None else mirrored.seats,
        trial_ends_at=None if record is None else _at(record.trial_end),
        current_period_start=None if record is None else _at(record.current_period_start),
        current_period_end=None if record is None else _at(record.current_period_end),
        cancel_at=_at(cancel_at),
        canceled_at=canceled_at,
        pending_change=None
        if pending is None
        else PendingChangeOut(
            plan=pending.plan,
            effective_at=_at(pending.effective_at),
            reason="cancel" if pending.reason == "cancel" else "change",
        ),
        created_at=intent.created_at,
        refusal=refusal,
    )


def refusal_of(
    context: ApiContext,
    session: Session,
    account: AccountRecord,
    intent: SubscriptionIntent,
    mirrored: MirroredSubscription | None,
) -> str | None:
    """Why the current intent has no Stripe subscription (the resource's `refusal`), or None
    (it has one, or it is not current: nothing is to be made for it)."""
    if mirrored is not None or not intent.current or intent.cancel_mode is not None:
        return None
    if account.state != "active":
        return f"the billing account {account.id} is {account.state}: nothing is created"
    catalog = AppliedCatalog(session, context.installation_id())
    plan = catalog.plan(intent.plan)
    if plan is None:
        return f"plan {intent.plan} is not in the applied catalog: it cannot be created"
    shape = catalog.shape(plan, _currency(context, account))
    if isinstance(shape, ApiError):
        return shape.message
    if account.offline:
        return (
            f"the billing account {account.id} is offline: the subscription is created when "
            "it is registered"
        )
    return (
        "not in Stripe: Stripe refused its create (the subscribe's answer named why, e.g. no "
        "payment method) or its reconcile has not run yet; send the subscribe again to retry, "
        "or subscribe to another plan, which replaces it"
    )


def _latest(session: Session, org: str) -> AccountRecord:
    record = AccountRepository(session).latest_for_org(org)
    if record is None:
        raise not_found(f"organization {org} has no billing account", org_id=org)
    return record


def _intent_of(session: Session, org: str, intent_id: str) -> SubscriptionIntent:
    intent = IntentRepository(session).get(intent_id)
    if intent is None or intent.org_id != org:
        raise not_found(
            f"organization {org} has no subscription {intent_id}",
            org_id=org,
            subscription_id=intent_id,
        )
    return intent


def _read(context: ApiContext, org: str, intent_id: str) -> Subscription:
    with context.store.session() as session:
        intent = _intent_of(session, org, intent_id)
        mirrors = SubscriptionMirrorRepository(session).for_account(intent.account_id)
        mirrored = mirror_of(intent, mirrors)
        account = AccountRepository(session).get(intent.account_id)
        refusal = (
            None if account is None else refusal_of(context, session, account, intent, mirrored)
        )
        return subscription(intent, mirrored, refusal=refusal)


def _ended(intent: SubscriptionIntent, mirrored: MirroredSubscription | None) -> bool:
    return not intent.current or (mirrored is not None and mirrored.status in TERMINAL_STATUSES)


def _refuse_declared(context: ApiContext, org: str) -> None:
    """409 when a contract customer declares the org's plan: its subscription is the YAML's."""
    plan = context.declared_plan(org)
    if plan is not None:
        raise precondition(
            f"organization {org} is a contract customer whose plan {plan} is declared in "
            "desired/customers: change the plan or its cancel there",
            org_id=org,
            plan=plan,
        )


def _require_live(
    session: Session, org: str, intent_id: str, *, cancelling: bool = False
) -> tuple[SubscriptionIntent, MirroredSubscription | None]:
    intent = _intent_of(session, org, intent_id)
    mirrored = mirror_of(
        intent, SubscriptionMirrorRepository(session).for_account(intent.account_id)
    )
    if _ended(intent, mirrored):
        raise precondition(
            f"subscription {intent_id} is {'canceled' if intent.current else intent.state}: "
            "it cannot change; subscribe again instead",
            org_id=org,
            subscription_id=intent_id,
            state=mirrored.status if mirrored is not None else intent.state,
        )
    if intent.cancel_mode == "immediate" and not cancelling:
        raise precondition(
            f"subscription {intent_id} is being canceled", org_id=org, subscription_id=intent_id
        )
    return intent, mirrored


def _answer(
    context: ApiContext,
    org: str,
    intent_id: str,
    verdict: Verdict | None,
    *,
    online: bool = False,
) -> Subscription | JSONResponse:
    """After the write's reconcile: Stripe's refusal raised, 202 when unfinished (or, for a
    new subscription of an online account, finished without it in the mirror), else the
    subscription as the reconcile left it."""
    location = f"{subscriptions_path(org)}/{intent_id}"
    if verdict is None:  # no runtime to wait on
        return _read(context, org, intent_id)
    raise_if_refused(verdict, org_id=org, subscription_id=intent_id)
    if is_pending(verdict):
        return accepted(verdict, location)
    answer = _read(context, org, intent_id)
    if online and answer.stripe_subscription_id is None:
        return accepted(verdict, location, reason="not_applied")
    return answer


def _unmade(session: Session, account: AccountRecord, intent: SubscriptionIntent) -> bool:
    """The online account's current intent has no Stripe subscription made for it (none
    mirrored: Stripe refused its create, or its reconcile has not run yet), nor a cancel
    request."""
    if account.offline or intent.cancel_mode is not None:
        return False
    mirrors = SubscriptionMirrorRepository(session).for_account(account.id)
    return mirror_of(intent, mirrors) is None


# --- the routes -------------------------------------------------------------------------------


def subscriptions_router(context: ApiContext) -> APIRouter:
    """The app-scope routes."""
    router = APIRouter(
        prefix=f"{PREFIX}/organizations/{{org}}/billing",
        tags=["subscriptions"],
        route_class=ApiRoute,
        dependencies=[Depends(requires(context.tokens, Scope.APP))],
    )

    @router.get("/subscriptions", response_model=Page[Subscription], responses=error_responses(404))
    def list_subscriptions(
        org: OrgId, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
    ) -> Page[Subscription]:
        """The account's subscriptions, newest first (the current one and those it
        replaced or that ended)."""
        with context.store.session() as session:
            require_org(session, org)
            account = _latest(session, org)
            intents = list(reversed(IntentRepository(session).history(account.id)))
            mirrors = SubscriptionMirrorRepository(session).for_account(account.id)
            refusals = {
                i.id: refusal_of(context, session, account, i, mirror_of(i, mirrors))
                for i in intents
                if i.state == IntentState.CURRENT
            }
        # An intent replaced before Stripe ever had its subscription (the default plan's a
        # lost store's re-PUT recorded, then the adopted subscription's took its place) is
        # nothing a caller can see or act on: the current intent and those with one are.
        # One entry per Stripe subscription: the newest intent holding it (a free subscribe
        # after a refused paid one keeps the live free subscription the replaced intent made).
        intents = _one_per_subscription(intents, mirrors)
        start = 0
        if cursor is not None:
            ids = [i.id for i in intents]
            if cursor not in ids:
                raise invalid("not a cursor this list handed out", field="cursor")
            start = ids.index(cursor) + 1
        page = intents[start : start + limit]
        more = start + limit < len(intents)
        return Page[Subscription](
            data=[subscription(i, mirror_of(i, mirrors), refusal=refusals.get(i.id)) for i in page],
            next_cursor=page[-1].id if more and page else None,
        )

    @router.get("/subscriptions/{id}", response_model=Subscription, responses=error_responses(404))
    def get_subscription(org: OrgId, id: SubscriptionId) -> Subscription:
        with context.store.session() as session:
            require_org(session, org)
        return _read(context, org, id)

    @router.post(
        "/subscriptions/{id}/change",
        response_model=Subscription | ChangePreview,
        responses={**accepted_response(), **error_responses(402, 404, 409)},
    )
    def change_subscription(
        org: OrgId, id: SubscriptionId, body: ChangeIn
    ) -> Subscription | ChangePreview | JSONResponse:
        """Change the plan at the current period end (or now with `immediate`), or drop the
        upcoming change (`cancel_upcoming_changes`); waits for Stripe's verdict (the
        subscription). With `preview: true` nothing changes: the answer is what the change
        would invoice (a `ChangePreview`, from Stripe's `create_preview`), after the same
        checks and refusals as the change itself. Refused, recording nothing: a subscription
        not in Stripe, or one Stripe has set to cancel (`cancel_after_trial`; neither a change
        nor `cancel_upcoming_changes` applies to it). The same change again runs its reconcile
        again and answers Stripe's verdict."""
        _refuse_declared(context, org)
        target = body.target
        if body.preview and target is not None:
            return _preview_change(context, org, id, *target)
        with context.store.session() as session:
            require_org(session, org)
            account = require_active(session, org)
            intent, mirrored = _require_live(session, org, id)
            intents = IntentRepository(session, clock=context.clock)
            if target is None:
                if intent.pending_change is None:
                    _refuse_trial_cancel_undo(intent, mirrored)
                    return subscription(intent, mirrored)  # nothing upcoming: no change
                intents.clear_pending_change(account.id)
            else:
                name, immediate = target
                change = _planned_change(
                    context, session, account, intent, mirrored, name, immediate
                )
                # None: exactly this change is pending already (a retry). Its reconcile runs
                # again and the answer is Stripe's verdict now (a refusal again, not a 200 as
                # if it had been accepted).
                if change is not None:
                    intents.set_pending_change(account.id, change)
        verdict = context.await_customer(org, "subscription changed")
        return _answer(context, org, id, verdict)

    @router.post(
        "/subscriptions/{id}/cancel",
        response_model=Subscription,
        responses={**accepted_response(), **error_responses(402, 404, 409)},
    )
    def cancel_subscription(
        org: OrgId, id: SubscriptionId, body: CancelIn | None = None
    ) -> Subscription | JSONResponse:
        """Cancel now (`immediate`, invoiced and prorated), or at the current period end
        (default: `cancel_at` and `pending_change{plan: null, reason: cancel}`). Every field is
        optional: no body is `{}`. A period-end cancel while a plan change is pending is
        refused (409: drop the change first, as a change while a cancel is pending is); one
        on a subscription already set to cancel then (`cancel_after_trial`, or a cancel at
        period end asked before) answers it as it is. A subscription Stripe never had (its
        create was refused) ends at once, nothing sent to Stripe."""
        _refuse_declared(context, org)
        immediate = body is not None and body.immediate
        with context.store.session() as session:
            require_org(session, org)
            account = require_active(session, org)
            intent, mirrored = _require_live(session, org, id, cancelling=True)
            if intent.cancel_mode == "immediate":
                return subscription(intent, mirrored)  # being cancelled now already
            intents = IntentRepository(session, clock=context.clock)
            pending = _pending_of(intent, mirrored)
            if mirrored is not None and not immediate and pending is not None:
                if pending.reason == "cancel":
                    return subscription(intent, mirrored)  # set to cancel then already
                raise precondition(
                    f"subscription {intent.id} has a change to {pending.plan} pending: a cancel "
                    "at period end would drop it; send {cancel_upcoming_changes: true} to the "
                    "change route first (or cancel with {immediate: true})",
                    org_id=org,
                    subscription_id=intent.id,
                    pending_plan=pending.plan,
                    pending_reason=pending.reason,
                )
            if mirrored is None:
                # No Stripe subscription was made for the intent (offline: none can be; else
                # Stripe refused its create): the intent just ends. Nothing else is cancelled:
                # a live subscription of another intent (the free one a refused paid plan was
                # to replace) stays, and the next reconcile adopts it.
                ended = subscription(intents.end(account.id) or intent, None)
                offline = account.offline
            else:
                ended, offline = None, account.offline
                intents.request_cancel(
                    account.id,
                    immediate=immediate,
                    effective_at=None if immediate else mirrored.record.current_period_end,
                )
        if ended is not None:
            if not offline:
                # The next reconcile adopts what is live (its verdict is not this cancel's).
                context.await_customer(org, "subscription canceled")
            return ended
        verdict = context.await_customer(org, "subscription canceled")
        return _answer(context, org, id, verdict)

    @router.get("/plans/{plan}/trialed", response_model=Trialed, responses=error_responses(404))
    def trialed(org: OrgId, plan: PlanPath) -> Trialed:
        """Whether the account had the plan's trial, and whether it held the plan at all
        (DESIGN §16: a trial once per plan per account, current or history)."""
        name = plan.lower()
        with context.store.session() as session:
            require_org(session, org)
            if PlanRepository(session).get(name) is None:
                raise not_found(f"no plan {plan}", field="plan", plan=plan)
            account = _latest(session, org)
            history = PlanHistoryRepository(session)
            mirrors = [
                m
                for m in SubscriptionMirrorRepository(session).for_account(account.id)
                if (m.plan or "").lower() == name
            ]
            had_trial = history.trialed(account.id, name) or any(
                m.record.trial_end is not None for m in mirrors
            )
            had_plan = history.had_plan(account.id, name) or any(
                m.status not in _NEVER_STARTED for m in mirrors
            )
        return Trialed(plan=name, trialed=had_trial, had_plan=had_plan or had_trial)

    @router.get(
        "/entitlements/{feature}", response_model=Entitlement, responses=error_responses(404)
    )
    def entitlement(org: OrgId, feature: FeaturePath) -> Entitlement:
        """Whether an active or trialing subscription's plan has a product carrying the
        feature (DESIGN §16; a feature on no product grants nothing, nor a disabled account:
        its subscription is being cancelled)."""
        name = feature.lower()
        with context.store.session() as session:
            require_org(session, org)
            account = _latest(session, org)
            catalog = AppliedCatalog(session, context.installation_id())
            if not catalog.feature_known(name):
                raise not_found(f"no feature {feature}", field="feature", feature=feature)
            intent = IntentRepository(session).current(account.id)
            granting = None
            mirrors = SubscriptionMirrorRepository(session).for_account(account.id)
            for mirrored in mirrors if account.state == "active" else ():
                if mirrored.status not in ENTITLED_STATUSES:
                    continue
                plan_name = mirrored.plan or (intent.plan if intent is not None else None)
                record = None if plan_name is None else catalog.plan(plan_name)
                if record is not None and name in catalog.features(record):
                    granting = record.name
                    break
        allowed = granting is not None
        return Entitlement(feature=name, entitled=allowed, allowed=allowed, plan=granting)

    return router


def _refuse_trial_cancel_undo(
    intent: SubscriptionIntent, mirrored: MirroredSubscription | None, *, what: str = "undone"
) -> None:
    """409 for a subscription Stripe has set to cancel at its end (a `cancel_after_trial`
    subscribe: cancelled at the trial's end without an invoice) with no pending change of
    ours: Stripe creates no schedule on such a subscription, so it cannot be changed, and its
    cancel is part of the subscribe (it is not undone: subscribe again once it ended)."""
    if intent.pending_change is not None:
        return
    ends = set_to_cancel(mirrored)
    if ends is None:
        return
    when = datetime.fromtimestamp(ends, UTC).isoformat().replace("+00:00", "Z")
    cause = " (cancel_after_trial)" if intent.cancel_after_trial else ""
    action = (
        "a plan change cannot be scheduled on it"
        if what == "changed"
        else "that cancel is not undone by cancel_upcoming_changes"
    )
    raise precondition(
        f"subscription {intent.id} is set to cancel at {when}{cause}: {action}; subscribe "
        "again once it has ended, or cancel it now with {immediate: true}",
        subscription_id=intent.id,
        pending_plan=None,
        pending_reason="cancel",
        cancel_at=when,
    )


def _planned_change(
    context: ApiContext,
    session: Session,
    account: AccountRecord,
    intent: SubscriptionIntent,
    mirrored: MirroredSubscription | None,
    name: str,
    immediate: bool,
) -> PendingChange | None:
    """The pending change `{plan: name, immediate}` asks for, after every refusal of DESIGN
    §16; None when exactly that change is pending already (a retry)."""
    org = account.org_id
    catalog = AppliedCatalog(session, context.installation_id())
    plan = _active_plan(catalog, name)
    pending = intent.pending_change
    if (
        pending is not None
        and pending.reason == "change"
        and pending.plan == plan.name
        and pending.immediate == immediate
    ):
        return None
    if plan.name == intent.plan.lower():
        raise precondition(
            f"subscription {intent.id} is on plan {plan.name} already",
            field="plan",
            plan=plan.name,
            subscription_id=intent.id,
        )
    _refuse_trial_cancel_undo(intent, mirrored, what="changed")
    if pending is not None:
        what = "a cancel" if pending.reason == "cancel" else f"a change to {pending.plan}"
        raise precondition(
            f"subscription {intent.id} has {what} pending; send "
            "{cancel_upcoming_changes: true} first",
            subscription_id=intent.id,
            pending_plan=pending.plan,
            pending_reason=pending.reason,
        )
    shape = _shape(catalog, plan, _currency(context, account))
    if account.offline:
        raise precondition(
            f"billing account {account.id} is offline: its subscription is not in Stripe yet; "
            f"register it first (POST {PREFIX}/organizations/{org}/billing/register)",
            org_id=org,
            account_id=account.id,
        )
    if mirrored is None:
        # Stripe never had it (its create was refused, or has not run yet): a change would
        # be written on nothing, or on another intent's live subscription.
        raise precondition(
            f"subscription {intent.id} is not in Stripe (its create was refused, or has not "
            "run yet): there is nothing to change; send the subscribe again with the plan "
            f"wanted (POST {subscriptions_path(org)}), which replaces it",
            org_id=org,
            subscription_id=intent.id,
        )
    if shape.seat_limit is not None:
        members = max(MemberRepository(session).count(org), 1)
        if members > shape.seat_limit:
            raise seat_limit_error(org, plan.name, shape.seat_limit, members, adding=False)
    now = int(context.clock().timestamp())
    period_end = None if mirrored is None else mirrored.record.current_period_end
    return PendingChange(
        plan=plan.name,
        effective_at=now if immediate else period_end,
        immediate=immediate,
        reason="change",
    )


# --- the preview of a change ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _TargetItem:
    """A target plan's item as the change's new phase bills it (`PricedItem`)."""

    price_id: str
    quantity: int | None


def _preview_change(
    context: ApiContext, org: str, intent_id: str, name: str, immediate: bool
) -> ChangePreview:
    """`{plan, immediate, preview: true}`: every check of the change itself (the same
    refusals), then Stripe's `create_preview` of the subscription on the target plan's items
    (its prices in the account's currency; per-seat quantity = the members, at least 1, as
    the subscriptions domain derives them) with the configured proration. Nothing is
    written: no intent, no store row, no Stripe write."""
    with context.store.session() as session:
        require_org(session, org)
        account = require_active(session, org)
        intent, mirrored = _require_live(session, org, intent_id)
        change = _planned_change(context, session, account, intent, mirrored, name, immediate)
        if change is None:  # exactly this change is pending already: preview it anyway
            change = intent.pending_change
        catalog = AppliedCatalog(session, context.installation_id())
        plan = _active_plan(catalog, name)
        shape = _shape(catalog, plan, _currency(context, account))
        seats = max(MemberRepository(session).count(org), 1)
    if mirrored is None:
        raise precondition(
            f"subscription {intent_id} is not in Stripe yet: there is nothing to preview; "
            "retry once it is",
            org_id=org,
            subscription_id=intent_id,
        )
    gateway = context.gateway
    if gateway is None:
        raise ApiError(
            503,
            "provider_unavailable",
            "Stripe is not reachable from this server: no preview can be made",
            {"subscription_id": intent_id},
        )
    settings = context.config().billing.plan_change
    configured = settings.immediate_proration_behavior if immediate else settings.proration_behavior
    items = [
        _TargetItem(
            price_id=str(p.stripe_id),
            quantity=None if p.metered else (seats if p.per_seat else 1),
        )
        for p in shape.prices
    ]
    try:
        answer = preview_plan_change(
            gateway,
            subscription_id=mirrored.record.stripe_id,
            installation_id=context.installation_id(),
            items=items,
            # At the period end the new phase starts on the cycle boundary: nothing to prorate.
            proration_behavior=configured if immediate else "none",
            immediate=immediate,
        )
    except TransientStripeError as error:
        raise ApiError(
            503,
            "provider_unavailable",
            "Stripe did not answer the preview; retry later",
            {"subscription_id": intent_id, "stripe_request_id": error.request_id},
        ) from error
    except StripeGatewayError as error:
        raise precondition(
            f"Stripe refused the preview: {error.message}",
            subscription_id=intent_id,
            stripe_code=error.code,
            stripe_request_id=error.request_id,
        ) from error
    return _preview_body(
        intent_id,
        current_plan=intent.plan,
        plan=plan.name,
        immediate=immediate,
        effective_at=None if change is None else change.effective_at,
        proration_behavior=configured,
        preview=answer,
    )


def _preview_body(
    intent_id: str,
    *,
    current_plan: str,
    plan: str,
    immediate: bool,
    effective_at: int | None,
    proration_behavior: ProrationBehavior,
    preview: PlanChangePreview,
) -> ChangePreview:
    now = preview.invoice_now
    renewal = preview.renewal
    return ChangePreview(
        subscription_id=intent_id,
        plan=plan,
        current_plan=current_plan,
        immediate=immediate,
        effective_at=_at(effective_at),
        proration_behavior=proration_behavior,
        currency=renewal.currency,
        amount_due_now=0 if now is None else now.amount_due,
        proration_lines=[
            PreviewLine(
                description=line.description,
                quantity=line.quantity,
                amount=line.amount,
                period_start=datetime.fromtimestamp(line.period_start, UTC),
                period_end=datetime.fromtimestamp(line.period_end, UTC),
            )
            for line in preview.proration_lines
        ],
        next_renewal_total=renewal.total,
        # At the period end the new plan's first invoice is made then (a preview of items at
        # another interval answers the cycle restarting at once: its total is that invoice's).
        # Now: after a change of interval the cycle restarts now, so the renewal is at the end
        # of the new period (now + the new interval), not at the old period end.
        next_renewal_at=_at(effective_at if not immediate else preview.renews_at),
    )


def admin_subscriptions_router(context: ApiContext) -> APIRouter:
    """`POST /organizations/{org}/billing/subscriptions` (admin scope)."""
    router = APIRouter(
        prefix=f"{PREFIX}/organizations/{{org}}/billing",
        tags=["subscriptions"],
        route_class=ApiRoute,
        dependencies=[Depends(requires(context.tokens, Scope.ADMIN))],
    )

    @router.post(
        "/subscriptions",
        status_code=201,
        response_model=Subscription | Purchase,
        responses={
            200: {"model": Purchase, "description": "The same purchase again: nothing added"},
            **accepted_response(),
            **error_responses(402, 403, 404, 409),
        },
    )
    def subscribe(org: OrgId, body: SubscribeIn) -> Subscription | JSONResponse:
        """Subscribe without a checkout (admin). One live subscription per account: a paid
        plan replaces a live free one; beside a live paid one it is refused (change the plan
        instead). A subscription Stripe refused to create (none exists) is not live: the same
        subscribe again is the retry, another plan's replaces it. Waits for Stripe's verdict
        (201, or 202 when it takes longer).

        With `product` instead of `plan`: a delegated purchase of a `credits` product, no
        payment and nothing in Stripe; it adds `quantity x credit_amount` credits (source
        `system.awarded`) and answers the purchase (201; the same `id` again: 200, nothing
        added)."""
        if body.product is not None:
            return purchase_credits(context, org, body)
        _refuse_declared(context, org)
        with context.store.session() as session:
            require_org(session, org)
            account = require_active(session, org)
            catalog = AppliedCatalog(session, context.installation_id())
            plan = _active_plan(catalog, body.plan_name)
            currency = _currency(context, account)
            shape = _shape(catalog, plan, currency)
            if account.offline and not shape.free:
                raise precondition(
                    f"billing account {account.id} is offline: a paid plan needs its Stripe "
                    f"customer; register it first (POST {PREFIX}/organizations/{org}/billing/"
                    "register)",
                    org_id=org,
                    account_id=account.id,
                    plan=plan.name,
                )
            intents = IntentRepository(session, clock=context.clock)
            current = intents.current(account.id)
            fields: dict[str, Any] = {
                "plan": plan.name,
                "source": IntentSource.SUBSCRIBE.value,
                "skip_trial": body.skip_trial,
                "cancel_after_trial": body.cancel_after_trial,
            }
            if current is not None:
                mirrors = SubscriptionMirrorRepository(session).for_account(account.id)
                if _ended(current, mirror_of(current, mirrors)):
                    intents.end(account.id)  # its subscription ended in Stripe
                    current = None
            if current is None:
                intent, _ = intents.record(account.id, **fields)
            elif current.plan.lower() == plan.name and _unmade(session, account, current):
                # No Stripe subscription was made for it (Stripe refused it: "correct the
                # request and send it again"): this is the retry. The targeted reconcile runs
                # again and answers Stripe's new verdict; other trial options replace it.
                if (current.source, current.skip_trial, current.cancel_after_trial) == (
                    fields["source"],
                    body.skip_trial,
                    body.cancel_after_trial,
                ):
                    intent = current
                else:
                    intent, _ = intents.replace(account.id, expected_intent_id=current.id, **fields)
            elif current.plan.lower() == plan.name:
                raise ApiError(
                    409,
                    "already_exists",
                    f"organization {org} is subscribed to plan {plan.name} already "
                    f"(subscription {current.id})",
                    {"org_id": org, "plan": plan.name, "subscription_id": current.id},
                )
            elif _unmade(session, account, current):
                # Stripe never had a subscription for it (it refused the create): it is not a
                # live subscription, so another plan's subscribe replaces it. What is live of
                # an intent before it (the free one it was to replace) is left to the rules:
                # the new intent replaces that as it would have.
                intent, _ = intents.replace(account.id, expected_intent_id=current.id, **fields)
            elif not _is_free(catalog, current.plan, currency):
                raise precondition(
                    f"organization {org} has a live paid subscription {current.id} on plan "
                    f"{current.plan}: change the plan instead (POST "
                    f"{subscriptions_path(org)}/{current.id}/change)",
                    org_id=org,
                    plan=plan.name,
                    subscription_id=current.id,
                    current_plan=current.plan,
                )
            else:  # a live free one: the paid plan replaces it
                intent, _ = intents.replace(account.id, expected_intent_id=current.id, **fields)
            online = not account.offline
        verdict = context.await_customer(org, "subscribed") if online else None
        if not online:
            context.reconcile_customer(org, "subscribed")
        return _answer(context, org, intent.id, verdict, online=online)

    return router

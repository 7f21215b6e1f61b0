"""The subscriptions domain (DESIGN §14, §16): every account with a subscription intent has
the one live Stripe subscription its intent asks for. Pure: all I/O is the reader's.

Desired: the intents live in the store beside the accounts (recorded by the API, a checkout,
the default plan at account creation), so `desired()` is nothing; `observe` reads them with
the accounts, seats, plan history and the store's mirror of each account's subscriptions,
beside Stripe's subscriptions and schedules, and the catalog's plans with the Stripe ids of
their prices (the catalog's last-applied records).

Observed (never a call per customer on a full pass): a full resync lists every subscription
and every schedule (ceil(N/100) + ceil(M/100) calls) when none was made for
`reconcile.full_resync_interval`. Between full resyncs the events after the stored cursor
name the customers whose subscriptions or schedules changed; those are read again (2 calls
each), together with the customers whose mirrored subscription is on a schedule (the mirror
does not hold schedules). Every other account's subscriptions are the store's mirror of
them: unchanged in Stripe since they were mirrored (an event would have named them), so a
store-side change (a new intent, a member added, a pending change) and a `billing.yaml`
fleet change are planned against them without reading Stripe. A subscription read from
Stripe whose facts differ from its mirror is mirrored again (its stale mirror is not given to
the rules, which then plan the bookkeeping restore). An active account with nothing
mirrored whose intent (or contract customer's declared plan) asks for a subscription is read
from Stripe too (`_unmirrored`): an empty mirror is no proof that its customer has none of
ours. A targeted request (`customer/<org>`, `subscription/<org>`) reads only its accounts'
customers from Stripe.

Contract customers (`desired/customers/`, DESIGN §15) declaring a `plan` are planned as the
YAML says, not as the store's intent does (`subscription_rules.contract_bundle`).

The cursor is this domain's bookkeeping, as the customers domain's: a restore
(`subscription_cursor`, reason `bookkeeping`) written by apply after a full resync or
whenever the events moved.

The rules are in `domains.subscription_rules`; this module adds to their plan what the
executors need beside the rules' parameters: the installation, and on each mirror restore
the subscription as read (`record`) and the time of the read (`observed_at`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from billing_reconciler.desired.state import DesiredState
from billing_reconciler.domains.base import PlanContext
from billing_reconciler.domains.customer_types import CursorState, EventPosition
from billing_reconciler.domains.price_impact import SETTING_PRICE_MIGRATION
from billing_reconciler.domains.subscription_events import SUBSCRIPTION_ROUTES
from billing_reconciler.domains.subscription_rules import (
    FUTURE_ONLY_SETTINGS,
    GUARDED_SETTINGS,
    MIRROR_STEP,
    SCHEDULE_STEP,
    SETTING_AUTO_TAX,
    SETTING_SEAT_CHANGE,
    SUBSCRIPTION_STEP,
    org_id_of_step_key,
    subscriptions_plan,
)
from billing_reconciler.domains.subscription_types import (
    AccountSubscriptions,
    PlanCatalog,
    SubscriptionMirror,
    SubscriptionsObserved,
)
from billing_reconciler.model_customers import customer_key, org_id_of_key
from billing_reconciler.model_subscriptions import (
    ItemRecord,
    ScheduleRecord,
    SubscriptionOwner,
    SubscriptionRecord,
)
from billing_reconciler.planning.plan import Action, Plan, Reason, Step, canonical_json, digest

NAME: Final = "subscriptions"
#: The events cursor and the time of the last full resync: a bookkeeping restore.
CURSOR_STEP: Final = "subscription_cursor"
CURSOR_KEY: Final = f"{CURSOR_STEP}/events"

__all__ = [
    "CURSOR_KEY",
    "CURSOR_STEP",
    "MIRROR_STEP",
    "NAME",
    "SCHEDULE_STEP",
    "SUBSCRIPTION_STEP",
    "LiveSubscriptions",
    "StoredSubscriber",
    "SubscriptionChanges",
    "SubscriptionsDomain",
    "SubscriptionsObservation",
    "SubscriptionsReader",
    "record_from_json",
    "record_to_json",
]


@dataclass(frozen=True, slots=True)
class StoredSubscriber:
    """An account as the store holds it: its facts for the rules (`subscriptions` and
    `schedules` empty: Stripe's side) and the store's mirror of its subscriptions as the
    records last read from Stripe (any status)."""

    facts: AccountSubscriptions
    mirrored: tuple[SubscriptionRecord, ...] = ()

    @property
    def customer_id(self) -> str | None:
        account = self.facts.account
        return None if account.offline else account.stripe_customer_id


@dataclass(frozen=True, slots=True)
class LiveSubscriptions:
    """Subscriptions and schedules read from Stripe (of some customers, or all of them)."""

    subscriptions: tuple[SubscriptionRecord, ...] = ()
    schedules: tuple[ScheduleRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class SubscriptionChanges:
    """The customers the events after a position name (`full_resync`: cannot be followed)."""

    customer_ids: tuple[str, ...]
    position: EventPosition | None
    full_resync: bool


class SubscriptionsReader(Protocol):
    """What the domain reads; `effects.subscriptions.SubscriptionsIO` implements it."""

    def accounts(self, org_ids: frozenset[str] | None) -> Sequence[StoredSubscriber]:
        """The active accounts (of `org_ids` only, when given), offline ones included."""
        ...

    def catalog(self, state: DesiredState, *, installation_id: str) -> PlanCatalog: ...

    def cursor(self) -> CursorState: ...

    def changes_since(self, position: EventPosition | None) -> SubscriptionChanges: ...

    def all_subscriptions(self, *, installation_id: str) -> LiveSubscriptions: ...

    def subscriptions_of(
        self, customer_ids: Iterable[str], *, installation_id: str
    ) -> LiveSubscriptions: ...


@dataclass(frozen=True, slots=True)
class SubscriptionsObservation:
    """What one pass saw: the rules' input, and the domain's bookkeeping beside it."""

    observed: SubscriptionsObserved
    cursor: CursorState = field(default_factory=CursorState)
    # Where to move the cursor (None: keep it); `resynced`: this pass listed everything.
    moved_to: EventPosition | None = None
    resynced: bool = False
    # When Stripe was read (the mirror's `observed_at`).
    read_at: int = 0
    # Org ids whose Stripe objects were read this pass (the others' come from the mirror).
    fresh: frozenset[str] = field(default_factory=frozenset)
    # Live subscriptions of ours read from Stripe on a customer no account in the store
    # holds (a lost store whose orgs the host has not re-PUT yet): (org id, subscription id).
    unknown: tuple[tuple[str, str], ...] = ()


class SubscriptionsDomain:
    """See the module docstring."""

    name: Final = NAME
    kinds: Final = frozenset({SUBSCRIPTION_STEP, SCHEDULE_STEP, MIRROR_STEP, CURSOR_STEP})
    event_routes: Final = SUBSCRIPTION_ROUTES
    #: Its plan is a fleet: identical changes are grouped when rendered (DESIGN §14).
    fleet: Final = True
    #: `billing.yaml` settings read only when a subscription is created or changed: a change
    #: of one rewrites no live subscription, and the controller says so on the plan.
    future_only_settings: Final = FUTURE_ONLY_SETTINGS
    #: `billing.yaml` settings whose change rewrites live subscriptions: a targeted plan
    #: follows them as a whole-domain pass last put them in force (the controller).
    fleet_settings: Final = (SETTING_AUTO_TAX, SETTING_SEAT_CHANGE, SETTING_PRICE_MIGRATION)
    #: Those of them whose rewrites the mass-change guard counts: a targeted plan holds back
    #: a step they cause (its whole-domain plan marks it `mass_change`).
    guarded_settings: Final = GUARDED_SETTINGS

    def refresh_seconds(self, state: DesiredState) -> int:
        return int(state.config.billing.refresh_interval.subscription)

    def desired(self, state: DesiredState, context: PlanContext) -> None:
        # The intents are the desired side; they are read from the store in `observe`.
        del state, context

    def observe(
        self, reader: SubscriptionsReader, desired: None, context: PlanContext
    ) -> SubscriptionsObservation:
        del desired
        installation = context.installation_id
        catalog = reader.catalog(context.state, installation_id=installation)
        scope = context.options.scope
        if scope is not None:
            orgs = frozenset(o for key in scope if (o := _org_of_request(key)) is not None)
            subscribers = tuple(reader.accounts(orgs))
            named = _customers(subscribers)
            live = reader.subscriptions_of(sorted(named), installation_id=installation)
            return _observation(
                subscribers,
                live,
                named,
                catalog,
                read_at=context.now,
                installation_id=installation,
            )
        subscribers = tuple(reader.accounts(None))
        cursor = reader.cursor()
        interval = int(context.state.config.reconcile.full_resync_interval)
        due = cursor.full_resync_at is None or context.now - cursor.full_resync_at >= interval
        if not due:
            changes = reader.changes_since(cursor.position)
            if cursor.position is None and changes.position is None:
                # Resynced while there was no subscription event yet, and still none.
                changes = SubscriptionChanges((), None, full_resync=False)
            if not changes.full_resync:
                ours = _customers(subscribers)
                named = (
                    frozenset(changes.customer_ids) & ours
                    | _scheduled(subscribers)
                    | _unmirrored(subscribers, _declared(context))
                )
                live = reader.subscriptions_of(sorted(named), installation_id=installation)
                return _observation(
                    subscribers,
                    live,
                    named,
                    catalog,
                    read_at=context.now,
                    installation_id=installation,
                    cursor=cursor,
                    moved_to=changes.position if changes.position != cursor.position else None,
                )
        # The position is taken before listing, so a change made during the listing is read
        # from the events next time.
        start = reader.changes_since(None).position
        live = reader.all_subscriptions(installation_id=installation)
        return _observation(
            subscribers,
            live,
            _customers(subscribers),
            catalog,
            read_at=context.now,
            installation_id=installation,
            cursor=cursor,
            moved_to=start,
            resynced=True,
        )

    def plan(self, desired: None, observed: SubscriptionsObservation, context: PlanContext) -> Plan:
        plan = subscriptions_plan(desired, observed.observed, context)
        installation = context.installation_id
        records = {
            sub.stripe_id: sub
            for bundle in observed.observed.accounts
            for sub in bundle.subscriptions
        }
        steps = tuple(_with_installation(step, installation) for step in plan.steps)
        restores = [
            _with_record(step, records, observed.read_at, installation) for step in plan.restores
        ]
        cursor = _cursor_step(observed, context)
        if cursor is not None:
            restores.append(cursor)
        unknown = _unknown_warning(observed, plan)
        return dataclasses.replace(
            plan,
            steps=steps,
            restores=tuple(restores),
            fingerprint=_fingerprint(plan.fingerprint, observed),
            warnings=plan.warnings if unknown is None else (*plan.warnings, unknown),
        )

    def annotate(self, plan: Plan, reader: SubscriptionsReader) -> Plan:
        del reader
        return plan

    def desired_fields(self, desired: None) -> dict[str, dict[str, Any]]:
        # What was applied is the store's mirror (written by the mirror restores), not the
        # shared last-applied table.
        del desired
        return {}

    def scope_of(self, key: str) -> str | None:
        """Every key of the domain (`subscription/<org>`, a replaced subscription's
        `subscription/<org>/<sub_id>`, `subscription_schedule/<org>`,
        `subscription_mirror/<org>/<sub_id>`) and the request keys `customer/<org>` and
        `subscription/<org>` belong to `customer/<org>` (DESIGN §14)."""
        org_id = org_id_of_key(key) or org_id_of_step_key(key)
        return None if org_id is None else customer_key(org_id)


#: How many org ids the warning about unknown orgs names.
_UNKNOWN_SHOWN: Final = 5


def _unknown_warning(observed: SubscriptionsObservation, plan: Plan) -> str | None:
    """The live subscriptions of ours that no account in the store holds (tester T1 finding
    10: after a lost store they are invisible until the host re-PUTs their orgs): how many,
    for which orgs, and that the plan (and the mass-change guard's population) leaves them
    out."""
    if not observed.unknown:
        return None
    orgs = sorted({org for org, _ in observed.unknown})
    shown = ", ".join(orgs[:_UNKNOWN_SHOWN]) + (", ..." if len(orgs) > _UNKNOWN_SHOWN else "")
    count = len(observed.unknown)
    text = (
        f"{count:,} live subscription{'' if count == 1 else 's'} of ours for orgs the store "
        f"does not know: re-PUT those orgs ({shown}); nothing is planned for them"
    )
    if plan.population is not None:
        text += (
            f", and the {plan.population.count:,} live subscriptions the mass-change guard "
            "weighs leave them out"
        )
    return text


def _org_of_request(key: str) -> str | None:
    return org_id_of_key(key) or org_id_of_step_key(key)


def _customers(subscribers: Iterable[StoredSubscriber]) -> frozenset[str]:
    return frozenset(s.customer_id for s in subscribers if s.customer_id)


def _declared(context: PlanContext) -> frozenset[str]:
    """The org ids of contract customers declaring a plan (their intent is the YAML's)."""
    return frozenset(c.org_id for c in context.state.customers if c.plan is not None)


def _unmirrored(
    subscribers: Iterable[StoredSubscriber], declared: frozenset[str] = frozenset()
) -> frozenset[str]:
    """Customers of active accounts whose intent asks for a subscription while the store
    mirrors none of theirs (a new account, a customer linked since the last full resync, a
    lost store): read from Stripe before anything is created, so a live one of ours there is
    found and adopted, never a second one created beside it (an empty mirror says nothing)."""
    return frozenset(
        s.customer_id
        for s in subscribers
        if s.customer_id
        and not s.mirrored
        and s.facts.account.state == "active"
        and (
            s.facts.org_id in declared
            or (
                (intent := s.facts.intent) is not None
                and bool(intent.plan)
                and intent.cancel is None
            )
        )
    )


def _scheduled(subscribers: Iterable[StoredSubscriber]) -> frozenset[str]:
    """Customers with a live mirrored subscription on a schedule: schedules are not
    mirrored, so they are read from Stripe on every pass (few accounts have one)."""
    return frozenset(
        s.customer_id
        for s in subscribers
        if s.customer_id and any(r.live and r.schedule_id for r in s.mirrored)
    )


def _observation(
    subscribers: Sequence[StoredSubscriber],
    live: LiveSubscriptions,
    fresh_customers: frozenset[str],
    catalog: PlanCatalog,
    *,
    read_at: int,
    installation_id: str,
    cursor: CursorState | None = None,
    moved_to: EventPosition | None = None,
    resynced: bool = False,
) -> SubscriptionsObservation:
    subs: dict[str, list[SubscriptionRecord]] = {}
    for sub in live.subscriptions:
        subs.setdefault(sub.customer_id, []).append(sub)
    schedules: dict[str, list[ScheduleRecord]] = {}
    for schedule in live.schedules:
        schedules.setdefault(schedule.customer_id, []).append(schedule)
    bundles: list[AccountSubscriptions] = []
    fresh: set[str] = set()
    held = {s.customer_id for s in subscribers if s.customer_id}
    unknown = tuple(
        sorted(
            (sub.owner.org_id, sub.stripe_id)
            for sub in live.subscriptions
            if sub.live
            and sub.owner is not None
            and sub.owner.installation_id == installation_id
            and sub.customer_id not in held
        )
    )
    for subscriber in subscribers:
        facts = subscriber.facts
        customer = subscriber.customer_id
        if customer is None:
            bundles.append(facts)
        elif customer in fresh_customers:
            fresh.add(facts.org_id)
            seen = tuple(subs.get(customer, ()))
            bundles.append(
                dataclasses.replace(
                    facts,
                    subscriptions=seen,
                    schedules=tuple(schedules.get(customer, ())),
                    mirrors=_current_mirrors(subscriber, seen),
                )
            )
        else:
            bundles.append(dataclasses.replace(facts, subscriptions=subscriber.mirrored))
    return SubscriptionsObservation(
        observed=SubscriptionsObserved(accounts=tuple(bundles), catalog=catalog),
        cursor=cursor or CursorState(),
        moved_to=moved_to,
        resynced=resynced,
        read_at=read_at,
        fresh=frozenset(fresh),
        unknown=unknown,
    )


def _current_mirrors(
    subscriber: StoredSubscriber, seen: Sequence[SubscriptionRecord]
) -> tuple[SubscriptionMirror, ...]:
    """The mirrors still equal to what Stripe shows: one whose subscription Stripe shows
    with other facts is left out, so the rules mirror it again (the whole record, not only
    the facts the rules compare: the mirror stands in for Stripe between full resyncs)."""
    mirrored = {r.stripe_id: r for r in subscriber.mirrored}
    stale = {
        sub.stripe_id
        for sub in seen
        if sub.stripe_id in mirrored and _comparable(sub) != _comparable(mirrored[sub.stripe_id])
    }
    return tuple(m for m in subscriber.facts.mirrors if m.stripe_subscription_id not in stale)


def _comparable(record: SubscriptionRecord) -> SubscriptionRecord:
    """The facts the store's mirror holds (it keeps no trial end behavior nor cancellation
    reason)."""
    return dataclasses.replace(record, trial_missing_payment_method=None, cancellation_reason=None)


def _with_installation(step: Step, installation: str) -> Step:
    return dataclasses.replace(step, params={**step.params, "installation_id": installation})


def _with_record(
    step: Step, records: Mapping[str, SubscriptionRecord], read_at: int, installation: str
) -> Step:
    record = None if step.stripe_id is None else records.get(step.stripe_id)
    if step.kind != MIRROR_STEP or record is None:
        return step
    params = {
        **step.params,
        "record": record_to_json(record),
        "observed_at": read_at,
        "installation_id": installation,
    }
    return dataclasses.replace(step, params=params)


def _cursor_step(observed: SubscriptionsObservation, context: PlanContext) -> Step | None:
    position = observed.moved_to
    if not observed.resynced and position is None:
        return None
    params: dict[str, Any] = {
        "event_id": None if position is None else position.event_id,
        "created": None if position is None else position.created,
        "full_resync_at": context.now if observed.resynced else None,
    }
    return Step(
        action=Action.UPDATE,
        kind=CURSOR_STEP,
        key=CURSOR_KEY,
        reason=Reason.BOOKKEEPING,
        params=params,
        idempotency_key="br:"
        + digest(
            context.key_salt,
            context.installation_id,
            "subscriptions",
            "cursor",
            canonical_json(params),
        ),
    )


def _fingerprint(rules: str, observed: SubscriptionsObservation) -> str:
    """The rules' digest of the accounts, Stripe and the catalog, with the cursor."""
    cursor = (observed.cursor, observed.moved_to, observed.resynced)
    return hashlib.sha256(f"{rules}\x1d{cursor!r}".encode()).hexdigest()[:32]


# --- a subscription record in a step's parameters (JSON) -------------------------------------


def record_to_json(record: SubscriptionRecord) -> dict[str, Any]:
    """`record` as plain JSON values (the mirror restore carries it to the store)."""
    values = dataclasses.asdict(record)
    values["items"] = [dict(item) for item in values["items"]]
    values["metadata"] = dict(record.metadata)
    interval = record.pending_invoice_item_interval
    values["pending_invoice_item_interval"] = None if interval is None else list(interval)
    return values


def record_from_json(values: Mapping[str, Any]) -> SubscriptionRecord:
    """The record `record_to_json` wrote (keys a later version dropped are ignored)."""
    known = {f.name for f in dataclasses.fields(SubscriptionRecord)}
    data = {k: v for k, v in values.items() if k in known}
    item_fields = {f.name for f in dataclasses.fields(ItemRecord)}
    data["items"] = tuple(
        ItemRecord(**{k: v for k, v in item.items() if k in item_fields})
        for item in data.get("items") or ()
    )
    owner = data.get("owner")
    if owner is not None:
        owner_fields = {f.name for f in dataclasses.fields(SubscriptionOwner)}
        data["owner"] = SubscriptionOwner(**{k: v for k, v in owner.items() if k in owner_fields})
    interval = data.get("pending_invoice_item_interval")
    data["pending_invoice_item_interval"] = (
        None if interval is None else (str(interval[0]), int(interval[1]))
    )
    data["metadata"] = dict(data.get("metadata") or {})
    return SubscriptionRecord(**data)

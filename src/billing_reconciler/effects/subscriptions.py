"""The subscriptions domain's I/O: `SubscriptionsIO` reads what `domains.subscriptions` asks
for (the store's accounts with their intents, seats, plan history and mirrored subscriptions,
the catalog's last-applied price ids, the events cursor; Stripe's subscriptions and schedules
through the gateway), and `EXECUTORS` carry out its step kinds (`params["op"]` names the
call, DESIGN §16):

- `subscription`: create (`POST /v1/subscriptions`, under the key derived from installation,
  org, plan and intent), update (quantities with `create_prorations`, automatic tax, the
  monthly billing of a yearly plan's seats, the `plan` marker, the cancel at trial end) and
  cancel (`DELETE`, `invoice_now` and `prorate` as the step says);
- `subscription_schedule`: create (`from_subscription`, then the phases and our marker: two
  calls, Stripe takes nothing else with `from_subscription`) and update (the phases); a run
  that dies between the two leaves an unmarked schedule, which the reader recognises as the
  first half of our write (`claim_half_written`) so the next pass finishes it;
- `subscription_mirror`: store only: the subscription as read, observed at the time of the
  read; the plan history (an `active`/`trialing` plan opens a period, a plan the
  subscription moved off or an ended subscription closes it); the plan's on-start credits
  once per (account, plan) ever (`on_start_grant_id`, source `system.awarded`); the intent
  moved on when its pending change took effect, or ended when its subscription ended as the
  account asked;
- `subscription_cursor`: store only: the events cursor and the time of the last full resync.

No Stripe step writes the store: what it did is read back by the next pass and mirrored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal, cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from billing_reconciler.apply import Done, StepExecutor, resolve_refs
from billing_reconciler.desired.state import DesiredState
from billing_reconciler.domains.customer_types import CursorState, EventPosition
from billing_reconciler.domains.subscription_rules import (
    OP_CANCEL,
    OP_CREATE,
    OP_SCHEDULE_CREATE,
    OP_SCHEDULE_UPDATE,
    OP_UPDATE,
    REPLACES,
)
from billing_reconciler.domains.subscription_types import (
    AccountSubscriptions,
    CancelRequest,
    PlanCatalog,
    SubscriptionAccount,
    SubscriptionIntent,
    SubscriptionMirror,
    plan_catalog,
)
from billing_reconciler.domains.subscriptions import (
    CURSOR_STEP,
    MIRROR_STEP,
    NAME,
    SCHEDULE_STEP,
    SUBSCRIPTION_STEP,
    LiveSubscriptions,
    StoredSubscriber,
    SubscriptionChanges,
    SubscriptionsDomain,
    record_from_json,
)
from billing_reconciler.effects.catalog import superseding_price_keys
from billing_reconciler.model_subscriptions import (
    ENTITLED_STATUSES,
    META_PLAN,
    PendingChange,
    PhaseItem,
    ScheduleRecord,
    SubscriptionOwner,
    SubscriptionRecord,
    on_start_grant_id,
)
from billing_reconciler.planning.plan import Step, digest
from billing_reconciler.store import (
    AccountRecord,
    AccountRepository,
    DomainCursorRepository,
    IntentRepository,
    LastAppliedRepository,
    LedgerRepository,
    MemberRepository,
    MirroredSubscription,
    PlanHistoryRepository,
    PlanRepository,
    Store,
    SubscriptionMirrorRepository,
    UpsertResult,
)
from billing_reconciler.store import SubscriptionIntent as StoredIntent
from billing_reconciler.store.ledger import SOURCE_AWARDED
from billing_reconciler.store.subscriptions import IntentSource, IntentState
from billing_reconciler.store.tables import BillingAccountModel, SubscriptionIntentModel
from billing_reconciler.stripe_gateway import StripeGateway, WriteResult
from billing_reconciler.stripe_gateway.customers import EventCursor
from billing_reconciler.stripe_gateway.subscriptions import (
    ItemChange,
    PhaseSpec,
    cancel_subscription,
    create_schedule_from_subscription,
    create_subscription,
    observe_subscriptions,
    subscription_events_since,
    subscriptions_of_customer,
    update_schedule,
    update_subscription,
)

PAGE: Final = 1000
_DOMAIN = SubscriptionsDomain()
_ENDED: Final = frozenset({"canceled", "incomplete_expired"})


# --------------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------------


class SubscriptionsIO:
    """The subscriptions domain's reader (`domains.subscriptions.SubscriptionsReader`)."""

    def __init__(self, gateway: StripeGateway, store: Store) -> None:
        self.gateway = gateway
        self.store = store

    def accounts(self, org_ids: frozenset[str] | None) -> Sequence[StoredSubscriber]:
        """The active accounts, and the disabled ones with a current intent (disabled through
        the API, or a deleted org's: its live subscription is cancelled, never left billing;
        see `api.organizations`)."""
        with self.store.session() as session:
            repository = AccountRepository(session)
            ending = _ending_accounts(session, org_ids)
            if org_ids is not None:
                found = [repository.active_for_org(org) for org in sorted(org_ids)]
                return _subscribers(session, [r for r in found if r is not None] + ending)
            subscribers: list[StoredSubscriber] = []
            after: str | None = None
            while page := repository.list_active(after_id=after, limit=PAGE):
                subscribers.extend(_subscribers(session, page))
                after = page[-1].id
            subscribers.extend(_subscribers(session, ending))
            return subscribers

    def catalog(self, state: DesiredState, *, installation_id: str) -> PlanCatalog:
        """The desired plans with the Stripe ids of the prices the catalog last applied."""
        with self.store.session() as session:
            entries = LastAppliedRepository(session).for_installation(installation_id)
        price_ids = {
            key: entry.stripe_id
            for key, entry in entries.items()
            if key.startswith("price/") and entry.stripe_id
        }
        replacing = superseding_price_keys(state, entries, installation_id=installation_id)
        return plan_catalog(state, price_ids, replacing=replacing)

    def cursor(self) -> CursorState:
        with self.store.session() as session:
            record = DomainCursorRepository(session).get(NAME)
        position = None
        if record.last_event_id is not None and record.last_event_created is not None:
            position = EventPosition(record.last_event_id, _epoch(record.last_event_created))
        resynced = record.full_resync_at
        return CursorState(position, None if resynced is None else _epoch(resynced))

    def changes_since(self, position: EventPosition | None) -> SubscriptionChanges:
        cursor = None if position is None else EventCursor(position.event_id, position.created)
        events = subscription_events_since(self.gateway, cursor)
        moved = events.cursor
        return SubscriptionChanges(
            customer_ids=events.customer_ids,
            position=None if moved is None else EventPosition(moved.event_id, moved.created),
            full_resync=events.full_resync,
        )

    def all_subscriptions(self, *, installation_id: str) -> LiveSubscriptions:
        observed = observe_subscriptions(self.gateway, installation_id=installation_id)
        return _live(observed.subscriptions, observed.schedules, installation_id)

    def subscriptions_of(
        self, customer_ids: Iterable[str], *, installation_id: str
    ) -> LiveSubscriptions:
        subscriptions: list[SubscriptionRecord] = []
        schedules: list[ScheduleRecord] = []
        for customer in customer_ids:
            observed = subscriptions_of_customer(
                self.gateway, customer, installation_id=installation_id
            )
            subscriptions.extend(observed.subscriptions)
            schedules.extend(observed.schedules)
        return _live(subscriptions, schedules, installation_id)


def open_reader(gateway: StripeGateway, store: Store) -> SubscriptionsIO:
    return SubscriptionsIO(gateway=gateway, store=store)


def _live(
    subscriptions: Sequence[SubscriptionRecord],
    schedules: Sequence[ScheduleRecord],
    installation_id: str,
) -> LiveSubscriptions:
    ours = {
        sub.stripe_id: sub
        for sub in subscriptions
        if sub.owner is not None and sub.owner.installation_id == installation_id
    }
    return LiveSubscriptions(
        tuple(subscriptions), tuple(claim_half_written(s, ours) for s in schedules)
    )


def claim_half_written(
    schedule: ScheduleRecord, ours: Mapping[str, SubscriptionRecord]
) -> ScheduleRecord:
    """`schedule` with our subscription's marker when it is the first half of our own
    two-call schedule write (`ScheduleExecutor`: `from_subscription`, then the phases and the
    marker) whose second half never happened (a crash, a 500, a lost connection): in force
    on a subscription of ours, unmarked and without any metadata (Stripe takes none with
    `from_subscription`), `end_behavior: release`, and its one phase exactly the copy
    `from_subscription` makes (the subscription's items and quantities, its current period,
    no phase metadata). Such a schedule changes nothing (at its end it releases the
    subscription as it was), so whoever made it, finishing it as ours is what our write would
    have done; the next pass writes its phases and marker, never a second schedule (which
    Stripe refuses on a subscription that has one). Anything else (a second phase, other
    settings, metadata) is someone's change: left as it is (foreign)."""
    sub = ours.get(schedule.subscription_id or "")
    if sub is None or sub.owner is None or schedule.owner is not None or schedule.metadata:
        return schedule
    if not schedule.in_force or schedule.end_behavior != "release" or len(schedule.phases) != 1:
        return schedule
    [phase] = schedule.phases
    copied = tuple(sorted((i.price_id, i.quantity) for i in phase.items)) == tuple(
        sorted((i.price_id, i.quantity) for i in sub.items)
    )
    if (
        not copied
        or phase.plan is not None
        or phase.start != sub.current_period_start
        or phase.end != sub.current_period_end
    ):
        return schedule
    return dataclasses.replace(schedule, owner=sub.owner)


def _ending_accounts(session: Session, org_ids: frozenset[str] | None) -> list[AccountRecord]:
    """Accounts not active (disabled through the API, or a deleted org's) with a current
    intent: their live subscription is cancelled, and the intent ends when it has (few: a
    disabled account drops out once its subscription is mirrored ended), found by one indexed
    query."""
    query = (
        select(SubscriptionIntentModel.account_id)
        .join(BillingAccountModel, BillingAccountModel.id == SubscriptionIntentModel.account_id)
        .where(
            SubscriptionIntentModel.state == IntentState.CURRENT.value,
            BillingAccountModel.state != "active",
        )
        .order_by(SubscriptionIntentModel.account_id)
    )
    if org_ids is not None:
        query = query.where(SubscriptionIntentModel.org_id.in_(sorted(org_ids)))
    repository = AccountRepository(session)
    found = (repository.get(account_id) for account_id in session.scalars(query))
    return [account for account in found if account is not None]


def _subscribers(session: Session, accounts: Sequence[AccountRecord]) -> list[StoredSubscriber]:
    """A page of accounts with their facts: 4 queries per 500 accounts."""
    if not accounts:
        return []
    ids = [a.id for a in accounts]
    intents = IntentRepository(session).current_for_accounts(ids)
    seats = MemberRepository(session).count_many([a.org_id for a in accounts])
    plans = PlanHistoryRepository(session).plans_had(ids)
    mirrors = SubscriptionMirrorRepository(session).for_accounts(ids)
    out: list[StoredSubscriber] = []
    for account in accounts:
        mirrored = mirrors.get(account.id, [])
        intent = intents.get(account.id)
        out.append(
            StoredSubscriber(
                facts=AccountSubscriptions(
                    account=SubscriptionAccount(
                        account_id=account.id,
                        org_id=account.org_id,
                        stripe_customer_id=account.stripe_customer_id,
                        currency=account.currency,
                        offline=account.offline,
                        state=account.state,
                        test_clock=account.test_clock,
                        due_in_days=account.due_in_days,
                    ),
                    intent=None if intent is None else rules_intent(intent),
                    seats=seats.get(account.org_id, 0),
                    plan_history=plans.get(account.id, frozenset()),
                    mirrors=tuple(_mirror(m) for m in mirrored),
                ),
                mirrored=tuple(m.record for m in mirrored),
            )
        )
    return out


def rules_intent(intent: StoredIntent) -> SubscriptionIntent:
    """The store's current intent as the rules read it."""
    cancel = None
    if intent.cancel_mode is not None:
        requested = intent.cancel_requested_at
        cancel = CancelRequest(
            immediate=intent.cancel_mode == "immediate",
            requested_at=0 if requested is None else _epoch(requested),
        )
    return SubscriptionIntent(
        intent_id=intent.id,
        plan=intent.plan,
        source=intent.source,
        pending_change=intent.pending_change,
        cancel=cancel,
        skip_trial=intent.skip_trial,
        cancel_after_trial=intent.cancel_after_trial,
        requested_by=intent.requested_by,
        created_at=_epoch(intent.created_at),
    )


def _mirror(stored: MirroredSubscription) -> SubscriptionMirror:
    record = stored.record
    return SubscriptionMirror(
        stripe_subscription_id=record.stripe_id,
        plan=stored.plan or "",
        status=record.status,
        seats=stored.seats,
        trial_end=record.trial_end,
        current_period_start=record.current_period_start,
        current_period_end=record.current_period_end,
        cancel_at=record.cancel_at,
        canceled_at=record.canceled_at,
        schedule_id=record.schedule_id,
    )


def _epoch(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _at(seconds: int | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


# --------------------------------------------------------------------------------------------
# Executors
# --------------------------------------------------------------------------------------------


def _write(result: Any) -> WriteResult:
    return WriteResult(
        stripe_id=result.record.stripe_id, request_id=result.request_id, replayed=result.replayed
    )


def _installation(step: Step) -> str:
    return str(step.params["installation_id"])


class SubscriptionExecutor:
    """A Stripe subscription: created, updated or cancelled at once."""

    def scope_of(self, key: str) -> str | None:
        """`customer/<org_id>`: a refused step holds back only its own org's (apply)."""
        return _DOMAIN.scope_of(key)

    def send(
        self, gateway: StripeGateway, step: Step, ids: Mapping[str, str]
    ) -> WriteResult | None:
        # A price migration's target may be a `Ref` to the catalog's price key.
        step = dataclasses.replace(step, params=resolve_refs(step.params, ids))
        if _waits_for_catalog(step.params):
            return WriteResult(stripe_id=step.stripe_id or "", request_id=None, replayed=False)
        op = step.params.get("op")
        if op == OP_CREATE:
            return _create(gateway, step)
        if op == OP_UPDATE:
            return _update(gateway, step)
        if op == OP_CANCEL:
            params = step.params
            return _write(
                cancel_subscription(
                    gateway,
                    subscription_id=str(params["subscription"]),
                    installation_id=_installation(step),
                    idempotency_key=step.idempotency_key,
                    invoice_now=bool(params.get("invoice_now")),
                    prorate=bool(params.get("prorate")),
                )
            )
        raise LookupError(f"unknown subscription op {op!r} in {step.key}")

    def record(self, session: Session, done: Done) -> None:
        # Read back and mirrored by the next pass (`subscription_mirror`).
        del session, done


def _waits_for_catalog(params: Mapping[str, Any]) -> bool:
    """A price migration planned before the catalog's apply, run while the catalog has not
    superseded the price yet (a `serve` pass between a desired/ change and the catalog's
    apply): its reference resolved to the very id it moves off. Nothing is sent; a later
    pass plans the move to the new id."""
    phases = params.get("phases") or ()
    items = [*(params.get("items") or ()), *(i for p in phases for i in p.get("items") or ())]
    return any(REPLACES in i and i.get("price") == i[REPLACES] for i in items)


def _owner(metadata: Mapping[str, str], step: Step) -> SubscriptionOwner:
    owner = SubscriptionOwner.from_metadata(metadata)
    if owner is None:
        raise ValueError(f"{step.key}: the step's metadata carries no subscription marker")
    return owner


def _create(gateway: StripeGateway, step: Step) -> WriteResult:
    params = step.params
    trial = ((params.get("trial_settings") or {}).get("end_behavior") or {}).get(
        "missing_payment_method"
    )
    interval = params.get("pending_invoice_item_interval")
    # `billing_mode` is not sent: flexible is the pinned API's default (the gateway's rule).
    return _write(
        create_subscription(
            gateway,
            customer_id=str(params["customer"]),
            owner=_owner(params["metadata"], step),
            items=[PhaseItem(str(i["price"]), i.get("quantity")) for i in params["items"]],
            currency=str(params["currency"]),
            idempotency_key=step.idempotency_key,
            automatic_tax=bool((params.get("automatic_tax") or {}).get("enabled")),
            collection_method=str(params.get("collection_method") or "charge_automatically"),
            days_until_due=params.get("days_until_due"),
            trial_period_days=params.get("trial_period_days"),
            trial_missing_payment_method=cast(
                "Literal['cancel', 'create_invoice', 'pause'] | None", trial
            ),
            cancel_at_period_end=bool(params.get("cancel_at_period_end")),
            pending_invoice_item_interval=(
                None
                if not interval
                else (str(interval["interval"]), int(interval.get("interval_count", 1)))
            ),
        )
    )


def _update(gateway: StripeGateway, step: Step) -> WriteResult:
    params = step.params
    extra: dict[str, Any] = {}
    if "pending_invoice_item_interval" in params:
        interval = params["pending_invoice_item_interval"]
        extra["pending_invoice_item_interval"] = (
            None
            if not interval
            else (str(interval["interval"]), int(interval.get("interval_count", 1)))
        )
    if "automatic_tax" in params:
        extra["automatic_tax"] = bool((params["automatic_tax"] or {}).get("enabled"))
    if "cancel_at" in params:
        # The cancel at trial end: the trial's end is the current period's end, so
        # `cancel_at_period_end` makes Stripe's `cancel_at` the trial end the rules compare.
        extra["cancel_at_period_end"] = True
    return _write(
        update_subscription(
            gateway,
            subscription_id=str(params["subscription"]),
            installation_id=_installation(step),
            idempotency_key=step.idempotency_key,
            items=[
                ItemChange(
                    item_id=str(i["id"]), price_id=i.get("price"), quantity=i.get("quantity")
                )
                for i in params.get("items") or ()
            ],
            proration_behavior=params.get("proration_behavior"),
            metadata=params.get("metadata"),
            **extra,
        )
    )


class ScheduleExecutor:
    """A subscription schedule: created from the subscription and phased, or re-phased."""

    def scope_of(self, key: str) -> str | None:
        """`customer/<org_id>`: a refused step holds back only its own org's (apply)."""
        return _DOMAIN.scope_of(key)

    def send(
        self, gateway: StripeGateway, step: Step, ids: Mapping[str, str]
    ) -> WriteResult | None:
        step = dataclasses.replace(step, params=resolve_refs(step.params, ids))
        if _waits_for_catalog(step.params):
            return WriteResult(stripe_id=step.stripe_id or "", request_id=None, replayed=False)
        params = step.params
        op = params.get("op")
        if op == OP_SCHEDULE_CREATE:
            created = create_schedule_from_subscription(
                gateway,
                subscription_id=str(params["from_subscription"]),
                installation_id=_installation(step),
                idempotency_key=digest(step.idempotency_key, "from_subscription"),
            )
            return _phased(gateway, step, created.record.stripe_id, digest(step.idempotency_key))
        if op == OP_SCHEDULE_UPDATE:
            return _phased(gateway, step, str(params["schedule"]), step.idempotency_key)
        raise LookupError(f"unknown subscription schedule op {op!r} in {step.key}")

    def record(self, session: Session, done: Done) -> None:
        del session, done


def _phased(gateway: StripeGateway, step: Step, schedule_id: str, key: str) -> WriteResult:
    params = step.params
    phases = [_phase(p) for p in params["phases"]]
    owner = _owner(params["metadata"], step)
    end_behavior = params.get("end_behavior") or "release"
    return _write(
        update_schedule(
            gateway,
            schedule_id=schedule_id,
            owner=owner,
            phases=phases,
            idempotency_key=key,
            end_behavior=cast("Literal['release', 'cancel']", end_behavior),
            proration_behavior=params.get("proration_behavior"),
        )
    )


def _phase(params: Mapping[str, Any]) -> PhaseSpec:
    """A phase as the rules spelled it (Stripe's parameter names). A last phase without an
    end lasts one interval of its prices (`duration` says the same; Stripe's default)."""
    metadata = dict(params.get("metadata") or {})
    plan = metadata.pop(META_PLAN, None)
    tax = params.get("automatic_tax")
    return PhaseSpec(
        items=tuple(PhaseItem(str(i["price"]), i.get("quantity")) for i in params["items"]),
        end=params.get("end_date"),
        start=params.get("start_date"),
        plan=plan,
        proration_behavior=params.get("proration_behavior"),
        collection_method=params.get("collection_method"),
        days_until_due=(params.get("invoice_settings") or {}).get("days_until_due"),
        automatic_tax=None if tax is None else bool(tax.get("enabled")),
        metadata=metadata or None,
        trial_end=params.get("trial_end"),
    )


class MirrorExecutor:
    """The store's mirror of one subscription, and the bookkeeping that follows from it."""

    def scope_of(self, key: str) -> str | None:
        """`customer/<org_id>`: a refused step holds back only its own org's (apply)."""
        return _DOMAIN.scope_of(key)

    def send(
        self, gateway: StripeGateway, step: Step, ids: Mapping[str, str]
    ) -> WriteResult | None:
        del gateway, step, ids
        return None

    def record(self, session: Session, done: Done) -> None:
        params = done.step.params
        if "record" not in params:
            raise ValueError(f"{done.step.key}: the mirror step carries no subscription record")
        record = record_from_json(params["record"])
        mirror = params.get("mirror") or {}
        account_id = str(params["account_id"])
        plan = str(mirror.get("plan") or "") or None
        observed_at = _at(int(params.get("observed_at") or done.plan.created_at))
        result = SubscriptionMirrorRepository(session).upsert(
            record,
            account_id=account_id,
            org_id=str(params["org_id"]),
            seats=mirror.get("seats"),
            plan=plan,
            observed_at=observed_at,
        )
        if result is UpsertResult.STALE:
            return  # a later observation is stored: what follows from this one is older
        assert observed_at is not None
        started = _plan_history(session, account_id, record, plan, observed_at)
        if started and plan is not None and _made_here(session, record):
            grant_on_start_credits(session, account_id=account_id, plan=plan)
        adopt = params.get("adopt")
        if adopt is not None:
            _adopt_intent(session, account_id, record, adopt)
        else:
            _move_intent(session, account_id, record, params.get("intent"))


def _made_here(session: Session, record: SubscriptionRecord) -> bool:
    """The subscription was created for an intent this store knows: one made for another
    store's (a lost store's, adopted) had its on-start credits granted by that store."""
    owner = record.owner
    return (
        owner is None
        or not owner.intent_id
        or IntentRepository(session).get(owner.intent_id) is not None
    )


def _adopt_intent(
    session: Session, account_id: str, record: SubscriptionRecord, adopt: Mapping[str, Any]
) -> None:
    """The account's intent becomes the adopted subscription's plan (`subscription_adoption.
    adoption_of`), under the intent id it was created for (a new id when this store has that
    one already), replacing the default plan's intent the plan saw; nothing when the
    account's intent changed since (the next pass plans again)."""
    intents = IntentRepository(session)
    current = intents.current(account_id)
    expected = adopt.get("replaces")
    if (current.id if current is not None else None) != expected:
        return
    wanted = str(adopt["intent_id"])
    intent_id = None if intents.get(wanted) is not None else wanted
    intents.replace(
        account_id,
        plan=str(adopt["plan"]),
        source=IntentSource.SUBSCRIBE.value,
        requested_by=f"adopted {record.stripe_id}",
        intent_id=intent_id,
        expected_intent_id=expected,
    )
    cancel = adopt.get("cancel")
    if cancel is not None:
        # The cancel at period end our schedule holds (a lost store's): kept, not dropped.
        at = cancel.get("effective_at")
        intents.request_cancel(
            account_id,
            immediate=bool(cancel.get("immediate")),
            effective_at=None if at is None else int(at),
            requested_by=f"adopted {record.stripe_id}",
        )
    pending = adopt.get("pending_change")
    if pending is not None and pending.get("plan"):
        # The plan change our schedule on it holds (a lost store's): kept, not dropped.
        at = pending.get("effective_at")
        intents.set_pending_change(
            account_id,
            PendingChange(str(pending["plan"]), None if at is None else int(at)),
            requested_by=f"adopted {record.stripe_id}",
        )


def _plan_history(
    session: Session,
    account_id: str,
    record: SubscriptionRecord,
    plan: str | None,
    observed_at: datetime,
) -> bool:
    """The plan periods `record` shows; True when a period of `plan` opened now (the plan
    started on the subscription: its on-start credits are due)."""
    periods = PlanHistoryRepository(session)
    if record.status in _ENDED:
        ended = _at(record.ended_at or record.canceled_at) or observed_at
        periods.end(account_id, stripe_subscription_id=record.stripe_id, ended_at=ended)
        return False
    if plan is None or record.status not in ENTITLED_STATUSES:
        return False
    started = _at(record.current_period_start or record.created) or observed_at
    for period in periods.history(account_id):
        if (
            period.stripe_subscription_id == record.stripe_id
            and period.ended_at is None
            and period.plan != plan
        ):
            # The subscription moved to another plan (a schedule's phase): that one ended.
            periods.end(
                account_id,
                stripe_subscription_id=record.stripe_id,
                ended_at=started,
                plan=period.plan,
            )
    _, opened = periods.start(
        account_id,
        plan,
        stripe_subscription_id=record.stripe_id,
        started_at=started,
        trialed=record.status == "trialing",
    )
    return opened


def grant_on_start_credits(session: Session, *, account_id: str, plan: str) -> bool:
    """The plan's `on_start_credits`, once per (account, plan) ever (the ledger id is derived
    from the pair); True when granted now."""
    row = PlanRepository(session).get(plan)
    amount = 0 if row is None else row.on_start_credits
    if amount <= 0:
        return False
    ledger = LedgerRepository(session)
    grant_id = on_start_grant_id(account_id, plan)
    if ledger.get(grant_id) is not None:
        return False
    ledger.credit(
        account_id,
        id=grant_id,
        amount=amount,
        source=SOURCE_AWARDED,
        description=f"on-start credits of plan {plan}",
    )
    return True


def _move_intent(
    session: Session,
    account_id: str,
    record: SubscriptionRecord,
    moved: Mapping[str, Any] | None,
) -> None:
    intents = IntentRepository(session)
    current = intents.current(account_id)
    if current is None:
        return
    pending = current.pending_change
    if moved is not None:
        if (
            current.id == moved.get("intent_id")
            and pending is not None
            and pending.reason == "change"
            and pending.plan is not None
            and pending.plan.lower() == str(moved.get("plan"))
        ):
            intents.apply_pending_change(account_id)
        return
    asked = current.cancel_requested or (pending is not None and pending.reason == "cancel")
    owner = record.owner
    if record.status not in _ENDED or owner is None or owner.intent_id != current.id:
        return
    if asked or _disabled(session, account_id):
        intents.end(account_id)  # it ended as the account asked, or as its disable does


def _disabled(session: Session, account_id: str) -> bool:
    account = AccountRepository(session).get(account_id)
    return account is not None and account.state != "active"


class CursorExecutor:
    """The events cursor: where the next incremental observation starts."""

    def send(
        self, gateway: StripeGateway, step: Step, ids: Mapping[str, str]
    ) -> WriteResult | None:
        del gateway, step, ids
        return None

    def record(self, session: Session, done: Done) -> None:
        params = done.step.params
        created = params.get("created")
        resynced = params.get("full_resync_at")
        DomainCursorRepository(session).save(
            NAME,
            last_event_id=params.get("event_id"),
            last_event_created=None if created is None else datetime.fromtimestamp(created, UTC),
            full_resync_at=None if resynced is None else datetime.fromtimestamp(resynced, UTC),
        )


EXECUTORS: Mapping[str, StepExecutor] = {
    SUBSCRIPTION_STEP: SubscriptionExecutor(),
    SCHEDULE_STEP: ScheduleExecutor(),
    MIRROR_STEP: MirrorExecutor(),
    CURSOR_STEP: CursorExecutor(),
}

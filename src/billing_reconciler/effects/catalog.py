"""The catalog's I/O: `CatalogIO` reads what `domains.catalog_domain` asks for, and
`EXECUTORS` carry out each catalog step kind (Stripe through the gateway, the store through
its repositories).

- Stripe-backed kinds (meters, features, products, prices, attachments) send one gateway
  `write` and record the fields we applied as last-applied state;
- plan records exist only in the store: nothing is sent, the plan row is written;
- a last-applied record (`RECORD_KIND`, a restore for a live object of ours that already
  equals desired in a new or lost store) sends nothing either: the object's last-applied
  state is written, as its kind's own step would have written it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.orm import Session

from billing_reconciler.apply import Done, StepExecutor, record_last_applied, resolve_refs, wire_key
from billing_reconciler.desired.state import DesiredState
from billing_reconciler.domains.catalog import desired_catalog
from billing_reconciler.domains.catalog_domain import RECORD_KIND
from billing_reconciler.domains.price_impact import (
    MigrationHold,
    PriceAmounts,
    PriceUsage,
    usage_of,
)
from billing_reconciler.model import Catalog, Kind, PlanRecord, ProductRecord, object_key
from billing_reconciler.planning.fields import (
    PRICE_IMMUTABLE,
    PRICE_IMMUTABLE_NESTED,
    comparable_fields,
)
from billing_reconciler.planning.plan import Action, Step
from billing_reconciler.store import (
    IntentRepository,
    LastApplied,
    LastAppliedRepository,
    PlanRepository,
    PlanRow,
    PlanState,
    Store,
    SubscriptionMirrorRepository,
)
from billing_reconciler.stripe_gateway import (
    Operation,
    StripeGateway,
    WriteResult,
    observe_catalog,
    write,
)


@dataclass(frozen=True, slots=True)
class CatalogIO:
    """The catalog's reader (`domains.catalog_domain.CatalogReader`)."""

    gateway: StripeGateway
    store: Store

    def live_catalog(
        self, *, products_with_features: Callable[[Sequence[ProductRecord]], Iterable[str]]
    ) -> Catalog:
        return observe_catalog(self.gateway, products_with_features=products_with_features)

    def plan_records(self) -> tuple[PlanRecord, ...]:
        with self.store.session() as session:
            return tuple(_plan_record(row) for row in PlanRepository(session).list_all())

    def price_usage(
        self, price_ids: Sequence[str], *, installation_id: str
    ) -> Mapping[str, PriceUsage]:
        """From the store: the mirror of the live subscriptions (as last observed by the
        subscriptions domain), what could hold each one's migration back (its intent's
        pending change or cancel, a schedule on it) and the prices' last-applied amounts. No
        Stripe call."""
        with self.store.session() as session:
            mirror = SubscriptionMirrorRepository(session)
            intents = IntentRepository(session)
            subscriptions: list[tuple[str, list[tuple[str, int | None]]]] = []
            holds: list[MigrationHold] = []
            after: str | None = None
            while page := mirror.list_live(after_stripe_id=after, limit=1000):
                subscriptions.extend(
                    (m.record.currency, [(i.price_id, i.quantity) for i in m.record.items])
                    for m in page
                )
                current = intents.current_for_accounts({m.account_id for m in page})
                for m in page:
                    intent = current.get(m.account_id)
                    pending = None if intent is None else intent.pending_change
                    cancelling = pending is not None and pending.reason == "cancel"
                    holds.append(
                        MigrationHold(
                            pending_change=pending is not None and not cancelling,
                            cancel=cancelling or (intent is not None and intent.cancel_requested),
                            scheduled=m.record.schedule_id is not None,
                        )
                    )
                after = page[-1].stripe_id
            entries = LastAppliedRepository(session).for_installation(installation_id).values()
        amounts = {
            e.stripe_id: _amounts(e.fields)
            for e in entries
            if e.kind == Kind.PRICE.value and e.stripe_id
        }
        return {
            price_id: dataclasses.replace(usage, amounts=amounts.get(price_id))
            for price_id, usage in usage_of(price_ids, subscriptions, holds).items()
        }


def _amounts(fields: Mapping[str, Any]) -> PriceAmounts | None:
    """A last-applied price's unit amounts per currency and interval (None: tiered)."""
    if fields.get("billing_scheme") == "tiered" or fields.get("unit_amount") is None:
        return None
    amounts = {str(fields.get("currency", "")).lower(): int(fields["unit_amount"])}
    for currency, option in (fields.get("currency_options") or {}).items():
        if isinstance(option, Mapping) and isinstance(option.get("unit_amount"), int):
            amounts[currency.lower()] = int(option["unit_amount"])
    recurring = fields.get("recurring") or {}
    return PriceAmounts(
        amounts=amounts,
        interval=recurring.get("interval"),
        interval_count=int(recurring.get("interval_count") or 1),
    )


def superseding_price_keys(
    state: DesiredState, applied: Mapping[str, LastApplied], *, installation_id: str
) -> frozenset[str]:
    """The price keys whose last-applied price the catalog's next apply supersedes: their
    desired immutable fields (`planning.fields.PRICE_IMMUTABLE`, `recurring`) differ from the
    last-applied ones, or a currency option is removed. A protected price is never
    superseded (the catalog refuses the plan), so it is not among them. What the
    subscriptions domain plans a price migration to (a `Ref` to the key, resolved when the
    migration runs, after the catalog's apply)."""
    keys = set()
    for price in desired_catalog(state, installation_id=installation_id).prices:
        entry = applied.get(price.key)
        if entry is None or not entry.stripe_id or price.protect:
            continue
        want = comparable_fields(price)
        have = entry.fields
        immutable = (*PRICE_IMMUTABLE, *PRICE_IMMUTABLE_NESTED)
        had, wanted = have.get("currency_options"), want.get("currency_options")
        removed = set(had if isinstance(had, dict) else {}) - set(
            wanted if isinstance(wanted, dict) else {}
        )
        if removed or any(want.get(name) != have.get(name) for name in immutable):
            keys.add(price.key)
    return frozenset(keys)


def open_reader(gateway: StripeGateway, store: Store) -> CatalogIO:
    return CatalogIO(gateway=gateway, store=store)


class StripeObjectExecutor:
    """A catalog object in Stripe: one write, then its last-applied state."""

    def send(
        self, gateway: StripeGateway, step: Step, ids: Mapping[str, str]
    ) -> WriteResult | None:
        kind = Kind(step.kind)
        operation = _operation(step, kind)
        if operation is None:
            return WriteResult(stripe_id=step.stripe_id or "", request_id=None, replayed=False)
        params = resolve_refs(step.params, ids)
        if operation in (Operation.DEACTIVATE, Operation.REACTIVATE, Operation.DELETE):
            params = {}
        target = step.stripe_id
        if target is None and step.action is Action.UPDATE and step.parent is not None:
            target = ids.get(step.parent.key)
        parent = ids.get(step.parent.key) if step.parent is not None else None
        return write(
            gateway,
            kind=kind,
            operation=operation,
            params=params,
            idempotency_key=wire_key(step, params, parent),
            target_id=target,
            parent_id=parent,
        )

    def record(self, session: Session, done: Done) -> None:
        record_last_applied(session, done)


class PlanRecordExecutor:
    """A plan record: no Stripe object, a row of the store."""

    def send(
        self, gateway: StripeGateway, step: Step, ids: Mapping[str, str]
    ) -> WriteResult | None:
        del gateway, step, ids
        return None

    def record(self, session: Session, done: Done) -> None:
        _record_plan(PlanRepository(session), done.step)


class LastAppliedRecordExecutor:
    """The last-applied state of an object Stripe already holds as desired: no Stripe call."""

    def send(
        self, gateway: StripeGateway, step: Step, ids: Mapping[str, str]
    ) -> WriteResult | None:
        del gateway, step, ids
        return None

    def record(self, session: Session, done: Done) -> None:
        # Recorded under the object's own kind (the host API's catalog reads go by it).
        kind = Kind(str(done.step.params["object"]))
        record_last_applied(session, replace(done, step=replace(done.step, kind=kind)))


_STRIPE_OBJECT = StripeObjectExecutor()
EXECUTORS: Mapping[str, StepExecutor] = {
    **{kind.value: _STRIPE_OBJECT for kind in Kind if kind is not Kind.PLAN},
    Kind.PLAN.value: PlanRecordExecutor(),
    RECORD_KIND: LastAppliedRecordExecutor(),
}


def _operation(step: Step, kind: Kind) -> Operation | None:
    """The Stripe operation a step performs (None: nothing to send)."""
    match step.action:
        case Action.CREATE | Action.SUPERSEDE:
            return Operation.CREATE
        case Action.UPDATE:
            return Operation.UPDATE
        case Action.ADOPT:
            # A meter carries no marker to stamp: adopting it only aligns its display name.
            if kind is Kind.METER:
                return Operation.UPDATE if step.params else None
            return Operation.UPDATE
        case Action.REACTIVATE:
            return Operation.REACTIVATE if kind is Kind.METER else Operation.UPDATE
        case Action.ARCHIVE:
            if kind is Kind.METER:
                return Operation.DEACTIVATE
            if kind is Kind.PRODUCT_FEATURE:
                return Operation.DELETE
            return Operation.UPDATE


def _record_plan(repository: PlanRepository, step: Step) -> None:
    name = step.key.split("/", 1)[1]
    if step.action is Action.ARCHIVE:
        repository.archive(name)
        return
    fields = step.params
    repository.upsert(
        PlanRow(
            name=name,
            title=str(fields["title"]),
            description=fields.get("description"),
            interval=fields.get("interval"),
            trial_days=int(fields.get("trial_days") or 0),
            on_start_credits=int(fields.get("on_start_credits") or 0),
            products=[str(p).split("/", 1)[1] for p in fields.get("products", [])],
            metadata=dict(fields.get("metadata") or {}),
        )
    )


def _plan_record(row: Any) -> PlanRecord:
    return PlanRecord(
        key=object_key(Kind.PLAN, row.name),
        name=row.name,
        title=row.title,
        description=row.description,
        interval=row.interval,
        product_keys=tuple(object_key(Kind.PRODUCT, p) for p in row.products),
        trial_days=row.trial_days,
        on_start_credits=row.on_start_credits,
        metadata=dict(row.metadata),
        active=row.state is PlanState.ACTIVE,
    )

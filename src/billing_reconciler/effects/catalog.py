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

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.orm import Session

from billing_reconciler.apply import Done, StepExecutor, record_last_applied, resolve_refs, wire_key
from billing_reconciler.domains.catalog_domain import RECORD_KIND
from billing_reconciler.model import Catalog, Kind, PlanRecord, ProductRecord, object_key
from billing_reconciler.planning.plan import Action, Step
from billing_reconciler.store import PlanRepository, PlanRow, PlanState, Store
from billing_reconciler.stripe_gateway import (
    Operation,
    StripeGateway,
    WriteResult,
    count_active_subscriptions,
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

    def active_subscriptions(self, price_id: str) -> int | None:
        return count_active_subscriptions(self.gateway, price_id)


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

"""The meter-events part's I/O: `MeterOutboxIO` reads the outbox's sums for
`domains.credit_meters`, and `EXECUTORS` carries out its one step kind:

- `meter_events`: send one account's pending meter events through the gateway
  (`stripe_gateway.meter_events`, paced by the gateway's rate budget), each claimed and
  marked sent right after its send (`store.meter_outbox.drain`); with aggregation, the
  closed windows' rows are first formed into aggregates (`form_aggregates`), which are then
  sent the same way. An event Stripe refuses for good is marked refused (kept, reported); one
  whose outcome is unknown fails the step and stays pending for the next pass, to be sent
  again under the same identifier and idempotency key.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy.orm import Session

from billing_reconciler.apply import Done, StepExecutor
from billing_reconciler.domains.credit_meters import (
    GRACE_SECONDS,
    METER_EVENTS_STEP,
    PART,
    MeterPart,
    OutboxAccount,
    PendingAggregates,
    PendingMeterEvents,
    RefusedMeterEvents,
    aggregate_identifier,
    event_idempotency_key,
)
from billing_reconciler.planning.plan import DomainFact, Step
from billing_reconciler.store import Store
from billing_reconciler.store.meter_outbox import (
    MeterOutboxRepository,
    PendingEvent,
    SendOutcome,
    drain,
    form_aggregates,
)
from billing_reconciler.stripe_gateway import PermanentStripeError, StripeGateway, WriteResult
from billing_reconciler.stripe_gateway.meter_events import send_meter_event

__all__ = ["EXECUTORS", "PART", "MeterEventsExecutor", "MeterOutboxIO", "facts", "open_reader"]

_PART: Final = MeterPart()
#: Stripe refuses meter events older than 35 days; an aggregate pushed inside that range is
#: stamped this far inside it (its send follows its forming within seconds).
STRIPE_MAX_AGE_SECONDS: Final = 35 * 86400
STAMP_MARGIN_SECONDS: Final = 300


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


class MeterOutboxIO:
    """The part's reader (`domains.credit_meters.MeterOutboxReader`)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def pending(self, org_ids: frozenset[str] | None) -> Sequence[PendingMeterEvents]:
        with self.store.session() as session:
            rows = MeterOutboxRepository(session).pending(org_ids)
        return [
            PendingMeterEvents(
                account_id=r.account_id,
                org_id=r.org_id,
                event_name=r.event_name,
                count=r.count,
                max_seq=r.max_seq,
                oldest_created=_epoch(r.oldest_created),
                first_event_time=_epoch(r.first_event_time),
            )
            for r in rows
        ]

    def pending_aggregates(self, org_ids: frozenset[str] | None) -> Sequence[PendingAggregates]:
        with self.store.session() as session:
            rows = MeterOutboxRepository(session).pending_aggregates(org_ids)
        return [
            PendingAggregates(r.account_id, r.org_id, r.count, _epoch(r.oldest_created))
            for r in rows
        ]

    def refused(self, org_ids: frozenset[str] | None) -> Sequence[RefusedMeterEvents]:
        with self.store.session() as session:
            rows = MeterOutboxRepository(session).refused(org_ids)
        return [RefusedMeterEvents(r.account_id, r.org_id, r.count, r.last_error) for r in rows]

    def accounts(self, account_ids: Iterable[str]) -> Mapping[str, OutboxAccount]:
        with self.store.session() as session:
            found = MeterOutboxRepository(session).accounts(account_ids)
        return {
            i: OutboxAccount(
                a.account_id, a.org_id, a.stripe_customer_id, a.offline, disabled=a.disabled
            )
            for i, a in found.items()
        }


def facts(store: Store) -> list[DomainFact]:
    """The outbox's depth, its oldest unsent event's age, its refused events and those of
    accounts disabled without a Stripe customer (undeliverable, not in the depth), from the
    store alone (`reconcile status`; the gauges `serve` exports)."""
    with store.session() as session:
        outbox = MeterOutboxRepository(session)
        depth, oldest, refused = outbox.totals()
        undeliverable = outbox.undeliverable_total()
    age = 0.0 if oldest is None else max((datetime.now(UTC) - oldest).total_seconds(), 0.0)
    return [
        DomainFact(
            "meter_outbox_depth",
            depth,
            "billing_meter_outbox_depth",
            "Usage meter events (and formed aggregates) not yet sent to Stripe.",
        ),
        DomainFact(
            "meter_outbox_oldest_age_seconds",
            round(age, 3),
            "billing_meter_outbox_oldest_age_seconds",
            "Age of the oldest meter event not yet sent to Stripe (0: none).",
        ),
        DomainFact(
            "meter_events_refused",
            refused,
            "billing_meter_events_refused",
            "Meter events Stripe refused for good, kept unsent in the outbox.",
        ),
        DomainFact(
            "meter_events_undeliverable",
            undeliverable,
            "billing_meter_events_undeliverable",
            "Unsent meter events of accounts disabled without a Stripe customer (kept).",
        ),
    ]


def open_reader(gateway: StripeGateway, store: Store) -> MeterOutboxIO:
    del gateway  # observation never calls Stripe
    return MeterOutboxIO(store)


class MeterEventsExecutor:
    """Sends one account's meter events (see the module docstring)."""

    def scope_of(self, key: str) -> str | None:
        """`customer/<org_id>`: a refused step holds back only its own org's (apply)."""
        return _PART.scope_of(key)

    def send(
        self, gateway: StripeGateway, step: Step, ids: Mapping[str, str]
    ) -> WriteResult | None:
        raise RuntimeError("meter_events steps need the store: the applier calls send_with_store")

    def send_with_store(
        self, gateway: StripeGateway, store: Store, step: Step, ids: Mapping[str, str]
    ) -> WriteResult | None:
        del ids
        params = step.params
        sender = _sender(gateway, params)
        aggregate: Mapping[str, Any] | None = params.get("aggregate")
        if aggregate is not None and aggregate["meters"]:
            form_aggregates(
                store,
                account_id=params["account_id"],
                org_id=params["org_id"],
                event_names=list(aggregate["meters"]),
                window=int(aggregate["window"]),
                closed_before=int(aggregate["closed_before"]),
                identifier=aggregate_identifier,
                # Tester T1 F7: an aggregate is sent after its window closes, up to a window
                # (and the grace) after its events, which the API accepted as "within 35
                # days" when recorded; stamped at the oldest time Stripe still takes if the
                # latest event has fallen out by that delay only (further: refused, kept).
                not_before=int(time.time()) - STRIPE_MAX_AGE_SECONDS + STAMP_MARGIN_SECONDS,
                max_shift=int(aggregate["window"]) + GRACE_SECONDS + STAMP_MARGIN_SECONDS,
            )
        drain(
            store,
            account_id=params["account_id"],
            up_to_seq=int(params["up_to_seq"]),
            event_names=list(params["single"]),
            send=sender,
            aggregates=aggregate is not None,
        )
        return None

    def record(self, session: Session, done: Done) -> None:
        del session, done  # each event was marked as it was sent


def _sender(gateway: StripeGateway, params: Mapping[str, Any]) -> Any:
    meters: Mapping[str, Mapping[str, str]] = params["meters"]
    customer = str(params["customer"])
    prefix = str(params["key_prefix"])

    def send(event: PendingEvent) -> tuple[str, str | None]:
        keys = meters.get(event.event_name)
        if keys is None:
            return SendOutcome.REFUSED, f"no meter of the catalog has event {event.event_name!r}"
        try:
            send_meter_event(
                gateway,
                event_name=event.event_name,
                identifier=event.identifier,
                timestamp=_epoch(event.event_time),
                payload={keys["customer_key"]: customer, keys["value_key"]: str(event.value)},
                idempotency_key=event_idempotency_key(prefix, event.identifier),
            )
        except PermanentStripeError as refusal:
            if refusal.http_status != 400:
                raise  # not about this event (the key, the account): nothing marked
            return SendOutcome.REFUSED, str(refusal)
        return SendOutcome.SENT, None

    return send


EXECUTORS: Mapping[str, StepExecutor] = {METER_EVENTS_STEP: MeterEventsExecutor()}

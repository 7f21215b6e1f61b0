"""The meter-events part's I/O: `MeterOutboxIO` reads the outbox's sums for
`domains.credit_meters`, and `EXECUTORS` carries out its one step kind:

- `meter_events`: send one account's pending meter events through the gateway
  (`stripe_gateway.meter_events`, paced by the gateway's rate budget), each claimed and
  marked sent right after its send (`store.meter_outbox.drain`); with aggregation, the
  closed windows' rows are first formed into aggregates (`form_aggregates`), which are then
  sent the same way. An event Stripe refuses for good is marked refused (kept, reported); one
  whose outcome is unknown fails the step and stays pending for the next pass, to be sent
  again under the same identifier and idempotency key.
  Forming one account's aggregates is that account's affair (tester T2 item 8): if it
  raises, the account's other events (single ones, aggregates formed before) are still sent,
  then its step fails as `MeterFormingError`, a scoped permanent failure, so the applier
  holds back that customer only and the pass goes on with every other account (an
  unexpected exception would have stopped the whole apply).

The reader's meter definitions are the applied catalog's (`store.usage.applied_meter_fields`,
the lookup the usage API accepts a meter event by), defaults as the catalog's meter record.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import structlog
from sqlalchemy.orm import Session

from billing_reconciler.apply import Done, StepExecutor
from billing_reconciler.domains.credit_meters import (
    FAILING_ATTEMPTS,
    GRACE_SECONDS,
    METER_EVENTS_STEP,
    PART,
    FailingMeterEvents,
    MeterKeys,
    MeterPart,
    OutboxAccount,
    PendingAggregates,
    PendingMeterEvents,
    RefusedMeterEvents,
    aggregate_identifier,
    event_idempotency_key,
)
from billing_reconciler.model import MeterRecord
from billing_reconciler.planning.plan import DomainFact, Step
from billing_reconciler.store import Store
from billing_reconciler.store.meter_outbox import (
    MeterOutboxRepository,
    PendingEvent,
    SendOutcome,
    drain,
    error_text,
    form_aggregates,
)
from billing_reconciler.store.usage import applied_meter_fields
from billing_reconciler.stripe_gateway import PermanentStripeError, StripeGateway, WriteResult
from billing_reconciler.stripe_gateway.meter_events import send_meter_event

__all__ = [
    "EXECUTORS",
    "PART",
    "MeterEventsExecutor",
    "MeterFormingError",
    "MeterOutboxIO",
    "facts",
    "open_reader",
]

_log = structlog.get_logger(__name__)

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

    def meters(self, installation_id: str) -> Mapping[str, MeterKeys]:
        with self.store.session() as session:
            found = applied_meter_fields(session, installation_id)
        return {name: _meter_keys(fields) for name, fields in found.items()}

    def failing(
        self, org_ids: frozenset[str] | None, min_attempts: int
    ) -> Sequence[FailingMeterEvents]:
        with self.store.session() as session:
            rows = MeterOutboxRepository(session).failing(org_ids, min_attempts)
        return [
            FailingMeterEvents(r.account_id, r.org_id, r.count, r.attempts, r.last_error)
            for r in rows
        ]

    def accounts(self, account_ids: Iterable[str]) -> Mapping[str, OutboxAccount]:
        with self.store.session() as session:
            found = MeterOutboxRepository(session).accounts(account_ids)
        return {
            i: OutboxAccount(
                a.account_id, a.org_id, a.stripe_customer_id, a.offline, disabled=a.disabled
            )
            for i, a in found.items()
        }


def _meter_keys(fields: Mapping[str, Any]) -> MeterKeys:
    """A recorded meter's payload keys and formula (a field missing: the record's default)."""
    defaults = MeterRecord(key="", event_name="", display_name="")

    def text(name: str, default: str) -> str:
        value = fields.get(name)
        return value if isinstance(value, str) and value else default

    return MeterKeys(
        customer_key=text("customer_key", defaults.customer_key),
        value_key=text("value_key", defaults.value_key),
        aggregation=text("aggregation", defaults.aggregation),
    )


def facts(store: Store) -> list[DomainFact]:
    """The outbox's depth, its oldest unsent event's age, its refused events, the pending
    ones that keep failing, and those of accounts disabled without a Stripe customer
    (undeliverable, not in the depth), from the store alone (`reconcile status`; the gauges
    `serve` exports)."""
    with store.session() as session:
        outbox = MeterOutboxRepository(session)
        depth, oldest, refused = outbox.totals()
        failing = outbox.failing_total(FAILING_ATTEMPTS)
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
            "meter_events_failing",
            failing,
            "billing_meter_events_failing",
            f"Unsent meter events whose send failed {FAILING_ATTEMPTS} times or more "
            "(5xx, timeout); retried each pass.",
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


class MeterFormingError(PermanentStripeError):
    """One account's aggregates could not be formed (a local failure, no Stripe call): its
    step fails, scoped to its customer, and every other account's step still runs. No HTTP
    status: not Stripe's refusal, so the step's key is not spent and the next pass retries."""


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
        unformed: BaseException | None = None
        if aggregate is not None and aggregate["meters"]:
            try:
                _form(store, params, aggregate)
            except Exception as error:  # this account's: the others' steps go on (item 8)
                unformed = error
                _log.error(
                    "meter aggregates not formed",
                    org_id=params["org_id"],
                    account_id=params["account_id"],
                    error=error_text(error),
                    exc_info=error,
                )
        drain(
            store,
            account_id=params["account_id"],
            up_to_seq=int(params["up_to_seq"]),
            event_names=list(params["single"]),
            send=sender,
            aggregates=aggregate is not None,
        )
        if unformed is not None:
            raise MeterFormingError(
                f"the meter aggregates of org {params['org_id']} could not be formed "
                f"({_first_line(error_text(unformed))}); its other meter events were sent, "
                "the rows stay in the outbox for the next pass"
            ) from unformed
        return None

    def record(self, session: Session, done: Done) -> None:
        del session, done  # each event was marked as it was sent


def _first_line(text: str, limit: int = 300) -> str:
    """An error's first line, at most `limit` characters: a database error's text goes on with
    the whole statement and its parameters (tester T3-6), which belong in the log, not in
    the plan or `status`."""
    line = text.strip().splitlines()[0] if text.strip() else text
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _form(store: Store, params: Mapping[str, Any], aggregate: Mapping[str, Any]) -> None:
    form_aggregates(
        store,
        account_id=params["account_id"],
        org_id=params["org_id"],
        event_names=list(aggregate["meters"]),
        window=int(aggregate["window"]),
        closed_before=int(aggregate["closed_before"]),
        identifier=aggregate_identifier,
        # Tester T1 F7: an aggregate is sent after its window closes, up to a window (and the
        # grace) after its events, which the API accepted as "within 35 days" when recorded;
        # stamped at the oldest time Stripe still takes if the latest event has fallen out by
        # that delay only (further: refused, kept).
        not_before=int(time.time()) - STRIPE_MAX_AGE_SECONDS + STAMP_MARGIN_SECONDS,
        max_shift=int(aggregate["window"]) + GRACE_SECONDS + STAMP_MARGIN_SECONDS,
    )


def _sender(gateway: StripeGateway, params: Mapping[str, Any]) -> Any:
    meters: Mapping[str, Mapping[str, str]] = params["meters"]
    customer = str(params["customer"])
    prefix = str(params["key_prefix"])

    def send(event: PendingEvent) -> tuple[str, str | None]:
        keys = meters.get(event.event_name)
        if keys is None:
            return (
                SendOutcome.REFUSED,
                f"no meter of the applied catalog has event {event.event_name!r}",
            )
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

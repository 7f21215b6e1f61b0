"""The meter-events part of the credits domain (DESIGN §17, §19): the usage outbox sent to
Stripe as `billing/meter_events`. Pure: what it reads is `MeterOutboxReader`'s.

A usage naming a meter is written to the outbox (`meter_outbox`) in the usage's transaction.
Observation never costs a Stripe call: the store's pending rows, summed per (account, meter
event name) — count, highest `seq`, oldest row, earliest event time — with the accounts'
Stripe customers, the aggregates formed and not yet sent, and the rows Stripe refused.

The rules plan, per account with something to send, one step `meter_events/<org_id>` (scope
`customer/<org_id>`): "send the pending rows up to seq S", carrying each meter's payload keys
and, with `reconcile.usage.aggregate`, which meters
are aggregated (`sum` meters only) and before which event time windows are closed. The
executor (`effects.credit_meters`) claims, sends and marks the rows one by one.
- An account without a Stripe customer (offline, or its customer not made yet) waits: a
  notice, its rows kept. One disabled without a Stripe customer can never get one as it
  stands: its rows are undeliverable (kept, a plan warning, left out of the depth and age,
  sent if the account is enabled and registered later).
- The meter definitions (event name -> payload keys, formula) are the applied catalog's, read
  from the store by the same lookup the usage API accepts a meter event by
  (`store.usage.applied_meter_fields`), not desired/'s: a meter removed from desired/ and
  not applied yet still has its accepted events sent (tester T2 G5). Rows of an event name no
  meter of the applied catalog has wait (a notice naming it): sending them could only fail.
- A pending event whose send keeps failing with an unknown outcome (5xx, timeout: its
  `attempts` and `last_error`) for `FAILING_ATTEMPTS` passes is a plan warning per account
  naming the attempts and the (secret-free) last error, and a status fact. It holds back
  its account's later events, on purpose: the sender goes in seq order because a `last`
  meter bills the period's final event (Stripe: "the final meter event received"; the
  emulator: the latest timestamp, ties by arrival), so skipping ahead could bill a `last`
  meter an earlier usage's value; and a failure
  of unknown outcome is Stripe's or the network's, not the event's (it is retried under the
  same identifier and key each pass).
- Rows Stripe refused for good (an event older than 35 days) are kept, marked refused, and
  reported as a plan warning; they are never silently dropped.
- The plan states the outbox's depth and the oldest unsent event's age (an informational
  line, `Plan.info`: neither refused nor waiting, the steps send them), and `facts` for
  `reconcile status`.

Aggregation: one event per (customer, meter, flush window) of event times; a window is formed
only once closed (`now >= window end + GRACE_SECONDS`), so a usage committed late for a closed
window is a new part of it (the executor numbers the parts).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from billing_reconciler.desired.state import DesiredState
from billing_reconciler.domains.base import PlanContext
from billing_reconciler.domains.credit_parts import PartPlan
from billing_reconciler.domains.event_routes import EventRoute
from billing_reconciler.model_customers import customer_key, org_id_of_key
from billing_reconciler.planning.plan import Action, Notice, Reason, Step, digest

PART: Final = "meters"
#: The step kind: send one account's pending meter events (a fleet plan groups them as
#: `+ 1,000 meter uploads`).
METER_EVENTS_STEP: Final = "meter_upload"
#: Its object keys: `meter_events/<org_id>`.
METER_KEY_PREFIX: Final = "meter_events"
#: A flush window is closed this long after its end (rows still committing for it).
GRACE_SECONDS: Final = 5
#: DESIGN §19: the usage outbox is flushed at least every 10 s.
FLUSH_SECONDS: Final = 10
#: A pending event whose send failed (outcome unknown) this many times is warned about.
FAILING_ATTEMPTS: Final = 3
#: The most of a stored error text a plan warning quotes.
ERROR_PREVIEW: Final = 300

__all__ = [
    "FAILING_ATTEMPTS",
    "FLUSH_SECONDS",
    "GRACE_SECONDS",
    "METER_EVENTS_STEP",
    "METER_KEY_PREFIX",
    "PART",
    "FailingMeterEvents",
    "MeterKeys",
    "MeterOutboxReader",
    "MeterPart",
    "MetersDesired",
    "MetersObserved",
    "OutboxAccount",
    "PendingAggregates",
    "PendingMeterEvents",
    "RefusedMeterEvents",
    "aggregate_identifier",
    "closed_before",
    "event_idempotency_key",
    "meter_step_key",
    "meters_plan",
    "outbox_depth",
]


@dataclass(frozen=True, slots=True)
class MeterKeys:
    """A meter of the catalog as the sender needs it: its payload keys and formula."""

    customer_key: str
    value_key: str
    aggregation: str


@dataclass(frozen=True, slots=True)
class MetersDesired:
    aggregate: bool = False
    flush_window: int = 60


@dataclass(frozen=True, slots=True)
class PendingMeterEvents:
    """An account's pending outbox rows of one event name."""

    account_id: str
    org_id: str
    event_name: str
    count: int
    max_seq: int
    oldest_created: int
    first_event_time: int


@dataclass(frozen=True, slots=True)
class PendingAggregates:
    """An account's aggregates formed and not yet sent."""

    account_id: str
    org_id: str
    count: int
    oldest_created: int


@dataclass(frozen=True, slots=True)
class RefusedMeterEvents:
    """An account's rows (and aggregates) Stripe refused for good, kept unsent."""

    account_id: str
    org_id: str
    count: int
    last_error: str


@dataclass(frozen=True, slots=True)
class FailingMeterEvents:
    """An account's pending rows (and aggregates) whose send failed `FAILING_ATTEMPTS`
    times or more, outcome unknown: the most attempts and that event's last error."""

    account_id: str
    org_id: str
    count: int
    attempts: int
    last_error: str


@dataclass(frozen=True, slots=True)
class OutboxAccount:
    account_id: str
    org_id: str
    stripe_customer_id: str | None
    offline: bool
    disabled: bool = False

    @property
    def undeliverable(self) -> bool:
        """Disabled without a Stripe customer: its events can never be sent as it stands
        (registering needs an active account); kept, sent if it is enabled and registered."""
        return self.disabled and self.stripe_customer_id is None


@dataclass(frozen=True, slots=True)
class MetersObserved:
    pending: tuple[PendingMeterEvents, ...] = ()
    aggregates: tuple[PendingAggregates, ...] = ()
    refused: tuple[RefusedMeterEvents, ...] = ()
    accounts: Mapping[str, OutboxAccount] = field(default_factory=dict)
    #: The applied catalog's meters, by event name (what the usage API accepts).
    meters: Mapping[str, MeterKeys] = field(default_factory=dict)
    failing: tuple[FailingMeterEvents, ...] = ()


class MeterOutboxReader(Protocol):
    """What the part reads; `effects.credit_meters.MeterOutboxIO` implements it."""

    def pending(self, org_ids: frozenset[str] | None) -> Sequence[PendingMeterEvents]: ...

    def pending_aggregates(self, org_ids: frozenset[str] | None) -> Sequence[PendingAggregates]: ...

    def refused(self, org_ids: frozenset[str] | None) -> Sequence[RefusedMeterEvents]: ...

    def accounts(self, account_ids: Iterable[str]) -> Mapping[str, OutboxAccount]: ...

    def meters(self, installation_id: str) -> Mapping[str, MeterKeys]: ...

    def failing(
        self, org_ids: frozenset[str] | None, min_attempts: int
    ) -> Sequence[FailingMeterEvents]: ...


def meter_step_key(org_id: str) -> str:
    return f"{METER_KEY_PREFIX}/{org_id}"


def closed_before(now: int, window: int) -> int:
    """Rows whose event time is before this are in closed flush windows at `now`."""
    return ((now - GRACE_SECONDS) // window) * window


class MeterPart:
    """See the module docstring."""

    name: Final = PART
    kinds: Final = frozenset({METER_EVENTS_STEP})
    event_routes: Final[tuple[EventRoute, ...]] = ()

    def refresh_seconds(self, state: DesiredState) -> int:
        del state
        return FLUSH_SECONDS

    def desired(self, state: DesiredState, context: PlanContext) -> MetersDesired:
        # The meters are not desired/'s: observed from the applied catalog (tester T2 G5).
        del context
        usage = state.config.reconcile.usage
        return MetersDesired(aggregate=usage.aggregate, flush_window=int(usage.flush_window))

    def observe(
        self, reader: MeterOutboxReader, desired: MetersDesired, context: PlanContext
    ) -> MetersObserved:
        del desired
        scope = context.options.scope
        orgs = (
            None
            if scope is None
            else frozenset(o for key in scope if (o := org_id_of_key(key)) is not None)
        )
        pending = tuple(reader.pending(orgs))
        aggregates = tuple(reader.pending_aggregates(orgs))
        refused = tuple(reader.refused(orgs))
        ids = {p.account_id for p in pending} | {a.account_id for a in aggregates}
        return MetersObserved(
            pending=pending,
            aggregates=aggregates,
            refused=refused,
            accounts=reader.accounts(sorted(ids)),
            meters=dict(reader.meters(context.installation_id)) if ids else {},
            failing=tuple(reader.failing(orgs, FAILING_ATTEMPTS)),
        )

    def plan(
        self, desired: MetersDesired, observed: MetersObserved, context: PlanContext
    ) -> PartPlan:
        return meters_plan(desired, observed, context)

    def scope_of(self, key: str) -> str | None:
        kind, sep, org_id = key.partition("/")
        if not sep or not org_id or kind != METER_KEY_PREFIX:
            return None
        return customer_key(org_id)


# --------------------------------------------------------------------------------------------
# The rules
# --------------------------------------------------------------------------------------------


def meters_plan(desired: MetersDesired, observed: MetersObserved, context: PlanContext) -> PartPlan:
    """One step per account with something to send; notices for what waits; the depth."""
    by_account: dict[str, list[PendingMeterEvents]] = {}
    for row in observed.pending:
        by_account.setdefault(row.account_id, []).append(row)
    aggregates = {a.account_id: a for a in observed.aggregates}
    steps: list[Step] = []
    notices: list[Notice] = []
    warnings = [_refused_warning(r) for r in observed.refused]
    warnings += [_failing_warning(f) for f in sorted(observed.failing, key=_failing_order)]
    cutoff = closed_before(context.now, desired.flush_window) if desired.aggregate else None
    for account_id in sorted(set(by_account) | set(aggregates), key=_org_of(observed)):
        account = observed.accounts.get(account_id)
        rows = by_account.get(account_id, [])
        formed = aggregates.get(account_id)
        org_id = account.org_id if account else (rows[0].org_id if rows else formed.org_id)  # type: ignore[union-attr]
        waiting = sum(r.count for r in rows) + (formed.count if formed else 0)
        if account is not None and account.undeliverable:
            warnings.append(_undeliverable_warning(org_id, waiting))
            continue
        if account is None or account.stripe_customer_id is None:
            notices.append(_offline_notice(org_id, waiting, account))
            continue
        unknown = sorted({r.event_name for r in rows if r.event_name not in observed.meters})
        if unknown:
            notices.append(_unknown_notice(org_id, unknown, rows))
        known = [r for r in rows if r.event_name in observed.meters]
        step = _send_step(desired, observed.meters, account, known, formed, cutoff, context)
        if step is not None:
            steps.append(step)
    return PartPlan(
        steps=tuple(steps),
        notices=tuple(notices),
        warnings=tuple(warnings),
        fingerprint=digest(
            repr(observed.pending),
            repr(observed.aggregates),
            repr(observed.refused),
            repr(sorted(observed.meters.items())),
            repr(observed.failing),
        ),
        facts=_facts(observed, context.now),
        info=_depth_info(observed, context.now),
    )


def _org_of(observed: MetersObserved) -> Any:
    """Accounts in org order, those with events that keep failing last: a failure of
    unknown outcome stops the apply's later steps (the applier's rule: Stripe is likely
    down), so a customer whose head event fails every pass must not starve the others."""
    failing = {f.account_id for f in observed.failing}

    def org(account_id: str) -> tuple[bool, str, str]:
        account = observed.accounts.get(account_id)
        return (account_id in failing, account.org_id if account else "", account_id)

    return org


def _sendable(
    meters: Mapping[str, MeterKeys], rows: Sequence[PendingMeterEvents], cutoff: int | None
) -> tuple[list[PendingMeterEvents], list[str]]:
    """The rows sent one by one now, and the aggregated meters with a closed window."""
    single: list[PendingMeterEvents] = []
    aggregated: list[str] = []
    for row in rows:
        if cutoff is not None and meters[row.event_name].aggregation == "sum":
            if row.first_event_time < cutoff:
                aggregated.append(row.event_name)
        else:
            single.append(row)
    return single, sorted(aggregated)


def _send_step(
    desired: MetersDesired,
    catalog: Mapping[str, MeterKeys],
    account: OutboxAccount,
    rows: Sequence[PendingMeterEvents],
    formed: PendingAggregates | None,
    cutoff: int | None,
    context: PlanContext,
) -> Step | None:
    single, aggregated = _sendable(catalog, rows, cutoff)
    if not single and not aggregated and formed is None:
        return None
    count = sum(r.count for r in single)
    up_to = max((r.max_seq for r in rows), default=0)
    # Every meter of the applied catalog: formed aggregates name theirs, not observed here.
    meters = {
        name: {"customer_key": keys.customer_key, "value_key": keys.value_key}
        for name, keys in sorted(catalog.items())
    }
    params: dict[str, Any] = {
        "account_id": account.account_id,
        "org_id": account.org_id,
        "customer": account.stripe_customer_id,
        "up_to_seq": up_to,
        "events": count,
        "meters": meters,
        "single": sorted({r.event_name for r in single}),
        "key_prefix": digest(context.key_salt, METER_KEY_PREFIX),
    }
    if cutoff is not None:
        params["aggregate"] = {
            "meters": aggregated,
            "window": desired.flush_window,
            "closed_before": cutoff,
            "usages": sum(r.count for r in rows if r.event_name in aggregated),
            "formed": formed.count if formed else 0,
        }
    key = meter_step_key(account.org_id)
    return Step(
        action=Action.CREATE,
        kind=METER_EVENTS_STEP,
        key=key,
        reason=Reason.NEW,
        params=params,
        idempotency_key=digest(context.key_salt, key, str(up_to), str(cutoff)),
        # Accounts are independent of each other: one batch, sent concurrently.
        batch=0,
    )


def _offline_notice(org_id: str, waiting: int, account: OutboxAccount | None) -> Notice:
    why = (
        "an offline account"
        if account is not None and account.offline
        else "an account without a Stripe customer yet"
    )
    return Notice(
        key=meter_step_key(org_id),
        kind=METER_EVENTS_STEP,
        stripe_id=None,
        message=f"waits: {waiting:,} meter event(s) of {why} stay in the outbox until it has one",
    )


def _unknown_notice(
    org_id: str, unknown: Sequence[str], rows: Sequence[PendingMeterEvents]
) -> Notice:
    count = sum(r.count for r in rows if r.event_name in unknown)
    names = ", ".join(unknown)
    return Notice(
        key=meter_step_key(org_id),
        kind=METER_EVENTS_STEP,
        stripe_id=None,
        message=(
            f"waits: {count:,} meter event(s) name an event no meter of the applied catalog "
            f"has ({names}); they stay in the outbox until a meter of it is applied"
        ),
    )


def _undeliverable_warning(org_id: str, count: int) -> str:
    return (
        f"{count:,} meter event(s) of org {org_id} cannot be sent: its billing account is "
        "disabled and has no Stripe customer; they are kept in the outbox (not counted in "
        "its depth) and sent if the account is enabled and registered"
    )


def _refused_warning(refused: RefusedMeterEvents) -> str:
    return (
        f"{refused.count:,} meter event(s) of org {refused.org_id} were refused by Stripe and "
        f"are kept unsent in the outbox (last: {refused.last_error})"
    )


def _failing_order(failing: FailingMeterEvents) -> tuple[str, str]:
    return (failing.org_id, failing.account_id)


def _failing_warning(failing: FailingMeterEvents) -> str:
    error = " ".join(failing.last_error.split())
    if len(error) > ERROR_PREVIEW:
        error = error[: ERROR_PREVIEW - 1] + "…"
    return (
        f"{failing.count:,} meter event(s) of org {failing.org_id} keep failing (attempts "
        f"{failing.attempts:,}, last error: {error or 'none recorded'}); retried each pass "
        "under the same identifier, they hold back the org's later meter events"
    )


def outbox_depth(observed: MetersObserved, now: int) -> tuple[int, int]:
    """The outbox's depth (usages and formed aggregates not yet sent, refused ones and
    undeliverable accounts' aside) and the oldest unsent one's age in seconds (0 when
    empty)."""

    def counted(account_id: str) -> bool:
        account = observed.accounts.get(account_id)
        return account is None or not account.undeliverable

    pending = [r for r in observed.pending if counted(r.account_id)]
    aggregates = [a for a in observed.aggregates if counted(a.account_id)]
    depth = sum(r.count for r in pending) + sum(a.count for a in aggregates)
    oldest = min(
        [r.oldest_created for r in pending] + [a.oldest_created for a in aggregates],
        default=None,
    )
    return depth, 0 if oldest is None else max(now - oldest, 0)


def _depth_info(observed: MetersObserved, now: int) -> tuple[str, ...]:
    depth, age = outbox_depth(observed, now)
    if not depth:
        return ()
    return (f"meter outbox: {depth:,} meter event(s) unsent, the oldest {age:,}s old",)


def _facts(observed: MetersObserved, now: int) -> tuple[str, ...]:
    depth, age = outbox_depth(observed, now)
    refused = sum(r.count for r in observed.refused)
    failing = sum(f.count for f in observed.failing)
    return (
        f"meter outbox depth: {depth:,}",
        f"meter outbox oldest unsent age: {age:,}s",
        f"meter events refused: {refused:,}",
        f"meter events failing: {failing:,}",
    )


def aggregate_identifier(org_id: str, event_name: str, window_start: int, part: int) -> str:
    """The meter event identifier of an aggregate: derived from (customer, meter, window)
    and its part, so a resend after a crash, or another replica, names the same event
    (at most 100 characters, Stripe's limit)."""
    return f"agg_{digest(org_id, event_name, str(window_start), length=32)}_{window_start}_{part}"


def event_idempotency_key(key_prefix: str, identifier: str) -> str:
    """The Stripe idempotency key of one meter event: from the store's salt (through the
    step's `key_prefix`) and the event's identifier, the same on every attempt."""
    return digest(key_prefix, identifier)

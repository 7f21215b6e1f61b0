"""The meter-event outbox (DESIGN §17, STYLE 18): usages' meter events waiting for Stripe,
and the aggregates formed from them (`reconcile.usage.aggregate`).

A row is written in its usage's transaction (`usage.py`, or `record` here) and is pending
until `sent_at` is set; an aggregated row is carried by the aggregate it names
(`aggregate_id`), which is pending until its own `sent_at`. A row or aggregate Stripe refused
for good has `refused_at` (and the error): kept, reported, never sent again by itself. One
whose send failed with an unknown outcome stays pending with `attempts` and `last_error`
counted; `failing` reports those that keep failing. Error texts are stored with every Stripe
key and webhook secret masked (`config.redact`): they are shown in plans and `status`.

Claims (two replicas never send the same row at once): `drain` takes one row at a time.
On PostgreSQL the row is selected `FOR UPDATE SKIP LOCKED` in a transaction held across
its send and committed with its mark, so another sender skips it, and a sender that dies
mid-send releases it (its connection closes) to be sent again under the same identifier and
idempotency key. On SQLite a single leader sends (its file lock) and `Store.session()` takes
the write lock: a row is read in one transaction and marked in the next, never holding the
lock across a Stripe call.

Aggregates are formed under a lock of the account row (PostgreSQL; SQLite's write lock
serializes them anyway): the pending rows of closed windows are assigned to a new aggregate
in the transaction that inserts it, whose part number follows the window's earlier parts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final, cast
from weakref import WeakKeyDictionary

from sqlalchemy import Table, and_, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from billing_reconciler.config import redact
from billing_reconciler.store.accounts import ACTIVE
from billing_reconciler.store.database import Store
from billing_reconciler.store.tables import (
    BillingAccountModel,
    MeterAggregateModel,
    MeterOutboxModel,
)
from billing_reconciler.store.types import as_utc

_outbox = cast(Table, MeterOutboxModel.__table__)
_aggregates = cast(Table, MeterAggregateModel.__table__)
_accounts = cast(Table, BillingAccountModel.__table__)

#: Ids per `IN (...)` (well under both backends' bind-parameter limits).
CHUNK: Final = 500
#: The longest error text kept on a row.
ERROR_CHARS: Final = 2000

__all__ = [
    "AggregateSummary",
    "FailingSummary",
    "MeterOutboxRepository",
    "OutboxAccountRow",
    "OutboxRow",
    "PendingEvent",
    "PendingSummary",
    "RefusedSummary",
    "SendOutcome",
    "drain",
    "form_aggregates",
    "record",
]


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A usage's meter event, as written to the outbox."""

    id: str
    account_id: str
    org_id: str
    event_name: str
    value: int
    event_time: datetime
    created_at: datetime


@dataclass(frozen=True, slots=True)
class PendingSummary:
    account_id: str
    org_id: str
    event_name: str
    count: int
    max_seq: int
    oldest_created: datetime
    first_event_time: datetime


@dataclass(frozen=True, slots=True)
class AggregateSummary:
    account_id: str
    org_id: str
    count: int
    oldest_created: datetime


@dataclass(frozen=True, slots=True)
class RefusedSummary:
    account_id: str
    org_id: str
    count: int
    last_error: str


@dataclass(frozen=True, slots=True)
class FailingSummary:
    """An account's pending events that failed `min_attempts` times or more: how many, the
    most attempts, and that event's last error."""

    account_id: str
    org_id: str
    count: int
    attempts: int
    last_error: str


@dataclass(frozen=True, slots=True)
class OutboxAccountRow:
    account_id: str
    org_id: str
    stripe_customer_id: str | None
    offline: bool
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """One event to send: an outbox row or an aggregate (its id is the identifier)."""

    identifier: str
    event_name: str
    value: int
    event_time: datetime
    aggregate: bool


class SendOutcome:
    """What a sender's callback reports for one event (else it raises: see `drain`)."""

    SENT: Final = "sent"
    REFUSED: Final = "refused"


def record(session: Session, rows: Sequence[OutboxRow]) -> None:
    """Write meter events to the outbox (in the caller's transaction: the usage's)."""
    if not rows:
        return
    session.execute(
        insert(_outbox),
        [
            {
                "id": r.id,
                "account_id": r.account_id,
                "org_id": r.org_id,
                "event_name": r.event_name,
                "value": r.value,
                "event_time": as_utc(r.event_time),
                "created_at": as_utc(r.created_at),
                "aggregate_id": None,
                "sent_at": None,
                "attempts": 0,
                "last_error": None,
                "refused_at": None,
            }
            for r in rows
        ],
    )


def _pending_rows() -> Any:
    return and_(
        _outbox.c.sent_at.is_(None),
        _outbox.c.aggregate_id.is_(None),
        _outbox.c.refused_at.is_(None),
    )


def _pending_aggregates() -> Any:
    return and_(_aggregates.c.sent_at.is_(None), _aggregates.c.refused_at.is_(None))


def _undeliverable_accounts() -> Any:
    """Accounts whose events can never be sent as they stand (tester T1 F14): disabled and
    without a Stripe customer (registering needs an active account). Their rows are kept,
    and sent if the account is enabled and gets a customer."""
    a = _accounts.c
    return select(a.id).where(a.state != ACTIVE, a.stripe_customer_id.is_(None))


class MeterOutboxRepository:
    """Reads of the outbox for observation (sums, never one row per usage)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def pending(self, org_ids: Iterable[str] | None) -> list[PendingSummary]:
        o = _outbox.c
        query = (
            select(
                o.account_id,
                o.org_id,
                o.event_name,
                func.count(),
                func.max(o.seq),
                func.min(o.created_at),
                func.min(o.event_time),
            )
            .where(_pending_rows())
            .group_by(o.account_id, o.org_id, o.event_name)
        )
        rows: list[PendingSummary] = []
        for chunk in _chunks(org_ids):
            scoped = query if chunk is None else query.where(o.org_id.in_(chunk))
            rows.extend(
                PendingSummary(a, org, name, int(n), int(seq), as_utc(oldest), as_utc(first))
                for a, org, name, n, seq, oldest, first in self._session.execute(scoped)
            )
        return rows

    def pending_aggregates(self, org_ids: Iterable[str] | None) -> list[AggregateSummary]:
        g = _aggregates.c
        query = (
            select(g.account_id, g.org_id, func.count(), func.min(g.created_at))
            .where(_pending_aggregates())
            .group_by(g.account_id, g.org_id)
        )
        found: list[AggregateSummary] = []
        for chunk in _chunks(org_ids):
            scoped = query if chunk is None else query.where(g.org_id.in_(chunk))
            found.extend(
                AggregateSummary(a, org, int(n), as_utc(oldest))
                for a, org, n, oldest in self._session.execute(scoped)
            )
        return found

    def refused(self, org_ids: Iterable[str] | None) -> list[RefusedSummary]:
        found: dict[tuple[str, str], RefusedSummary] = {}
        for table in (_outbox, _aggregates):
            c = table.c
            query = (
                select(c.account_id, c.org_id, func.count(), func.max(c.last_error))
                .where(c.refused_at.is_not(None), c.sent_at.is_(None))
                .group_by(c.account_id, c.org_id)
            )
            for chunk in _chunks(org_ids):
                scoped = query if chunk is None else query.where(c.org_id.in_(chunk))
                for account, org, n, error in self._session.execute(scoped):
                    before = found.get((account, org))
                    total = int(n) + (before.count if before else 0)
                    found[(account, org)] = RefusedSummary(account, org, total, str(error or ""))
        return list(found.values())

    def failing(self, org_ids: Iterable[str] | None, min_attempts: int) -> list[FailingSummary]:
        """Per account, its pending rows and aggregates whose send failed at least
        `min_attempts` times (outcome unknown). Few rows: an account's sender stops at its
        first failing event, so at most its head event and head aggregate keep failing."""
        found: dict[tuple[str, str], FailingSummary] = {}
        for table, pending in ((_outbox, _pending_rows()), (_aggregates, _pending_aggregates())):
            c = table.c
            query = select(c.account_id, c.org_id, c.attempts, c.last_error).where(
                pending, c.attempts >= min_attempts, c.last_error.is_not(None)
            )
            for chunk in _chunks(org_ids):
                scoped = query if chunk is None else query.where(c.org_id.in_(chunk))
                for account, org, attempts, error in self._session.execute(scoped):
                    before = found.get((account, org))
                    count = 1 + (before.count if before else 0)
                    if before is None or int(attempts) > before.attempts:
                        text = redact(str(error or ""))
                        found[(account, org)] = FailingSummary(
                            account, org, count, int(attempts), text
                        )
                    else:
                        found[(account, org)] = replace(before, count=count)
        return sorted(found.values(), key=lambda f: (f.org_id, f.account_id))

    def failing_total(self, min_attempts: int) -> int:
        """Pending rows and aggregates whose send failed at least `min_attempts` times."""
        return sum(
            int(
                self._session.execute(
                    select(func.count()).where(
                        pending, table.c.attempts >= min_attempts, table.c.last_error.is_not(None)
                    )
                ).scalar_one()
            )
            for table, pending in ((_outbox, _pending_rows()), (_aggregates, _pending_aggregates()))
        )

    def accounts(self, account_ids: Iterable[str]) -> dict[str, OutboxAccountRow]:
        a = _accounts.c
        found: dict[str, OutboxAccountRow] = {}
        ids = list(account_ids)
        for start in range(0, len(ids), CHUNK):
            query = select(a.id, a.org_id, a.stripe_customer_id, a.offline, a.state).where(
                a.id.in_(ids[start : start + CHUNK])
            )
            for ident, org, customer, offline, state in self._session.execute(query):
                found[ident] = OutboxAccountRow(
                    ident, org, customer, bool(offline), disabled=state != ACTIVE
                )
        return found

    def totals(self) -> tuple[int, datetime | None, int]:
        """Depth (pending rows and aggregates), the oldest pending one's creation, and how
        many Stripe refused: what `reconcile status` and the metrics show. Events of an
        undeliverable account (`undeliverable_total`) are not in the depth or the age."""
        o, g = _outbox.c, _aggregates.c
        rows, oldest_row = self._session.execute(
            select(func.count(), func.min(o.created_at)).where(
                _pending_rows(), o.account_id.not_in(_undeliverable_accounts())
            )
        ).one()
        aggs, oldest_agg = self._session.execute(
            select(func.count(), func.min(g.created_at)).where(
                _pending_aggregates(), g.account_id.not_in(_undeliverable_accounts())
            )
        ).one()
        refused = sum(
            int(
                self._session.execute(
                    select(func.count()).where(t.c.refused_at.is_not(None), t.c.sent_at.is_(None))
                ).scalar_one()
            )
            for t in (_outbox, _aggregates)
        )
        stamps = [as_utc(s) for s in (oldest_row, oldest_agg) if s is not None]
        return int(rows) + int(aggs), min(stamps, default=None), refused

    def undeliverable_total(self) -> int:
        """Unsent events (rows and aggregates) of accounts disabled without a Stripe
        customer: kept, counted apart from the depth."""
        total = 0
        for table, pending in ((_outbox, _pending_rows()), (_aggregates, _pending_aggregates())):
            total += int(
                self._session.execute(
                    select(func.count()).where(
                        pending, table.c.account_id.in_(_undeliverable_accounts())
                    )
                ).scalar_one()
            )
        return total


def _chunks(org_ids: Iterable[str] | None) -> Iterable[list[str] | None]:
    if org_ids is None:
        yield None
        return
    ids = sorted(set(org_ids))
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


# --------------------------------------------------------------------------------------------
# Sending
# --------------------------------------------------------------------------------------------


def _next_row(
    session: Session,
    *,
    account_id: str,
    up_to_seq: int,
    event_names: Sequence[str],
    after_seq: int,
    lock: bool,
) -> tuple[int, PendingEvent] | None:
    o = _outbox.c
    query = (
        select(o.seq, o.id, o.event_name, o.value, o.event_time)
        .where(
            o.account_id == account_id,
            _pending_rows(),
            o.seq > after_seq,
            o.seq <= up_to_seq,
            o.event_name.in_(list(event_names)),
        )
        .order_by(o.seq)
        .limit(1)
    )
    if lock:
        query = query.with_for_update(skip_locked=True)
    found = session.execute(query).first()
    if found is None:
        return None
    seq, ident, name, value, at = found
    return int(seq), PendingEvent(ident, name, int(value), as_utc(at), aggregate=False)


def _next_aggregate(
    session: Session, *, account_id: str, after: str, lock: bool
) -> tuple[str, PendingEvent] | None:
    g = _aggregates.c
    query = (
        select(g.id, g.event_name, g.value, g.event_time)
        .where(g.account_id == account_id, _pending_aggregates(), g.id > after)
        .order_by(g.id)
        .limit(1)
    )
    if lock:
        query = query.with_for_update(skip_locked=True)
    found = session.execute(query).first()
    if found is None:
        return None
    ident, name, value, at = found
    return str(ident), PendingEvent(ident, name, int(value), as_utc(at), aggregate=True)


def _mark(session: Session, event: PendingEvent, outcome: str, error: str | None) -> None:
    table = _aggregates if event.aggregate else _outbox
    now = datetime.now(UTC)
    values: dict[str, Any] = {"attempts": table.c.attempts + 1}
    if outcome == SendOutcome.SENT:
        values["sent_at"] = now
    else:
        values["refused_at"] = now
        values["last_error"] = redact(error or "")[:ERROR_CHARS]
    session.execute(
        update(table)
        .where(table.c.id == event.identifier, table.c.sent_at.is_(None))
        .values(**values)
    )


def error_text(error: BaseException) -> str:
    """What is stored of a failed send: the error's message (a gateway error's is Stripe's,
    already scrubbed), its type when it has none (a bare timeout), secrets masked."""
    text = str(error).strip() or type(error).__name__
    return redact(text)[:ERROR_CHARS]


def _failed(store: Store, event: PendingEvent, error: BaseException) -> None:
    """A send whose outcome is unknown: counted and kept pending, to be sent again."""
    table = _aggregates if event.aggregate else _outbox
    with store.session() as session:
        session.execute(
            update(table)
            .where(table.c.id == event.identifier)
            .values(attempts=table.c.attempts + 1, last_error=error_text(error))
        )


#: The callback `drain` sends each event through: `SendOutcome.SENT`, or
#: `(SendOutcome.REFUSED, message)`; it raises when the outcome is unknown.
Sender = Callable[[PendingEvent], tuple[str, str | None]]


def drain(
    store: Store,
    *,
    account_id: str,
    up_to_seq: int,
    event_names: Sequence[str],
    send: Sender,
    aggregates: bool = False,
) -> tuple[int, int]:
    """Send one account's pending events one at a time, each marked right after its send:
    its formed aggregates when `aggregates`, then its outbox rows of `event_names` up to
    `up_to_seq`. Returns (sent, refused). An exception from `send` (an outcome Stripe did
    not tell) is counted on the event and re-raised: the event stays pending."""
    lock = store.backend == "postgresql"
    if not lock:
        return _drain(_Claims(store, None), account_id, up_to_seq, event_names, send, aggregates)
    with _drain_slot(store), store.engine.connect() as connection:
        claims = _Claims(store, connection)
        return _drain(claims, account_id, up_to_seq, event_names, send, aggregates)


def _drain(
    claims: _Claims,
    account_id: str,
    up_to_seq: int,
    event_names: Sequence[str],
    send: Sender,
    aggregates: bool,
) -> tuple[int, int]:
    lock = claims.connection is not None
    sent = refused = 0
    if aggregates:
        after = ""
        while True:
            s, r, after_next = _one(
                claims,
                send,
                partial(_next_aggregate, account_id=account_id, after=after, lock=lock),
            )
            if after_next is None:
                break
            after = str(after_next)
            sent, refused = sent + s, refused + r
    if event_names:
        after_seq = 0
        while True:
            s, r, seq = _one(
                claims,
                send,
                partial(
                    _next_row,
                    account_id=account_id,
                    up_to_seq=up_to_seq,
                    event_names=event_names,
                    after_seq=after_seq,
                    lock=lock,
                ),
            )
            if seq is None:
                break
            after_seq = int(seq)
            sent, refused = sent + s, refused + r
    return sent, refused


@dataclass(frozen=True, slots=True)
class _Claims:
    """Where a drain claims its events: on PostgreSQL one connection held for the whole
    drain (a transaction per event on it), so a drain never queues for a pooled connection
    between two events (at `apply_concurrency` drains a pool's waiter could starve)."""

    store: Store
    connection: Connection | None


#: Drains holding a PostgreSQL connection at once, per engine: the pool's capacity less a
#: few for the applier's journal and the other steps' transactions.
_slots: WeakKeyDictionary[Engine, threading.BoundedSemaphore] = WeakKeyDictionary()
_slots_lock = threading.Lock()
_POOL_HEADROOM: Final = 4


def _drain_slot(store: Store) -> threading.BoundedSemaphore:
    engine = store.engine
    with _slots_lock:
        slot = _slots.get(engine)
        if slot is None:
            pool = engine.pool
            size = getattr(pool, "size", lambda: 5)() + max(getattr(pool, "_max_overflow", 0), 0)
            slot = threading.BoundedSemaphore(max(size - _POOL_HEADROOM, 1))
            _slots[engine] = slot
        return slot


def _one(
    claims: _Claims,
    send: Sender,
    fetch: Callable[[Session], tuple[Any, PendingEvent] | None],
) -> tuple[int, int, Any]:
    """Claim, send and mark the next event; (sent, refused, its position) or a None
    position when there is none left."""
    store = claims.store
    if claims.connection is not None:
        claimed: list[PendingEvent] = []
        marked = False
        try:
            with Session(bind=claims.connection) as session, session.begin():
                found = fetch(session)
                if found is None:
                    return 0, 0, None
                position, event = found
                claimed.append(event)
                outcome, error = send(event)
                marked = True
                _mark(session, event, outcome, error)
        except BaseException as failure:
            if claimed and not marked:
                _failed(store, claimed[0], failure)
            raise
    else:
        with store.session() as session:
            found = fetch(session)
        if found is None:
            return 0, 0, None
        position, event = found
        try:
            outcome, error = send(event)
        except BaseException as failure:
            _failed(store, event, failure)
            raise
        with store.session() as session:
            _mark(session, event, outcome, error)
    return int(outcome == SendOutcome.SENT), int(outcome != SendOutcome.SENT), position


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------


#: Names an aggregate: (org id, event name, window start epoch, part) -> its identifier.
AggregateId = Callable[[str, str, int, int], str]


def form_aggregates(
    store: Store,
    *,
    account_id: str,
    org_id: str,
    event_names: Sequence[str],
    window: int,
    closed_before: int,
    identifier: AggregateId,
    not_before: int | None = None,
    max_shift: int = 0,
) -> int:
    """Assign the account's pending rows of `event_names` whose event time is before
    `closed_before` (closed windows) to one new aggregate per (event name, window): in one
    transaction, under the account row's lock. Returns how many aggregates it formed.

    An aggregate is stamped with the latest event time of its rows (inside its window), or
    `not_before` (epoch) when that is later by at most `max_shift` seconds: the caller's
    floor of what Stripe accepts (tester T1 F7). The stamp is stored: a resend reuses it."""
    if not event_names:
        return 0
    o, g = _outbox.c, _aggregates.c
    cutoff = datetime.fromtimestamp(closed_before, UTC)
    with store.session() as session:
        lock = select(_accounts.c.id).where(_accounts.c.id == account_id)
        if store.backend == "postgresql":
            # NO KEY UPDATE: serializes the formers of this account without blocking the
            # usage writes (their foreign key takes KEY SHARE on the account row).
            lock = lock.with_for_update(key_share=True)
        session.execute(lock)
        rows = session.execute(
            select(o.seq, o.event_name, o.value, o.event_time).where(
                o.account_id == account_id,
                _pending_rows(),
                o.event_name.in_(list(event_names)),
                o.event_time < cutoff,
            )
        ).all()
        groups: dict[tuple[str, int], list[tuple[int, int, int]]] = {}
        for seq, name, value, at in rows:
            epoch = int(as_utc(at).timestamp())
            start = (epoch // window) * window
            groups.setdefault((name, start), []).append((int(seq), int(value), epoch))
        now = datetime.now(UTC)
        formed = 0
        for (name, start), members in sorted(groups.items()):
            window_start = datetime.fromtimestamp(start, UTC)
            # Parts are numbered per org, not per account: the identifier is derived from
            # the org (its customer, as the host knows it), and an org that got a new account
            # (disabled and opened again, or deleted and made again) forms its aggregate of a
            # window its earlier account formed too (tester T3-6: the same identifier, a
            # primary-key violation on every pass, the new account's usage never sent).
            last = session.execute(
                select(func.max(g.part)).where(
                    g.org_id == org_id,
                    g.event_name == name,
                    g.window_start == window_start,
                )
            ).scalar_one()
            part = 0 if last is None else int(last) + 1
            for piece in _split(members):
                _insert_aggregate(
                    session,
                    ident=identifier(org_id, name, start, part),
                    account_id=account_id,
                    org_id=org_id,
                    name=name,
                    window_start=window_start,
                    part=part,
                    members=piece,
                    now=now,
                    not_before=not_before,
                    max_shift=max_shift,
                )
                part += 1
                formed += 1
        return formed


#: The largest total one aggregate carries (tester T2 G6): the store's BIGINT (SQLite
#: INTEGER) holds at most 2^63-1; a window whose values sum past it is split into further
#: parts, each at most this.
MAX_AGGREGATE_VALUE = 2**63 - 1


def _split(
    members: Sequence[tuple[int, int, int]], cap: int = MAX_AGGREGATE_VALUE
) -> list[list[tuple[int, int, int]]]:
    """A window's rows (seq, value, epoch) in seq order, cut into consecutive parts whose
    totals stay within `cap` (a new part starts when the next value would pass it):
    deterministic, so a rerun over the same rows forms the same parts."""
    pieces: list[list[tuple[int, int, int]]] = []
    total = 0
    for member in sorted(members):
        if not pieces or total + member[1] > cap:
            pieces.append([])
            total = 0
        pieces[-1].append(member)
        total += member[1]
    return pieces


def _insert_aggregate(
    session: Session,
    *,
    ident: str,
    account_id: str,
    org_id: str,
    name: str,
    window_start: datetime,
    part: int,
    members: Sequence[tuple[int, int, int]],
    now: datetime,
    not_before: int | None,
    max_shift: int,
) -> None:
    o = _outbox.c
    stamp = max(at for _, _, at in members)
    if not_before is not None and not_before - max_shift <= stamp < not_before:
        stamp = not_before
    session.execute(
        insert(_aggregates).values(
            id=ident,
            account_id=account_id,
            org_id=org_id,
            event_name=name,
            window_start=window_start,
            part=part,
            value=sum(v for _, v, _ in members),
            event_time=datetime.fromtimestamp(stamp, UTC),
            created_at=now,
            sent_at=None,
            attempts=0,
            last_error=None,
            refused_at=None,
        )
    )
    seqs = [s for s, _, _ in members]
    for begin in range(0, len(seqs), CHUNK):
        session.execute(
            update(_outbox).where(o.seq.in_(seqs[begin : begin + CHUNK])).values(aggregate_id=ident)
        )

"""Usage: batches of debits, credit checks and reverts, on the ledger (DESIGN §17).

A batch of usages is one database transaction: the account's balance row is locked once
(`SELECT ... FOR UPDATE`; SQLite serializes writers), the ids already stored are read in one
query (a usage stored with the same content is a replay, answered as stored; other content is
an `IdConflictError` naming the id), the new usages are checked one by one against the running
balance (`balance - amount >= credit_min`, else `InsufficientCreditsError` naming the usage),
and then their transactions, entries (the account's side and the platform's), meter-outbox
rows and the balance are written in bulk. Any refusal raises before anything is written, and
the caller's transaction is rolled back on any error, so a batch is recorded whole or not at
all.

A usage's content hash is the ledger's (`LedgerRepository.debit` of the same fields hashes
the same) plus, for a usage that names a meter, the meter event (event name, value,
timestamp as given): resending the usage with another meter part is a conflict too.

A revert credits back part or all of a usage; the reverts of one usage never exceed its
amount, checked under the lock of the usage's account balance row, so concurrent reverts are
serialized. A revert's id is derived from (usage id, ordinal), see `revert_id`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, cast

import psycopg
from sqlalchemy import Table, bindparam, case, func, insert, select, text, update
from sqlalchemy.orm import Session

from billing_reconciler.store._common import Clock, content_hash, dialect_insert, utc_now
from billing_reconciler.store.database import Store
from billing_reconciler.store.errors import (
    ConflictError,
    IdConflictError,
    InsufficientCreditsError,
    NotFoundError,
    StoreError,
)
from billing_reconciler.store.ledger import (
    ACCOUNT_SIDE,
    CREDIT,
    DEBIT,
    PLATFORM_SIDE,
    LedgerTransaction,
    account_org,
    revert_source,
)
from billing_reconciler.store.tables import (
    KEY,
    BillingAccountModel,
    LastAppliedModel,
    LedgerBalanceModel,
    LedgerEntryModel,
    LedgerTransactionModel,
    MeterOutboxModel,
    OrganizationModel,
)
from billing_reconciler.store.types import as_utc, canonical_json

_transactions = cast(Table, LedgerTransactionModel.__table__)
_entries = cast(Table, LedgerEntryModel.__table__)
_balances = cast(Table, LedgerBalanceModel.__table__)
_outbox = cast(Table, MeterOutboxModel.__table__)

METER_KIND: Final = "meter"
"""`model.Kind.METER`'s value, the kind of a meter's last-applied entry."""

#: The literal form of a revert id: `system.revert:<usage id>:<ordinal>`.
REVERT_ID_PREFIX: Final = "system.revert:"
#: The hashed form, for usage ids too long for the literal one:
#: `system.revert#<sha256 hex of the usage id>:<ordinal>`.
REVERT_HASHED_PREFIX: Final = "system.revert#"
#: Ids beginning with this are the engine's own (derived) ids; callers' usages may not use it.
RESERVED_ID_PREFIX: Final = "system."


#: A keyed revert's id: `system.revert@<sha256 hex of usage id NUL key>`.
REVERT_KEYED_PREFIX: Final = "system.revert@"


def keyed_revert_id(usage_id: str, key: str) -> str:
    """The id of the revert of `usage_id` a caller named `key` (its idempotency key): the
    same revert however often it is sent; another form than `revert_id`'s."""
    return REVERT_KEYED_PREFIX + hashlib.sha256(f"{usage_id}\0{key}".encode()).hexdigest()


def revert_id(usage_id: str, ordinal: int) -> str:
    """The id of the `ordinal`-th (1, 2, ...) revert of a usage.

    `system.revert:<usage id>:<ordinal>` while that fits in 255 characters, else
    `system.revert#<sha256 hex of the usage id>:<ordinal>`. Both are injective (the ordinal is
    the digits after the last `:`; the two forms differ in their prefix), and a caller's usage
    cannot take one: ids beginning with `system.` are refused at the API."""
    if ordinal < 1:
        raise ValueError("a revert's ordinal starts at 1")
    literal = f"{REVERT_ID_PREFIX}{usage_id}:{ordinal}"
    if len(literal) <= KEY:
        return literal
    digest = hashlib.sha256(usage_id.encode()).hexdigest()
    return f"{REVERT_HASHED_PREFIX}{digest}:{ordinal}"


@dataclass(frozen=True, slots=True)
class MeterEvent:
    """The meter event a usage names; `value` None: the usage's amount; `timestamp` None:
    the usage's created time."""

    event_name: str
    value: int | None = None
    timestamp: datetime | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    id: str
    amount: int
    source: str
    description: str | None = None
    user_id: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    meter: MeterEvent | None = None


@dataclass(frozen=True, slots=True)
class Recorded:
    transaction: LedgerTransaction
    created: bool
    """False: a replay of a usage stored before with the same content (nothing written)."""


@dataclass(frozen=True, slots=True)
class Batch:
    recorded: list[Recorded]
    """One per usage, in the batch's order."""
    balance: int
    """The account's balance after the batch."""


@dataclass(frozen=True, slots=True)
class UsageAccount:
    """What recording a usage needs of an org: its active (else newest) account, if any."""

    account_id: str | None
    state: str | None
    credit_min: int


@dataclass(frozen=True, slots=True)
class Reverted:
    transaction: LedgerTransaction
    usage: LedgerTransaction
    reverted: int
    """How much of the usage is reverted in total, this revert included."""
    created: bool = True
    """False: a keyed revert sent again, answered as stored (nothing written)."""


class OverRevertError(StoreError):
    """A revert above what is left of the usage (its amount less its reverts)."""

    def __init__(self, *, usage_id: str, amount: int, remaining: int) -> None:
        super().__init__(
            f"usage {usage_id!r} has {remaining} credits left to revert: a revert of {amount}"
            " is more"
        )
        self.usage_id = usage_id
        self.amount = amount
        self.remaining = remaining


def usage_hash(account_id: str, usage: Usage, source: str) -> str:
    content: dict[str, Any] = {
        "account_id": account_id,
        "type": DEBIT,
        "amount": usage.amount,
        "source": source,
        "description": usage.description,
        "user_id": usage.user_id,
        "metadata": dict(usage.metadata),
    }
    if usage.meter is not None:
        stamp = usage.meter.timestamp
        content["meter"] = {
            "event_name": usage.meter.event_name,
            "value": usage.amount if usage.meter.value is None else usage.meter.value,
            "timestamp": None if stamp is None else as_utc(stamp).isoformat(),
        }
    return content_hash(content)


def _prepared(account_id: str, usages: Sequence[Usage]) -> tuple[list[str], list[str]]:
    """A batch checked (ids distinct, amounts positive integers): its normalized sources and
    content hashes."""
    if not usages:
        raise ValueError("a batch needs at least one usage")
    ids = [usage.id for usage in usages]
    if len(set(ids)) != len(ids):
        raise ValueError("the ids of a batch must be distinct")
    for usage in usages:
        if isinstance(usage.amount, bool) or not isinstance(usage.amount, int):
            raise ValueError(f"usage {usage.id!r}: the amount must be an integer")
        if usage.amount <= 0:
            raise ValueError(f"usage {usage.id!r}: the amount must be positive")
    sources = [usage.source.strip().lower() for usage in usages]
    digests = [
        usage_hash(account_id, usage, source) for usage, source in zip(usages, sources, strict=True)
    ]
    return sources, digests


def _batch_params(
    usages: Sequence[Usage], sources: list[str], digests: list[str], now: datetime
) -> dict[str, Any]:
    """The bind parameters of a batch as columns (`unnest`ed by the PostgreSQL statements)."""
    metered = [usage.meter for usage in usages]
    return {
        "ids": [usage.id for usage in usages],
        "amounts": [usage.amount for usage in usages],
        "sources": sources,
        "descriptions": [usage.description for usage in usages],
        "user_ids": [usage.user_id for usage in usages],
        "metadata": [canonical_json(dict(usage.metadata)) for usage in usages],
        "hashes": digests,
        "event_names": [None if m is None else m.event_name for m in metered],
        "event_values": [
            None if m is None else (u.amount if m.value is None else m.value)
            for m, u in zip(metered, usages, strict=True)
        ],
        "event_times": [
            None if m is None else (now if m.timestamp is None else as_utc(m.timestamp))
            for m in metered
        ],
        "now": now,
    }


def _batch_json(
    usages: Sequence[Usage], sources: list[str], digests: list[str], now: datetime
) -> str:
    """A batch as one JSON array of rows (`jsonb_to_recordset` in `_PG_RECORD_AT_ONCE`): one
    text parameter, where ten arrays would cost psycopg a type scan of each per request."""
    rows = []
    for usage, source, digest in zip(usages, sources, digests, strict=True):
        meter = usage.meter
        rows.append(
            {
                "id": usage.id,
                "amount": usage.amount,
                "source": source,
                "description": usage.description,
                "user_id": usage.user_id,
                "metadata": dict(usage.metadata),
                "content_hash": digest,
                "event_name": None if meter is None else meter.event_name,
                "event_value": None
                if meter is None
                else (usage.amount if meter.value is None else meter.value),
                "event_time": None
                if meter is None
                else (now if meter.timestamp is None else as_utc(meter.timestamp)).isoformat(),
            }
        )
    return canonical_json(rows)


_COLUMNS = (
    LedgerTransactionModel.id,
    LedgerTransactionModel.account_id,
    LedgerTransactionModel.type,
    LedgerTransactionModel.amount,
    LedgerTransactionModel.source,
    LedgerTransactionModel.description,
    LedgerTransactionModel.user_id,
    LedgerTransactionModel.metadata_.label("metadata_"),
    LedgerTransactionModel.created_at,
    LedgerTransactionModel.content_hash,
    LedgerTransactionModel.reverts,
)

_INT64_MAX: Final = 2**63 - 1

# Ids read per query (well under SQLite's and PostgreSQL's bind-parameter limits).
_ID_CHUNK: Final = 500


def _stored(row: Any) -> LedgerTransaction:
    return LedgerTransaction(
        id=row.id,
        account_id=row.account_id,
        type=row.type,
        amount=int(row.amount),
        source=row.source,
        description=row.description,
        user_id=row.user_id,
        metadata=dict(row.metadata_),
        created_at=row.created_at,
        reverts=row.reverts,
    )


def applied_meters(session: Session, installation_id: str) -> frozenset[str]:
    """The event names of the meters this installation last applied to Stripe (the meters a
    usage may name)."""
    return frozenset(applied_meter_fields(session, installation_id))


def applied_meter_fields(session: Session, installation_id: str) -> dict[str, Mapping[str, Any]]:
    """The meters this installation last applied to Stripe, by event name: the fields
    recorded for each (`customer_key`, `value_key`, `aggregation`, ...). The one lookup of
    the applied catalog's meters: the usage API accepts a meter event by it and the meter
    sender (`effects.credit_meters`) takes its payload keys from it, so whatever is accepted
    can be sent (tester T2 G5)."""
    rows = session.execute(
        select(LastAppliedModel.object_key, LastAppliedModel.fields).where(
            LastAppliedModel.installation_id == installation_id,
            LastAppliedModel.kind == METER_KIND,
        )
    )
    found: dict[str, Mapping[str, Any]] = {}
    for object_key, fields in rows:
        recorded: Mapping[str, Any] = fields if isinstance(fields, Mapping) else {}
        name = recorded.get("event_name")
        found[name if isinstance(name, str) else str(object_key).split("/", 1)[-1]] = recorded
    return found


# The statements of the hot path, built once (their parameters are bind parameters).
_LOCK = (
    select(_balances.c.amount)
    .where(_balances.c.account_id == bindparam("p_account_id"))
    .with_for_update()
)
_READ = select(*_COLUMNS).where(LedgerTransactionModel.id.in_(bindparam("p_ids", expanding=True)))


class UsageRepository:
    def __init__(self, session: Session, *, clock: Clock = utc_now) -> None:
        self._session = session
        self._clock = clock

    # --- the balance row ----------------------------------------------------------------

    def lock_balance(self, account_id: str) -> int:
        """The account's balance, its row locked until the transaction ends (created at 0
        for an account without one)."""
        params = {"p_account_id": account_id}
        connection = self._session.connection()
        amount = connection.execute(_LOCK, params).scalar()
        if amount is None:
            known = self._session.scalar(
                select(BillingAccountModel.id).where(BillingAccountModel.id == account_id)
            )
            if known is None:
                raise NotFoundError(f"no billing account {account_id!r}")
            self._session.execute(
                dialect_insert(self._session, _balances)
                .values(account_id=account_id, amount=0, updated_at=None)
                .on_conflict_do_nothing(index_elements=[_balances.c.account_id])
            )
            amount = connection.execute(_LOCK, params).scalar()
            assert amount is not None
        return int(amount)

    def balance(self, account_id: str) -> int:
        amount = self._session.scalar(
            select(_balances.c.amount).where(_balances.c.account_id == account_id)
        )
        return 0 if amount is None else int(amount)

    # --- usages ---------------------------------------------------------------------------

    def record(
        self, account_id: str, org_id: str, usages: Sequence[Usage], *, credit_min: int
    ) -> Batch:
        """Record a batch of usages atomically (see the module docstring): one `Recorded` per
        usage, in order, and the balance after. The caller's transaction holds the balance
        row lock until it ends."""
        ids = [usage.id for usage in usages]
        sources, digests = _prepared(account_id, usages)
        if self._session.get_bind().dialect.name == "postgresql":
            fast = self._record_postgresql(account_id, org_id, usages, sources, digests, credit_min)
            if fast is not None:
                return fast
        # Under the lock: a writer of the same ids on this account has committed, or not begun.
        balance, existing = self._lock_and_read(account_id, ids)
        results: list[Recorded | None] = []
        fresh: list[int] = []
        for index, usage in enumerate(usages):
            row = existing.get(usage.id)
            if row is None:
                results.append(None)
                fresh.append(index)
                continue
            checked = self._checked(row, digests[index], account_id, org_id, usage, sources[index])
            results.append(Recorded(checked, False))
        now = self._clock()
        running = balance
        for index in fresh:
            usage = usages[index]
            if running - usage.amount < credit_min:
                raise InsufficientCreditsError(
                    account_id=account_id,
                    balance=running,
                    credit_min=credit_min,
                    amount=usage.amount,
                    entry_id=usage.id,
                )
            running -= usage.amount
        if fresh:
            rows = [
                {
                    "id": usages[i].id,
                    "account_id": account_id,
                    "type": DEBIT,
                    "amount": usages[i].amount,
                    "source": sources[i],
                    "description": usages[i].description,
                    "user_id": usages[i].user_id,
                    "metadata": dict(usages[i].metadata),
                    "content_hash": digests[i],
                    "created_at": now,
                    "reverts": None,
                }
                for i in fresh
            ]
            self._write(rows, account_id, running, now)
            outbox = [
                self._outbox_row(usages[i], account_id, org_id, now)
                for i in fresh
                if usages[i].meter is not None
            ]
            if outbox:
                self._session.execute(insert(_outbox), outbox)
            for i, row in zip(fresh, rows, strict=True):
                results[i] = Recorded(_new(row), True)
        return Batch([r for r in results if r is not None], running)

    def _record_postgresql(
        self,
        account_id: str,
        org_id: str,
        usages: Sequence[Usage],
        sources: list[str],
        digests: list[str],
        credit_min: int,
    ) -> Batch | None:
        """The usual batch in one round trip (`_PG_RECORD`): lock the balance row, and if the
        balance allows the whole batch as if every usage were new, insert them (ON CONFLICT
        DO NOTHING), their entries and meter-outbox rows, and move the balance by what was
        inserted. Amounts are positive, so a batch allowed in total is allowed usage by usage,
        and so is any part of it. Ids not inserted are read afterwards (a new statement, which
        sees what committed while it waited): replays, or an IdConflictError (the caller's
        transaction rolls back). None when the balance does not allow the whole batch (or the
        account has no balance row): the exact path decides, under the lock already held."""
        now = self._clock()
        total = sum(usage.amount for usage in usages)
        params = _batch_params(usages, sources, digests, now) | {
            "account_id": account_id,
            "org_id": org_id,
            "total": total,
            "credit_min": credit_min,
        }
        found = self._session.connection().execute(_PG_RECORD, params).one()
        if found.balance is None or int(found.balance) - total < credit_min:
            return None
        inserted = set(found.inserted or ())
        balance = int(found.balance) if found.moved_to is None else int(found.moved_to)
        missing = [usage.id for usage in usages if usage.id not in inserted]
        stored = self._read(missing) if missing else {}
        recorded: list[Recorded] = []
        for usage, source, digest in zip(usages, sources, digests, strict=True):
            if usage.id in inserted:
                recorded.append(Recorded(_debit(usage, source, account_id, now), True))
                continue
            previous = stored.get(usage.id)
            if previous is None:  # not reached: a conflicting id is a committed row
                raise IdConflictError(f"ledger id {usage.id!r} is taken", id=usage.id)
            checked = self._checked(previous, digest, account_id, org_id, usage, source)
            recorded.append(Recorded(checked, False))
        return Batch(recorded, balance)

    @staticmethod
    def _outbox_row(usage: Usage, account_id: str, org_id: str, now: datetime) -> dict[str, Any]:
        meter = usage.meter
        assert meter is not None
        return {
            "id": usage.id,
            "account_id": account_id,
            "org_id": org_id,
            "event_name": meter.event_name,
            "value": usage.amount if meter.value is None else meter.value,
            "event_time": now if meter.timestamp is None else as_utc(meter.timestamp),
            "created_at": now,
            "aggregate_id": None,
            "sent_at": None,
            "attempts": 0,
            "last_error": None,
        }

    def check(self, account_id: str, amount: int, *, credit_min: int) -> tuple[bool, int]:
        """Whether a debit of `amount` is allowed now, and the balance (no lock: an answer,
        not a reservation)."""
        balance = self.balance(account_id)
        return balance - amount >= credit_min, balance

    # --- reverts --------------------------------------------------------------------------

    def revert(
        self, org_id: str, usage_id: str, amount: int, *, key: str | None = None
    ) -> Reverted:
        """Credit back `amount` of the usage `usage_id` of one of `org_id`'s accounts.

        With `key` (the caller's idempotency key) the revert's id is `keyed_revert_id`: sent
        again with the same amount it is answered as stored (`created` False), with another
        amount it is an IdConflictError. Without one each call is a new revert.

        NotFoundError: no such transaction, or another org's (never said which).
        ConflictError(failed_precondition): the id is a revert, or another credit, or the
        usage's account is not active (a keyed revert sent again is still answered).
        OverRevertError: more than the usage's amount less its earlier reverts."""
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise ValueError(f"a revert amount is a positive integer, not {amount!r}")
        found = self._session.execute(
            select(
                *_COLUMNS,
                BillingAccountModel.org_id.label("org_id"),
                BillingAccountModel.state.label("account_state"),
            )
            .join(BillingAccountModel, BillingAccountModel.id == LedgerTransactionModel.account_id)
            .where(LedgerTransactionModel.id == usage_id)
        ).first()
        if found is None or found.org_id != org_id:
            raise NotFoundError(f"organization {org_id} has no usage {usage_id!r}")
        if found.type == CREDIT:
            what = "a revert" if found.reverts is not None else "a credit, not a usage"
            raise ConflictError(
                f"transaction {usage_id!r} is {what}: only usages (debits) can be reverted",
                code="failed_precondition",
            )
        usage = _stored(found)
        self.lock_balance(usage.account_id)
        # Under the lock, every earlier revert of this usage has committed.
        count, total = self._session.execute(
            select(func.count(), func.coalesce(func.sum(_transactions.c.amount), 0)).where(
                _transactions.c.reverts == usage_id
            )
        ).one()
        remaining = usage.amount - int(total)
        keyed = None if key is None else keyed_revert_id(usage_id, key)
        if keyed is not None and (earlier := self._read([keyed]).get(keyed)) is not None:
            # Read under the lock: a concurrent send of the same key has committed.
            if earlier.reverts != usage_id or int(earlier.amount) != amount:
                raise IdConflictError(
                    f"revert id {key!r} of usage {usage_id!r} was used before with another "
                    f"amount ({int(earlier.amount)})",
                    id=keyed,
                )
            return Reverted(_stored(earlier), usage, int(total), created=False)
        if found.account_state != "active":
            # A revert credits the usage's own account; one no route of the org shows any
            # more (disabled, or replaced when the org was made again) would swallow it.
            raise ConflictError(
                f"usage {usage_id!r} was recorded on account {usage.account_id}, which is "
                f"{found.account_state}: a revert credits the usage's own account, so none is "
                "made (enable the account first, or grant the credits to the org's active "
                "account)",
                code="failed_precondition",
            )
        if amount > remaining:
            raise OverRevertError(usage_id=usage_id, amount=amount, remaining=remaining)
        balance = self.balance(usage.account_id)
        if balance + amount > _INT64_MAX:
            raise ConflictError(
                f"a revert of {amount} would take the balance ({balance}) past {_INT64_MAX}",
                code="failed_precondition",
            )
        now = self._clock()
        source = revert_source(usage.source)
        description = f"revert of usage {usage_id}"
        row = {
            "id": keyed if keyed is not None else revert_id(usage_id, int(count) + 1),
            "account_id": usage.account_id,
            "type": CREDIT,
            "amount": amount,
            "source": source,
            "description": description,
            "user_id": None,
            "metadata": {},
            "content_hash": content_hash(
                {
                    "account_id": usage.account_id,
                    "type": CREDIT,
                    "amount": amount,
                    "source": source,
                    "description": description,
                    "user_id": None,
                    "metadata": {},
                    "reverts": usage_id,
                }
            ),
            "created_at": now,
            "reverts": usage_id,
        }
        self._write([row], usage.account_id, balance + amount, now)
        return Reverted(_new(row), usage, int(total) + amount)

    def reverted(self, usage_id: str) -> int:
        """How much of a usage its reverts credited back."""
        total = self._session.scalar(
            select(func.coalesce(func.sum(_transactions.c.amount), 0)).where(
                _transactions.c.reverts == usage_id
            )
        )
        return int(total or 0)

    # --- internals ------------------------------------------------------------------------

    def _lock_and_read(self, account_id: str, ids: Sequence[str]) -> tuple[int, dict[str, Any]]:
        """The balance (its row locked), then the stored transactions of `ids`. Two
        statements, not one joined: on PostgreSQL a statement that waited for the lock still
        reads the other tables as of its start (READ COMMITTED re-checks only the locked
        row), so a writer of the same ids that committed meanwhile would be missed."""
        balance = self.lock_balance(account_id)
        return balance, self._read(ids)

    def replays(
        self, account_id: str, usages: Sequence[Usage], sources: Sequence[str]
    ) -> list[LedgerTransaction] | None:
        """The stored transactions of `usages` when every one of them is an identical resend
        of a usage recorded on `account_id` (nothing to record, so no lock and no balance
        check); None when any is new or differs. For a resend to a disabled account."""
        stored = self._read([usage.id for usage in usages])
        found: list[LedgerTransaction] = []
        for usage, source in zip(usages, sources, strict=True):
            row = stored.get(usage.id)
            if row is None or row.content_hash != usage_hash(account_id, usage, source):
                return None
            found.append(_stored(row))
        return found

    def _read(self, ids: Sequence[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = list(ids[start : start + _ID_CHUNK])
            for row in self._session.connection().execute(_READ, {"p_ids": chunk}):
                found[row.id] = row
        return found

    def _checked(
        self, row: Any, digest: str, account_id: str, org_id: str, usage: Usage, source: str
    ) -> LedgerTransaction:
        """The stored transaction of a usage sent again: the same content on `account_id`,
        or on an earlier account of the same org (the org was deleted and made again, or its
        account replaced: a retry straddling that is still the replay, answered with the
        transaction as stored, on its account); else an IdConflictError."""
        if row.content_hash == digest:
            return _stored(row)
        other_org = False
        if row.account_id != account_id:
            same_org = account_org(self._session, row.account_id) == org_id
            if same_org and row.content_hash == usage_hash(row.account_id, usage, source):
                return _stored(row)
            other_org = not same_org
        if row.account_id == account_id:
            before = f" ({row.type} of {row.amount}, source {row.source!r})"
        else:
            before = " on another account" if other_org else " on an earlier account of this org"
        raise IdConflictError(
            f"ledger id {row.id!r} was used before with different content{before}",
            id=row.id,
            other_account=other_org,
        )

    def _write(
        self, rows: list[dict[str, Any]], account_id: str, new_balance: int, now: datetime
    ) -> None:
        """The transactions, their entries and the balance (the row is locked by us). An id
        taken meanwhile by a writer of another account is an IdConflictError (the caller's
        transaction rolls back what this wrote)."""
        if self._session.get_bind().dialect.name == "postgresql":
            inserted = self._write_postgresql(rows, account_id, new_balance, now)
        else:
            inserted = self._write_portable(rows, account_id, new_balance, now)
        for row in rows:
            if row["id"] not in inserted:
                raise IdConflictError(
                    f"ledger id {row['id']!r} was used before with different content on"
                    " another account",
                    id=row["id"],
                    other_account=True,
                )

    def _write_postgresql(
        self, rows: list[dict[str, Any]], account_id: str, new_balance: int, now: datetime
    ) -> set[str]:
        """One statement for any number of rows of one type (`_PG_BULK_WRITE`: the rows as
        arrays through `unnest`, so its text and plan are the same for every batch size)."""
        kind = rows[0]["type"]
        assert all(row["type"] == kind for row in rows)
        params = {
            "ids": [row["id"] for row in rows],
            "amounts": [row["amount"] for row in rows],
            "sources": [row["source"] for row in rows],
            "descriptions": [row["description"] for row in rows],
            "user_ids": [row["user_id"] for row in rows],
            "metadata": [canonical_json(row["metadata"]) for row in rows],
            "hashes": [row["content_hash"] for row in rows],
            "reverts": [row["reverts"] for row in rows],
            "account_id": account_id,
            "type": kind,
            "sign": 1 if kind == CREDIT else -1,
            "now": now,
            "new_balance": new_balance,
        }
        connection = self._session.connection()
        return {row_id for (row_id,) in connection.execute(_PG_BULK_WRITE, params)}

    def _write_portable(
        self, rows: list[dict[str, Any]], account_id: str, new_balance: int, now: datetime
    ) -> set[str]:
        inserted = {
            row_id
            for (row_id,) in self._session.execute(
                dialect_insert(self._session, _transactions)
                .on_conflict_do_nothing(index_elements=[_transactions.c.id])
                .returning(_transactions.c.id),
                rows,
            )
        }
        entries: list[dict[str, Any]] = []
        for row in rows:
            delta = row["amount"] if row["type"] == CREDIT else -row["amount"]
            entries.append(
                {
                    "transaction_id": row["id"],
                    "side": ACCOUNT_SIDE,
                    "account_id": account_id,
                    "amount": delta,
                    "created_at": now,
                }
            )
            entries.append(
                {
                    "transaction_id": row["id"],
                    "side": PLATFORM_SIDE,
                    "account_id": None,
                    "amount": -delta,
                    "created_at": now,
                }
            )
        self._session.execute(insert(_entries), entries)
        self._session.execute(
            update(_balances)
            .where(_balances.c.account_id == account_id)
            .values(amount=new_balance, updated_at=now)
        )
        return inserted


#: PostgreSQL: insert the transactions (ON CONFLICT DO NOTHING), their two entries each from
#: what was inserted, and set the (locked) balance, in one round trip; answers the ids
#: inserted. The rows come as arrays (`unnest`).
_PG_BULK_WRITE = text(
    """
    WITH given AS (
        SELECT * FROM unnest(
            CAST(:ids AS text[]), CAST(:amounts AS bigint[]), CAST(:sources AS text[]),
            CAST(:descriptions AS text[]), CAST(:user_ids AS text[]),
            CAST(:metadata AS text[]), CAST(:hashes AS text[]), CAST(:reverts AS text[])
        ) AS g(id, amount, source, description, user_id, metadata, content_hash, reverts)
    ), new_transactions AS (
        INSERT INTO ledger_transactions (id, account_id, type, amount, source, description,
            user_id, metadata, content_hash, created_at, reverts)
        SELECT id, :account_id, :type, amount, source, description, user_id,
            CAST(metadata AS jsonb), content_hash, :now, reverts
        FROM given
        ON CONFLICT (id) DO NOTHING
        RETURNING id, amount
    ), new_entries AS (
        INSERT INTO ledger_entries (transaction_id, side, account_id, amount, created_at)
        SELECT id, 'account', :account_id, :sign * amount, :now FROM new_transactions
        UNION ALL
        SELECT id, 'platform', NULL, -:sign * amount, :now FROM new_transactions
    ), moved AS (
        UPDATE ledger_balances SET amount = :new_balance, updated_at = :now
        WHERE account_id = :account_id
    )
    SELECT id FROM new_transactions
    """
)


_USAGE_ACCOUNT = (
    select(
        OrganizationModel.deleted_at,
        BillingAccountModel.id,
        BillingAccountModel.state,
        BillingAccountModel.credit_min,
    )
    .select_from(OrganizationModel)
    .outerjoin(BillingAccountModel, BillingAccountModel.org_id == OrganizationModel.org_id)
    .where(OrganizationModel.org_id == bindparam("p_org_id"))
    .order_by(
        case((BillingAccountModel.state == "active", 0), else_=1),
        BillingAccountModel.created_at.desc(),
        BillingAccountModel.id.desc(),
    )
    .limit(1)
)


#: PostgreSQL: a whole batch in one round trip (`UsageRepository._record_postgresql`).
_PG_RECORD = text(
    """
    WITH locked AS (
        SELECT amount FROM ledger_balances WHERE account_id = :account_id FOR UPDATE
    ), given AS (
        SELECT * FROM unnest(
            CAST(:ids AS text[]), CAST(:amounts AS bigint[]), CAST(:sources AS text[]),
            CAST(:descriptions AS text[]), CAST(:user_ids AS text[]),
            CAST(:metadata AS text[]), CAST(:hashes AS text[]),
            CAST(:event_names AS text[]), CAST(:event_values AS bigint[]),
            CAST(:event_times AS timestamptz[])
        ) AS g(id, amount, source, description, user_id, metadata, content_hash,
            event_name, event_value, event_time)
    ), allowed AS (
        SELECT given.* FROM given, locked
        WHERE CAST(locked.amount AS numeric) - CAST(:total AS numeric) >= :credit_min
    ), new_transactions AS (
        INSERT INTO ledger_transactions (id, account_id, type, amount, source, description,
            user_id, metadata, content_hash, created_at, reverts)
        SELECT id, :account_id, 'debit', amount, source, description, user_id,
            CAST(metadata AS jsonb), content_hash, :now, NULL
        FROM allowed
        ON CONFLICT (id) DO NOTHING
        RETURNING id, amount
    ), new_entries AS (
        INSERT INTO ledger_entries (transaction_id, side, account_id, amount, created_at)
        SELECT id, 'account', :account_id, -amount, :now FROM new_transactions
        UNION ALL
        SELECT id, 'platform', NULL, amount, :now FROM new_transactions
    ), new_outbox AS (
        INSERT INTO meter_outbox (id, account_id, org_id, event_name, value, event_time,
            created_at, aggregate_id, sent_at, attempts, last_error)
        SELECT a.id, :account_id, :org_id, a.event_name, a.event_value, a.event_time, :now,
            NULL, NULL, 0, NULL
        FROM allowed AS a JOIN new_transactions AS n ON n.id = a.id
        WHERE a.event_name IS NOT NULL
    ), moved AS (
        UPDATE ledger_balances
        SET amount = amount - (SELECT coalesce(sum(amount), 0) FROM new_transactions),
            updated_at = :now
        WHERE account_id = :account_id AND EXISTS (SELECT 1 FROM new_transactions)
        RETURNING amount
    )
    SELECT (SELECT amount FROM locked) AS balance,
        (SELECT array_agg(id) FROM new_transactions) AS inserted,
        (SELECT amount FROM moved) AS moved_to
    """
)


#: PostgreSQL: a whole batch of new usages, all or nothing, as one statement that is its own
#: transaction (`record_in_one_statement`; psycopg's parameter style).
_PG_RECORD_AT_ONCE: Final = """
    WITH account AS (
        SELECT a.id, coalesce(a.credit_min, 0) AS credit_min
        FROM billing_accounts AS a JOIN organizations AS o ON o.org_id = a.org_id
        WHERE a.id = %(account_id)s AND a.org_id = %(org_id)s AND a.state = 'active'
            AND o.deleted_at IS NULL
    ), locked AS (
        SELECT b.amount FROM ledger_balances AS b JOIN account ON b.account_id = account.id
        FOR UPDATE OF b
    ), given AS (
        SELECT * FROM jsonb_to_recordset(CAST(%(batch)s AS jsonb)) AS g(id text, amount bigint,
            source text, description text, user_id text, metadata jsonb, content_hash text,
            event_name text, event_value bigint, event_time timestamptz)
    ), allowed AS (
        SELECT given.* FROM given, locked, account
        WHERE CAST(locked.amount AS numeric) - CAST(%(total)s AS numeric) >= account.credit_min
    ), new_transactions AS (
        INSERT INTO ledger_transactions (id, account_id, type, amount, source, description,
            user_id, metadata, content_hash, created_at, reverts)
        SELECT id, %(account_id)s, 'debit', amount, source, description, user_id, metadata,
            content_hash, %(now)s, NULL
        FROM allowed
        RETURNING id, amount
    ), new_entries AS (
        INSERT INTO ledger_entries (transaction_id, side, account_id, amount, created_at)
        SELECT id, 'account', %(account_id)s, -amount, %(now)s FROM new_transactions
        UNION ALL
        SELECT id, 'platform', NULL, amount, %(now)s FROM new_transactions
    ), new_outbox AS (
        INSERT INTO meter_outbox (id, account_id, org_id, event_name, value, event_time,
            created_at, aggregate_id, sent_at, attempts, last_error)
        SELECT a.id, %(account_id)s, %(org_id)s, a.event_name, a.event_value, a.event_time, %(now)s,
            NULL, NULL, 0, NULL
        FROM allowed AS a
        WHERE a.event_name IS NOT NULL
    ), moved AS (
        UPDATE ledger_balances
        SET amount = amount - (SELECT coalesce(sum(amount), 0) FROM new_transactions),
            updated_at = %(now)s
        WHERE account_id = %(account_id)s AND EXISTS (SELECT 1 FROM new_transactions)
        RETURNING amount
    )
    SELECT (SELECT amount FROM moved) AS moved_to
"""


async def record_in_one_statement(
    store: Store,
    account_id: str,
    org_id: str,
    usages: Sequence[Usage],
    *,
    clock: Clock = utc_now,
) -> Batch | None:
    """PostgreSQL, the usual request (every usage new, the account active, the balance
    enough): the whole batch in one statement on an autocommit connection of the event loop
    (`store.statement()`), its own transaction: one round trip, no BEGIN or COMMIT, no worker
    thread. It locks the balance row, and inserts the usages, their entries and meter-outbox
    rows and moves the balance only if `account_id` is still the org's active account (the
    org not deleted), the balance allows the whole batch (`balance - total >= credit_min`,
    read under the lock); an id of the batch that exists, or that another writer commits
    meanwhile, fails the statement (a unique violation: nothing of it stays; no lookup of the
    ids beforehand, whose cached plan, made while the table was small, could scan it whole
    for every request). None, with nothing written, when any of that does not hold:
    `UsageRepository.record`, in a transaction, then decides exactly (replays, conflicts,
    refusals), as it does for every batch on SQLite."""
    sources, digests = _prepared(account_id, usages)
    now = clock()
    total = sum(usage.amount for usage in usages)
    params = {
        "batch": _batch_json(usages, sources, digests, now),
        "account_id": account_id,
        "org_id": org_id,
        "total": total,
        "now": now,
    }
    try:
        async with store.statement() as connection:
            cursor = await connection.execute(_PG_RECORD_AT_ONCE, params)
            found = await cursor.fetchone()
    except psycopg.errors.IntegrityError:
        return None  # an id another writer committed meanwhile: the statement left nothing
    except psycopg.OperationalError:
        return None  # the connection lost: nothing committed (the general path pings)
    moved_to = None if found is None else found[0]
    if moved_to is None:
        return None
    recorded = [
        Recorded(_debit(usage, source, account_id, now), True)
        for usage, source in zip(usages, sources, strict=True)
    ]
    return Batch(recorded, int(moved_to))


def usage_account(session: Session, org_id: str) -> UsageAccount | None:
    """The org's active (else newest) account in one query; None when there is no such org
    (or it is deleted)."""
    row = session.connection().execute(_USAGE_ACCOUNT, {"p_org_id": org_id}).first()
    if row is None or row.deleted_at is not None:
        return None
    return UsageAccount(
        account_id=row.id,
        state=row.state,
        credit_min=0 if row.credit_min is None else int(row.credit_min),
    )


def _debit(usage: Usage, source: str, account_id: str, now: datetime) -> LedgerTransaction:
    """The transaction of a usage just inserted."""
    return LedgerTransaction(
        id=usage.id,
        account_id=account_id,
        type=DEBIT,
        amount=usage.amount,
        source=source,
        description=usage.description,
        user_id=usage.user_id,
        metadata=dict(usage.metadata),
        created_at=now,
        reverts=None,
    )


def _new(row: Mapping[str, Any]) -> LedgerTransaction:
    return LedgerTransaction(
        id=row["id"],
        account_id=row["account_id"],
        type=row["type"],
        amount=row["amount"],
        source=row["source"],
        description=row["description"],
        user_id=row["user_id"],
        metadata=dict(row["metadata"]),
        created_at=row["created_at"],
        reverts=row["reverts"],
    )

"""The credits ledger: append-only, double-entry, exact under concurrent writers (DESIGN §17).

Each transaction (a credit or a debit of one account) writes two entries in the same database
transaction: the account's side and its counter-entry on the platform's side, signed, summing
to zero; and it moves the account's balance row, which it holds locked (`SELECT ... FOR
UPDATE` on PostgreSQL; SQLite serializes writers) from the read to the write. So balances stay
exact under any number of writers and read in O(1), and `verify()` can check that the entries
of each account add up to its balance.

The transaction id is the caller's idempotency key: resending the same content is a no-op
that answers the stored transaction (`created` False); the same id with other content is an
`IdConflictError`. A debit is allowed only while `balance - amount >= credit_min`, checked
under the lock.

On PostgreSQL a write is one statement (`_PG_LOCKED_WRITE`: the lock, the check, the inserts
and the balance in data-modifying CTEs); a resend, a refused debit or a conflict reads the
stored id with a second. An account without its balance row takes the two-step path (lock,
then write), which SQLite always takes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Table,
    and_,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from billing_reconciler.store._common import Clock, content_hash, dialect_insert, utc_now
from billing_reconciler.store.errors import IdConflictError, InsufficientCreditsError, NotFoundError
from billing_reconciler.store.tables import (
    BillingAccountModel,
    LedgerBalanceModel,
    LedgerEntryModel,
    LedgerTransactionModel,
)
from billing_reconciler.store.types import UTCDateTime, as_utc

CREDIT = "credit"
DEBIT = "debit"
ACCOUNT_SIDE = "account"
PLATFORM_SIDE = "platform"

SOURCE_AWARDED = "system.awarded"
SOURCE_STARTER = "system.starter"
SOURCE_BUY = "system.buy"
SOURCE_OVERDRAFT = "system.overdraft"
SOURCE_REVERT_PREFIX = "system.revert."

_transactions = cast(Table, LedgerTransactionModel.__table__)
_entries = cast(Table, LedgerEntryModel.__table__)
_balances = cast(Table, LedgerBalanceModel.__table__)


def onboard_grant_id(org_id: str) -> str:
    """The ledger id of an org's onboard credits: derived from the org, so granted once ever."""
    return "onboard:" + org_id


def revert_source(source: str) -> str:
    """The source of a revert of a debit from `source`."""
    return SOURCE_REVERT_PREFIX + source.lower()


@dataclass(frozen=True, slots=True)
class LedgerTransaction:
    id: str
    account_id: str
    type: str
    amount: int
    source: str
    description: str | None
    user_id: str | None
    metadata: Mapping[str, str]
    created_at: datetime
    reverts: str | None = None
    """For a revert (a credit): the usage it credits back."""


def account_org(session: Session, account_id: str) -> str | None:
    """The org of an account (None for no such account): an id's earlier transaction on
    another account of the same org is a replay, not a conflict (ledger and usages)."""
    return session.scalar(
        select(BillingAccountModel.org_id).where(BillingAccountModel.id == account_id)
    )


def _transaction(row: Any) -> LedgerTransaction:
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
        reverts=getattr(row, "reverts", None),
    )


def _encode_cursor(created_at: datetime, transaction_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), transaction_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, transaction_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return as_utc(datetime.fromisoformat(created)), str(transaction_id)
    except (ValueError, TypeError) as error:
        raise ValueError(f"invalid ledger cursor {cursor!r}") from error


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
    LedgerTransactionModel.reverts,
)


def _pg_write_statement() -> Any:
    """INSERT the transaction (ON CONFLICT DO NOTHING), INSERT its two entries from what was
    inserted, and UPDATE the balance only if it was: one round trip. Built once; the values
    are bind parameters `p_<column>`, `p_delta`, `p_negative_delta`, `p_new_balance`."""
    names = (
        "id",
        "account_id",
        "type",
        "amount",
        "source",
        "description",
        "user_id",
        "metadata",
        "content_hash",
        "created_at",
    )
    transaction = (
        postgresql.insert(_transactions)
        .values({name: bindparam(f"p_{name}", type_=_transactions.c[name].type) for name in names})
        .on_conflict_do_nothing(index_elements=[_transactions.c.id])
        .returning(_transactions.c.id)
        .cte("new_transaction")
    )
    created = bindparam("p_created_at", type_=UTCDateTime())
    sides = union_all(
        select(
            transaction.c.id,
            literal(ACCOUNT_SIDE),
            bindparam("p_account_id", type_=_entries.c.account_id.type),
            bindparam("p_delta", type_=BigInteger()),
            created,
        ),
        select(
            transaction.c.id,
            literal(PLATFORM_SIDE),
            null(),
            bindparam("p_negative_delta", type_=BigInteger()),
            created,
        ),
    )
    entries = (
        insert(_entries)
        .from_select(["transaction_id", "side", "account_id", "amount", "created_at"], sides)
        .cte("new_entries")
    )
    return (
        update(_balances)
        .where(
            _balances.c.account_id == bindparam("p_account_id"),
            exists(select(transaction.c.id)),
        )
        .values(amount=bindparam("p_new_balance"), updated_at=created)
        .returning(_balances.c.account_id)
        .add_cte(transaction)
        .add_cte(entries)
    )


_PG_WRITE = _pg_write_statement()


def _pg_locked_write_statement() -> Any:
    """One round trip for the usual write on PostgreSQL: lock the balance row (FOR UPDATE, in
    a CTE every later part depends on, so the lock is taken first, as `_LOCK_BALANCE` does),
    INSERT the transaction only if the locked balance allows it (`p_credit_min` NULL: a
    credit, always) and its id is free (ON CONFLICT DO NOTHING), INSERT its two entries from
    what was inserted, and move the balance by `p_delta` only if it was. Answers the balance
    read under the lock and whether it wrote; no row when the account has no balance row."""
    names = (
        "id",
        "account_id",
        "type",
        "amount",
        "source",
        "description",
        "user_id",
        "metadata",
        "content_hash",
        "created_at",
    )
    account = bindparam("p_account_id", type_=_balances.c.account_id.type)
    delta = bindparam("p_delta", type_=BigInteger())
    credit_min = bindparam("p_credit_min", type_=BigInteger())
    locked = (
        select(_balances.c.amount)
        .where(_balances.c.account_id == account)
        .with_for_update()
        .cte("locked_balance")
    )
    allowed = (
        select(*(bindparam(f"p_{name}", type_=_transactions.c[name].type) for name in names))
        .select_from(locked)
        .where(or_(credit_min.is_(None), locked.c.amount + delta >= credit_min))
    )
    transaction = (
        postgresql.insert(_transactions)
        .from_select(list(names), allowed)
        .on_conflict_do_nothing(index_elements=[_transactions.c.id])
        .returning(_transactions.c.id)
        .cte("new_transaction")
    )
    created = bindparam("p_created_at", type_=UTCDateTime())
    sides = union_all(
        select(transaction.c.id, literal(ACCOUNT_SIDE), account, delta, created),
        select(
            transaction.c.id,
            literal(PLATFORM_SIDE),
            null(),
            bindparam("p_negative_delta", type_=BigInteger()),
            created,
        ),
    )
    entries = (
        insert(_entries)
        .from_select(["transaction_id", "side", "account_id", "amount", "created_at"], sides)
        .cte("new_entries")
    )
    moved = (
        update(_balances)
        .where(_balances.c.account_id == account, exists(select(transaction.c.id)))
        .values(amount=_balances.c.amount + delta, updated_at=created)
        .returning(_balances.c.account_id)
        .cte("moved_balance")
    )
    return select(
        locked.c.amount.label("balance"), exists(select(moved.c.account_id)).label("written")
    ).add_cte(entries)


_PG_LOCKED_WRITE = _pg_locked_write_statement()

#: The balance row, locked (FOR UPDATE OF ledger_balances; SQLite renders no lock, its
#: writers are serialized), with the transaction of `p_id` if stored: one round trip.
_LOCK_BALANCE = (
    select(_balances.c.amount.label("balance"), *_COLUMNS, LedgerTransactionModel.content_hash)
    .select_from(
        _balances.outerjoin(LedgerTransactionModel, LedgerTransactionModel.id == bindparam("p_id"))
    )
    .where(_balances.c.account_id == bindparam("p_account_id"))
    .with_for_update(of=_balances)
)


class LedgerRepository:
    def __init__(self, session: Session, *, clock: Clock = utc_now) -> None:
        self._session = session
        self._clock = clock

    def credit(
        self,
        account_id: str,
        *,
        id: str,
        amount: int,
        source: str,
        description: str | None = None,
        user_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> tuple[LedgerTransaction, bool]:
        """Add `amount` credits; (the transaction, True) or (the stored one, False) on resend."""
        return self._write(
            CREDIT, account_id, id, amount, source, description, user_id, metadata, None
        )

    def debit(
        self,
        account_id: str,
        *,
        id: str,
        amount: int,
        source: str,
        description: str | None = None,
        user_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        credit_min: int,
    ) -> tuple[LedgerTransaction, bool]:
        """Take `amount` credits if `balance - amount >= credit_min` (else
        InsufficientCreditsError); a resend answers the stored transaction."""
        return self._write(
            DEBIT, account_id, id, amount, source, description, user_id, metadata, credit_min
        )

    def _write(
        self,
        kind: str,
        account_id: str,
        transaction_id: str,
        amount: int,
        source: str,
        description: str | None,
        user_id: str | None,
        metadata: Mapping[str, str] | None,
        credit_min: int | None,
    ) -> tuple[LedgerTransaction, bool]:
        if not transaction_id:
            raise ValueError("a ledger transaction needs an id")
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise ValueError(f"a ledger amount is a positive integer, not {amount!r}")
        source = source.strip().lower()
        if not source:
            raise ValueError("a ledger transaction needs a source")
        meta = dict(metadata or {})
        digest = content_hash(
            {
                "account_id": account_id,
                "type": kind,
                "amount": amount,
                "source": source,
                "description": description,
                "user_id": user_id,
                "metadata": meta,
            }
        )
        delta = amount if kind == CREDIT else -amount
        if self._session.get_bind().dialect.name == "postgresql":
            answered = self._write_postgresql_locked(
                account_id,
                transaction_id,
                kind,
                amount,
                source,
                description,
                user_id,
                meta,
                digest,
                delta,
                credit_min,
            )
            if answered is not None:
                return answered
        # One round trip: lock the balance row, and read the id's transaction under the lock
        # (a writer of the same id on this account has committed by then, or not begun).
        balance, existing = self._lock_balance(account_id, transaction_id, digest)
        if existing is not None:
            return existing, False
        if credit_min is not None and balance + delta < credit_min:
            raise InsufficientCreditsError(
                account_id=account_id,
                balance=balance,
                credit_min=credit_min,
                amount=amount,
                entry_id=transaction_id,
            )
        now = self._clock()
        row = {
            "id": transaction_id,
            "account_id": account_id,
            "type": kind,
            "amount": amount,
            "source": source,
            "description": description,
            "user_id": user_id,
            "metadata": meta,
            "content_hash": digest,
            "created_at": now,
        }
        if self._session.get_bind().dialect.name == "postgresql":
            inserted = self._write_postgresql(row, balance + delta, delta)
        else:
            inserted = self._write_portable(row, balance + delta, delta)
        if not inserted:
            # The id was taken in between by a writer of another account (ours is locked).
            existing = self._existing(transaction_id, digest, account_id)
            assert existing is not None
            return existing, False
        record = LedgerTransaction(
            id=transaction_id,
            account_id=account_id,
            type=kind,
            amount=amount,
            source=source,
            description=description,
            user_id=user_id,
            metadata=meta,
            created_at=now,
        )
        return record, True

    def _write_postgresql_locked(
        self,
        account_id: str,
        transaction_id: str,
        kind: str,
        amount: int,
        source: str,
        description: str | None,
        user_id: str | None,
        meta: dict[str, str],
        digest: str,
        delta: int,
        credit_min: int | None,
    ) -> tuple[LedgerTransaction, bool] | None:
        """The usual write in one round trip (`_PG_LOCKED_WRITE`): the new transaction, or
        the stored one of its id (a resend, or IdConflictError), or InsufficientCreditsError,
        all decided under the balance row's lock. None when the account has no balance row:
        the caller's two-step path deals with that."""
        now = self._clock()
        params = {
            "p_id": transaction_id,
            "p_account_id": account_id,
            "p_type": kind,
            "p_amount": amount,
            "p_source": source,
            "p_description": description,
            "p_user_id": user_id,
            "p_metadata": meta,
            "p_content_hash": digest,
            "p_created_at": now,
            "p_delta": delta,
            "p_negative_delta": -delta,
            "p_credit_min": credit_min,
        }
        found = self._session.connection().execute(_PG_LOCKED_WRITE, params).first()
        if found is None:
            return None
        if found.written:
            record = LedgerTransaction(
                id=transaction_id,
                account_id=account_id,
                type=kind,
                amount=amount,
                source=source,
                description=description,
                user_id=user_id,
                metadata=meta,
                created_at=now,
            )
            return record, True
        # Not written: the id is taken (read it; a writer of it has committed by now, since
        # ON CONFLICT waited for it), or the locked balance does not allow the debit.
        existing = self._existing(transaction_id, digest, account_id)
        if existing is not None:
            return existing, False
        balance = int(found.balance)
        if credit_min is not None and balance + delta < credit_min:
            raise InsufficientCreditsError(
                account_id=account_id,
                balance=balance,
                credit_min=credit_min,
                amount=amount,
                entry_id=transaction_id,
            )
        return None  # not reached (a writer of the id rolled back?): the two-step path

    def _write_postgresql(self, row: dict[str, Any], new_balance: int, delta: int) -> bool:
        """The transaction row, its two entries and the balance in one statement (data-
        modifying CTEs); nothing when the id is taken. True when written."""
        params = {f"p_{key}": value for key, value in row.items()}
        params.update(p_delta=delta, p_negative_delta=-delta, p_new_balance=new_balance)
        return self._session.connection().execute(_PG_WRITE, params).first() is not None

    def _write_portable(self, row: dict[str, Any], new_balance: int, delta: int) -> bool:
        inserted = self._session.execute(
            dialect_insert(self._session, _transactions)
            .values(**row)
            .on_conflict_do_nothing(index_elements=[_transactions.c.id])
            .returning(_transactions.c.id)
        ).first()
        if inserted is None:
            return False
        sides = [
            (ACCOUNT_SIDE, row["account_id"], delta),
            (PLATFORM_SIDE, None, -delta),
        ]
        self._session.execute(
            insert(_entries).values(
                [
                    {
                        "transaction_id": row["id"],
                        "side": side,
                        "account_id": account,
                        "amount": amount,
                        "created_at": row["created_at"],
                    }
                    for side, account, amount in sides
                ]
            )
        )
        self._session.execute(
            update(_balances)
            .where(_balances.c.account_id == row["account_id"])
            .values(amount=new_balance, updated_at=row["created_at"])
        )
        return True

    def _lock_balance(
        self, account_id: str, transaction_id: str, digest: str
    ) -> tuple[int, LedgerTransaction | None]:
        """The account's balance, its row locked until the transaction ends, and the stored
        transaction of `transaction_id` if any (IdConflictError if its content differs)."""
        params = {"p_account_id": account_id, "p_id": transaction_id}
        found = self._session.connection().execute(_LOCK_BALANCE, params).first()
        if found is None:
            known = self._session.scalar(
                select(BillingAccountModel.id).where(BillingAccountModel.id == account_id)
            )
            if known is None:
                raise NotFoundError(f"no billing account {account_id!r}")
            # An account without its balance row (every account gets one when it is created).
            self._session.execute(
                dialect_insert(self._session, _balances)
                .values(account_id=account_id, amount=0, updated_at=None)
                .on_conflict_do_nothing(index_elements=[_balances.c.account_id])
            )
            found = self._session.connection().execute(_LOCK_BALANCE, params).one()
        if found.id is None:
            return int(found.balance), None
        return int(found.balance), self._checked(found, digest, account_id)

    def _checked(self, row: Any, digest: str, account_id: str) -> LedgerTransaction:
        if row.content_hash != digest and row.account_id != account_id:
            # The same content on an earlier account of the same org (the org deleted and made
            # again, or its account replaced): a retry straddling that is still the replay,
            # answered as stored, on its account (tester T4-1, as T3-2 for usages).
            as_if_here = content_hash(
                {
                    "account_id": account_id,
                    "type": row.type,
                    "amount": int(row.amount),
                    "source": row.source,
                    "description": row.description,
                    "user_id": row.user_id,
                    "metadata": dict(row.metadata_),
                }
            )
            if as_if_here == digest:
                here = account_org(self._session, account_id)
                if here is not None and account_org(self._session, row.account_id) == here:
                    return _transaction(row)
        if row.content_hash != digest:
            # Ids are global: one used on another account says only that it is taken, never
            # what another org was granted or charged.
            before = (
                f" ({row.type} of {row.amount}, source {row.source!r})"
                if row.account_id == account_id
                else " on another account"
            )
            raise IdConflictError(
                f"ledger id {row.id!r} was used before with different content{before}",
                id=row.id,
            )
        return _transaction(row)

    def _existing(
        self, transaction_id: str, digest: str, account_id: str
    ) -> LedgerTransaction | None:
        row = self._session.execute(
            select(*_COLUMNS, LedgerTransactionModel.content_hash).where(
                LedgerTransactionModel.id == transaction_id
            )
        ).first()
        return None if row is None else self._checked(row, digest, account_id)

    def balance(self, account_id: str) -> tuple[int, datetime | None]:
        """The account's balance and when it last moved ((0, None) for none yet)."""
        row = self._session.execute(
            select(_balances.c.amount, _balances.c.updated_at).where(
                _balances.c.account_id == account_id
            )
        ).first()
        if row is None:
            return 0, None
        return int(row.amount), row.updated_at

    def get(self, transaction_id: str) -> LedgerTransaction | None:
        row = self._session.execute(
            select(*_COLUMNS).where(LedgerTransactionModel.id == transaction_id)
        ).first()
        return None if row is None else _transaction(row)

    def transactions(
        self,
        account_id: str,
        *,
        limit: int = 50,
        cursor: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> tuple[list[LedgerTransaction], str | None]:
        """A page of the account's transactions, newest first, in `[start, end)`, and the
        cursor of the next page (None: this is the last)."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        model = LedgerTransactionModel
        query = (
            select(*_COLUMNS)
            .where(model.account_id == account_id)
            .order_by(model.created_at.desc(), model.id.desc())
            .limit(limit + 1)
        )
        if start is not None:
            query = query.where(model.created_at >= as_utc(start))
        if end is not None:
            query = query.where(model.created_at < as_utc(end))
        if cursor is not None:
            created, last_id = _decode_cursor(cursor)
            query = query.where(
                or_(
                    model.created_at < created,
                    and_(model.created_at == created, model.id < last_id),
                )
            )
        page = [_transaction(row) for row in self._session.execute(query)]
        if len(page) > limit:
            last = page[limit - 1]
            return page[:limit], _encode_cursor(last.created_at, last.id)
        return page, None

    def total_balance(self) -> int:
        """The sum of every account's balance (minor units; 0 with no accounts), exact at any
        size: summed in halves (`_split_sum`), so it never overflows the database's int64."""
        high, low = self._session.execute(select(*_split_sum(_balances.c.amount))).one()
        return _joined(high, low)

    def verify(self) -> list[str]:
        """Problems of the ledger (empty when sound): an account whose entries do not sum to
        its balance; a transaction whose entries are not two summing to zero, or whose
        account side is not its signed amount.

        Each account's entries are summed in halves and compared in Python, so balances and
        entries summing past int64 (SQLite raises "integer overflow") are checked exactly."""
        problems: list[str] = []
        entry = LedgerEntryModel
        sums = {
            account_id: _joined(high, low)
            for account_id, high, low in self._session.execute(
                select(entry.account_id, *_split_sum(entry.amount))
                .where(entry.side == ACCOUNT_SIDE)
                .group_by(entry.account_id)
            )
        }
        balances = {
            account_id: int(amount)
            for account_id, amount in self._session.execute(
                select(_balances.c.account_id, _balances.c.amount)
            )
        }
        for account_id in sorted(balances):
            balance, total = balances[account_id], sums.get(account_id, 0)
            if balance != total:
                problems.append(
                    f"account {account_id}: balance {balance} but its entries sum to {total}"
                )
        for account_id in sorted(set(sums) - set(balances)):
            problems.append(
                f"account {account_id}: entries sum to {sums[account_id]} but it has no balance row"
            )
        txn = LedgerTransactionModel
        account_amount = func.sum(case((entry.side == ACCOUNT_SIDE, entry.amount), else_=0))
        own_account_sides = func.sum(
            case(
                (and_(entry.side == ACCOUNT_SIDE, entry.account_id == txn.account_id), 1),
                else_=0,
            )
        )
        expected = case((txn.type == CREDIT, txn.amount), else_=-txn.amount)
        unbalanced = self._session.execute(
            select(
                txn.id,
                func.count(entry.id),
                func.coalesce(func.sum(entry.amount), 0),
                func.coalesce(account_amount, 0),
                expected,
            )
            .outerjoin(entry, entry.transaction_id == txn.id)
            .group_by(txn.id, txn.type, txn.amount, txn.account_id)
            .having(
                or_(
                    func.count(entry.id) != 2,
                    func.coalesce(func.sum(entry.amount), 0) != 0,
                    func.coalesce(account_amount, 0) != expected,
                    func.coalesce(own_account_sides, 0) != 1,
                )
            )
            .order_by(txn.id)
        )
        for transaction_id, count, total, account_total, signed in unbalanced:
            problems.append(
                f"transaction {transaction_id}: {int(count)} entries summing to {int(total)},"
                f" account side {int(account_total)} (expected 2 entries summing to 0, account"
                f" side {int(signed)} on its own account)"
            )
        return problems


# Sums of int64 columns in two halves: `amount // 2**32` (below 2**31 in magnitude) and
# `amount % 2**32` (below 2**32), so each half's sum stays within int64 for up to 2**31 rows,
# and `_joined` puts them together in Python ints. Both backends truncate the division toward
# zero and give the remainder the dividend's sign, so high * 2**32 + low == amount, row by row.
_HALF = 2**32


def _split_sum(column: Any) -> tuple[Any, Any]:
    return (
        func.coalesce(func.sum(column // _HALF), 0),
        func.coalesce(func.sum(column % _HALF), 0),
    )


def _joined(high: Any, low: Any) -> int:
    return int(high) * _HALF + int(low)

"""Overdraft windows (DESIGN §17): one `overdraft_windows` row per (account, window end), ever.

A row is written when its window is evaluated: deficit 0 when nothing was owed, else the
window is claimed (`claim`: INSERT ... ON CONFLICT DO NOTHING on the primary key) before its
invoice is made, then names the invoice (`set_invoice`) and its last known status. A paid
invoice is credited back once (`credit_back`: the ledger credit, whose id is derived from the
invoice line, and the row's `credited` flag in one transaction). `set_status` records a
void or uncollectible invoice; `rebuild` writes the row of a window a lost store forgot, as
its invoice in Stripe says (a paid one credited back unless the ledger has its id).

The reads are what the overdraft part observes each pass, each one query: the accounts due
for a window (online, active, `credit_min` < 0 or a negative balance, created before the
window's end, no row for it) with their window start (the end of their last window that
owed something, else their creation), the end of their latest evaluated window and the
balance of their entries in [start, end) without `system.overdraft` credits; the rows with
an unfinished invoice; the rows awaiting payment (open or uncollectible).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast

from sqlalchemy import Table, and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from billing_reconciler.store._common import Clock, dialect_insert, utc_now
from billing_reconciler.store.ledger import CREDIT, SOURCE_OVERDRAFT, LedgerRepository
from billing_reconciler.store.tables import (
    BillingAccountModel,
    LedgerBalanceModel,
    LedgerTransactionModel,
    OverdraftWindowModel,
)
from billing_reconciler.store.types import as_utc

_windows = cast(Table, OverdraftWindowModel.__table__)
_accounts = cast(Table, BillingAccountModel.__table__)
_transactions = cast(Table, LedgerTransactionModel.__table__)
_balances = cast(Table, LedgerBalanceModel.__table__)
#: A transaction's effect on its account's balance: credits positive.
_SIGNED: Final = case(
    (_transactions.c.type == CREDIT, _transactions.c.amount),
    else_=-_transactions.c.amount,
)

#: Statuses of a finalized invoice (Stripe sends it; nothing left to make).
FINALIZED: Final = ("open", "paid", "void", "uncollectible")
#: Statuses of an invoice that may still be paid.
AWAITING: Final = ("open", "uncollectible")

__all__ = ["AWAITING", "FINALIZED", "DueAccount", "OverdraftRepository", "WindowRow"]


@dataclass(frozen=True, slots=True)
class DueAccount:
    account_id: str
    org_id: str
    stripe_customer_id: str | None
    """None: the customers domain has not made its Stripe customer yet."""
    due_in_days: int
    window_start: datetime
    balance: int
    """The sum of the window's entries (credits positive), `system.overdraft` left out."""
    evaluated_until: datetime | None = None
    """The end of the account's latest evaluated window (any deficit), None when none was:
    the store knows every window up to it; Stripe may show invoices of later ones (a lost
    or older store)."""


@dataclass(frozen=True, slots=True)
class WindowRow:
    account_id: str
    org_id: str
    stripe_customer_id: str | None
    due_in_days: int
    window_start: datetime
    window_end: datetime
    deficit: int
    unit_amount: int | None
    remainder: int | None
    currency: str | None
    invoice_id: str | None
    invoice_status: str | None
    credited: bool
    updated_at: datetime


def _row(r: Any) -> WindowRow:
    return WindowRow(
        account_id=r.account_id,
        org_id=r.org_id,
        stripe_customer_id=r.stripe_customer_id,
        due_in_days=int(r.due_in_days),
        window_start=as_utc(r.window_start),
        window_end=as_utc(r.window_end),
        deficit=int(r.deficit),
        unit_amount=None if r.unit_amount is None else int(r.unit_amount),
        remainder=None if r.remainder is None else int(r.remainder),
        currency=r.currency,
        invoice_id=r.invoice_id,
        invoice_status=r.invoice_status,
        credited=bool(r.credited),
        updated_at=as_utc(r.updated_at),
    )


_ROW_COLUMNS = (
    _windows.c.account_id,
    _windows.c.org_id,
    _accounts.c.stripe_customer_id,
    _accounts.c.due_in_days,
    _windows.c.window_start,
    _windows.c.window_end,
    _windows.c.deficit,
    _windows.c.unit_amount,
    _windows.c.remainder,
    _windows.c.currency,
    _windows.c.invoice_id,
    _windows.c.invoice_status,
    _windows.c.credited,
    _windows.c.updated_at,
)


class OverdraftRepository:
    def __init__(self, session: Session, *, clock: Clock = utc_now) -> None:
        self._session = session
        self._clock = clock

    # --- reads ------------------------------------------------------------------------------

    def due(self, *, window_end: datetime, org_ids: frozenset[str] | None) -> list[DueAccount]:
        """The accounts due for the window ending at `window_end` (see the module docstring),
        by org id, in one query; those whose Stripe customer does not exist yet are included
        with `stripe_customer_id` None (they wait for it; the part leaves them out)."""
        end = as_utc(window_end)
        invoiced = (
            select(func.max(_windows.c.window_end))
            .where(
                _windows.c.account_id == _accounts.c.id,
                _windows.c.deficit > 0,
                _windows.c.window_end < end,
            )
            .scalar_subquery()
        )
        known = (
            select(func.max(_windows.c.window_end))
            .where(_windows.c.account_id == _accounts.c.id, _windows.c.window_end < end)
            .scalar_subquery()
        )
        evaluated = (
            select(_windows.c.account_id)
            .where(_windows.c.account_id == _accounts.c.id, _windows.c.window_end == end)
            .exists()
        )
        # A debt stays billable whatever today's limit: an account whose credit_min was raised
        # back to 0 (or above its balance) after it overdrew is still evaluated.
        in_debt = (
            select(_balances.c.account_id)
            .where(_balances.c.account_id == _accounts.c.id, _balances.c.amount < 0)
            .exists()
        )
        accounts = select(
            _accounts.c.id,
            _accounts.c.org_id,
            _accounts.c.stripe_customer_id,
            _accounts.c.due_in_days,
            func.coalesce(invoiced, _accounts.c.created_at).label("window_start"),
            known.label("evaluated_until"),
        ).where(
            _accounts.c.state == "active",
            _accounts.c.offline.is_(False),
            or_(_accounts.c.credit_min < 0, in_debt),
            _accounts.c.created_at < end,
            ~evaluated,
        )
        if org_ids is not None:
            accounts = accounts.where(_accounts.c.org_id.in_(sorted(org_ids)))
        base = accounts.subquery("due_accounts")
        balance = (
            select(func.coalesce(func.sum(_SIGNED), 0))
            .where(
                _transactions.c.account_id == base.c.id,
                _transactions.c.created_at >= base.c.window_start,
                _transactions.c.created_at < end,
                _transactions.c.source != SOURCE_OVERDRAFT,
            )
            .scalar_subquery()
        )
        query = (
            select(base, balance.label("balance"))
            .where(base.c.window_start < end)
            .order_by(base.c.org_id, base.c.id)
        )
        return [
            DueAccount(
                account_id=r.id,
                org_id=r.org_id,
                stripe_customer_id=r.stripe_customer_id,
                due_in_days=int(r.due_in_days),
                window_start=as_utc(r.window_start),
                balance=int(r.balance),
                evaluated_until=(None if r.evaluated_until is None else as_utc(r.evaluated_until)),
            )
            for r in self._session.execute(query)
        ]

    def balance_between(self, account_id: str, start: datetime, end: datetime) -> int:
        """The sum of the account's entries created in [start, end), credits positive,
        leaving out `system.overdraft` credits (what paid overdraft invoices gave back)."""
        total = self._session.execute(
            select(func.coalesce(func.sum(_SIGNED), 0)).where(
                _transactions.c.account_id == account_id,
                _transactions.c.created_at >= as_utc(start),
                _transactions.c.created_at < as_utc(end),
                _transactions.c.source != SOURCE_OVERDRAFT,
            )
        ).scalar_one()
        return int(total)

    def _rows(self, *conditions: Any, org_ids: frozenset[str] | None) -> list[WindowRow]:
        query = (
            select(*_ROW_COLUMNS)
            .join(_accounts, _accounts.c.id == _windows.c.account_id)
            .where(*conditions)
            .order_by(_windows.c.org_id, _windows.c.window_end)
        )
        if org_ids is not None:
            query = query.where(_windows.c.org_id.in_(sorted(org_ids)))
        return [_row(r) for r in self._session.execute(query)]

    def unfinished(self, org_ids: frozenset[str] | None) -> list[WindowRow]:
        """Windows owing something whose invoice is not finalized yet (a crash mid-way)."""
        status = _windows.c.invoice_status
        return self._rows(
            _windows.c.deficit > 0,
            (status.is_(None)) | (status.not_in(FINALIZED)),
            org_ids=org_ids,
        )

    def awaiting_payment(self, org_ids: frozenset[str] | None) -> list[WindowRow]:
        """Windows whose invoice is open or uncollectible (Stripe still takes a payment of
        it) and not credited back yet."""
        return self._rows(
            _windows.c.deficit > 0,
            _windows.c.invoice_status.in_(AWAITING),
            _windows.c.credited.is_(False),
            org_ids=org_ids,
        )

    def get(self, account_id: str, window_end: datetime) -> WindowRow | None:
        rows = self._rows(
            _windows.c.account_id == account_id,
            _windows.c.window_end == as_utc(window_end),
            org_ids=None,
        )
        return rows[0] if rows else None

    def windows(self, *, window_end: datetime | None = None) -> list[WindowRow]:
        """Every row (of one window end when given), by org."""
        conditions = () if window_end is None else (_windows.c.window_end == as_utc(window_end),)
        return self._rows(*conditions, org_ids=None)

    # --- writes -----------------------------------------------------------------------------

    def claim(
        self,
        *,
        account_id: str,
        org_id: str,
        window_start: datetime,
        window_end: datetime,
        deficit: int,
        unit_amount: int | None = None,
        remainder: int | None = None,
        currency: str | None = None,
    ) -> bool:
        """Record the window (once ever): True when this call inserted it."""
        now = self._clock()
        statement = (
            dialect_insert(self._session, _windows)
            .values(
                account_id=account_id,
                window_end=as_utc(window_end),
                org_id=org_id,
                window_start=as_utc(window_start),
                deficit=deficit,
                unit_amount=unit_amount,
                remainder=remainder,
                currency=currency,
                invoice_id=None,
                invoice_status=None,
                credited=False,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["account_id", "window_end"])
            .returning(_windows.c.account_id)
        )
        # RETURNING, not rowcount: psycopg reports no row count for a conflicting insert.
        return self._session.execute(statement).first() is not None

    def set_invoice(
        self, *, account_id: str, window_end: datetime, invoice_id: str, status: str
    ) -> None:
        self._session.execute(
            update(_windows)
            .where(
                _windows.c.account_id == account_id,
                _windows.c.window_end == as_utc(window_end),
            )
            .values(invoice_id=invoice_id, invoice_status=status, updated_at=self._clock())
        )

    def set_status(self, *, account_id: str, window_end: datetime, status: str) -> None:
        """The invoice's status as Stripe now shows it (void, uncollectible, open again)."""
        self._session.execute(
            update(_windows)
            .where(
                _windows.c.account_id == account_id,
                _windows.c.window_end == as_utc(window_end),
                _windows.c.credited.is_(False),
            )
            .values(invoice_status=status, updated_at=self._clock())
        )

    def rebuild(
        self,
        *,
        account_id: str,
        org_id: str,
        window_start: datetime,
        window_end: datetime,
        deficit: int,
        unit_amount: int,
        currency: str,
        invoice_id: str,
        status: str,
        credit: tuple[str, int] | None,
    ) -> bool:
        """A window the store lacks whose invoice Stripe shows (a lost or older store): its
        row as that invoice says, once (True when this call wrote it). A paid one is marked
        credited; `credit` (ledger id, credits), when given, is credited back in the same
        transaction unless the ledger has that id already (the ledger id is derived from the
        invoice line: never twice)."""
        if not self.claim(
            account_id=account_id,
            org_id=org_id,
            window_start=window_start,
            window_end=window_end,
            deficit=deficit,
            unit_amount=unit_amount,
            currency=currency,
        ):
            return False
        self.set_invoice(
            account_id=account_id, window_end=window_end, invoice_id=invoice_id, status=status
        )
        if status != "paid":
            return True
        ledger = LedgerRepository(self._session, clock=self._clock)
        if credit is not None and credit[1] > 0 and ledger.get(credit[0]) is None:
            self.credit_back(
                account_id=account_id,
                window_end=window_end,
                ledger_id=credit[0],
                credits=credit[1],
                invoice_id=invoice_id,
            )
        self._session.execute(
            update(_windows)
            .where(
                _windows.c.account_id == account_id,
                _windows.c.window_end == as_utc(window_end),
            )
            .values(credited=True)
        )
        return True

    def stamp_checked(self, windows: Iterable[tuple[str, datetime]], at: datetime) -> None:
        """The windows whose invoices Stripe was just asked about (at `at`)."""
        for account_id, window_end in windows:
            self._session.execute(
                update(_windows)
                .where(
                    _windows.c.account_id == account_id,
                    _windows.c.window_end == as_utc(window_end),
                )
                .values(updated_at=as_utc(at))
            )

    def credit_back(
        self,
        *,
        account_id: str,
        window_end: datetime,
        ledger_id: str,
        credits: int,
        invoice_id: str,
    ) -> bool:
        """Credit a paid overdraft invoice's line back (once: the ledger id is derived from
        the line) and mark the window credited; True when the credit was new."""
        _, created = LedgerRepository(self._session, clock=self._clock).credit(
            account_id,
            id=ledger_id,
            amount=credits,
            source=SOURCE_OVERDRAFT,
            description=f"Overdraft invoice {invoice_id} paid",
            metadata={"invoice_id": invoice_id},
        )
        self._session.execute(
            update(_windows)
            .where(
                and_(
                    _windows.c.account_id == account_id,
                    _windows.c.window_end == as_utc(window_end),
                )
            )
            .values(credited=True, invoice_status="paid", updated_at=self._clock())
        )
        return created

"""The overdraft part's I/O: `OverdraftIO` reads the windows for `domains.credit_overdraft`,
and `EXECUTORS` carries out its step kinds:

- `overdraft_invoice`: make one window's invoice, resumable at every point. The window's
  row is claimed first (so a second replica, or a rerun, sees it), then the draft is created
  (or found again: the row's invoice id, else the customer's invoices carrying the window's
  `br_key`) and its id recorded, the item added unless the draft has it, and the draft
  finalized. Every write's idempotency key is derived from the store's salt and the window's
  `br_key`, so a concurrent or repeated attempt replays the first one's answer: one invoice,
  one item, ever.
- `overdraft_window`: record a window that owed nothing (store only).
- `overdraft_credit`: credit a paid invoice's line back (store only; the ledger id is derived
  from the invoice and line, so it is credited once whatever reruns).
- `overdraft_checked`: stamp the windows whose invoices were just looked at.
- `overdraft_status`: record an invoice voided or marked uncollectible in Stripe.
- `overdraft_restore`: rebuild the row of a window a lost store forgot from its invoice in
  Stripe (a paid one credited back once, in the same transaction).

The reader lists the overdraft invoices of ours in one paginated list
(`stripe_gateway.overdraft_invoices.overdraft_invoices`) for the statuses of the invoices
awaiting payment and for the windows the store has not evaluated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy.orm import Session

from billing_reconciler.apply import Done, StepExecutor
from billing_reconciler.domains.credit_overdraft import (
    BR_KEY_PREFIX,
    CHECKED_STEP,
    CREDIT_STEP,
    DESCRIPTION,
    FINALIZED,
    INVOICE_STEP,
    PART,
    RESTORE_STEP,
    STATUS_STEP,
    WINDOW_STEP,
    Candidate,
    OverdraftPart,
    RemoteInvoice,
    StoredWindow,
)
from billing_reconciler.model import MANAGED_BY, META_INSTALLATION, META_KEY, META_MANAGED_BY
from billing_reconciler.model_customers import META_ORG_ID
from billing_reconciler.planning.plan import Step, digest
from billing_reconciler.store import Store
from billing_reconciler.store.last_applied import LastAppliedRepository
from billing_reconciler.store.overdraft import OverdraftRepository, WindowRow
from billing_reconciler.stripe_gateway import StripeGateway, WriteResult
from billing_reconciler.stripe_gateway import overdraft_invoices as invoices

__all__ = ["EXECUTORS", "PART", "OverdraftIO", "open_reader"]

_PART: Final = OverdraftPart()


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def _at(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _stored(row: WindowRow) -> StoredWindow:
    return StoredWindow(
        account_id=row.account_id,
        org_id=row.org_id,
        stripe_customer_id=row.stripe_customer_id,
        due_in_days=row.due_in_days,
        window_start=_epoch(row.window_start),
        window_end=_epoch(row.window_end),
        deficit=row.deficit,
        unit_amount=row.unit_amount or 0,
        currency=row.currency or "",
        invoice_id=row.invoice_id,
        invoice_status=row.invoice_status,
        checked_at=_epoch(row.updated_at),
    )


class OverdraftIO:
    """The part's reader (`domains.credit_overdraft.OverdraftReader`)."""

    def __init__(self, gateway: StripeGateway, store: Store) -> None:
        self.gateway = gateway
        self.store = store

    def candidates(self, *, window_end: int, org_ids: frozenset[str] | None) -> Sequence[Candidate]:
        end = datetime.fromtimestamp(window_end, UTC)
        with self.store.session() as session:
            due = OverdraftRepository(session).due(window_end=end, org_ids=org_ids)
        return [
            Candidate(
                account_id=d.account_id,
                org_id=d.org_id,
                stripe_customer_id=d.stripe_customer_id,
                due_in_days=d.due_in_days,
                window_start=_epoch(d.window_start),
                deficit=max(-d.balance, 0),
                evaluated_until=(None if d.evaluated_until is None else _epoch(d.evaluated_until)),
            )
            for d in due
            if d.stripe_customer_id is not None  # waits for the customers domain
        ]

    def unfinished(self, org_ids: frozenset[str] | None) -> Sequence[StoredWindow]:
        with self.store.session() as session:
            rows = OverdraftRepository(session).unfinished(org_ids)
        return [_stored(r) for r in rows]

    def awaiting_payment(self, org_ids: frozenset[str] | None) -> Sequence[StoredWindow]:
        with self.store.session() as session:
            rows = OverdraftRepository(session).awaiting_payment(org_ids)
        return [_stored(r) for r in rows]

    def overdraft_invoices(
        self, *, created_since: int, installation_id: str
    ) -> Sequence[RemoteInvoice]:
        listed = invoices.overdraft_invoices(
            self.gateway,
            created_since=created_since,
            installation_id=installation_id,
            br_key_prefix=BR_KEY_PREFIX,
        )
        return [r for r in (_remote(i) for i in listed) if r is not None]

    def deficit_between(self, account_id: str, start: int, end: int) -> int:
        with self.store.session() as session:
            balance = OverdraftRepository(session).balance_between(
                account_id, datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)
            )
        return max(-balance, 0)

    def product_id(self, product: str, *, installation_id: str) -> str | None:
        with self.store.session() as session:
            entry = LastAppliedRepository(session).get(installation_id, f"product/{product}")
        return entry.stripe_id if entry is not None and entry.stripe_id else None


def _remote(invoice: invoices.OverdraftInvoice) -> RemoteInvoice | None:
    """The domain's view of a listed invoice of ours; None when its `br_key` names no
    window (`invoice/overdraft/<org_id>/<window_end>`)."""
    org_id, _, end = (invoice.br_key or "")[len(BR_KEY_PREFIX) :].rpartition("/")
    try:
        window_end = _epoch(_at(end))
    except ValueError:
        return None
    if not org_id:
        return None
    line = invoice.line_of(invoice.br_key or "") or (invoice.lines[0] if invoice.lines else None)
    quantity = line.quantity if line is not None else 0
    unit_amount = line.unit_amount if line is not None else None
    if unit_amount is None:
        unit_amount = line.amount // quantity if line is not None and quantity else 0
    return RemoteInvoice(
        invoice_id=invoice.id,
        status=invoice.status,
        org_id=org_id,
        window_end=window_end,
        window_start=line.period[0] if line is not None and line.period else None,
        line_id=line.id if line is not None else None,
        quantity=quantity,
        unit_amount=unit_amount,
        currency=invoice.currency,
        created=invoice.created,
    )


def open_reader(gateway: StripeGateway, store: Store) -> OverdraftIO:
    return OverdraftIO(gateway, store)


class _Scoped:
    def scope_of(self, key: str) -> str | None:
        """`customer/<org_id>`: a refused step holds back only its own org's (apply)."""
        return _PART.scope_of(key)


class _NothingToSend:
    """A step that writes the store only: nothing is sent to Stripe."""

    def send(
        self, gateway: StripeGateway, step: Step, ids: Mapping[str, str]
    ) -> WriteResult | None:
        del gateway, step, ids
        return None


class _StoreOnly(_NothingToSend, _Scoped):
    """A store-only step of one org (`customer/<org_id>` scope)."""


class InvoiceExecutor(_Scoped):
    """Makes one window's invoice (see the module docstring)."""

    def send(
        self, gateway: StripeGateway, step: Step, ids: Mapping[str, str]
    ) -> WriteResult | None:
        raise RuntimeError(
            "overdraft_invoice steps need the store: the applier calls send_with_store"
        )

    def send_with_store(
        self, gateway: StripeGateway, store: Store, step: Step, ids: Mapping[str, str]
    ) -> WriteResult | None:
        del ids
        p = step.params
        end = _at(p["window_end"])
        with store.session() as session:
            repository = OverdraftRepository(session)
            first = repository.claim(
                account_id=p["account_id"],
                org_id=p["org_id"],
                window_start=_at(p["window_start"]),
                window_end=end,
                deficit=int(p["quantity"]),
                unit_amount=int(p["unit_amount"]),
                currency=p["currency"],
            )
            row = repository.get(p["account_id"], end)
        assert row is not None
        if row.invoice_status in FINALIZED and row.invoice_id:
            return WriteResult(row.invoice_id, None, True)
        # Resume from what the row holds (another replica, or an earlier run, claimed it):
        # its quantity and price, not this plan's.
        params = {**p, "quantity": row.deficit, "unit_amount": row.unit_amount or 0}
        invoice = self._draft(gateway, params, row, resumed=not first)
        with store.session() as session:
            OverdraftRepository(session).set_invoice(
                account_id=row.account_id,
                window_end=end,
                invoice_id=invoice.id,
                status=invoice.status,
            )
        if invoice.status == "draft":
            if invoice.line_of(p["br_key"]) is None:
                self._item(gateway, params, invoice.id)
            invoice = invoices.finalize(
                gateway, invoice_id=invoice.id, idempotency_key=_key(params, "finalize")
            )
            with store.session() as session:
                OverdraftRepository(session).set_invoice(
                    account_id=row.account_id,
                    window_end=end,
                    invoice_id=invoice.id,
                    status=invoice.status,
                )
        return WriteResult(invoice.id, invoice.request_id, invoice.replayed)

    def _draft(
        self, gateway: StripeGateway, p: Mapping[str, Any], row: WindowRow, *, resumed: bool
    ) -> invoices.OverdraftInvoice:
        if row.invoice_id or p.get("invoice_id"):
            # The row's, or the draft Stripe showed for the window a lost store forgot.
            return invoices.retrieve(gateway, row.invoice_id or p["invoice_id"])
        if resumed:
            found = invoices.find_by_key(
                gateway,
                customer_id=p["customer"],
                br_key=p["br_key"],
                created_since=_epoch(row.window_end) - 31 * 86_400,
            )
            if found is not None:
                return found
        return invoices.create_draft(
            gateway,
            customer_id=p["customer"],
            currency=p["currency"],
            days_until_due=int(p["days_until_due"]),
            automatic_tax=bool(p["automatic_tax"]),
            payment_method_types=p["payment_method_types"],
            description=DESCRIPTION,
            metadata=_markers(p),
            idempotency_key=_key(p, "create"),
        )

    def _item(self, gateway: StripeGateway, p: Mapping[str, Any], invoice_id: str) -> None:
        invoices.add_item(
            gateway,
            customer_id=p["customer"],
            invoice_id=invoice_id,
            currency=p["currency"],
            product_id=p["product"],
            unit_amount=int(p["unit_amount"]),
            quantity=int(p["quantity"]),
            period=(_epoch(_at(p["window_start"])), _epoch(_at(p["window_end"]))),
            description=(f"Overdrawn credits {p['window_start'][:10]} - {p['window_end'][:10]}"),
            metadata=_markers(p),
            idempotency_key=_key(p, "item", invoice_id),
        )

    def record(self, session: Session, done: Done) -> None:
        del session, done  # the row was written as the invoice was made


def _markers(p: Mapping[str, Any]) -> dict[str, str]:
    return {
        META_MANAGED_BY: MANAGED_BY,
        META_KEY: p["br_key"],
        META_INSTALLATION: p["installation_id"],
        META_ORG_ID: p["org_id"],
    }


def _key(p: Mapping[str, Any], *parts: str) -> str:
    """A write's idempotency key: the step's salted prefix (store salt + `br_key`) and the
    write, the same on every attempt of every replica."""
    return digest(p["key_prefix"], *parts)


class WindowExecutor(_StoreOnly):
    """Records a window that owed nothing."""

    def record(self, session: Session, done: Done) -> None:
        p = done.step.params
        OverdraftRepository(session).claim(
            account_id=p["account_id"],
            org_id=p["org_id"],
            window_start=_at(p["window_start"]),
            window_end=_at(p["window_end"]),
            deficit=0,
        )


class CreditExecutor(_StoreOnly):
    """Credits a paid overdraft invoice back."""

    def record(self, session: Session, done: Done) -> None:
        p = done.step.params
        OverdraftRepository(session).credit_back(
            account_id=p["account_id"],
            window_end=_at(p["window_end"]),
            ledger_id=p["ledger_id"],
            credits=int(p["credits"]),
            invoice_id=p["invoice"],
        )


class StatusExecutor(_StoreOnly):
    """Records an invoice voided or marked uncollectible in Stripe."""

    def record(self, session: Session, done: Done) -> None:
        p = done.step.params
        OverdraftRepository(session).set_status(
            account_id=p["account_id"], window_end=_at(p["window_end"]), status=p["status"]
        )


class RestoreExecutor(_StoreOnly):
    """Rebuilds a window's row from its invoice in Stripe (a lost store)."""

    def record(self, session: Session, done: Done) -> None:
        p = done.step.params
        OverdraftRepository(session).rebuild(
            account_id=p["account_id"],
            org_id=p["org_id"],
            window_start=_at(p["window_start"]),
            window_end=_at(p["window_end"]),
            deficit=int(p["deficit"]),
            unit_amount=int(p["unit_amount"]),
            currency=p["currency"],
            invoice_id=p["invoice"],
            status=p["status"],
            credit=(p["ledger_id"], int(p["credits"])) if p["ledger_id"] else None,
        )


class CheckedExecutor(_NothingToSend):
    """Stamps the windows whose invoices were just looked at."""

    def record(self, session: Session, done: Done) -> None:
        p = done.step.params
        at = datetime.fromtimestamp(int(p["checked_at"]), UTC)
        OverdraftRepository(session).stamp_checked(
            ((account_id, _at(end)) for account_id, end in p["windows"]), at
        )


EXECUTORS: Mapping[str, StepExecutor] = {
    INVOICE_STEP: InvoiceExecutor(),
    WINDOW_STEP: WindowExecutor(),
    CREDIT_STEP: CreditExecutor(),
    CHECKED_STEP: CheckedExecutor(),
    STATUS_STEP: StatusExecutor(),
    RESTORE_STEP: RestoreExecutor(),
}

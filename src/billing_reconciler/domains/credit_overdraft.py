"""The overdraft-invoice part of the credits domain (DESIGN §17). Pure: what it reads is
`OverdraftReader`'s (`effects.credit_overdraft`).

When `billing.customer.credit_overdraft_product` is set, every online account (a Stripe
customer, state active) whose `credit_min` is below zero, or whose balance is negative (a debt
stays billable whatever today's limit: raising `credit_min` back to 0 does not forgive it),
is invoiced once per window for the credits it overdrew in it.

Windows. With invoice day D (`credit_overdraft_invoice_day`) and shift S
(`credit_overdraft_invoice_range_shift`), the invoice day of a month is D clamped to that
month's length, 00:00 UTC (31 in April is April 30; 29-31 in February is Feb 28 or 29:
Frontier compares `Day() == D` and so never fires on 29-31 in a short month; we fire on its
last day). The window of month M ends on the invoice day of month M + S. A window is due once
its month's invoice day has come; the latest due window is this month's once its day has
come, else last month's. That is the catch-up rule: a controller that was down over the
invoice day evaluates the window at its next pass (a window is evaluated when no
`overdraft_windows` row exists for (account, window end)), and since a window starts where
the previous *invoiced* one ended, a longer outage loses nothing either: the latest window
then spans every month not invoiced.

Window start: the account's creation, or the end of its previous invoiced overdraft window
(Frontier's rule as its `GenerateForCredits` intends it: the range starts after the last
overdraft invoice's range; an evaluated window that owed nothing does not move the start, so
its entries count again in the next window). Frontier's code compares the item's start with
`Before` against the creation, which is never true, so in effect its ranges always start at
the creation; we follow the stated intent.

Deficit: minus the sum of the account's ledger entries created in [start, end), leaving out
`system.overdraft` credits (what paying earlier overdraft invoices credited back), when that
sum is negative; else 0. Every evaluation records its window (0 when nothing is owed), so the
later passes of the window plan nothing.

Invoice (deficit > 0): one Stripe invoice per window ever, `br_key`
`invoice/overdraft/<org_id>/<window_end>`, `send_invoice` due in the account's `due_in_days`,
automatic tax per `billing.stripe_auto_tax`, payment method types per
`billing.payment_method_config` (the types whose [min, max] holds the total), in the
overdraft product's price currency (the default currency), one item: quantity = the deficit,
unit amount = the product's first active price in the default currency // its
`credit_amount` (the remainder is a plan warning, never silently dropped), period = the
window; finalized, so Stripe sends it. A step per window (`overdraft_invoice/<org>/<end>`);
its executor claims the window's row first and resumes from it after a crash.

Credit back: a paid overdraft invoice credits its line's quantity to the account once
(`system.overdraft`, ledger id `overdraft:<invoice_id>:<line_id>`): a step
`overdraft_credit/<org>/<end>`, store only. Invoice statuses are learned without a call per
customer: one paginated list of the invoices created since the oldest unpaid window's
invoice day, and only while some window awaits payment, at most every
`refresh_interval.invoice` seconds in a whole pass (a targeted pass, as `invoice.paid` asks
for, always looks); the rows checked are stamped by a bookkeeping restore.

Void and uncollectible: an invoice voided in Stripe is recorded `void` (a step
`overdraft_status/<org>/<end>`, store only) and no longer awaits payment. Void means the
operator forgave the window: nothing is credited back, and its deficit is not billed again
(the window counts as invoiced, so the next one starts at its end). An invoice marked
uncollectible is recorded `uncollectible` and may still be paid (Stripe takes it): a whole
pass no longer watches it (its list would reach further back every month), a targeted pass
of its org (`invoice.paid`) does, and paying it credits it back as any paid one.

Stripe is the inventory (DESIGN §4, §14): the store alone no longer decides that a window
was not invoiced. When some account is due for the window (and an invoice could be made),
the same paginated list, from the oldest end of the due accounts' last evaluated windows
(else their creation), names the overdraft invoices of ours (`br_key`, this installation)
of the windows the store has not evaluated. A lost store (a new empty one with the accounts
re-onboarded, or one restored from an older copy) therefore: rebuilds the row of each such
window whose invoice is finalized (a restore `overdraft_restore/<org>/<end>`, reason
`store_lost`, nothing sent), and invoices the due window only when Stripe has no finalized
invoice for it; takes the window start from the latest of them (the deficit is then read
again from it); finishes a draft of the due window instead of making another; and credits a
rebuilt paid one back in the restore's transaction, once (the ledger id, derived from the
line, is not written when the ledger has it) and at most the debt the store's ledger holds
for that window (0 in a new empty store that never had the window's usage: no windfall).
"""

from __future__ import annotations

import calendar
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from billing_reconciler.desired.state import DesiredState, ProductSpec
from billing_reconciler.domains.base import PlanContext
from billing_reconciler.domains.credit_parts import PartPlan
from billing_reconciler.domains.event_routes import EventRoute, Target, ours
from billing_reconciler.model import META_KEY
from billing_reconciler.model_customers import META_ORG_ID, customer_key, org_id_of_key
from billing_reconciler.money import format_amount
from billing_reconciler.planning.plan import Action, Notice, Reason, Step, digest

PART: Final = "overdraft"
#: Create (or resume) and finalize one window's invoice.
INVOICE_STEP: Final = "overdraft_invoice"
#: Record a window that owed nothing (a bookkeeping restore).
WINDOW_STEP: Final = "overdraft_window"
#: Credit a paid overdraft invoice back to its account.
CREDIT_STEP: Final = "overdraft_credit"
#: Stamp the windows whose invoices were just looked at (a bookkeeping restore).
CHECKED_STEP: Final = "overdraft_checked"
#: Record an invoice voided or marked uncollectible in Stripe (store only).
STATUS_STEP: Final = "overdraft_status"
#: Rebuild a window the store lacks from its invoice in Stripe (a lost store; a restore).
RESTORE_STEP: Final = "overdraft_restore"
#: The ledger source of the credits a paid overdraft invoice gives back.
SOURCE: Final = "system.overdraft"
#: `br_key` prefix of overdraft invoices.
BR_KEY_PREFIX: Final = "invoice/overdraft/"
DESCRIPTION: Final = "Credit overdraft"
#: Invoice statuses after finalization: the invoice exists as Stripe sends it.
FINALIZED: Final = frozenset({"open", "paid", "void", "uncollectible"})
#: How far before a window's invoice day its invoice is looked for (clock skew, test clocks).
LIST_MARGIN_SECONDS: Final = 2 * 86_400
#: Which of several invoices of one window (made by an older version) stands for it.
_STANDING: Final = ("paid", "open", "uncollectible", "void")

__all__ = [
    "BR_KEY_PREFIX",
    "CHECKED_STEP",
    "CREDIT_STEP",
    "DESCRIPTION",
    "FINALIZED",
    "INVOICE_STEP",
    "PART",
    "RESTORE_STEP",
    "SOURCE",
    "STATUS_STEP",
    "WINDOW_STEP",
    "Candidate",
    "FoundWindow",
    "OverdraftDesired",
    "OverdraftObserved",
    "OverdraftPart",
    "OverdraftPrice",
    "OverdraftReader",
    "PaidLine",
    "RemoteInvoice",
    "StoredWindow",
    "clamped_day",
    "credit_id",
    "due_window",
    "invoice_br_key",
    "invoice_day_of",
    "overdraft_plan",
    "overdraft_price",
    "payment_method_types",
    "window_end_of",
]


# --------------------------------------------------------------------------------------------
# Window math (UTC, epoch seconds)
# --------------------------------------------------------------------------------------------


def _shift(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def clamped_day(year: int, month: int, day: int) -> int:
    """Day `day` of the month, 00:00 UTC, a day past the month's end meaning its last day."""
    last = calendar.monthrange(year, month)[1]
    return int(datetime(year, month, min(day, last), tzinfo=UTC).timestamp())


def invoice_day_of(year: int, month: int, day: int) -> int:
    """The invoice day of a month (the moment its window becomes due)."""
    return clamped_day(year, month, day)


def window_end_of(year: int, month: int, *, day: int, shift: int) -> int:
    """The end of the window invoiced in `year-month`: day D of the month shifted by `shift`."""
    shifted_year, shifted_month = _shift(year, month, shift)
    return clamped_day(shifted_year, shifted_month, day)


def due_window(now: int, *, day: int, shift: int) -> tuple[int, int]:
    """(invoice day, window end) of the latest window due at `now`: this month's once its
    invoice day has come, else last month's (the catch-up after downtime)."""
    moment = datetime.fromtimestamp(now, UTC)
    year, month = moment.year, moment.month
    if now < invoice_day_of(year, month, day):
        year, month = _shift(year, month, -1)
    return invoice_day_of(year, month, day), window_end_of(year, month, day=day, shift=shift)


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _date(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d")


def invoice_br_key(org_id: str, window_end: int) -> str:
    """`invoice/overdraft/<org_id>/<window_end>` (RFC 3339 UTC): one invoice per window."""
    return f"{BR_KEY_PREFIX}{org_id}/{_iso(window_end)}"


def credit_id(invoice_id: str, line_id: str) -> str:
    """The ledger id of a paid overdraft invoice's credit back: once per invoice line."""
    return f"overdraft:{invoice_id}:{line_id}"


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OverdraftPrice:
    """What one overdrawn credit costs: the product's first active price in the default
    currency divided by its `credit_amount` (integer division; the remainder reported)."""

    product: str
    price: str
    currency: str
    price_amount: int
    credit_amount: int

    @property
    def unit_amount(self) -> int:
        return self.price_amount // self.credit_amount

    @property
    def remainder(self) -> int:
        return self.price_amount % self.credit_amount


@dataclass(frozen=True, slots=True)
class PaymentBound:
    type: str
    min: int
    max: int


@dataclass(frozen=True, slots=True)
class OverdraftDesired:
    product: str = ""
    """"" = overdraft invoicing off (paid invoices are still credited back)."""
    price: OverdraftPrice | None = None
    problem: str | None = None
    """Why the product cannot price an overdraft (validation refuses it; kept for safety)."""
    invoice_day: int = 1
    range_shift: int = 0
    auto_tax: bool = False
    payment_methods: tuple[PaymentBound, ...] = ()
    invoice_interval: int = 300


@dataclass(frozen=True, slots=True)
class Candidate:
    """An account due for the window: online, active, `credit_min` < 0 or a negative
    balance, no row for it."""

    account_id: str
    org_id: str
    stripe_customer_id: str
    due_in_days: int
    window_start: int
    deficit: int
    evaluated_until: int | None = None
    """The end of the account's latest evaluated window, None when none was: Stripe is
    asked about the windows after it (the store may have lost them)."""


@dataclass(frozen=True, slots=True)
class RemoteInvoice:
    """An overdraft invoice of ours (this installation) as Stripe lists it."""

    invoice_id: str
    status: str
    org_id: str
    window_end: int
    """From its `br_key` (`invoice/overdraft/<org_id>/<window_end>`)."""
    window_start: int | None
    """Its line's period start (the window's start when it was made)."""
    line_id: str | None
    quantity: int
    unit_amount: int
    currency: str
    created: int = 0


@dataclass(frozen=True, slots=True)
class FoundWindow:
    """A window the store has no row for whose invoice Stripe shows (a lost store, or one
    restored from an older copy): it was invoiced, its row is rebuilt, nothing is sent."""

    account_id: str
    org_id: str
    window_start: int
    invoice: RemoteInvoice
    credits: int = 0
    """A paid one's credit back: its quantity, at most the debt this store's ledger holds
    for the window (0: the ledger never had it, as in a new empty store)."""


@dataclass(frozen=True, slots=True)
class StoredWindow:
    """An `overdraft_windows` row with something left to do (an unfinished invoice, or one
    awaiting payment)."""

    account_id: str
    org_id: str
    stripe_customer_id: str | None
    due_in_days: int
    window_start: int
    window_end: int
    deficit: int
    unit_amount: int
    currency: str
    invoice_id: str | None
    invoice_status: str | None
    checked_at: int


@dataclass(frozen=True, slots=True)
class PaidLine:
    """The overdraft line of a paid invoice of ours."""

    invoice_id: str
    line_id: str
    quantity: int


@dataclass(frozen=True, slots=True)
class OverdraftObserved:
    window_end: int = 0
    invoice_day: int = 0
    candidates: tuple[Candidate, ...] = ()
    unfinished: tuple[StoredWindow, ...] = ()
    awaiting: tuple[StoredWindow, ...] = ()
    checked: bool = False
    """Whether Stripe was asked about the windows awaiting payment in this pass."""
    paid: Mapping[str, PaidLine] = field(default_factory=dict)
    product_id: str | None = None
    statuses: Mapping[str, str] = field(default_factory=dict)
    """Invoice id -> status in Stripe, of the invoices looked at (`checked`)."""
    found: tuple[FoundWindow, ...] = ()
    """Windows the store lacks whose invoices Stripe shows (rebuilt, never invoiced again)."""
    resume: Mapping[str, str] = field(default_factory=dict)
    """Account id -> the draft Stripe shows for the due window the store lacks (finished,
    not made again)."""


class OverdraftReader(Protocol):
    """What the part reads; `effects.credit_overdraft.OverdraftIO` implements it."""

    def candidates(
        self, *, window_end: int, org_ids: frozenset[str] | None
    ) -> Sequence[Candidate]: ...

    def unfinished(self, org_ids: frozenset[str] | None) -> Sequence[StoredWindow]: ...

    def awaiting_payment(self, org_ids: frozenset[str] | None) -> Sequence[StoredWindow]: ...

    def overdraft_invoices(
        self, *, created_since: int, installation_id: str
    ) -> Sequence[RemoteInvoice]: ...

    def deficit_between(self, account_id: str, start: int, end: int) -> int: ...

    def product_id(self, product: str, *, installation_id: str) -> str | None: ...


# --------------------------------------------------------------------------------------------
# Desired
# --------------------------------------------------------------------------------------------


def overdraft_price(
    product: ProductSpec | None, currency: str
) -> tuple[OverdraftPrice | None, str | None]:
    """The overdraft price of `product` in `currency`, or why there is none."""
    if product is None:
        return None, "does not exist"
    credits = product.config.credit_amount or 0
    if credits <= 0:
        return None, "has no config.credit_amount"
    for price in product.prices:
        if not price.active or price.billing_scheme != "per_unit":
            continue
        if price.currency == currency:
            amount: int | None = price.amount
        else:
            option = price.currency_options.get(currency)
            amount = None if option is None else option.amount
        if amount is not None:
            return OverdraftPrice(product.name, price.name, currency, amount, credits), None
    return None, f"has no active price in the default currency {currency.upper()}"


def _desired(state: DesiredState) -> OverdraftDesired:
    billing = state.config.billing
    customer = billing.customer
    name = customer.credit_overdraft_product.lower()
    price, problem = (None, None)
    if name:
        product = next((p for p in state.products if p.name == name), None)
        price, problem = overdraft_price(product, billing.currency)
    return OverdraftDesired(
        product=name,
        price=price,
        problem=problem,
        invoice_day=customer.credit_overdraft_invoice_day,
        range_shift=customer.credit_overdraft_invoice_range_shift,
        auto_tax=billing.stripe_auto_tax,
        payment_methods=tuple(
            PaymentBound(m.type, m.min, m.max) for m in billing.payment_method_config
        ),
        invoice_interval=int(billing.refresh_interval.invoice),
    )


def payment_method_types(bounds: Sequence[PaymentBound], total: int) -> list[str] | None:
    """The configured types whose [min, max] holds `total` (0 = unbounded), None when none is
    configured (Stripe's own choice from the dashboard's settings)."""
    if not bounds:
        return None
    return [b.type for b in bounds if total >= b.min and (not b.max or total <= b.max)]


# --------------------------------------------------------------------------------------------
# The part
# --------------------------------------------------------------------------------------------


def _orgs_in(context: PlanContext) -> frozenset[str] | None:
    scope = context.options.scope
    if scope is None:
        return None
    return frozenset(o for key in scope if (o := org_id_of_key(key)) is not None)


def _the_invoice(obj: Mapping[str, Any]) -> Target | None:
    metadata = ours(obj)
    if metadata is None or not str(metadata.get(META_KEY, "")).startswith(BR_KEY_PREFIX):
        return None
    org_id = metadata.get(META_ORG_ID)
    if not isinstance(org_id, str) or not org_id:
        return Target(None)
    return Target(frozenset({customer_key(org_id)}))


OVERDRAFT_ROUTES: Final = (
    EventRoute("invoice.paid", _the_invoice),
    # Voided or marked uncollectible in the Dashboard: recorded at once, not at the next check.
    EventRoute("invoice.voided", _the_invoice),
    EventRoute("invoice.marked_uncollectible", _the_invoice),
)


class OverdraftPart:
    """See the module docstring."""

    name: Final = PART
    kinds: Final = frozenset(
        {INVOICE_STEP, WINDOW_STEP, CREDIT_STEP, CHECKED_STEP, STATUS_STEP, RESTORE_STEP}
    )
    event_routes: Final[tuple[EventRoute, ...]] = OVERDRAFT_ROUTES

    def refresh_seconds(self, state: DesiredState) -> int:
        del state
        return 0  # planned at the domain's interval; it plans nothing until a window is due

    def desired(self, state: DesiredState, context: PlanContext) -> OverdraftDesired:
        del context
        return _desired(state)

    def observe(
        self, reader: OverdraftReader, desired: OverdraftDesired, context: PlanContext
    ) -> OverdraftObserved:
        orgs = _orgs_in(context)
        if orgs is not None and not orgs:
            return OverdraftObserved()
        invoice_day, end = due_window(
            context.now, day=desired.invoice_day, shift=desired.range_shift
        )
        candidates: Sequence[Candidate] = ()
        product_id = None
        if desired.product:
            candidates = reader.candidates(window_end=end, org_ids=orgs)
            product_id = reader.product_id(desired.product, installation_id=context.installation_id)
        unfinished = tuple(reader.unfinished(orgs))
        awaiting = tuple(
            w
            for w in reader.awaiting_payment(orgs)
            # A whole pass watches the open invoices; an uncollectible one (Stripe still takes
            # its payment) is looked at by a targeted pass of its org (its `invoice.paid`).
            if orgs is not None or w.invoice_status == "open"
        )
        checked = bool(awaiting) and (
            orgs is not None
            or context.now - min(w.checked_at for w in awaiting) >= desired.invoice_interval
        )
        price = desired.price
        invoicing = bool(candidates) and (
            price is not None and price.unit_amount > 0 and product_id is not None
        )
        # One list serves both: the statuses of the invoices awaiting payment, and the
        # invoices of the windows after each candidate's last evaluated one (a lost store).
        since: list[int] = []
        if checked:
            since.append(min(_listed_since(w, desired) for w in awaiting))
        if invoicing:
            since.append(min(_known_since(c, desired) for c in candidates))
        listed: Sequence[RemoteInvoice] = ()
        if since:
            listed = reader.overdraft_invoices(
                created_since=min(since), installation_id=context.installation_id
            )
        paid: Mapping[str, PaidLine] = {}
        statuses: Mapping[str, str] = {}
        if checked:
            statuses = {i.invoice_id: i.status for i in listed}
            paid = {
                i.invoice_id: PaidLine(i.invoice_id, i.line_id, i.quantity)
                for i in listed
                if i.status == "paid" and i.line_id
            }
        found: tuple[FoundWindow, ...] = ()
        resume: Mapping[str, str] = {}
        if invoicing:
            candidates, found, resume = _with_stripe(reader, candidates, listed, end)
        return OverdraftObserved(
            window_end=end,
            invoice_day=invoice_day,
            candidates=tuple(candidates),
            unfinished=unfinished,
            awaiting=awaiting,
            checked=checked,
            paid=paid,
            product_id=product_id,
            statuses=statuses,
            found=found,
            resume=resume,
        )

    def plan(
        self, desired: OverdraftDesired, observed: OverdraftObserved, context: PlanContext
    ) -> PartPlan:
        return overdraft_plan(desired, observed, context)

    def scope_of(self, key: str) -> str | None:
        kind, sep, rest = key.partition("/")
        org_id = rest.split("/", 1)[0]
        if not sep or not org_id or kind not in self.kinds or kind == CHECKED_STEP:
            return None
        return customer_key(org_id)


def _listed_since(window: StoredWindow, desired: OverdraftDesired) -> int:
    """When the window's invoice was made at the earliest: its month's invoice day (the
    window end shifted back), less a margin."""
    moment = datetime.fromtimestamp(window.window_end, UTC)
    year, month = _shift(moment.year, moment.month, -desired.range_shift)
    return invoice_day_of(year, month, desired.invoice_day) - LIST_MARGIN_SECONDS


def _known_since(candidate: Candidate, desired: OverdraftDesired) -> int:
    """The earliest an invoice of a window after the candidate's last evaluated one (else its
    creation) can have been made: an invoice of window end E is made on or after E's
    invoice day, E shifted back by the range shift (later than E for a shift <= 0)."""
    lower = _lower(candidate)
    ahead = max(desired.range_shift, 0) * 31 * 86_400
    return lower - ahead - LIST_MARGIN_SECONDS


def _lower(candidate: Candidate) -> int:
    if candidate.evaluated_until is not None:
        return candidate.evaluated_until
    return candidate.window_start


def _standing(invoices: Sequence[RemoteInvoice]) -> RemoteInvoice | None:
    """The invoice standing for a window: a finalized one (paid first, then open,
    uncollectible, void), the oldest of a status; else None (drafts only)."""
    finalized = [i for i in invoices if i.status in _STANDING]
    if not finalized:
        return None
    return min(finalized, key=lambda i: (_STANDING.index(i.status), i.created, i.invoice_id))


def _with_stripe(
    reader: OverdraftReader,
    candidates: Sequence[Candidate],
    listed: Sequence[RemoteInvoice],
    end: int,
) -> tuple[tuple[Candidate, ...], tuple[FoundWindow, ...], Mapping[str, str]]:
    """The candidates as Stripe's invoices tell (a lost store forgot them): a window whose
    finalized invoice Stripe shows was invoiced, its row is rebuilt (`FoundWindow`), and a
    candidate due for it is not invoiced again; an earlier one moves the window start to its
    end (the deficit is then read again from the new start); a draft for the due window is
    finished, not made again (`resume`); drafts of earlier windows were never sent and are
    left alone (their entries count in the due window)."""
    by_org: dict[str, list[RemoteInvoice]] = {}
    for invoice in listed:
        by_org.setdefault(invoice.org_id, []).append(invoice)
    kept: list[Candidate] = []
    found: list[FoundWindow] = []
    resume: dict[str, str] = {}
    for candidate in candidates:
        lower = _lower(candidate)
        windows: dict[int, list[RemoteInvoice]] = {}
        for invoice in by_org.get(candidate.org_id, ()):
            if lower < invoice.window_end <= end:
                windows.setdefault(invoice.window_end, []).append(invoice)
        start = candidate.window_start
        due_found = False
        for window_end in sorted(windows):
            standing = _standing(windows[window_end])
            if standing is None:
                if window_end == end:
                    drafts = sorted(windows[window_end], key=lambda i: (i.created, i.invoice_id))
                    resume[candidate.account_id] = drafts[0].invoice_id
                continue
            window_start = standing.window_start if standing.window_start is not None else start
            credits = 0
            if standing.status == "paid":
                owed = reader.deficit_between(candidate.account_id, window_start, window_end)
                credits = min(standing.quantity, owed)
            found.append(
                FoundWindow(
                    account_id=candidate.account_id,
                    org_id=candidate.org_id,
                    window_start=window_start,
                    invoice=standing,
                    credits=credits,
                )
            )
            if window_end == end:
                due_found = True
            else:
                start = max(start, window_end)
        if due_found:
            continue
        if start != candidate.window_start:
            candidate = dataclasses.replace(
                candidate,
                window_start=start,
                deficit=reader.deficit_between(candidate.account_id, start, end),
            )
        kept.append(candidate)
    return tuple(kept), tuple(found), resume


# --------------------------------------------------------------------------------------------
# The rules
# --------------------------------------------------------------------------------------------


def step_key(kind: str, org_id: str, window_end: int) -> str:
    return f"{kind}/{org_id}/{_date(window_end)}"


def overdraft_plan(
    desired: OverdraftDesired, observed: OverdraftObserved, context: PlanContext
) -> PartPlan:
    steps: list[Step] = []
    restores: list[Step] = []
    notices: list[Notice] = []
    warnings: list[str] = []
    price = desired.price
    if desired.product and price is None:
        warnings.append(
            f"credit_overdraft_product '{desired.product}' {desired.problem}: no overdraft "
            "is invoiced"
        )
    elif price is not None and price.remainder:
        warnings.append(_remainder_warning(price))
    resumed = {(w.account_id, w.window_end) for w in observed.unfinished}
    invoicing: list[StoredWindow] = list(observed.unfinished)
    for candidate in observed.candidates:
        if (candidate.account_id, observed.window_end) in resumed:
            continue
        if candidate.deficit <= 0 or price is None or price.unit_amount <= 0:
            if candidate.deficit > 0:
                notices.append(_unpriced_notice(candidate, observed.window_end, price))
                continue
            restores.append(_window_record(candidate, observed.window_end, context))
            continue
        draft = observed.resume.get(candidate.account_id)
        window = StoredWindow(
            account_id=candidate.account_id,
            org_id=candidate.org_id,
            stripe_customer_id=candidate.stripe_customer_id,
            due_in_days=candidate.due_in_days,
            window_start=candidate.window_start,
            window_end=observed.window_end,
            deficit=candidate.deficit,
            unit_amount=price.unit_amount,
            currency=price.currency,
            invoice_id=draft,
            invoice_status="draft" if draft else None,
            checked_at=context.now,
        )
        invoicing.append(window)
    for window in invoicing:
        if observed.product_id is None:
            notices.append(_no_product_notice(window, desired.product))
            continue
        steps.append(_invoice_step(desired, window, context, product_id=observed.product_id))
    restores.extend(_restore_record(found, context) for found in observed.found)
    for window in observed.awaiting:
        line = observed.paid.get(window.invoice_id or "")
        status = observed.statuses.get(window.invoice_id or "")
        if line is not None:
            steps.append(_credit_step(window, line, context))
        elif status in ("void", "uncollectible") and status != window.invoice_status:
            steps.append(_status_step(window, status, context))
    if observed.checked:
        restores.append(_checked_record(observed.awaiting, context))
    return PartPlan(
        steps=tuple(steps),
        notices=tuple(notices),
        warnings=tuple(warnings),
        restores=tuple(restores),
        fingerprint=digest(
            repr(observed.window_end),
            repr(observed.candidates),
            repr(observed.unfinished),
            repr(sorted(observed.paid.items())),
            repr(sorted(observed.statuses.items())),
            repr(observed.found),
        ),
        facts=(
            *(
                (f"overdraft window end: {_iso(observed.window_end)}",)
                if observed.window_end
                else ()
            ),
            f"overdraft invoices awaiting payment: {len(observed.awaiting):,}",
        ),
    )


def _remainder_warning(price: OverdraftPrice) -> str:
    return (
        f"credit_overdraft_product '{price.product}': price '{price.price}' "
        f"({format_amount(price.price_amount, price.currency)}) / {price.credit_amount:,} "
        f"credits = {format_amount(price.unit_amount, price.currency)} per credit, remainder "
        f"{format_amount(price.remainder, price.currency)} per {price.credit_amount:,} credits "
        "not invoiced (overdraft invoices bill whole minor units per credit)"
    )


def _unpriced_notice(candidate: Candidate, window_end: int, price: OverdraftPrice | None) -> Notice:
    why = (
        "the overdraft product has no usable price"
        if price is None
        else f"one credit is worth less than one minor unit of {price.currency.upper()}"
    )
    return Notice(
        key=step_key(INVOICE_STEP, candidate.org_id, window_end),
        kind=INVOICE_STEP,
        stripe_id=None,
        message=f"waits: {candidate.deficit:,} overdrawn credit(s) not invoiced: {why}",
    )


def _no_product_notice(window: StoredWindow, product: str) -> Notice:
    return Notice(
        key=step_key(INVOICE_STEP, window.org_id, window.window_end),
        kind=INVOICE_STEP,
        stripe_id=None,
        message=(
            f"waits: {window.deficit:,} overdrawn credit(s) not invoiced until the catalog "
            f"has made product '{product}' in Stripe"
        ),
    )


def _invoice_step(
    desired: OverdraftDesired,
    window: StoredWindow,
    context: PlanContext,
    *,
    product_id: str,
) -> Step:
    key = step_key(INVOICE_STEP, window.org_id, window.window_end)
    total = window.deficit * window.unit_amount
    br_key = invoice_br_key(window.org_id, window.window_end)
    params: dict[str, Any] = {
        "org_id": window.org_id,
        "account_id": window.account_id,
        "customer": window.stripe_customer_id,
        "window_start": _iso(window.window_start),
        "window_end": _iso(window.window_end),
        "quantity": window.deficit,
        "unit_amount": window.unit_amount,
        "total": total,
        "currency": window.currency,
        "collection_method": "send_invoice",
        "days_until_due": window.due_in_days,
        "automatic_tax": desired.auto_tax,
        "payment_method_types": payment_method_types(desired.payment_methods, total),
        "product": product_id,
        "br_key": br_key,
        "installation_id": context.installation_id,
        "resume": window.invoice_id is not None or window.invoice_status is not None,
        "invoice_id": window.invoice_id,
        "key_prefix": digest(context.key_salt, br_key),
    }
    return Step(
        action=Action.CREATE,
        kind=INVOICE_STEP,
        key=key,
        reason=Reason.NEW,
        params=params,
        stripe_id=window.invoice_id,
        impact=(
            f"invoice {window.deficit:,} overdrawn credit(s) x "
            f"{format_amount(window.unit_amount, window.currency)} = "
            f"{format_amount(total, window.currency)} to org {window.org_id} for "
            f"{_date(window.window_start)} -> {_date(window.window_end)}"
        ),
        idempotency_key=digest(context.key_salt, key, "invoice"),
        batch=0,
    )


def _window_record(candidate: Candidate, window_end: int, context: PlanContext) -> Step:
    key = step_key(WINDOW_STEP, candidate.org_id, window_end)
    return Step(
        action=Action.CREATE,
        kind=WINDOW_STEP,
        key=key,
        reason=Reason.BOOKKEEPING,
        params={
            "account_id": candidate.account_id,
            "org_id": candidate.org_id,
            "window_start": _iso(candidate.window_start),
            "window_end": _iso(window_end),
            "deficit": 0,
        },
        idempotency_key=digest(context.key_salt, key),
    )


def _credit_step(window: StoredWindow, line: PaidLine, context: PlanContext) -> Step:
    key = step_key(CREDIT_STEP, window.org_id, window.window_end)
    return Step(
        action=Action.CREATE,
        kind=CREDIT_STEP,
        key=key,
        reason=Reason.REMOTE_CHANGED,
        params={
            "account_id": window.account_id,
            "org_id": window.org_id,
            "window_end": _iso(window.window_end),
            "invoice": line.invoice_id,
            "ledger_id": credit_id(line.invoice_id, line.line_id),
            "credits": line.quantity,
            "source": SOURCE,
        },
        stripe_id=line.invoice_id,
        impact=f"overdraft invoice paid: +{line.quantity:,} credit(s) to org {window.org_id}",
        idempotency_key=digest(context.key_salt, key, line.invoice_id),
        batch=0,
    )


def _status_step(window: StoredWindow, status: str, context: PlanContext) -> Step:
    """An invoice voided (the operator forgave the window: no credit back, and its deficit
    is not billed again, the next window starts at its end) or marked uncollectible in
    Stripe (still credited back if it is paid later)."""
    key = step_key(STATUS_STEP, window.org_id, window.window_end)
    invoice = window.invoice_id or ""
    if status == "void":
        impact = (
            f"overdraft invoice {invoice} voided in Stripe: org {window.org_id}'s "
            f"{window.deficit:,} overdrawn credit(s) of {_date(window.window_start)} -> "
            f"{_date(window.window_end)} are forgiven (not credited back, not billed again)"
        )
    else:
        impact = (
            f"overdraft invoice {invoice} marked uncollectible in Stripe: org "
            f"{window.org_id} is credited back only if it is paid after all"
        )
    return Step(
        action=Action.UPDATE,
        kind=STATUS_STEP,
        key=key,
        reason=Reason.REMOTE_CHANGED,
        params={
            "account_id": window.account_id,
            "org_id": window.org_id,
            "window_end": _iso(window.window_end),
            "invoice": invoice,
            "status": status,
        },
        stripe_id=invoice or None,
        impact=impact,
        idempotency_key=digest(context.key_salt, key, invoice, status),
        batch=0,
    )


def _restore_record(found: FoundWindow, context: PlanContext) -> Step:
    """The row of a window Stripe shows invoiced and the store lacks (a restore: nothing is
    sent to Stripe). A paid one is credited back in the same transaction, once (the ledger
    id is the invoice line's, and the credit is at most the debt this ledger holds)."""
    invoice = found.invoice
    key = step_key(RESTORE_STEP, found.org_id, invoice.window_end)
    ledger_id = credit_id(invoice.invoice_id, invoice.line_id) if invoice.line_id else None
    return Step(
        action=Action.CREATE,
        kind=RESTORE_STEP,
        key=key,
        reason=Reason.STORE_LOST,
        params={
            "account_id": found.account_id,
            "org_id": found.org_id,
            "window_start": _iso(found.window_start),
            "window_end": _iso(invoice.window_end),
            "deficit": invoice.quantity,
            "unit_amount": invoice.unit_amount,
            "currency": invoice.currency,
            "invoice": invoice.invoice_id,
            "status": invoice.status,
            "ledger_id": ledger_id,
            "credits": found.credits if ledger_id else 0,
        },
        stripe_id=invoice.invoice_id,
        impact=(
            f"overdraft invoice {invoice.invoice_id} ({invoice.status}, "
            f"{invoice.quantity:,} credit(s)) found in Stripe for org {found.org_id}'s window "
            f"ending {_date(invoice.window_end)}: recorded, not invoiced again"
            + (f"; +{found.credits:,} credit(s) back" if found.credits and ledger_id else "")
        ),
        idempotency_key=digest(context.key_salt, key, invoice.invoice_id),
    )


def _checked_record(awaiting: Sequence[StoredWindow], context: PlanContext) -> Step:
    return Step(
        action=Action.UPDATE,
        kind=CHECKED_STEP,
        key=f"{CHECKED_STEP}/{context.now}",
        reason=Reason.BOOKKEEPING,
        params={
            "windows": [[w.account_id, _iso(w.window_end)] for w in awaiting],
            "checked_at": context.now,
        },
        idempotency_key=digest(context.key_salt, CHECKED_STEP, str(context.now)),
    )

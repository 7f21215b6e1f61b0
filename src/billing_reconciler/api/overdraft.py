"""`POST /v1beta1/admin/billing/invoices/generate` (admin scope): overdraft invoicing now
(DESIGN §17, §19).

The route records nothing itself: it finds the accounts the credits domain would invoice for
the latest due window (online, active, `credit_min` < 0, not evaluated yet) and those with an
unfinished invoice, requests the targeted reconcile of their customers (`customer/<org_id>`,
the scope every fleet domain shares) and waits for it (bounded by `reconcile_wait_seconds`),
then answers the window's rows as the store holds them: the invoice ids that exist, and
(`waiting`) the accounts overdrawn in the window that have no Stripe customer yet, so
cannot be invoiced until the customers domain made it (tester T1 F15: they were silently
absent), and the next window's end and invoice day (an account overdrawn only in the window
not due yet shows in no list: it is invoiced then). A second call, or one on another replica,
finds the windows evaluated and creates nothing (the credits domain's one-invoice-per-window
rule). It takes no body (`NO_BODY`: it acts on every account, and a body such as
`{"org_id": ...}` would look scoped).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from billing_reconciler.api.auth import Scope, requires
from billing_reconciler.api.context import CUSTOMER_DOMAIN, ApiContext
from billing_reconciler.api.models import Accepted, OverdraftGenerated, OverdraftWindowOut
from billing_reconciler.api.pending import ReconcileTicket, Verdict
from billing_reconciler.api.routing import (
    NO_BODY,
    PREFIX,
    ApiRoute,
    accepted_response,
    error_responses,
)
from billing_reconciler.api.verdicts import is_pending, raise_if_refused
from billing_reconciler.domains.credit_overdraft import due_window, invoice_day_of, window_end_of
from billing_reconciler.store.overdraft import OverdraftRepository, WindowRow

REASON = "api: overdraft invoices generate"


def _out(row: WindowRow) -> OverdraftWindowOut:
    return OverdraftWindowOut(
        org_id=row.org_id,
        window_start=row.window_start,
        window_end=row.window_end,
        deficit=row.deficit,
        unit_amount=row.unit_amount,
        currency=row.currency,
        invoice_id=row.invoice_id,
        state=row.invoice_status,
        credited=row.credited,
    )


def next_window(invoice_day: int, *, day: int, shift: int) -> tuple[datetime, datetime]:
    """(end, invoice day) of the window after the one due on `invoice_day`: the next one to
    fall due, whose usage the answer's empty lists do not show yet."""
    moment = datetime.fromtimestamp(invoice_day, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    end = window_end_of(year, month, day=day, shift=shift)
    return datetime.fromtimestamp(end, UTC), datetime.fromtimestamp(
        invoice_day_of(year, month, day), UTC
    )


_NOT_YET: Final = {
    "not_leader": (
        "this replica does not lead: the leader's pass makes the invoices; call it again "
        "(on the leader, or later) to see them"
    ),
    "in_progress": "the invoicing pass is still running; call it again to see its invoices",
}


def _not_yet(verdict: Verdict) -> JSONResponse:
    """202 as every waiting write (`verdicts.accepted`), but nothing was recorded here and
    there is nothing to poll but this route (tester T4-3): no `Location`, its own words."""
    reason = verdict.reason or "in_progress"
    message = _NOT_YET.get(reason, "the invoicing pass did not run here; call it again later")
    body = Accepted(request_id=verdict.request_id, status="pending", reason=reason, message=message)
    return JSONResponse(body.model_dump(), status_code=202)


def admin_overdraft_router(context: ApiContext) -> APIRouter:
    router = APIRouter(
        prefix=f"{PREFIX}/admin/billing",
        tags=["invoices", "admin"],
        route_class=ApiRoute,
        dependencies=[Depends(requires(context.tokens, Scope.ADMIN))],
    )

    @router.post(
        "/invoices/generate",
        response_model=OverdraftGenerated,
        responses={**error_responses(403, 409, 503), **accepted_response()},
        dependencies=[NO_BODY],
    )
    def generate_overdraft_invoices() -> OverdraftGenerated | JSONResponse:
        """Evaluate the latest due overdraft window of every account now and answer once
        its invoices exist (their ids); twice is the same as once. `next_window_end` and
        `next_invoice_at` say which window is next and when it falls due (an account
        overdrawn only since `window_end` is invoiced then). It takes no body: a body other
        than `{}` (say `{"org_id": ...}`: it acts on every account) is 422, field `body`."""
        customer = context.config().billing.customer
        now = int(context.clock().timestamp())
        day = customer.credit_overdraft_invoice_day
        shift = customer.credit_overdraft_invoice_range_shift
        invoice_day, end_seconds = due_window(now, day=day, shift=shift)
        end = datetime.fromtimestamp(end_seconds, UTC)
        next_end, next_invoice_day = next_window(invoice_day, day=day, shift=shift)
        with context.store.session() as session:
            repository = OverdraftRepository(session)
            orgs = {d.org_id for d in repository.due(window_end=end, org_ids=None)}
            orgs |= {w.org_id for w in repository.unfinished(None)}
        state = "done"
        if orgs and customer.credit_overdraft_product:
            ticket = context.request_reconcile(CUSTOMER_DOMAIN, frozenset(orgs), REASON)
            if isinstance(ticket, ReconcileTicket):
                verdict = ticket.wait(context.reconcile_wait_seconds)
                # As every write waiting for its reconcile answers (DESIGN §19): refused
                # 409/402, Stripe unreachable 503, still running or on a follower 202 with
                # its reason (tester T3-12: a follower answered 200 with empty lists).
                raise_if_refused(verdict)
                if is_pending(verdict):
                    return _not_yet(verdict)
                state = verdict.state
        with context.store.session() as session:
            repository = OverdraftRepository(session)
            rows = repository.windows(window_end=end)
            waiting = [
                d.org_id
                for d in repository.due(window_end=end, org_ids=None)
                if d.stripe_customer_id is None and d.balance < 0
            ]
        return OverdraftGenerated(
            window_end=end,
            invoices=[r.invoice_id for r in rows if r.invoice_id],
            data=[_out(r) for r in rows],
            waiting=waiting,
            next_window_end=next_end,
            next_invoice_at=next_invoice_day,
            state=state,
        )

    return router

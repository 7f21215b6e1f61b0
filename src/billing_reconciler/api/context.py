"""What the routes are given: the store, the settings in force, and how to request a reconcile.

The API only records facts (DESIGN §1): after its transaction commits it asks for a targeted
reconcile of the customer it touched through `request_reconcile(domain, scope, reason)`, which
the runtime turns into a queue entry (`api` sits below `runtime`, so it never builds the
runtime's request type itself). The runtime answers with a `ReconcileTicket` (`api.pending`)
that a write changing Stripe waits on, at most `reconcile_wait_seconds`; anything else (None:
no runtime, as in tests that only record the requests) means there is nothing to wait for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import structlog

from billing_reconciler.api.auth import ApiTokens
from billing_reconciler.api.pending import DEFAULT_WAIT_SECONDS, ReconcileTicket, Verdict
from billing_reconciler.config import BillingConfig
from billing_reconciler.store import Store
from billing_reconciler.stripe_gateway.client import StripeGateway

# The domain that turns billing accounts into Stripe customers (DESIGN §14); its scope is a
# set of org ids (`customer/<org_id>` keys).
CUSTOMER_DOMAIN: Final = "customer"

RequestReconcile = Callable[[str, frozenset[str], str], object]

# At most this many requests wait for their reconcile at once (FastAPI runs these routes on a
# pool of 40 threads shared with every other synchronous route).
MAX_WAITERS: Final = 16

_log = structlog.get_logger(__name__)


def _no_reconcile(domain: str, scope: frozenset[str], reason: str) -> None:
    del domain, scope, reason


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ApiContext:
    """`config` is asked per request, so a reloaded billing.yaml applies to the next call."""

    store: Store
    tokens: ApiTokens
    config: Callable[[], BillingConfig] = BillingConfig
    installation_id: Callable[[], str] = lambda: "default"
    live_mode: bool = False
    """A live Stripe key: test clocks are refused."""
    request_reconcile: RequestReconcile = _no_reconcile
    clock: Callable[[], datetime] = field(default=_now)
    reconcile_wait_seconds: float = DEFAULT_WAIT_SECONDS
    """How long a write that changes Stripe waits for its reconcile before answering 202."""
    gateway: StripeGateway | None = None
    """Stripe, for the reads a route answers from Stripe itself (a plan change's invoice
    preview); None: such a route answers 503 `provider_unavailable`."""
    declared_plan: Callable[[str], str | None] = lambda org_id: None
    """The plan a contract customer (`desired/customers/`) declares for an org, None: none.
    The YAML wins: such an org's subscribe, plan change and cancel are refused (409)."""
    waiters: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(MAX_WAITERS)
    )
    """Requests blocked waiting at once: past it a write only looks (and answers 202), so
    waiting writes never take every worker thread of the server from the other routes."""

    def reconcile_customer(self, org_id: str, reason: str) -> ReconcileTicket | None:
        """Ask for the targeted reconcile of one org's customer (after the commit); the
        ticket to wait on, or None when there is nothing to wait for."""
        try:
            ticket = self.request_reconcile(CUSTOMER_DOMAIN, frozenset({org_id}), reason)
        except Exception as error:
            # The fact is committed; the next scheduled reconcile covers it anyway.
            _log.error("reconcile request failed", org_id=org_id, error=type(error).__name__)
            return None
        return ticket if isinstance(ticket, ReconcileTicket) else None

    def await_customer(self, org_id: str, reason: str) -> Verdict | None:
        """Request the targeted reconcile of one org's customer and wait for it (bounded);
        None without a runtime to wait on."""
        ticket = self.reconcile_customer(org_id, reason)
        if ticket is None:
            return None
        if self.waiters.acquire(blocking=False):
            try:
                verdict = ticket.wait(self.reconcile_wait_seconds)
            finally:
                self.waiters.release()
        else:
            verdict = ticket.wait(0)
        _log.info(
            "reconcile awaited",
            org_id=org_id,
            request_id=verdict.request_id,
            state=verdict.state,
            reason=verdict.reason,
        )
        return verdict

"""What the routes are given: the store, the settings in force, and how to request a reconcile.

The API only records facts (DESIGN §1): after its transaction commits it asks for a targeted
reconcile of the customer it touched through `request_reconcile(domain, scope, reason)`, which
the runtime turns into a queue entry (`api` sits below `runtime`, so it never builds the
runtime's request type itself).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import structlog

from billing_reconciler.api.auth import ApiTokens
from billing_reconciler.config import BillingConfig
from billing_reconciler.store import Store

# The domain that turns billing accounts into Stripe customers (DESIGN §14); its scope is a
# set of org ids (`customer/<org_id>` keys).
CUSTOMER_DOMAIN: Final = "customer"

RequestReconcile = Callable[[str, frozenset[str], str], object]

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

    def reconcile_customer(self, org_id: str, reason: str) -> None:
        """Ask for the targeted reconcile of one org's customer (after the commit)."""
        try:
            self.request_reconcile(CUSTOMER_DOMAIN, frozenset({org_id}), reason)
        except Exception as error:
            # The fact is committed; the next scheduled reconcile covers it anyway.
            _log.error("reconcile request failed", org_id=org_id, error=type(error).__name__)

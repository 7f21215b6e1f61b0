"""The records the customers domain reads (through its reader) and plans from. Pure values.

The edge (`effects.customers`) builds them from the store's accounts, the gateway's customers
and the events cursor, so the domain never sees a store or SDK type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from billing_reconciler.domains.customer_merge import FieldValue, last_applied_from_json
from billing_reconciler.model_customers import CustomerFields, CustomerRecord


@dataclass(frozen=True, slots=True)
class StoredAccount:
    """An active billing account as the store holds it (the local side of the merge)."""

    account_id: str
    org_id: str
    stripe_id: str | None
    offline: bool
    contract: bool
    fields: CustomerFields
    currency: str | None
    test_clock: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    credit_min: int = 0
    due_in_days: int = 30
    # The store's JSON form of the fields last pushed to / pulled from Stripe.
    last_applied: Mapping[str, Any] = field(default_factory=dict)

    def last_values(self) -> dict[str, FieldValue]:
        return last_applied_from_json(self.last_applied)

    def last_fields(self) -> CustomerFields:
        values = self.last_values()
        return CustomerFields(
            name=values.get("name"),  # type: ignore[arg-type]
            email=values.get("email"),  # type: ignore[arg-type]
            phone=values.get("phone"),  # type: ignore[arg-type]
            address=values.get("address"),  # type: ignore[arg-type]
            tax_ids=values.get("tax_ids") or (),  # type: ignore[arg-type]
        ).canonical()


@dataclass(frozen=True, slots=True, order=True)
class EventPosition:
    """The newest customer event read: its id and `created` (unix seconds)."""

    event_id: str
    created: int


@dataclass(frozen=True, slots=True)
class CursorState:
    """Where the domain is in Stripe's events, and when it last listed every customer."""

    position: EventPosition | None = None
    full_resync_at: int | None = None


@dataclass(frozen=True, slots=True)
class CustomerChanges:
    """The customer ids events name after a position (`full_resync`: it cannot be followed)."""

    customer_ids: tuple[str, ...]
    position: EventPosition | None
    full_resync: bool


@dataclass(frozen=True, slots=True)
class LiveCustomers:
    """Customers of ours read from Stripe, and the ids asked for that Stripe answers deleted."""

    customers: tuple[CustomerRecord, ...] = ()
    deleted_ids: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class CustomersObserved:
    """What one pass saw. `complete`: `live` is a full listing, so an account's customer
    absent from it is gone from Stripe. `moved_to`: the cursor position to record (None: keep
    it); `resynced`: record a full resync too."""

    accounts: tuple[StoredAccount, ...]
    live: LiveCustomers
    complete: bool
    cursor: CursorState = CursorState()
    moved_to: EventPosition | None = None
    resynced: bool = False
    # Contract orgs without an active account that have a disabled one, and the Stripe
    # customer that (newest) disabled account holds, for those that hold one.
    inactive_orgs: frozenset[str] = frozenset()
    inactive_customers: Mapping[str, str] = field(default_factory=dict)
    # Of `inactive_orgs`, those the host deleted (`DELETE /organizations/{org}`).
    deleted_orgs: frozenset[str] = frozenset()
    # Contract orgs with an active account but no organization row (never PUT by the host):
    # the contract's store step writes one, so the host API serves the account.
    orgs_without_row: frozenset[str] = frozenset()
    # Live customers no active account holds that an account of the store (a disabled one)
    # does: never linked to another account.
    claimed_ids: frozenset[str] = frozenset()

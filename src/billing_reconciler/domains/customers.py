"""The customers domain (DESIGN §14, §15): every billing account that should be online has
one Stripe customer of ours, its fields merged three ways. Pure: all I/O is the reader's.

Desired: the active accounts of the store that are online (auto-created with their org or
created explicitly; `offline` ones wait for `register`, which only flips the flag), plus the
contract customers of `desired/customers/*.yaml`, for which the YAML is the local side and
always wins. The accounts live in the store, so `desired()` is only the YAML; the store's
accounts are read in `observe` beside Stripe.

Observed (never a call per customer): a full resync lists every customer (ceil(N/100) calls)
when none was made for `reconcile.full_resync_interval`; between full resyncs the events after
the stored cursor name the customers to retrieve, together with the accounts whose local
fields differ from what was last applied (a local edit to push). A customer neither named nor
dirty is unchanged on both sides and is left out of the plan. A targeted request
(`customer/<org_id>`) retrieves only its accounts' customers.

Never a second customer for an org (DESIGN §15): a pass that may create one (an online account
without a customer, a contract customer without an account) and does not list every customer
also retrieves the customer of ours a full listing found for that org while it had no account
(remembered by the rules, `customer_rules.SEEN_STEP`: what a lost store leaves), and a
targeted pass on a store that never completed a full resync lists every customer first.

The cursor is this domain's bookkeeping: a plan restore with reason `bookkeeping`, written by
apply (never by a dry run or a follower, which would lose the events for the leader), after a
full resync or whenever the events moved. The re-plan that checks convergence after an apply
reads the events of our own writes and moves it again: a plan whose only work is bookkeeping
counts as converged (`Plan.converged`); the next pass records it.

The rules are in `domains.customer_rules`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

from billing_reconciler.desired.state import CustomerSpec, DesiredState
from billing_reconciler.domains.base import PlanContext
from billing_reconciler.domains.customer_events import CUSTOMER_ROUTES
from billing_reconciler.domains.customer_merge import contract_local
from billing_reconciler.domains.customer_rules import (
    ACCOUNT_STEP,
    CURSOR_STEP,
    CUSTOMER_STEP,
    SEEN_STEP,
    customers_plan,
    known_customer_id,
    last_metadata,
)
from billing_reconciler.domains.customer_types import (
    CursorState,
    CustomerChanges,
    CustomersObserved,
    EventPosition,
    LiveCustomers,
    StoredAccount,
)
from billing_reconciler.model_customers import customer_key, org_id_of_key, owned_metadata
from billing_reconciler.planning.plan import Plan

NAME: Final = "customers"

__all__ = [
    "ACCOUNT_STEP",
    "CURSOR_STEP",
    "CUSTOMER_STEP",
    "NAME",
    "SEEN_STEP",
    "CustomersDomain",
    "CustomersReader",
]


class CustomersReader(Protocol):
    """What the domain reads; `effects.customers.CustomersIO` implements it."""

    def accounts(self, org_ids: frozenset[str] | None) -> Sequence[StoredAccount]:
        """The active accounts (of `org_ids` only, when given)."""
        ...

    def cursor(self) -> CursorState: ...

    def changes_since(self, position: EventPosition | None) -> CustomerChanges: ...

    def all_customers(self, *, installation_id: str) -> LiveCustomers: ...

    def customers_by_id(self, ids: Iterable[str], *, installation_id: str) -> LiveCustomers: ...

    def orgs_with_accounts(self, org_ids: Iterable[str]) -> Mapping[str, str | None]:
        """Which of `org_ids` have an account in any state (a disabled one blocks a contract
        customer's re-creation), each with the Stripe customer its newest account holds."""
        ...

    def claimed_customers(self, stripe_ids: Iterable[str]) -> frozenset[str]:
        """Which of `stripe_ids` an account of the store (in any state) is linked to."""
        ...

    def orgs_without_row(self, org_ids: Iterable[str]) -> frozenset[str]:
        """Which of `org_ids` have no organization row (deleted or not)."""
        ...

    def deleted_orgs(self, org_ids: Iterable[str]) -> frozenset[str]:
        """Which of `org_ids` the host deleted (their row is marked deleted)."""
        ...


@dataclass(frozen=True, slots=True)
class ContractCustomers:
    """The desired side from YAML: contract customers by org id."""

    specs: Mapping[str, CustomerSpec] = field(default_factory=dict)


class CustomersDomain:
    """See the module docstring."""

    name: Final = NAME
    kinds: Final = frozenset({CUSTOMER_STEP, ACCOUNT_STEP, CURSOR_STEP, SEEN_STEP})
    event_routes: Final = CUSTOMER_ROUTES
    #: Its plan is a fleet: identical changes are grouped when rendered (DESIGN §14).
    fleet: Final = True

    def refresh_seconds(self, state: DesiredState) -> int:
        return int(state.config.billing.refresh_interval.customer)

    def desired(self, state: DesiredState, context: PlanContext) -> ContractCustomers:
        del context
        return ContractCustomers(specs={spec.org_id: spec for spec in state.customers})

    def observe(
        self, reader: CustomersReader, desired: ContractCustomers, context: PlanContext
    ) -> CustomersObserved:
        observed = self._with_inactive(reader, desired, self._observe(reader, desired, context))
        return self._with_orgs(reader, desired, self._with_claimed(reader, observed))

    def _with_orgs(
        self, reader: CustomersReader, desired: ContractCustomers, observed: CustomersObserved
    ) -> CustomersObserved:
        """Contract orgs with an active account that have no organization row."""
        declared = sorted(a.org_id for a in observed.accounts if a.org_id in desired.specs)
        if not declared:
            return observed
        return replace(observed, orgs_without_row=reader.orgs_without_row(declared))

    def _observe(
        self, reader: CustomersReader, desired: ContractCustomers, context: PlanContext
    ) -> CustomersObserved:
        scope = context.options.scope
        installation = context.installation_id
        if scope is not None:
            orgs = frozenset(o for key in scope if (o := org_id_of_key(key)) is not None)
            accounts = tuple(reader.accounts(orgs))
            creating = _may_create(accounts, desired, orgs)
            ids = [*_online_ids(accounts), *_known_ids(creating, context)]
            if creating and reader.cursor().full_resync_at is None:
                # This store never listed every customer (a new or lost store): a customer of
                # ours for these orgs may exist that it knows nothing of. List them all before
                # creating one (once: the first full resync remembers what it finds).
                return CustomersObserved(
                    accounts=accounts,
                    live=_of_orgs(
                        reader.all_customers(installation_id=installation), orgs, frozenset(ids)
                    ),
                    complete=True,
                )
            live = reader.customers_by_id(ids, installation_id=installation)
            return CustomersObserved(accounts=accounts, live=live, complete=False)
        accounts = tuple(reader.accounts(None))
        cursor = reader.cursor()
        interval = int(context.state.config.reconcile.full_resync_interval)
        due = cursor.full_resync_at is None or context.now - cursor.full_resync_at >= interval
        if not due:
            changes = reader.changes_since(cursor.position)
            if cursor.position is None and changes.position is None:
                # Resynced while the account had no customer event yet, and still none.
                changes = CustomerChanges((), None, full_resync=False)
            if not changes.full_resync:
                named = {
                    *changes.customer_ids,
                    *_dirty_ids(accounts, desired),
                    *_known_ids(_may_create(accounts, desired, None), context),
                }
                return CustomersObserved(
                    accounts=accounts,
                    live=reader.customers_by_id(sorted(named), installation_id=installation),
                    complete=False,
                    cursor=cursor,
                    moved_to=changes.position if changes.position != cursor.position else None,
                )
        # The position is taken before listing, so a change made during the listing is read
        # from the events next time.
        start = reader.changes_since(None).position
        return CustomersObserved(
            accounts=accounts,
            live=reader.all_customers(installation_id=installation),
            complete=True,
            cursor=cursor,
            moved_to=start,
            resynced=True,
        )

    def plan(
        self, desired: ContractCustomers, observed: CustomersObserved, context: PlanContext
    ) -> Plan:
        plan = customers_plan(desired.specs, observed, context)
        unknown = _unknown_orgs(desired, observed)
        if not unknown:
            return plan
        count = len(unknown)
        shown = ", ".join(unknown[:_UNKNOWN_SHOWN]) + (", ..." if count > _UNKNOWN_SHOWN else "")
        warning = (
            f"{count:,} Stripe customer{'' if count == 1 else 's'} of ours for orgs the store "
            f"does not know: re-PUT those orgs ({shown}); nothing is planned for them"
        )
        return replace(plan, warnings=(*plan.warnings, warning))

    def _with_inactive(
        self, reader: CustomersReader, desired: ContractCustomers, observed: CustomersObserved
    ) -> CustomersObserved:
        active = {a.org_id for a in observed.accounts}
        missing = [org for org in desired.specs if org not in active]
        if not missing:
            return observed
        found = reader.orgs_with_accounts(missing)
        return replace(
            observed,
            inactive_orgs=frozenset(found),
            inactive_customers={org: i for org, i in found.items() if i is not None},
            deleted_orgs=reader.deleted_orgs(sorted(found)) if found else frozenset(),
        )

    def _with_claimed(
        self, reader: CustomersReader, observed: CustomersObserved
    ) -> CustomersObserved:
        """Live customers no active account holds, which an account may link to, unless a
        disabled account of the store holds them (usually none: one query for the few)."""
        held = {a.stripe_id for a in observed.accounts if a.stripe_id}
        loose = sorted(
            c.stripe_id for c in observed.live.customers if c.stripe_id and c.stripe_id not in held
        )
        if not loose:
            return observed
        return replace(observed, claimed_ids=reader.claimed_customers(loose))

    def annotate(self, plan: Plan, reader: CustomersReader) -> Plan:
        del reader
        return plan

    def desired_fields(self, desired: ContractCustomers) -> dict[str, dict[str, Any]]:
        # The merge's last-applied values live on the account row (its executors write
        # them), not in the shared last-applied table.
        del desired
        return {}

    def scope_of(self, key: str) -> str | None:
        """`customer/<org>` and `billing_account/<org>` both belong to `customer/<org>`."""
        kind, sep, org_id = key.partition("/")
        if not sep or not org_id or kind not in (CUSTOMER_STEP, ACCOUNT_STEP):
            return None
        return customer_key(org_id)


#: How many org ids the warning about unknown orgs names.
_UNKNOWN_SHOWN: Final = 5


def _unknown_orgs(desired: ContractCustomers, observed: CustomersObserved) -> list[str]:
    """On a full listing, the orgs of the customers of ours no account of the store holds
    (active or not), whose org has no active account and is not declared (tester T1 finding
    10: after a lost store they are invisible until the host re-PUTs their orgs; a re-PUT
    links the new account to its customer)."""
    if not observed.complete:
        return []
    held = {a.stripe_id for a in observed.accounts if a.stripe_id}
    known = {a.org_id for a in observed.accounts} | set(desired.specs)
    return sorted(
        {
            c.org_id
            for c in observed.live.customers
            if c.stripe_id
            and not c.deleted
            and c.stripe_id not in held
            and c.stripe_id not in observed.claimed_ids
            and c.org_id not in known
        }
    )


def _may_create(
    accounts: Iterable[StoredAccount], desired: ContractCustomers, orgs: frozenset[str] | None
) -> list[str]:
    """Orgs this pass may create a customer for: an online account without one, or a contract
    customer (of `orgs`, when given) without an account."""
    active = set()
    creating = []
    for account in accounts:
        active.add(account.org_id)
        if account.stripe_id is None and not account.offline:
            creating.append(account.org_id)
    for org, spec in desired.specs.items():
        if org not in active and not spec.offline and (orgs is None or org in orgs):
            creating.append(org)
    return creating


def _known_ids(orgs: Iterable[str], context: PlanContext) -> list[str]:
    """The customers of ours a full listing found for `orgs` while they had no account."""
    return [i for org in orgs if (i := known_customer_id(context, org)) is not None]


def _of_orgs(live: LiveCustomers, orgs: frozenset[str], ids: frozenset[str]) -> LiveCustomers:
    """A full listing's customers of `orgs` (by marker) or with one of `ids`."""
    keys = {customer_key(org) for org in orgs}
    return LiveCustomers(
        customers=tuple(
            c
            for c in live.customers
            if c.stripe_id in ids or (c.owner is not None and c.owner.key in keys)
        ),
        deleted_ids=live.deleted_ids,
    )


def _online_ids(accounts: Iterable[StoredAccount]) -> list[str]:
    return [a.stripe_id for a in accounts if a.stripe_id and not a.offline]


def _dirty_ids(accounts: Iterable[StoredAccount], desired: ContractCustomers) -> list[str]:
    """Customers of accounts whose local side differs from what was last applied: a field
    (for a contract, the YAML's where it sets one, else the store's) or a metadata key."""
    ids: list[str] = []
    for account in accounts:
        if not account.stripe_id or account.offline:
            continue
        spec = desired.specs.get(account.org_id)
        local = (
            account.fields
            if spec is None
            else contract_local(spec.customer_fields(), account.fields)
        )
        if account.last_fields() != local or owned_metadata(account.metadata) != last_metadata(
            account.last_applied
        ):
            ids.append(account.stripe_id)
    return ids

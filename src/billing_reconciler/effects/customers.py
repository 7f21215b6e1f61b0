"""The customers domain's I/O: `CustomersIO` reads what `domains.customers` asks for (the
store's accounts and cursor, Stripe's customers and events through the gateway), and
`EXECUTORS` carry out its step kinds:

- `customer`: create (then, in the transaction that journals the step done, the account is
  linked to the new customer and its last-applied fields recorded, in one UPDATE) and update
  (fields, then tax ids added and deleted; Stripe has no tax id update), each under the
  step's key;
- `billing_account`: store only: a contract account opened (with its onboard credits), the
  YAML's settings and fields written, fields pulled from Stripe, a link to a customer found
  by its marker, or the account disabled because its customer was deleted in Stripe;
- `customer_cursor`: store only: the events cursor and the time of the last full resync;
- `customer_seen`: store only: a customer of ours found without an account, remembered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from billing_reconciler.apply import Done, StepExecutor
from billing_reconciler.domains.customer_merge import last_applied_from_json
from billing_reconciler.domains.customer_rules import (
    ACCOUNT_STEP,
    CURSOR_STEP,
    CUSTOMER_STEP,
    SEEN_STEP,
)
from billing_reconciler.domains.customer_types import (
    CursorState,
    CustomerChanges,
    EventPosition,
    LiveCustomers,
    StoredAccount,
)
from billing_reconciler.domains.customers import NAME, CustomersDomain
from billing_reconciler.model_customers import Address, CustomerFields, TaxId, owned_metadata
from billing_reconciler.planning.plan import Action, Step, canonical_json, digest
from billing_reconciler.store import (
    AccountRecord,
    AccountRepository,
    DomainCursorRepository,
    LastApplied,
    LastAppliedRepository,
    OrganizationRepository,
    Store,
    grant_onboard_credits,
)
from billing_reconciler.store import Address as StoredAddress
from billing_reconciler.store import TaxId as StoredTaxId
from billing_reconciler.stripe_gateway import (
    StripeGateway,
    WriteResult,
    customers_by_id,
    observe_customers,
)
from billing_reconciler.stripe_gateway.customers import (
    EventCursor,
    ObservedCustomers,
    add_tax_id,
    create_customer,
    customer_events_since,
    delete_tax_id,
    update_customer,
)

PAGE = 1000
_DOMAIN = CustomersDomain()


# --------------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CustomersIO:
    """The customers domain's reader (`domains.customers.CustomersReader`)."""

    gateway: StripeGateway
    store: Store

    def accounts(self, org_ids: frozenset[str] | None) -> Sequence[StoredAccount]:
        with self.store.session() as session:
            repository = AccountRepository(session)
            if org_ids is not None:
                found = (repository.active_for_org(org) for org in sorted(org_ids))
                return [stored_account(r) for r in found if r is not None]
            accounts: list[StoredAccount] = []
            after: str | None = None
            while page := repository.list_active(after_id=after, limit=PAGE):
                accounts.extend(stored_account(r) for r in page)
                after = page[-1].id
            return accounts

    def orgs_with_accounts(self, org_ids: Iterable[str]) -> Mapping[str, str | None]:
        with self.store.session() as session:
            repository = AccountRepository(session)
            latest = {o: repository.latest_for_org(o) for o in org_ids}
            return {o: r.stripe_customer_id for o, r in latest.items() if r is not None}

    def claimed_customers(self, stripe_ids: Iterable[str]) -> frozenset[str]:
        with self.store.session() as session:
            return AccountRepository(session).linked_customer_ids(stripe_ids)

    def deleted_orgs(self, org_ids: Iterable[str]) -> frozenset[str]:
        with self.store.session() as session:
            repository = OrganizationRepository(session)
            found = {o: repository.get(o) for o in org_ids}
            return frozenset(o for o, r in found.items() if r is not None and r.deleted_at)

    def orgs_without_row(self, org_ids: Iterable[str]) -> frozenset[str]:
        with self.store.session() as session:
            repository = OrganizationRepository(session)
            return frozenset(o for o in org_ids if repository.get(o) is None)

    def cursor(self) -> CursorState:
        with self.store.session() as session:
            record = DomainCursorRepository(session).get(NAME)
        position = None
        if record.last_event_id is not None and record.last_event_created is not None:
            position = EventPosition(record.last_event_id, _epoch(record.last_event_created))
        resynced = record.full_resync_at
        return CursorState(position, None if resynced is None else _epoch(resynced))

    def changes_since(self, position: EventPosition | None) -> CustomerChanges:
        cursor = None if position is None else EventCursor(position.event_id, position.created)
        events = customer_events_since(self.gateway, cursor)
        moved = events.cursor
        return CustomerChanges(
            customer_ids=events.customer_ids,
            position=None if moved is None else EventPosition(moved.event_id, moved.created),
            full_resync=events.full_resync,
        )

    def all_customers(self, *, installation_id: str) -> LiveCustomers:
        return _live(observe_customers(self.gateway, installation_id=installation_id))

    def customers_by_id(self, ids: Iterable[str], *, installation_id: str) -> LiveCustomers:
        wanted = list(ids)
        if not wanted:
            return LiveCustomers()
        return _live(customers_by_id(self.gateway, wanted, installation_id=installation_id))


def open_reader(gateway: StripeGateway, store: Store) -> CustomersIO:
    return CustomersIO(gateway=gateway, store=store)


def _live(observed: ObservedCustomers) -> LiveCustomers:
    return LiveCustomers(customers=observed.customers, deleted_ids=observed.deleted_ids)


def _epoch(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def stored_account(record: AccountRecord) -> StoredAccount:
    """The store's account as the domain reads it."""
    address = record.address
    fields = CustomerFields(
        name=record.name,
        email=record.email,
        phone=record.phone,
        address=None if address is None else Address(**address.as_dict()),
        tax_ids=tuple(TaxId(type=t.type, value=t.value) for t in record.tax_ids),
    ).canonical()
    return StoredAccount(
        account_id=record.id,
        org_id=record.org_id,
        stripe_id=record.stripe_customer_id,
        offline=record.offline,
        contract=record.contract,
        fields=fields,
        currency=record.currency,
        test_clock=record.test_clock,
        metadata=dict(record.metadata),
        credit_min=record.credit_min,
        due_in_days=record.due_in_days,
        last_applied=dict(record.last_applied),
    )


# --------------------------------------------------------------------------------------------
# Executors
# --------------------------------------------------------------------------------------------


class CustomerExecutor:
    """A Stripe customer: created, or its fields and tax ids updated."""

    def scope_of(self, key: str) -> str | None:
        """`customer/<org_id>`: a refused step holds back only its own org's (apply)."""
        return _DOMAIN.scope_of(key)

    def send(
        self, gateway: StripeGateway, step: Step, ids: Mapping[str, str]
    ) -> WriteResult | None:
        del ids
        params = step.params
        if step.action is Action.CREATE:
            return create_customer(
                gateway,
                org_id=str(params["org_id"]),
                installation_id=str(params["installation_id"]),
                fields=fields_of(params),
                idempotency_key=step.idempotency_key,
                metadata=params.get("metadata") or {},
                test_clock=params.get("test_clock"),
                revision=str(params.get("revision") or ""),
            )
        return _update(gateway, step)

    def record(self, session: Session, done: Done) -> None:
        step = done.step
        accounts = AccountRepository(session)
        if step.action is Action.CREATE:
            assert done.stripe_id is not None
            # Link + last applied in one UPDATE: a create step's cost is mostly the store's.
            pushed = {k: step.params.get(k) for k in _MERGED}
            # The metadata keys the create sent are ours (the merge owns them from now on).
            sent = owned_metadata(step.params.get("metadata") or {})
            org_id = _org_of(step)
            linked = accounts.link_created_customer(
                org_id, done.stripe_id, {**_empty_last(), **_drop_none(pushed), "metadata": sent}
            )
            if linked is None:
                raise _no_account(org_id, step)
            return
        account = _account_of(accounts, step)
        _merge_last_applied(accounts, account, step.params.get("last_applied") or {})


def _update(gateway: StripeGateway, step: Step) -> WriteResult:
    assert step.stripe_id is not None
    params = step.params
    result = WriteResult(stripe_id=step.stripe_id, request_id=None, replayed=False)
    if params.get("update"):
        result = update_customer(
            gateway,
            stripe_id=step.stripe_id,
            params=params["update"],
            idempotency_key=step.idempotency_key,
        )
    # A refused tax id is named by its place among the customer's (`tax_ids[1].value`).
    pushed = (params.get("last_applied") or {}).get("tax_ids") or ()
    order = sorted({(t["type"], t["value"]) for t in pushed})
    for tax in params.get("add_tax_ids") or ():
        pair = (tax["type"], tax["value"])
        add_tax_id(
            gateway,
            stripe_id=step.stripe_id,
            tax_id=TaxId(type=tax["type"], value=tax["value"]),
            idempotency_key=digest(step.idempotency_key, "add", tax["type"], tax["value"]),
            index=order.index(pair) if pair in order else None,
        )
    for tax in params.get("delete_tax_ids") or ():
        delete_tax_id(
            gateway,
            stripe_id=step.stripe_id,
            tax_id_id=tax["id"],
            idempotency_key=digest(step.idempotency_key, "delete", tax["id"]),
        )
    return WriteResult(stripe_id=step.stripe_id, request_id=result.request_id, replayed=False)


class AccountExecutor:
    """A billing account row: no Stripe call."""

    def scope_of(self, key: str) -> str | None:
        """`customer/<org_id>`: a refused step holds back only its own org's (apply)."""
        return _DOMAIN.scope_of(key)

    def send(
        self, gateway: StripeGateway, step: Step, ids: Mapping[str, str]
    ) -> WriteResult | None:
        del gateway, step, ids
        return None

    def record(self, session: Session, done: Done) -> None:
        step = done.step
        accounts = AccountRepository(session)
        if step.action is Action.CREATE:
            _open_contract_account(session, accounts, step.params)
            return
        account = _account_of(accounts, step)
        if step.action is Action.ARCHIVE:
            accounts.set_state(account.id, "disabled", reason=str(step.params.get("reason")))
            return
        params = step.params
        organization = params.get("organization")
        if isinstance(organization, Mapping):
            open_organization(
                session,
                account.org_id,
                title=str(organization["title"]),
                owner_email=organization.get("owner_email"),
            )
        if params.get("stripe_customer_id"):
            accounts.set_stripe_customer(account.id, str(params["stripe_customer_id"]))
        changes = dict(params.get("settings") or {})
        changes.update(_store_fields(params.get("fields") or {}))
        if params.get("currency"):
            changes["currency"] = params["currency"]
        if params.get("metadata"):
            # Pulled key by key (None: removed in Stripe) over the metadata as it is now.
            changes["metadata"] = _apply_keys(account.metadata, params["metadata"])
        if changes:
            account = accounts.update(account.id, **changes)
        if params.get("last_applied"):
            _merge_last_applied(accounts, account, params["last_applied"])


def _open_contract_account(
    session: Session, accounts: AccountRepository, params: Mapping[str, Any]
) -> None:
    account = accounts.create(
        str(params["org_id"]),
        account_id=params.get("account_id"),
        **_store_fields({k: params.get(k) for k in _MERGED}),
        currency=params.get("currency"),
        offline=bool(params.get("offline")),
        credit_min=int(params.get("credit_min") or 0),
        due_in_days=int(params.get("due_in_days", 30)),
        contract=True,
    )
    if params.get("stripe_customer_id"):
        # A restore: the store lost the account, its customer is listed in Stripe.
        accounts.set_stripe_customer(account.id, str(params["stripe_customer_id"]))
        accounts.set_last_applied(
            account.id, {**_empty_last(), **(params.get("last_applied") or {})}
        )
    grant_onboard_credits(
        session,
        account_id=account.id,
        org_id=account.org_id,
        amount=int(params.get("onboard_credits") or 0),
    )
    open_organization(
        session,
        account.org_id,
        title=str(params.get("name") or account.org_id),
        owner_email=params.get("email"),
    )


def open_organization(
    session: Session, org_id: str, *, title: str, owner_email: str | None
) -> None:
    """A contract customer's org as the host API needs it (its routes 404 an org without a
    row): created with the contract's name and email when no row exists, in the transaction
    that writes the account. An org the host PUT (or deleted) is left as it is."""
    organizations = OrganizationRepository(session)
    if organizations.get(org_id) is None:
        organizations.upsert(org_id, title=title, owner_email=owner_email)


class CursorExecutor:
    """The events cursor: where the next incremental observation starts."""

    def send(
        self, gateway: StripeGateway, step: Step, ids: Mapping[str, str]
    ) -> WriteResult | None:
        del gateway, step, ids
        return None

    def record(self, session: Session, done: Done) -> None:
        params = done.step.params
        created = params.get("created")
        resynced = params.get("full_resync_at")
        DomainCursorRepository(session).save(
            NAME,
            last_event_id=params.get("event_id"),
            last_event_created=None if created is None else datetime.fromtimestamp(created, UTC),
            full_resync_at=None if resynced is None else datetime.fromtimestamp(resynced, UTC),
        )


class SeenExecutor:
    """A customer of ours a full listing found without an account: remembered by its key
    (`customer/<org_id>`) in the last-applied table, which the plan context reads back."""

    def scope_of(self, key: str) -> str | None:
        """`customer/<org_id>`: a refused step holds back only its own org's (apply)."""
        return _DOMAIN.scope_of(key)

    def send(
        self, gateway: StripeGateway, step: Step, ids: Mapping[str, str]
    ) -> WriteResult | None:
        del gateway, step, ids
        return None

    def record(self, session: Session, done: Done) -> None:
        step, plan = done.step, done.plan
        fields = {"stripe_id": step.params.get("stripe_id")}
        LastAppliedRepository(session).put(
            LastApplied(
                installation_id=plan.installation_id,
                object_key=step.key,
                kind=SEEN_STEP,
                stripe_id=step.stripe_id,
                fields=fields,
                content_hash=digest(canonical_json(fields)),
                revision=plan.desired_revision,
                applied_at=datetime.now(UTC),
            )
        )


EXECUTORS: Mapping[str, StepExecutor] = {
    CUSTOMER_STEP: CustomerExecutor(),
    ACCOUNT_STEP: AccountExecutor(),
    CURSOR_STEP: CursorExecutor(),
    SEEN_STEP: SeenExecutor(),
}

_MERGED = ("name", "email", "phone", "address", "tax_ids")


def fields_of(params: Mapping[str, Any]) -> CustomerFields:
    """The merged fields a step's parameters carry (the store's JSON form)."""
    values = last_applied_from_json(params)
    return CustomerFields(
        name=values.get("name"),  # type: ignore[arg-type]
        email=values.get("email"),  # type: ignore[arg-type]
        phone=values.get("phone"),  # type: ignore[arg-type]
        address=values.get("address"),  # type: ignore[arg-type]
        tax_ids=values.get("tax_ids") or (),  # type: ignore[arg-type]
    ).canonical()


def _store_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-form fields as `AccountRepository.update` takes them (only the keys given)."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "address":
            out[name] = None if not value else StoredAddress.from_dict(value)
        elif name == "tax_ids":
            out[name] = tuple(StoredTaxId(type=t["type"], value=t["value"]) for t in value or ())
        elif name in _MERGED:
            out[name] = value
    return out


def _org_of(step: Step) -> str:
    return step.key.split("/", 1)[1]


def _no_account(org_id: str, step: Step) -> LookupError:
    return LookupError(f"no active billing account of org {org_id!r} for {step.key}")


def _account_of(accounts: AccountRepository, step: Step) -> AccountRecord:
    org_id = _org_of(step)
    account = accounts.active_for_org(org_id)
    if account is None:
        raise _no_account(org_id, step)
    return account


def _merge_last_applied(
    accounts: AccountRepository, account: AccountRecord, fields: Mapping[str, Any]
) -> None:
    """The step's last-applied values over the stored ones; `metadata` key by key (a step
    records only the keys it wrote; None: a key no longer ours)."""
    if not fields:
        return
    merged = {**account.last_applied, **fields}
    if isinstance(fields.get("metadata"), Mapping):
        before = account.last_applied.get("metadata")
        merged["metadata"] = _apply_keys(
            before if isinstance(before, Mapping) else {}, fields["metadata"]
        )
    accounts.set_last_applied(account.id, merged)


def _apply_keys(current: Mapping[str, Any], keys: Mapping[str, Any]) -> dict[str, Any]:
    """`current` with each of `keys` set, or removed where its value is None."""
    result = dict(current)
    for key, value in keys.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def _empty_last() -> dict[str, Any]:
    return {"name": None, "email": None, "phone": None, "address": None, "tax_ids": []}


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}

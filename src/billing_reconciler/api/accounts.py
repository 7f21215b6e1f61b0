"""`/organizations/{org}/billing`: an org's billing account, and the admin's limits on it.

The account is a fact in the store; the customers domain turns it into a Stripe customer.
`register` (offline -> online), `enable` and `disable` only record the wish and request the
targeted reconcile of that customer. The writes that change Stripe (register, the explicit
create of an online account, a PATCH of a pushed field of an online account) wait for that
reconcile (`api.verdicts`, DESIGN §19) and answer the account as it left it, or Stripe's
refusal, or 202 when it was not finished in time.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from billing_reconciler.api.auth import Scope, requires
from billing_reconciler.api.context import ApiContext
from billing_reconciler.api.errors import ApiError, from_store, not_found, precondition
from billing_reconciler.api.models import (
    Account,
    AccountCreate,
    AccountDetailsIn,
    AccountPatch,
    Address,
    AddressIn,
    TaxId,
    TaxIdIn,
)
from billing_reconciler.api.onboarding import (
    NewAccount,
    check_test_clock,
    open_account,
    require_active,
    require_org,
)
from billing_reconciler.api.pending import Verdict
from billing_reconciler.api.routing import (
    NO_BODY,
    PREFIX,
    ApiRoute,
    OrgId,
    accepted_response,
    error_responses,
)
from billing_reconciler.api.subscription_end import end_subscription
from billing_reconciler.api.verdicts import accepted, is_pending, raise_if_refused
from billing_reconciler.model_customers import (
    CONTROLLER_METADATA_KEYS,
    controller_metadata,
    deleted_in_stripe_reason,
    owned_metadata,
)
from billing_reconciler.store import AccountRecord, AccountRepository, ConflictError
from billing_reconciler.store import Address as StoredAddress
from billing_reconciler.store import TaxId as StoredTaxId

# The account fields the customers domain pushes to the Stripe customer.
PUSHED_FIELDS: Final = ("name", "email", "phone", "address", "tax_ids", "currency", "metadata")


def account_path(org_id: str) -> str:
    return f"{PREFIX}/organizations/{org_id}/billing"


def deleted_in_stripe(record: AccountRecord) -> bool:
    """The customers domain disabled the account because its Stripe customer was deleted in
    Stripe (the reason its archive step records)."""
    return (
        record.state != "active"
        and record.stripe_customer_id is not None
        and record.disabled_reason == deleted_in_stripe_reason(record.stripe_customer_id)
    )


def after_reconcile(
    context: ApiContext, org: str, verdict: Verdict | None, record: AccountRecord
) -> Account | JSONResponse:
    """The answer of a write that waited for its reconcile: Stripe's refusal raised, 202 when
    unfinished (or finished without creating the customer of an online account: suspended,
    leadership moved), else the account as the reconcile left it in the store."""
    if verdict is None:  # no runtime to wait on
        return account(record)
    tax_ids = [(t.type, t.value) for t in record.tax_ids]
    raise_if_refused(verdict, org_id=org, account_id=record.id, tax_ids=tax_ids)
    if is_pending(verdict):
        return accepted(verdict, account_path(org))
    with context.store.session() as session:
        current = AccountRepository(session).get(record.id) or record
    if current.state == "active" and not current.offline and current.stripe_customer_id is None:
        return accepted(verdict, account_path(org), reason="not_applied")
    return account(current)


def account(record: AccountRecord) -> Account:
    address = record.address
    return Account(
        id=record.id,
        org_id=record.org_id,
        stripe_customer_id=record.stripe_customer_id,
        state="active" if record.state == "active" else "disabled",
        offline=record.offline,
        name=record.name,
        email=record.email,
        phone=record.phone,
        address=None
        if address is None
        else Address(
            line1=address.line1,
            line2=address.line2,
            city=address.city,
            state=address.state,
            postal_code=address.postal_code,
            country=address.country,
        ),
        tax_ids=[TaxId(type=t.type, value=t.value) for t in record.tax_ids],
        currency=record.currency,
        credit_min=record.credit_min,
        due_in_days=record.due_in_days,
        test_clock=record.test_clock,
        metadata=owned_metadata(record.metadata),
        created_at=record.created_at,
    )


def _address(value: AddressIn | None) -> StoredAddress | None:
    return None if value is None else StoredAddress(**value.model_dump())


def _merged_address(sent: AddressIn | None, stored: StoredAddress | None) -> StoredAddress | None:
    """A PATCH's `address` as a JSON merge patch (RFC 7396) of the stored one: a part sent
    replaces it, a part sent as null clears it, a part left out is kept; `address: null`
    clears the whole address (as does clearing every part)."""
    if sent is None:
        return None
    parts: dict[str, str | None] = {} if stored is None else stored.as_dict()
    parts.update(sent.model_dump(include=sent.model_fields_set))
    return None if all(v is None for v in parts.values()) else StoredAddress(**parts)


def _tax_ids(values: list[TaxIdIn]) -> tuple[StoredTaxId, ...]:
    return tuple(StoredTaxId(type=t.type, value=t.value) for t in values)


def _latest(session: Session, org_id: str) -> AccountRecord:
    record = AccountRepository(session).latest_for_org(org_id)
    if record is None:
        raise not_found(f"organization {org_id} has no billing account", org_id=org_id)
    return record


def _metadata(sent: dict[str, str] | None, current: AccountRecord | None) -> dict[str, str]:
    """The user's metadata keys sent, with the keys the controller writes itself
    (`auto_created`) kept as the account holds them: never set, changed or removed by it."""
    kept = {} if current is None else controller_metadata(current.metadata)
    return {**{k: v for k, v in (sent or {}).items() if k not in CONTROLLER_METADATA_KEYS}, **kept}


def _patch_fields(body: AccountPatch, current: AccountRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in body.model_fields_set:
        if name == "address":
            fields[name] = _merged_address(body.address, current.address)
        elif name == "tax_ids":
            fields[name] = _tax_ids(body.tax_ids or [])
        elif name == "metadata":
            fields[name] = _metadata(body.metadata, current)
        else:
            fields[name] = getattr(body, name)
    return fields


def accounts_router(context: ApiContext) -> APIRouter:
    """The app-scope account routes."""
    router = APIRouter(
        prefix=f"{PREFIX}/organizations/{{org}}/billing",
        tags=["billing accounts"],
        route_class=ApiRoute,
        dependencies=[Depends(requires(context.tokens, Scope.APP))],
    )

    @router.get("", response_model=Account, responses=error_responses(404))
    def get_account(org: OrgId) -> Account:
        """The org's active account, else its newest one."""
        with context.store.session() as session:
            require_org(session, org)
            return account(_latest(session, org))

    @router.post(
        "",
        status_code=201,
        response_model=Account,
        responses={**accepted_response(), **error_responses(402, 404, 409)},
    )
    def create_account(org: OrgId, body: AccountCreate) -> Account | JSONResponse:
        """Open an account explicitly (409 `already_exists` beside an active one,
        `failed_precondition` while an older one is overdrawn)."""
        with context.store.session() as session:
            record = open_account(
                context,
                session,
                require_org(session, org),
                NewAccount(
                    name=body.name,
                    email=body.email,
                    phone=body.phone,
                    address=_address(body.address),
                    tax_ids=_tax_ids(body.tax_ids),
                    currency=body.currency,
                    offline=body.offline,
                    test_clock=body.test_clock,
                    metadata=_metadata(body.metadata, None),
                ),
            )
        if record.offline or record.state != "active":
            context.reconcile_customer(org, "billing account created")
            return account(record)
        return after_reconcile(
            context, org, context.await_customer(org, "billing account created"), record
        )

    @router.patch(
        "",
        response_model=Account,
        responses={**accepted_response(), **error_responses(402, 404, 409)},
    )
    def patch_account(org: OrgId, body: AccountPatch) -> Account | JSONResponse:
        """Change the fields sent; a currency once set cannot change (409), nor `test_clock`
        once a Stripe customer is linked (409). `address` merges
        into the stored one (RFC 7396: a part sent as null clears it, a part left out stays;
        `address: null` clears it all)."""
        with context.store.session() as session:
            require_org(session, org)
            current = require_active(session, org)
            if "test_clock" in body.model_fields_set:
                _check_test_clock_change(context, org, current, body.test_clock)
            try:
                record = AccountRepository(session, clock=context.clock).update(
                    current.id, **_patch_fields(body, current)
                )
            except ConflictError as error:
                # The one refusal of an update: a currency once set never changes.
                answer = from_store(error)
                answer.details.update(field="currency", account_id=current.id)
                raise answer from None
        pushed = any(getattr(current, f) != getattr(record, f) for f in PUSHED_FIELDS)
        # A new test clock on an account without its customer: the create is tried again.
        pushed = pushed or current.test_clock != record.test_clock
        if record.offline or not pushed:
            context.reconcile_customer(org, "billing account updated")
            return account(record)
        return after_reconcile(
            context, org, context.await_customer(org, "billing account updated"), record
        )

    @router.post(
        "/register",
        response_model=Account,
        responses={**accepted_response(), **error_responses(402, 404, 409)},
        dependencies=[NO_BODY],
    )
    def register_account(org: OrgId) -> Account | JSONResponse:
        """Offline -> online: the customers domain creates the Stripe customer; the answer
        waits for it (202 when it takes longer), so `stripe_customer_id` is set. A contract
        account its YAML declares offline is 409 `failed_precondition` (change the YAML)."""
        with context.store.session() as session:
            require_org(session, org)
            record = require_active(session, org)
            if record.offline and record.contract:
                raise _declared_offline(org, record)
            if record.offline:
                record = AccountRepository(session, clock=context.clock).update(
                    record.id, offline=False
                )
        return after_reconcile(
            context, org, context.await_customer(org, "billing account registered"), record
        )

    @router.post(
        "/enable",
        response_model=Account,
        responses=error_responses(404, 409),
        dependencies=[NO_BODY],
    )
    def enable_account(org: OrgId) -> Account:
        """Re-activate the org's newest account (409 beside another active one, and 409 when
        its Stripe customer was deleted in Stripe: open a new account instead)."""
        return _set_state(context, org, "active")

    @router.post(
        "/disable", response_model=Account, responses=error_responses(404), dependencies=[NO_BODY]
    )
    def disable_account(org: OrgId) -> Account:
        """Disable the org's account (its balance and history stay)."""
        return _set_state(context, org, "disabled")

    return router


def _set_state(context: ApiContext, org: str, state: str) -> Account:
    with context.store.session() as session:
        require_org(session, org)
        record = _latest(session, org)
        if state == "active" and deleted_in_stripe(record):
            raise _customer_deleted(org, record)
        if record.state != state:
            record = AccountRepository(session, clock=context.clock).set_state(
                record.id, state, reason=None if state == "active" else "disabled through the API"
            )
        if state == "disabled":
            # Disabling cancels the live subscription: recorded with the disable (an immediate
            # cancel request on its intent, as an org delete records it), so an enable before
            # the reconcile ran does not undo it.
            end_subscription(context, session, org, record, force=True)
    context.reconcile_customer(org, f"billing account {state}")
    return account(record)


def _check_test_clock_change(
    context: ApiContext, org: str, current: AccountRecord, test_clock: str | None
) -> None:
    """A test clock can be replaced or cleared only while no Stripe customer is linked (a
    customer's test clock is fixed at its creation); never set with a live key."""
    check_test_clock(context, test_clock)
    if test_clock != current.test_clock and current.stripe_customer_id is not None:
        raise precondition(
            f"billing account {current.id} is linked to Stripe customer "
            f"{current.stripe_customer_id}, whose test clock was fixed when it was created; "
            "a test clock can change only before the customer exists",
            org_id=org,
            account_id=current.id,
            stripe_customer_id=current.stripe_customer_id,
            field="test_clock",
        )


def _declared_offline(org: str, record: AccountRecord) -> ApiError:
    """A contract account is what its YAML declares: the next reconcile would set `offline`
    back, so `register` is refused rather than answered with nothing changed."""
    return precondition(
        f"billing account {record.id} of organization {org} is a contract customer whose "
        "YAML (desired/customers/) declares offline: true, which the customers domain keeps; "
        "set offline: false in that file and apply it (reconcile) to register it",
        org_id=org,
        account_id=record.id,
        field="offline",
        source="desired/customers",
    )


def _customer_deleted(org: str, record: AccountRecord) -> ApiError:
    return ApiError(
        409,
        "failed_precondition",
        f"billing account {record.id} stays disabled: its Stripe customer "
        f"{record.stripe_customer_id} was deleted in Stripe, and a deleted customer is never "
        f"re-created silently; open a new billing account with POST {account_path(org)}",
        {
            "org_id": org,
            "account_id": record.id,
            "stripe_customer_id": record.stripe_customer_id,
        },
    )


def admin_accounts_router(context: ApiContext) -> APIRouter:
    """`PUT /admin/organizations/{org}/billing/details`."""
    router = APIRouter(
        prefix=f"{PREFIX}/admin/organizations/{{org}}/billing",
        tags=["admin"],
        route_class=ApiRoute,
        dependencies=[Depends(requires(context.tokens, Scope.ADMIN))],
    )

    @router.put("/details", response_model=Account, responses=error_responses(403, 404))
    def put_details(org: OrgId, body: AccountDetailsIn) -> Account:
        """Set `credit_min` (negative = overdraft allowance) and/or `due_in_days`."""
        fields = body.model_dump(exclude_unset=True, exclude_none=True)
        with context.store.session() as session:
            require_org(session, org)
            record = require_active(session, org)
            if fields:
                record = AccountRepository(session, clock=context.clock).update(record.id, **fields)
        context.reconcile_customer(org, "billing details updated")
        return account(record)

    return router

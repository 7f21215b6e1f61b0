"""Billing accounts: the Stripe customer of an org, at most one active per org (DESIGN §15).

A new account is refused while the org has an active one (a partial unique index enforces it
in the database too, so concurrent creators cannot both win) and while an older account of
the org has a negative balance. The currency, once set, never changes (Stripe's rule for a
customer that has been billed). Each account gets its ledger balance row when it is created.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast

from sqlalchemy import Row, Table, bindparam, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billing_reconciler.store._common import Clock, utc_now
from billing_reconciler.store.errors import ConflictError, NotFoundError
from billing_reconciler.store.tables import BillingAccountModel, LedgerBalanceModel

ACTIVE = "active"
DISABLED = "disabled"
STATES = (ACTIVE, DISABLED)

#: What `AccountRepository.update` may change (`set_*` change the others).
UPDATABLE_FIELDS = frozenset(
    {
        "name",
        "email",
        "phone",
        "address",
        "tax_ids",
        "currency",
        "credit_min",
        "due_in_days",
        "offline",
        "test_clock",
        "metadata",
        "contract",
    }
)


@dataclass(frozen=True, slots=True)
class Address:
    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {
            "line1": self.line1,
            "line2": self.line2,
            "city": self.city,
            "state": self.state,
            "postal_code": self.postal_code,
            "country": self.country,
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Address:
        return cls(**{key: value.get(key) for key in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class TaxId:
    type: str
    value: str


@dataclass(frozen=True, slots=True)
class AccountRecord:
    id: str
    org_id: str
    stripe_customer_id: str | None
    state: str
    offline: bool
    name: str | None
    email: str | None
    phone: str | None
    address: Address | None
    tax_ids: tuple[TaxId, ...]
    currency: str | None
    credit_min: int
    due_in_days: int
    test_clock: str | None
    metadata: Mapping[str, str]
    contract: bool
    disabled_reason: str | None
    last_applied: Mapping[str, Any]
    created_at: datetime
    updated_at: datetime


def new_account_id() -> str:
    return "acct_" + uuid.uuid4().hex


#: The account's columns, for fleet reads as plain rows (keys: the model's attribute names;
#: no ORM instance per row).
_ACCOUNT_COLUMNS: Final = tuple(
    getattr(BillingAccountModel, attr.key) for attr in BillingAccountModel.__mapper__.column_attrs
)


def _record(model: BillingAccountModel | Row[Any]) -> AccountRecord:
    return AccountRecord(
        id=model.id,
        org_id=model.org_id,
        stripe_customer_id=model.stripe_customer_id,
        state=model.state,
        offline=model.offline,
        name=model.name,
        email=model.email,
        phone=model.phone,
        address=None if model.address is None else Address.from_dict(model.address),
        tax_ids=tuple(TaxId(type=tax["type"], value=tax["value"]) for tax in model.tax_ids),
        currency=model.currency,
        credit_min=model.credit_min,
        due_in_days=model.due_in_days,
        test_clock=model.test_clock,
        metadata=dict(model.metadata_),
        contract=model.contract,
        disabled_reason=model.disabled_reason,
        last_applied=dict(model.last_applied),
        created_at=model.created_at,
        updated_at=model.updated_at,
    )


def _tax_ids(tax_ids: Sequence[TaxId]) -> list[dict[str, str]]:
    return [{"type": tax.type, "value": tax.value} for tax in tax_ids]


def _currency(currency: str | None) -> str | None:
    if currency is None:
        return None
    if len(currency) != 3 or not currency.isalpha():
        raise ValueError(f"invalid currency {currency!r}: three letters (ISO 4217)")
    return currency.lower()


def _check_due_in_days(due_in_days: int) -> int:
    if due_in_days < 0:
        raise ValueError("due_in_days cannot be negative")
    return due_in_days


_accounts = cast(Table, BillingAccountModel.__table__)
_other = _accounts.alias("other_account")

#: `AccountRepository.link_created_customer`'s statement, built once.
_LINK_CREATED = (
    update(_accounts)
    .where(
        _accounts.c.org_id == bindparam("p_org_id"),
        _accounts.c.state == bindparam("p_active"),
        ~exists()
        .where(
            _other.c.stripe_customer_id == bindparam("p_customer"),
            _other.c.id != _accounts.c.id,
        )
        .correlate(_accounts),
    )
    .values(
        stripe_customer_id=bindparam("p_customer", type_=_accounts.c.stripe_customer_id.type),
        last_applied=bindparam("p_last_applied", type_=_accounts.c.last_applied.type),
        updated_at=bindparam("p_now", type_=_accounts.c.updated_at.type),
    )
    .returning(_accounts.c.id)
)


def _customer_taken(customer_id: str | None) -> ConflictError:
    return ConflictError(
        f"Stripe customer {customer_id!r} belongs to another account", code="already_exists"
    )


class AccountRepository:
    def __init__(self, session: Session, *, clock: Clock = utc_now) -> None:
        self._session = session
        self._clock = clock

    def create(
        self,
        org_id: str,
        *,
        name: str | None,
        email: str | None,
        phone: str | None = None,
        address: Address | None = None,
        tax_ids: Sequence[TaxId] = (),
        currency: str | None,
        credit_min: int = 0,
        due_in_days: int = 30,
        offline: bool = False,
        test_clock: str | None = None,
        metadata: Mapping[str, str] | None = None,
        contract: bool = False,
        account_id: str | None = None,
    ) -> AccountRecord:
        """A new active account of `org_id`, with a zero balance.

        ConflictError `already_exists` when the org has an active account; ConflictError
        `failed_precondition` when an older account of the org has a negative balance.
        """
        if self.active_for_org(org_id) is not None:
            raise ConflictError(
                f"organization {org_id!r} already has an active billing account",
                code="already_exists",
            )
        in_debt = self._session.scalar(
            select(BillingAccountModel.id)
            .join(LedgerBalanceModel, LedgerBalanceModel.account_id == BillingAccountModel.id)
            .where(BillingAccountModel.org_id == org_id, LedgerBalanceModel.amount < 0)
            .limit(1)
        )
        if in_debt is not None:
            raise ConflictError(
                f"organization {org_id!r} has an account with a negative balance ({in_debt});"
                " settle it before creating a new one",
                code="failed_precondition",
            )
        now = self._clock()
        model = BillingAccountModel(
            id=account_id or new_account_id(),
            org_id=org_id,
            stripe_customer_id=None,
            state=ACTIVE,
            offline=offline,
            name=name,
            email=email,
            phone=phone,
            address=None if address is None else address.as_dict(),
            tax_ids=_tax_ids(tax_ids),
            currency=_currency(currency),
            credit_min=credit_min,
            due_in_days=_check_due_in_days(due_in_days),
            test_clock=test_clock,
            metadata_=dict(metadata or {}),
            contract=contract,
            disabled_reason=None,
            last_applied={},
            created_at=now,
            updated_at=now,
        )
        try:
            with self._session.begin_nested():
                self._session.add(model)
                self._session.flush()
                self._session.add(
                    LedgerBalanceModel(account_id=model.id, amount=0, updated_at=None)
                )
                self._session.flush()
        except IntegrityError as error:
            # Another writer created the org's active account (or this id) in between.
            raise ConflictError(
                f"organization {org_id!r} already has an active billing account"
                f" (or account id {model.id!r} is taken)",
                code="already_exists",
            ) from error
        return _record(model)

    def get(self, account_id: str) -> AccountRecord | None:
        model = self._one(BillingAccountModel.id == account_id)
        return None if model is None else _record(model)

    def active_for_org(self, org_id: str) -> AccountRecord | None:
        model = self._one(BillingAccountModel.org_id == org_id, BillingAccountModel.state == ACTIVE)
        return None if model is None else _record(model)

    def latest_for_org(self, org_id: str) -> AccountRecord | None:
        """The org's active account, else its newest one."""
        active = self.active_for_org(org_id)
        if active is not None:
            return active
        model = self._session.scalars(
            select(BillingAccountModel)
            .where(BillingAccountModel.org_id == org_id)
            .order_by(BillingAccountModel.created_at.desc(), BillingAccountModel.id.desc())
            .limit(1)
            .execution_options(populate_existing=True)
        ).first()
        return None if model is None else _record(model)

    def by_stripe_customer(self, customer_id: str) -> AccountRecord | None:
        model = self._one(BillingAccountModel.stripe_customer_id == customer_id)
        return None if model is None else _record(model)

    def linked_customer_ids(self, customer_ids: Iterable[str]) -> frozenset[str]:
        """Which of the Stripe customer ids an account (in any state) is linked to."""
        wanted = list(dict.fromkeys(customer_ids))
        found: set[str] = set()
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            found.update(
                self._session.scalars(
                    select(BillingAccountModel.stripe_customer_id).where(
                        BillingAccountModel.stripe_customer_id.in_(chunk)
                    )
                )
            )
        return frozenset(i for i in found if i)

    def update(self, account_id: str, **fields: Any) -> AccountRecord:
        """Change the named fields only (see UPDATABLE_FIELDS).

        A currency once set cannot change: ConflictError `failed_precondition`.
        """
        unknown = set(fields) - UPDATABLE_FIELDS
        if unknown:
            raise ValueError(f"cannot update account fields {sorted(unknown)}")
        model = self._locked(account_id)
        if "currency" in fields:
            currency = _currency(fields["currency"])
            if model.currency is not None and currency != model.currency:
                raise ConflictError(
                    f"account {account_id!r} has currency {model.currency!r}; it cannot change"
                    f" to {currency!r}",
                    code="failed_precondition",
                )
            model.currency = currency
        for key, value in fields.items():
            if key == "currency":
                continue
            if key == "address":
                model.address = None if value is None else value.as_dict()
            elif key == "tax_ids":
                model.tax_ids = _tax_ids(value)
            elif key == "metadata":
                model.metadata_ = dict(value or {})
            elif key == "due_in_days":
                model.due_in_days = _check_due_in_days(value)
            else:
                setattr(model, key, value)
        model.updated_at = self._clock()
        self._session.flush()
        return _record(model)

    def set_last_applied(self, account_id: str, fields: Mapping[str, Any]) -> AccountRecord:
        """Record the fields as last pushed to / pulled from Stripe (the merge's third side)."""
        model = self._locked(account_id)
        model.last_applied = dict(fields)
        model.updated_at = self._clock()
        self._session.flush()
        return _record(model)

    def link_created_customer(
        self, org_id: str, customer_id: str, last_applied: Mapping[str, Any]
    ) -> str | None:
        """Link the org's active account to the customer just created for it and record the
        fields pushed as last applied, in one UPDATE (no read first, no savepoint): the id of
        the account, or None when the org has no active account.

        A replay (the account is linked to the customer already) rewrites the same values.
        ConflictError `already_exists` when another account is linked to the customer (and
        nothing is written). The UPDATE locks the row, as `set_stripe_customer`'s read does; a
        concurrent link of the same customer to another account, caught only by the unique
        index, raises the same ConflictError, but then the transaction cannot go on: roll it
        back.
        """
        params = {
            "p_org_id": org_id,
            "p_active": ACTIVE,
            "p_customer": customer_id,
            "p_last_applied": dict(last_applied),
            "p_now": self._clock(),
        }
        try:
            linked = self._session.connection().execute(_LINK_CREATED, params).first()
        except IntegrityError as error:
            raise _customer_taken(customer_id) from error
        if linked is not None:
            return str(linked.id)
        if self.active_for_org(org_id) is None:
            return None
        raise _customer_taken(customer_id)

    def set_stripe_customer(self, account_id: str, customer_id: str | None) -> AccountRecord:
        """Link the account to its Stripe customer (None unlinks); one account per customer."""
        model = self._locked(account_id)
        try:
            with self._session.begin_nested():
                model.stripe_customer_id = customer_id
                model.updated_at = self._clock()
                self._session.flush()
        except IntegrityError as error:
            raise _customer_taken(customer_id) from error
        return self._record_of(account_id)

    def set_state(self, account_id: str, state: str, reason: str | None = None) -> AccountRecord:
        """Activate or disable an account; `reason` is kept while disabled.

        Activating an account of an org that has another active one: ConflictError
        `already_exists`.
        """
        if state not in STATES:
            raise ValueError(f"invalid account state {state!r}: one of {', '.join(STATES)}")
        model = self._locked(account_id)
        try:
            with self._session.begin_nested():
                model.state = state
                model.disabled_reason = reason if state == DISABLED else None
                model.updated_at = self._clock()
                self._session.flush()
        except IntegrityError as error:
            raise ConflictError(
                f"organization {model.org_id!r} already has an active billing account",
                code="already_exists",
            ) from error
        return self._record_of(account_id)

    def list_active(self, *, after_id: str | None = None, limit: int = 1000) -> list[AccountRecord]:
        """Active accounts ordered by id, `limit` at a time after `after_id` (keyset paging)."""
        query = (
            select(*_ACCOUNT_COLUMNS)
            .where(BillingAccountModel.state == ACTIVE)
            .order_by(BillingAccountModel.id)
            .limit(limit)
        )
        if after_id is not None:
            query = query.where(BillingAccountModel.id > after_id)
        return [_record(row) for row in self._session.execute(query)]

    def count_by_state(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        rows = self._session.execute(
            select(BillingAccountModel.state, func.count()).group_by(BillingAccountModel.state)
        )
        for state, count in rows:
            counts[state] = int(count)
        return counts

    def _one(self, *where: Any) -> BillingAccountModel | None:
        return self._session.scalars(
            select(BillingAccountModel).where(*where).execution_options(populate_existing=True)
        ).one_or_none()

    def _locked(self, account_id: str) -> BillingAccountModel:
        model = self._session.scalars(
            select(BillingAccountModel)
            .where(BillingAccountModel.id == account_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one_or_none()
        if model is None:
            raise NotFoundError(f"no billing account {account_id!r}")
        return model

    def _record_of(self, account_id: str) -> AccountRecord:
        model = self._one(BillingAccountModel.id == account_id)
        assert model is not None
        return _record(model)

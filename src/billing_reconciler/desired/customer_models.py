"""Pydantic models of contract customer files (`desired/customers/*.yaml`) as written.

The input contract and the source of `schemas/customers.schema.json`; rules across entries and
files (duplicate org ids, plan references) live in `desired.customers`.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    WrapValidator,
    model_validator,
)

from billing_reconciler.customer_validation import (
    MAX_TAX_IDS,
    AddressPart,
    Country,
    CreditMin,
    DueInDays,
    Email,
    Name,
    Phone,
    TaxIdType,
    TaxIdValue,
    not_only_dots,
    unique_tax_ids,
)
from billing_reconciler.desired.models import NAME_PATTERN
from billing_reconciler.money import is_valid_currency

#: DESIGN §15: org ids are the host's, 1-64 characters of [A-Za-z0-9_.:-].
ORG_ID_PATTERN: Final[str] = r"^[A-Za-z0-9_.:-]{1,64}$"


def _currency(value: object) -> object:
    if not isinstance(value, str):
        return value  # the type error says it
    if not is_valid_currency(value):
        raise ValueError(f"unknown currency {value!r}: not an active ISO 4217 code")
    return value.lower()


Currency = Annotated[
    StrictStr,
    BeforeValidator(_currency),
    WithJsonSchema({"type": "string", "pattern": "^[A-Za-z]{3}$"}),
]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class AddressModel(_Strict):
    """A postal address; every part optional (the API's rules: `customer_validation`)."""

    line1: AddressPart | None = None
    line2: AddressPart | None = None
    city: AddressPart | None = None
    state: AddressPart | None = None
    postal_code: AddressPart | None = None
    country: Country | None = None
    """Two-letter country code (ISO 3166-1 alpha-2), in either case."""


class TaxIdModel(_Strict):
    """A tax id, as Stripe's `tax_id_data`: `{type: eu_vat, value: DE123456789}`."""

    type: TaxIdType
    """One of Stripe's tax id types (eu_vat, gb_vat, us_ein, ...)."""
    value: TaxIdValue


class CustomerModel(_Strict):
    """A contract customer: an account declared by org id."""

    org_id: Annotated[StrictStr, Field(pattern=ORG_ID_PATTERN), AfterValidator(not_only_dots)]
    """The host application's organization id (1-64 of A-Za-z0-9_.:-, not only dots)."""
    name: Name
    """Up to 256 characters (Stripe's limit)."""
    email: Email | None = None
    phone: Phone | None = None
    """Up to 20 characters (Stripe's limit)."""
    address: AddressModel | None = None
    tax_ids: Annotated[
        list[TaxIdModel], Field(max_length=MAX_TAX_IDS), WrapValidator(unique_tax_ids)
    ] = []
    """Each type and value once."""
    offline: StrictBool = False
    """True keeps the account without a Stripe customer."""
    plan: Annotated[StrictStr, Field(min_length=1, max_length=100, pattern=NAME_PATTERN)] | None = (
        None
    )
    """An active plan of the plan files."""
    seats: Annotated[StrictInt, Field(gt=0)] | None = None
    """A fixed seat count (needs `plan`)."""
    credit_min: CreditMin = 0
    """Minimum credit balance in credits: 0, or negative to allow an overdraft."""
    due_in_days: DueInDays = 30
    """Days to pay an invoice (0-365)."""
    currency: Currency | None = None
    """ISO 4217; billing.default_currency when absent."""

    @model_validator(mode="after")
    def _seats_need_a_plan(self) -> CustomerModel:
        if self.seats is not None and self.plan is None:
            raise ValueError("seats: a fixed seat count needs a plan")
        return self


class CustomersFileModel(_Strict):
    """A file of contract customers."""

    customers: list[Any] = []
    """The accounts, each validated as a CustomerModel."""

"""Pydantic models of contract customer files (`desired/customers/*.yaml`) as written.

The input contract and the source of `schemas/customers.schema.json`; rules across entries and
files (duplicate org ids, plan references) live in `desired.customers`.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    model_validator,
)

from billing_reconciler.desired.models import NAME_PATTERN
from billing_reconciler.money import is_valid_currency

#: DESIGN §15: org ids are the host's, 1-64 characters of [A-Za-z0-9_.:-].
ORG_ID_PATTERN: Final[str] = r"^[A-Za-z0-9_.:-]{1,64}$"
# Stripe's limits on customer fields.
MAX_NAME: Final[int] = 256
MAX_EMAIL: Final[int] = 512
MAX_PHONE: Final[int] = 20
MAX_ADDRESS_PART: Final[int] = 200


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
Text = Annotated[StrictStr, Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class AddressModel(_Strict):
    """A postal address; every part optional."""

    line1: Annotated[StrictStr, Field(max_length=MAX_ADDRESS_PART)] | None = None
    line2: Annotated[StrictStr, Field(max_length=MAX_ADDRESS_PART)] | None = None
    city: Annotated[StrictStr, Field(max_length=MAX_ADDRESS_PART)] | None = None
    state: Annotated[StrictStr, Field(max_length=MAX_ADDRESS_PART)] | None = None
    postal_code: Annotated[StrictStr, Field(max_length=MAX_ADDRESS_PART)] | None = None
    country: Annotated[StrictStr, Field(pattern=r"^[A-Za-z]{2}$")] | None = None
    """Two-letter country code (ISO 3166-1 alpha-2)."""


class TaxIdModel(_Strict):
    """A tax id, as Stripe's `tax_id_data`: `{type: eu_vat, value: DE123456789}`."""

    type: Annotated[StrictStr, Field(pattern=r"^[a-z]{2,3}_[a-z_]+$")]
    value: Annotated[StrictStr, Field(min_length=1, max_length=100)]


class CustomerModel(_Strict):
    """A contract customer: an account declared by org id."""

    org_id: Annotated[StrictStr, Field(pattern=ORG_ID_PATTERN)]
    """The host application's organization id (1-64 characters of A-Za-z0-9_.:-)."""
    name: Annotated[Text, Field(max_length=MAX_NAME)]
    email: (
        Annotated[StrictStr, Field(max_length=MAX_EMAIL, pattern=r"^[^@\s]+@[^@\s]+$")] | None
    ) = None
    phone: Annotated[StrictStr, Field(min_length=1, max_length=MAX_PHONE)] | None = None
    address: AddressModel | None = None
    tax_ids: list[TaxIdModel] = []
    offline: StrictBool = False
    """True keeps the account without a Stripe customer."""
    plan: Annotated[StrictStr, Field(min_length=1, max_length=100, pattern=NAME_PATTERN)] | None = (
        None
    )
    """An active plan of the plan files."""
    seats: Annotated[StrictInt, Field(gt=0)] | None = None
    """A fixed seat count (needs `plan`)."""
    credit_min: StrictInt = 0
    """Minimum credit balance in credits; negative allows an overdraft."""
    due_in_days: Annotated[StrictInt, Field(ge=0)] = 30
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

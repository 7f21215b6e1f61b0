"""One set of billing-account field rules (`customer_validation`): the host API's bodies and
contract customer files accept and refuse the same values, with Stripe's limits and the
pinned SDK's tax id types."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from stripe.params._customer_create_params import CustomerCreateParamsTaxIdDatum
from stripe.params._customer_tax_id_create_params import CustomerTaxIdCreateParams

from billing_reconciler.api.models import AccountCreate, AccountDetailsIn, AccountPatch
from billing_reconciler.customer_validation import (
    COUNTRIES,
    TAX_ID_TYPES,
    field_path,
    stripe_field_path,
)
from billing_reconciler.desired.customer_models import CustomerModel

TAX = {"type": "eu_vat", "value": "DE123456789"}

# (field, value, accepted): every value goes through both validators.
SAMPLES: list[tuple[str, Any, bool]] = [
    ("email", "ap@acme.test", True),
    ("email", "first.last+tag@mail.example.co.uk", True),
    ("email", "not-an-email", False),
    ("email", "a@b", False),
    ("email", "a b@acme.test", False),
    ("email", "a@@acme.test", False),
    ("email", "a@acme.test\x00", False),
    ("phone", "+49 30 1234567", True),
    ("phone", "x" * 20, True),
    ("phone", "+1 780-459-5656 ext. 725", False),
    ("phone", "", False),
    ("phone", "   ", False),
    ("phone", " +49 30 1234567", True),
    ("name", "n" * 256, True),
    ("name", "n" * 257, False),
    ("name", "", False),
    ("name", " \t ", False),
    ("address", {"line1": "l" * 500, "country": "de"}, True),
    ("address", {"line1": "l" * 501}, False),
    ("address", {"country": "DE"}, True),
    ("address", {"country": "XK"}, True),
    ("address", {"country": "Germany"}, False),
    ("address", {"country": "XX"}, False),
    ("address", {"country": "12"}, False),
    ("tax_ids", [TAX, {"type": "us_ein", "value": "12-3456789"}], True),
    ("tax_ids", [TAX, {"type": "eu_vta", "value": "DE123456789"}], False),
    ("tax_ids", [{"type": "unknown", "value": "1"}], False),
    ("tax_ids", [{"type": "EU_VAT", "value": "DE123456789"}], False),
    ("tax_ids", [{"type": "eu_vat", "value": "  "}], False),
    ("tax_ids", [{"type": "eu_vat", "value": "x" * 65}], False),
    ("tax_ids", [TAX] * 21, False),
    ("tax_ids", [TAX, dict(TAX)], False),
    ("tax_ids", [TAX, {"type": "eu_vat", "value": "DE123456780"}], True),
    ("tax_ids", [TAX, {"type": "eu_oss_vat", "value": TAX["value"]}], True),
    ("credit_min", 0, True),
    ("credit_min", -500, True),
    ("credit_min", 5, False),
    ("credit_min", -(2**63) - 1, False),
    ("credit_min", 1.5, False),
    ("due_in_days", 0, True),
    ("due_in_days", 365, True),
    ("due_in_days", 366, False),
    ("due_in_days", -1, False),
]

API_MODEL: dict[str, type[BaseModel]] = {
    "credit_min": AccountDetailsIn,
    "due_in_days": AccountDetailsIn,
}


def _accepts(model: type[BaseModel], body: dict[str, Any]) -> bool:
    try:
        model.model_validate(body)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize(("field", "value", "accepted"), SAMPLES)
def test_the_api_and_contract_customers_agree(field: str, value: Any, accepted: bool) -> None:
    api = API_MODEL.get(field, AccountCreate)
    assert _accepts(api, {field: value}) is accepted
    if api is AccountCreate:
        assert _accepts(AccountPatch, {field: value}) is accepted
    yaml = {"org_id": "acme", "name": "Acme", field: value}
    assert _accepts(CustomerModel, yaml) is accepted


def test_country_is_stored_upper_case_both_ways() -> None:
    api = AccountCreate.model_validate({"address": {"country": "de"}})
    assert api.address is not None
    assert api.address.country == "DE"
    yaml = CustomerModel.model_validate({"org_id": "a", "name": "A", "address": {"country": "de"}})
    assert yaml.address is not None
    assert yaml.address.country == "DE"


def test_an_unknown_tax_id_type_suggests_the_closest() -> None:
    with pytest.raises(ValidationError) as api:
        AccountPatch.model_validate({"tax_ids": [TAX, {"type": "eu_vta", "value": "1"}]})
    with pytest.raises(ValidationError) as yaml:
        CustomerModel.model_validate(
            {"org_id": "a", "name": "A", "tax_ids": [{"type": "gb_vta", "value": "1"}]}
        )
    (api_error,) = api.value.errors()
    assert api_error["loc"] == ("tax_ids", 1, "type")
    assert "unknown tax id type 'eu_vta'; did you mean 'eu_vat'?" in api_error["msg"]
    assert "did you mean 'gb_vat'?" in yaml.value.errors()[0]["msg"]


def test_a_duplicate_tax_id_is_named_at_its_second_entry() -> None:
    ein = {"type": "us_ein", "value": "12-3456789"}
    with pytest.raises(ValidationError) as api:
        AccountPatch.model_validate({"tax_ids": [ein, TAX, ein]})
    with pytest.raises(ValidationError) as yaml:
        CustomerModel.model_validate({"org_id": "a", "name": "A", "tax_ids": [ein, TAX, ein]})
    for error in (api.value.errors(), yaml.value.errors()):
        assert [(e["loc"], e["type"]) for e in error] == [(("tax_ids", 2), "duplicate_tax_id")]
        assert "the same tax id as tax_ids[0] (us_ein 12-3456789)" in error[0]["msg"]


@pytest.mark.parametrize(("org_id", "accepted"), [(".", False), ("..", False), (".a.", True)])
def test_a_contract_org_id_of_only_dots_is_refused(org_id: str, accepted: bool) -> None:
    assert _accepts(CustomerModel, {"org_id": org_id, "name": "A"}) is accepted


def _literal_values(hint: object) -> set[str]:
    for option in typing.get_args(hint):
        if typing.get_origin(option) is typing.Literal:
            return set(typing.get_args(option))
    raise AssertionError(f"no Literal in {hint!r}")


def test_tax_id_types_are_the_pinned_sdks() -> None:
    # Only the gateway may import the SDK: the list is a copy, kept equal here.
    on_create = typing.get_type_hints(CustomerCreateParamsTaxIdDatum)["type"]
    on_add = typing.get_type_hints(CustomerTaxIdCreateParams)["type"]
    assert _literal_values(on_create) == set(TAX_ID_TYPES)
    assert _literal_values(on_add) == set(TAX_ID_TYPES)


def test_countries_are_iso_3166_alpha_2() -> None:
    assert len(COUNTRIES) == 250
    assert all(len(c) == 2 and c.isalpha() and c.isupper() for c in COUNTRIES)
    table = Path("/usr/share/zoneinfo/iso3166.tab")
    if not table.exists():
        pytest.skip("no tz database on this machine")
    lines = table.read_text(encoding="utf-8").splitlines()
    codes = {line.split("\t", 1)[0] for line in lines if line and not line.startswith("#")}
    assert codes | {"XK"} == COUNTRIES


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        ((), ""),
        (("email",), "email"),
        (("tax_ids", 0, "type"), "tax_ids[0].type"),
        (("customers", 2, "address", "country"), "customers[2].address.country"),
    ],
)
def test_field_path(loc: tuple[str | int, ...], path: str) -> None:
    assert field_path(loc) == path


@pytest.mark.parametrize(
    ("param", "index", "path"),
    [
        ("tax_id_data[1][type]", None, "tax_ids[1].type"),
        ("tax_id_data[0][value]", None, "tax_ids[0].value"),
        ("type", 3, "tax_ids[3].type"),
        ("value", 0, "tax_ids[0].value"),
        ("type", None, "type"),
        ("address[line1]", None, "address.line1"),
        ("phone", None, "phone"),
    ],
)
def test_stripe_field_path(param: str, index: int | None, path: str) -> None:
    assert stripe_field_path(param, tax_id_index=index) == path

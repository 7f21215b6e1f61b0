"""The API refuses what a contract customer file refuses (`customer_validation`): an invalid
email, a phone longer than Stripe takes, an unknown country or tax id type, a positive
`credit_min`; 422 `invalid_argument` naming the field by its full path (`tax_ids[1].type`),
and nothing written."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.api.conftest import ADMIN, APP, DETAILS, ORG, Api, refused

TAX = {"type": "eu_vat", "value": "DE123456789"}


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"email": "not-an-email"}, "email", "not an email address"),
        ({"phone": "+1 780-459-5656 ext. 725"}, "phone", "at most 20 characters"),
        ({"name": "n" * 257}, "name", "at most 256 characters"),
        ({"address": {"country": "Germany"}}, "address.country", "unknown country 'Germany'"),
        ({"address": {"line1": "l" * 501}}, "address.line1", "at most 500 characters"),
        (
            {"tax_ids": [TAX, {"type": "eu_vta", "value": "DE123456789"}]},
            "tax_ids[1].type",
            "unknown tax id type 'eu_vta'; did you mean 'eu_vat'?",
        ),
        ({"tax_ids": [{"type": "eu_vat", "value": " "}]}, "tax_ids[0].value", "blank"),
    ],
)
@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_account_fields_are_checked_as_in_yaml(
    api: Api, acme: str, method: str, body: dict[str, Any], field: str, fragment: str
) -> None:
    del acme
    error = refused(
        api,
        method,
        f"{ORG}/billing",
        status=422,
        code="invalid_argument",
        field=field,
        json=body,
    )
    assert error["message"].startswith(f"{field}: "), error
    assert fragment in error["message"], error
    assert [e["field"] for e in error["details"]["errors"]] == [field]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"credit_min": 5}, "less than or equal to 0"),
        ({"due_in_days": 400}, "less than or equal to 365"),
    ],
)
def test_account_details_are_checked_as_in_yaml(
    api: Api, acme: str, body: dict[str, Any], fragment: str
) -> None:
    del acme
    error = refused(
        api,
        "PUT",
        DETAILS,
        status=422,
        code="invalid_argument",
        field=next(iter(body)),
        headers=ADMIN,
        json=body,
    )
    assert fragment in error["message"], error


def test_every_refused_field_is_named(api: Api, acme: str) -> None:
    del acme
    body = {
        "email": "nope",
        "address": {"country": "XX"},
        "tax_ids": [TAX, TAX, {"type": "xx_vat", "value": "1"}],
    }
    error = refused(api, "PATCH", f"{ORG}/billing", status=422, code="invalid_argument", json=body)
    assert sorted(e["field"] for e in error["details"]["errors"]) == [
        "address.country",
        "email",
        "tax_ids[2].type",
    ]


def test_a_lower_case_country_is_stored_upper_case(api: Api, acme: str) -> None:
    del acme
    response = api.patch(f"{ORG}/billing", json={"address": {"country": "de"}}, headers=APP)
    assert response.status_code == 200, response.text
    assert response.json()["address"]["country"] == "DE"

"""Parameter validation against the SDK's generated TypedDicts."""

from __future__ import annotations

import pytest

from stripe_emulator.core import Emulator
from stripe_emulator.errors import StripeError
from stripe_emulator.forms import parse_query
from stripe_emulator.params import schema_for, validate
from stripe_emulator.resources import build_router

PRICE_CREATE = "stripe.params._price_create_params.PriceCreateParams"
PRICE_UPDATE = "stripe.params._price_update_params.PriceUpdateParams"
PRICE_LIST = "stripe.params._price_list_params.PriceListParams"
PRODUCT_UPDATE = "stripe.params._product_update_params.ProductUpdateParams"


def _validate(name: str, query: str) -> dict[str, object]:
    return validate(name, parse_query(query))


def test_values_are_coerced_to_their_types() -> None:
    params = _validate(
        PRICE_CREATE,
        "currency=usd&unit_amount=100&active=false&recurring[interval]=month"
        "&recurring[interval_count]=3&tiers[1][up_to]=inf&tiers[0][up_to]=5"
        "&metadata[0]=zero&expand[0]=product&unit_amount_decimal=1.5",
    )
    assert params == {
        "currency": "usd",
        "unit_amount": 100,
        "active": False,
        "recurring": {"interval": "month", "interval_count": 3},
        "tiers": [{"up_to": 5}, {"up_to": "inf"}],
        "metadata": {"0": "zero"},
        "expand": ["product"],
        "unit_amount_decimal": "1.5",
    }


def test_empty_string_unsets_where_the_sdk_allows_it() -> None:
    assert _validate(PRODUCT_UPDATE, "metadata=&description=&images=") == {
        "metadata": "",
        "description": "",
        "images": "",
    }


def test_created_filter_is_int_or_range() -> None:
    assert _validate(PRICE_LIST, "created=5") == {"created": 5}
    assert _validate(PRICE_LIST, "created[gte]=5&created[lt]=9") == {"created": {"gte": 5, "lt": 9}}


@pytest.mark.parametrize(
    ("name", "query", "param", "code"),
    [
        (PRICE_UPDATE, "unit_amount=5", "unit_amount", "parameter_unknown"),
        (PRICE_UPDATE, "recurring[interval]=day", "recurring", "parameter_unknown"),
        (PRICE_CREATE, "currency=usd&recurring[bogus]=1", "recurring[bogus]", "parameter_unknown"),
        (PRICE_CREATE, "unit_amount=5", "currency", "parameter_missing"),
        (
            PRICE_CREATE,
            "currency=usd&recurring[interval_count]=1",
            "recurring[interval]",
            "parameter_missing",
        ),
        (PRICE_CREATE, "currency=usd&unit_amount=ten", "unit_amount", "parameter_invalid_integer"),
        (PRICE_CREATE, "currency=usd&active=yes", "active", None),
        (
            PRICE_CREATE,
            "currency=usd&tiers[0][up_to]=lots",
            "tiers[0][up_to]",
            "parameter_invalid_integer",
        ),
        (PRICE_CREATE, "currency=usd&metadata[a][b]=1", "metadata[a]", None),
        (PRICE_CREATE, "currency=usd&api_key=sk_test_x", "api_key", "parameter_unknown"),
        (PRICE_CREATE, "currency[x]=usd", "currency", None),
    ],
)
def test_invalid_parameters_fail_like_stripe(
    name: str, query: str, param: str, code: str | None
) -> None:
    with pytest.raises(StripeError) as raised:
        _validate(name, query)
    assert raised.value.status == 400
    assert raised.value.param == param
    assert raised.value.code == code


def test_schemas_are_compiled_once() -> None:
    assert schema_for(PRICE_CREATE) is schema_for(PRICE_CREATE)


def test_every_routed_params_class_compiles() -> None:
    emulator = Emulator()
    try:
        routes = build_router(emulator).routes()
        assert len(routes) > 40
        for route in routes:
            schema_for(route.params)
    finally:
        emulator.close()

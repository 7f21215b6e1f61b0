"""Currencies, exponents and amount formatting (pure integer arithmetic)."""

from __future__ import annotations

import pytest

from billing_reconciler.money import (
    MAX_UNIT_AMOUNT,
    STRIPE_THREE_DECIMAL,
    STRIPE_ZERO_DECIMAL,
    Money,
    format_amount,
    is_valid_currency,
    iso_exponent,
    minor_unit_exponent,
)


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (1250, "usd", "12.50 USD"),
        (5, "usd", "0.05 USD"),
        (-1250, "eur", "-12.50 EUR"),
        (1200, "jpy", "1200 JPY"),
        (1500, "kwd", "1.500 KWD"),
        (0, "bhd", "0.000 BHD"),
        (99_999_999, "usd", "999999.99 USD"),
        (100, "mga", "100 MGA"),  # ISO says 2 decimals; Stripe treats MGA as zero-decimal
    ],
)
def test_format_amount(amount: int, currency: str, expected: str) -> None:
    assert format_amount(amount, currency) == expected


def test_format_amount_refuses_floats_and_bools() -> None:
    with pytest.raises(TypeError):
        format_amount(9.99, "usd")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        format_amount(True, "usd")


def test_exponents_follow_stripe_where_it_differs_from_iso() -> None:
    assert minor_unit_exponent("JPY") == 0
    assert minor_unit_exponent("kwd") == 3
    assert minor_unit_exponent("usd") == 2
    assert iso_exponent("mga") == 2
    assert minor_unit_exponent("mga") == 0
    assert iso_exponent("isk") == 0
    assert minor_unit_exponent("isk") == 2
    assert iso_exponent("iqd") == 3
    assert minor_unit_exponent("iqd") == 2


def test_stripe_lists_are_iso_codes() -> None:
    assert all(is_valid_currency(c) for c in STRIPE_ZERO_DECIMAL | STRIPE_THREE_DECIMAL)
    assert len(STRIPE_ZERO_DECIMAL) == 16
    assert len(STRIPE_THREE_DECIMAL) == 5


@pytest.mark.parametrize("code", ["usd", "USD", "eur", "inr", "jpy", "lyd", "omr"])
def test_valid_currencies(code: str) -> None:
    assert is_valid_currency(code)


@pytest.mark.parametrize("code", ["usx", "", "us", "hrk", "xau", "dollars"])
def test_invalid_currencies(code: str) -> None:
    assert not is_valid_currency(code)


def test_unknown_currency_exponent_raises() -> None:
    with pytest.raises(KeyError):
        minor_unit_exponent("zzz")


def test_money_normalises_currency_and_refuses_non_ints() -> None:
    assert Money(100, "USD") == Money(100, "usd")
    assert str(Money(1200, "jpy")) == "1200 JPY"
    with pytest.raises(TypeError):
        Money(1.5, "usd")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Money(True, "usd")
    with pytest.raises(ValueError, match="unknown ISO 4217"):
        Money(1, "abc")


def test_money_is_frozen() -> None:
    money = Money(1, "usd")
    with pytest.raises(AttributeError):
        money.amount = 2  # type: ignore[misc]


def test_stripe_maximum() -> None:
    assert MAX_UNIT_AMOUNT == 99_999_999

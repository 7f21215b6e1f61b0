"""`stripe_emulator.tax`: location rules, the rate table, per-line amounts and rounding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stripe_emulator.tax import (
    RATES,
    TaxLocation,
    TaxRate,
    automatic_tax_status,
    customer_automatic_tax,
    customer_location,
    customer_rate,
    line_tax,
    rate_for,
    resolve_location,
    round_half_up,
)

US_CA = {"country": "US", "postal_code": "94103", "state": "CA"}
DE = {"country": "DE", "city": "Berlin"}


def test_shipping_wins_over_billing_which_wins_over_ip() -> None:
    assert resolve_location(
        shipping_address=DE, billing_address=US_CA, ip_address="203.0.113.9"
    ) == TaxLocation("DE", None, "shipping_destination")
    assert resolve_location(
        shipping_address=None, billing_address=US_CA, ip_address="203.0.113.9"
    ) == TaxLocation("US", "CA", "billing_address")
    assert resolve_location(
        shipping_address=None, billing_address=None, ip_address="203.0.113.9"
    ) == TaxLocation("GB", None, "ip_address")


def test_us_needs_a_postal_code_elsewhere_a_country_is_enough() -> None:
    assert (
        resolve_location(
            shipping_address=None, billing_address={"country": "US", "state": "CA"}, ip_address=None
        )
        is None
    )
    assert (
        resolve_location(
            shipping_address=None,
            billing_address={"country": "US", "postal_code": "CA 94103"},
            ip_address=None,
        )
        is None
    )
    assert resolve_location(
        shipping_address=None, billing_address={"country": "jp"}, ip_address=None
    ) == TaxLocation("JP", None, "billing_address")
    assert (
        resolve_location(
            shipping_address=None, billing_address={"city": "Nowhere"}, ip_address=None
        )
        is None
    )


def test_an_unusable_address_falls_through_to_the_next_source() -> None:
    only_state = {"country": "US", "state": "NY"}
    assert resolve_location(
        shipping_address=only_state, billing_address=DE, ip_address=None
    ) == TaxLocation("DE", None, "billing_address")


def test_us_state_from_zip_when_absent() -> None:
    location = resolve_location(
        shipping_address=None,
        billing_address={"country": "US", "postal_code": "10001-1234"},
        ip_address=None,
    )
    assert location == TaxLocation("US", "NY", "billing_address")
    unknown = resolve_location(
        shipping_address=None,
        billing_address={"country": "US", "postal_code": "50001"},
        ip_address=None,
    )
    assert unknown == TaxLocation("US", None, "billing_address")
    assert customer_automatic_tax(unknown) == "not_collecting"


def test_ip_addresses_outside_the_documentation_ranges_are_not_located() -> None:
    for ip in ("8.8.8.8", "not-an-ip", "", None):
        assert resolve_location(shipping_address=None, billing_address=None, ip_address=ip) is None
    assert resolve_location(
        shipping_address=None, billing_address=None, ip_address="2001:db8::1"
    ) == TaxLocation("AU", None, "ip_address")


def test_customer_location_reads_a_stored_customer() -> None:
    customer = {
        "address": None,
        "shipping": {"address": {"country": "FR"}, "name": "x", "phone": None},
        "tax": {"ip_address": None},
    }
    assert customer_location(customer) == TaxLocation("FR", None, "shipping_destination")
    assert customer_location({"address": None, "shipping": None, "tax": None}) is None


def test_automatic_tax_statuses() -> None:
    assert customer_automatic_tax(None) == "unrecognized_location"
    assert customer_automatic_tax(TaxLocation("DE", None, "billing_address")) == "supported"
    assert customer_automatic_tax(TaxLocation("BR", None, "billing_address")) == "not_collecting"
    assert customer_automatic_tax(TaxLocation("US", "OR", "billing_address")) == "not_collecting"
    assert automatic_tax_status(None) == "requires_location_inputs"
    assert automatic_tax_status(TaxLocation("BR", None, "billing_address")) == "complete"


def test_rate_table() -> None:
    assert rate_for(TaxLocation("US", "CA", "billing_address")) == TaxRate(
        725, "California", "US", "CA", "sales_tax"
    )
    assert rate_for(TaxLocation("DE", None, "billing_address")).basis_points == 1900
    assert rate_for(TaxLocation("GB", None, "ip_address")).jurisdiction == "United Kingdom"
    assert rate_for(TaxLocation("IN", None, "billing_address")).tax_type == "gst"
    elsewhere = rate_for(TaxLocation("BR", None, "billing_address"))
    assert (elsewhere.basis_points, elsewhere.jurisdiction) == (0, "BR")
    assert rate_for(TaxLocation("US", "CA", "billing_address")).percentage == 7.25
    assert all(r.basis_points >= 0 for r in RATES.values())


def test_exempt_and_reverse_charge_customers_pay_no_tax() -> None:
    germany = TaxLocation("DE", None, "billing_address")
    assert customer_rate(germany).basis_points == 1900
    assert customer_rate(germany, "exempt").basis_points == 0
    assert customer_rate(germany, "reverse").basis_points == 0
    assert customer_rate(germany, "reverse").jurisdiction == "Germany"


def test_exclusive_adds_tax_on_top() -> None:
    ca = RATES[("US", "CA")]
    line = line_tax(1000, ca, "exclusive")
    assert (line.taxable, line.tax, line.total) == (1000, 73, 1073)  # 72.5 rounds up
    assert line_tax(999, ca, "exclusive").tax == 72  # 72.4275


def test_inclusive_splits_the_amount() -> None:
    germany = RATES[("DE", None)]
    line = line_tax(11900, germany, "inclusive")
    assert (line.taxable, line.tax, line.total) == (10000, 1900, 11900)
    odd = line_tax(1000, germany, "inclusive")  # 1000 / 1.19 = 840.34
    assert (odd.taxable, odd.tax, odd.total) == (840, 160, 1000)


def test_credit_lines_mirror_their_debits() -> None:
    ca = RATES[("US", "CA")]
    assert line_tax(-1000, ca, "exclusive").tax == -73
    assert line_tax(-1000, RATES[("DE", None)], "inclusive").tax == -160


def test_unspecified_tax_behavior_is_refused() -> None:
    with pytest.raises(ValueError, match="inclusive or exclusive"):
        line_tax(100, RATES[("DE", None)], "unspecified")


def test_round_half_up() -> None:
    assert [round_half_up(n, 2) for n in (1, 3, -1, -3, 4)] == [1, 2, -1, -2, 2]
    assert round_half_up(1, 3) == 0
    with pytest.raises(ValueError, match="positive"):
        round_half_up(1, 0)


@given(
    amount=st.integers(min_value=-(10**9), max_value=10**9),
    basis_points=st.integers(min_value=0, max_value=5000),
    behavior=st.sampled_from(["inclusive", "exclusive"]),
)
def test_parts_always_add_up(amount: int, basis_points: int, behavior: str) -> None:
    rate = TaxRate(basis_points, "X", "XX")
    line = line_tax(amount, rate, behavior)
    assert line.taxable + line.tax == line.total
    assert abs(line.tax) <= abs(amount)
    exact = amount * basis_points / 10_000 if behavior == "exclusive" else None
    if exact is not None:
        assert abs(line.tax - exact) <= 0.5
    assert line_tax(-amount, rate, behavior).tax == -line.tax

"""Automatic tax, emulator edition: where a customer is taxed, at what rate, and how much.

Pure functions (no store, no request), for customers today and for the subscription, invoice
and checkout modules later (DESIGN §20).

**Location** (Stripe's rules for a customer's tax location, `customer.tax.location`): the
shipping address, then the billing address, then `tax.ip_address`, the first that is usable.
An address is usable with a two-letter country; a US address also needs a valid ZIP code
(`12345` or `12345-6789`), and its state comes from `address.state` or, without one, from the
ZIP code's first three digits (a small table: CA, NY, TX, WA, FL, IL, MA, OR). An IP address is
located through an emulator-only table of the documentation ranges (RFC 5737 / RFC 3849):
`192.0.2.x` is California, `198.51.100.x` Germany, `203.0.113.x` the United Kingdom,
`2001:db8::` Australia; any other address is not recognised. Nothing usable gives `None`:
Stripe's `customer.tax.automatic_tax = unrecognized_location`, and on invoices and
subscriptions `automatic_tax.status = requires_location_inputs`.

**Rates** (`RATES`, emulator-only, not Stripe's: round, recognisable numbers, one rate per
jurisdiction, no local or product-specific taxes): US states (with a postal code, as above),
a few EU countries, GB, IN, AU, JP; zero everywhere else. A location with a non-zero rate is
where the emulated account "collects" (`automatic_tax = supported`); elsewhere it does not
(`not_collecting`), as if the account had no tax registration there. A customer that is
`tax_exempt: exempt` or `reverse` pays no tax.

**Amounts** (integer minor units, per line as Stripe computes tax per line item):
`exclusive` adds `round(amount × rate)` on top; `inclusive` keeps the amount as the total and
splits it into `round(amount / (1 + rate))` taxable and the rest tax. Rounding is half up,
away from zero for negative amounts (a credit line mirrors its debit).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

LocationSource = Literal["shipping_destination", "billing_address", "ip_address"]
CustomerAutomaticTax = Literal["supported", "not_collecting", "unrecognized_location"]
TaxBehavior = Literal["inclusive", "exclusive"]

BASIS_POINTS = 10_000

_COUNTRY = re.compile(r"[A-Z]{2}")
_US_ZIP = re.compile(r"(\d{5})(-\d{4})?")


@dataclass(frozen=True, slots=True)
class TaxLocation:
    """Stripe's `customer.tax.location`: country, state (US only here) and its source."""

    country: str
    state: str | None
    source: LocationSource

    def as_stripe(self) -> dict[str, Any]:
        """The JSON of `customer.tax.location`."""
        return {"country": self.country, "source": self.source, "state": self.state}


@dataclass(frozen=True, slots=True)
class TaxRate:
    """One row of the emulator's rate table."""

    basis_points: int
    jurisdiction: str
    country: str
    state: str | None = None
    tax_type: str = "vat"

    @property
    def percentage(self) -> float:
        """`7.25`: the rate as Stripe's tax rate `percentage` shows it."""
        return self.basis_points / 100


@dataclass(frozen=True, slots=True)
class LineTax:
    """Tax on one line: `taxable + tax == total` always."""

    taxable: int
    tax: int
    total: int
    tax_behavior: TaxBehavior
    rate: TaxRate


def _us(state: str, name: str, basis_points: int) -> tuple[tuple[str, str | None], TaxRate]:
    return ("US", state), TaxRate(basis_points, name, "US", state, "sales_tax")


def _country(
    country: str, name: str, basis_points: int, tax_type: str = "vat"
) -> tuple[tuple[str, str | None], TaxRate]:
    return (country, None), TaxRate(basis_points, name, country, None, tax_type)


# (country, state) -> rate. Emulator-only numbers; see the module docstring.
RATES: dict[tuple[str, str | None], TaxRate] = dict(
    [
        _us("CA", "California", 725),
        _us("NY", "New York", 400),
        _us("TX", "Texas", 625),
        _us("WA", "Washington", 650),
        _us("FL", "Florida", 600),
        _us("IL", "Illinois", 625),
        _us("MA", "Massachusetts", 625),
        _us("OR", "Oregon", 0),
        _country("DE", "Germany", 1900),
        _country("FR", "France", 2000),
        _country("NL", "Netherlands", 2100),
        _country("IE", "Ireland", 2300),
        _country("ES", "Spain", 2100),
        _country("IT", "Italy", 2200),
        _country("GB", "United Kingdom", 2000),
        _country("IN", "India", 1800, "gst"),
        _country("AU", "Australia", 1000, "gst"),
        _country("JP", "Japan", 1000, "jct"),
    ]
)

# First three ZIP digits -> state, for US addresses without a state (inclusive ranges).
_ZIP3_STATES: tuple[tuple[int, int, str], ...] = (
    (10, 27, "MA"),
    (100, 149, "NY"),
    (320, 349, "FL"),
    (600, 629, "IL"),
    (750, 799, "TX"),
    (885, 885, "TX"),
    (900, 961, "CA"),
    (970, 979, "OR"),
    (980, 994, "WA"),
)

# Emulator-only IP geolocation: the documentation ranges.
_IP_LOCATIONS: tuple[tuple[str, str, str | None], ...] = (
    ("192.0.2.0/24", "US", "CA"),
    ("198.51.100.0/24", "DE", None),
    ("203.0.113.0/24", "GB", None),
    ("2001:db8::/32", "AU", None),
)


def address_location(
    address: Mapping[str, Any] | None, source: LocationSource
) -> TaxLocation | None:
    """The tax location an address gives, or None when it is not usable."""
    if not address:
        return None
    country = str(address.get("country") or "").strip().upper()
    if not _COUNTRY.fullmatch(country):
        return None
    if country != "US":
        return TaxLocation(country, None, source)
    zip_match = _US_ZIP.fullmatch(str(address.get("postal_code") or "").strip())
    if zip_match is None:
        return None
    state = str(address.get("state") or "").strip().upper() or _state_of_zip(zip_match.group(1))
    return TaxLocation("US", state, source)


def ip_location(ip_address: str | None) -> TaxLocation | None:
    """The emulator's geolocation of an IP address (documentation ranges only)."""
    if not ip_address:
        return None
    try:
        parsed = ipaddress.ip_address(ip_address)
    except ValueError:
        return None
    for network, country, state in _IP_LOCATIONS:
        if parsed in ipaddress.ip_network(network):
            return TaxLocation(country, state, "ip_address")
    return None


def resolve_location(
    *,
    shipping_address: Mapping[str, Any] | None,
    billing_address: Mapping[str, Any] | None,
    ip_address: str | None,
) -> TaxLocation | None:
    """Shipping address, then billing address, then IP address: the first usable one."""
    return (
        address_location(shipping_address, "shipping_destination")
        or address_location(billing_address, "billing_address")
        or ip_location(ip_address)
    )


def customer_location(customer: Mapping[str, Any]) -> TaxLocation | None:
    """A stored customer's tax location (its `shipping.address`, `address`, `tax.ip_address`)."""
    shipping = customer.get("shipping") or {}
    tax = customer.get("tax") or {}
    return resolve_location(
        shipping_address=shipping.get("address"),
        billing_address=customer.get("address"),
        ip_address=tax.get("ip_address"),
    )


def rate_for(location: TaxLocation) -> TaxRate:
    """The table's rate for a location; a zero rate named after the location elsewhere."""
    found = RATES.get((location.country, location.state)) or RATES.get((location.country, None))
    if found is not None:
        return found
    name = f"{location.country}-{location.state}" if location.state else location.country
    return TaxRate(
        0, name, location.country, location.state, "sales_tax" if location.state else "vat"
    )


def customer_rate(location: TaxLocation, tax_exempt: str | None = "none") -> TaxRate:
    """The rate a customer pays: zero when `tax_exempt` is `exempt` or `reverse`."""
    rate = rate_for(location)
    if tax_exempt in ("exempt", "reverse"):
        return TaxRate(0, rate.jurisdiction, rate.country, rate.state, rate.tax_type)
    return rate


def customer_automatic_tax(location: TaxLocation | None) -> CustomerAutomaticTax:
    """`customer.tax.automatic_tax` for a location."""
    if location is None:
        return "unrecognized_location"
    return "supported" if rate_for(location).basis_points > 0 else "not_collecting"


def automatic_tax_status(
    location: TaxLocation | None,
) -> Literal["complete", "requires_location_inputs"]:
    """`automatic_tax.status` of an invoice, subscription or checkout session."""
    return "requires_location_inputs" if location is None else "complete"


def round_half_up(numerator: int, denominator: int) -> int:
    """`numerator / denominator` rounded half away from zero (`denominator > 0`)."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    magnitude = (2 * abs(numerator) + denominator) // (2 * denominator)
    return magnitude if numerator >= 0 else -magnitude


def line_tax(amount: int, rate: TaxRate, tax_behavior: str) -> LineTax:
    """Tax on one line of `amount` minor units under `tax_behavior`.

    `exclusive`: `amount` is before tax; the total adds the tax. `inclusive`: `amount` is the
    total; the taxable part is what, taxed at the rate, gives it back (to the minor unit)."""
    if tax_behavior == "exclusive":
        tax = round_half_up(amount * rate.basis_points, BASIS_POINTS)
        return LineTax(amount, tax, amount + tax, "exclusive", rate)
    if tax_behavior == "inclusive":
        taxable = round_half_up(amount * BASIS_POINTS, BASIS_POINTS + rate.basis_points)
        return LineTax(taxable, amount - taxable, amount, "inclusive", rate)
    raise ValueError(f"tax_behavior must be inclusive or exclusive, not {tax_behavior!r}")


def _state_of_zip(zip5: str) -> str | None:
    prefix = int(zip5[:3])
    for low, high, state in _ZIP3_STATES:
        if low <= prefix <= high:
            return state
    return None

"""Currencies (ISO 4217, minor-unit exponents, Stripe zero- and three-decimal lists) and Money.

Amounts are always integers in minor units (cents, yen, fils). Nothing here uses floats: a
float cannot represent 0.1 exactly, and a billing system that rounds differently from Stripe
invoices the wrong amount.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# Active ISO 4217 codes (list one, 2024-2025) with their minor-unit exponents. Fund codes and
# precious metals (XAU, XDR, ...) have no minor unit and cannot be charged, so they are left
# out; withdrawn codes (HRK, SLL, ZWL, CUC) are left out too.
ISO_4217_EXPONENTS: Final[dict[str, int]] = {
    "aed": 2, "afn": 2, "all": 2, "amd": 2, "ang": 2, "aoa": 2, "ars": 2, "aud": 2,
    "awg": 2, "azn": 2, "bam": 2, "bbd": 2, "bdt": 2, "bgn": 2, "bhd": 3, "bif": 0,
    "bmd": 2, "bnd": 2, "bob": 2, "bov": 2, "brl": 2, "bsd": 2, "btn": 2, "bwp": 2,
    "byn": 2, "bzd": 2, "cad": 2, "cdf": 2, "che": 2, "chf": 2, "chw": 2, "clf": 4,
    "clp": 0, "cny": 2, "cop": 2, "cou": 2, "crc": 2, "cup": 2, "cve": 2, "czk": 2,
    "djf": 0, "dkk": 2, "dop": 2, "dzd": 2, "egp": 2, "ern": 2, "etb": 2, "eur": 2,
    "fjd": 2, "fkp": 2, "gbp": 2, "gel": 2, "ghs": 2, "gip": 2, "gmd": 2, "gnf": 0,
    "gtq": 2, "gyd": 2, "hkd": 2, "hnl": 2, "htg": 2, "huf": 2, "idr": 2, "ils": 2,
    "inr": 2, "iqd": 3, "irr": 2, "isk": 0, "jmd": 2, "jod": 3, "jpy": 0, "kes": 2,
    "kgs": 2, "khr": 2, "kmf": 0, "kpw": 2, "krw": 0, "kwd": 3, "kyd": 2, "kzt": 2,
    "lak": 2, "lbp": 2, "lkr": 2, "lrd": 2, "lsl": 2, "lyd": 3, "mad": 2, "mdl": 2,
    "mga": 2, "mkd": 2, "mmk": 2, "mnt": 2, "mop": 2, "mru": 2, "mur": 2, "mvr": 2,
    "mwk": 2, "mxn": 2, "mxv": 2, "myr": 2, "mzn": 2, "nad": 2, "ngn": 2, "nio": 2,
    "nok": 2, "npr": 2, "nzd": 2, "omr": 3, "pab": 2, "pen": 2, "pgk": 2, "php": 2,
    "pkr": 2, "pln": 2, "pyg": 0, "qar": 2, "ron": 2, "rsd": 2, "rub": 2, "rwf": 0,
    "sar": 2, "sbd": 2, "scr": 2, "sdg": 2, "sek": 2, "sgd": 2, "shp": 2, "sle": 2,
    "sos": 2, "srd": 2, "ssp": 2, "stn": 2, "svc": 2, "syp": 2, "szl": 2, "thb": 2,
    "tjs": 2, "tmt": 2, "tnd": 3, "top": 2, "try": 2, "ttd": 2, "twd": 2, "tzs": 2,
    "uah": 2, "ugx": 0, "usd": 2, "usn": 2, "uyi": 0, "uyu": 2, "uyw": 4, "uzs": 2,
    "ved": 2, "ves": 2, "vnd": 0, "vuv": 0, "wst": 2, "xaf": 0, "xcd": 2, "xcg": 2,
    "xof": 0, "xpf": 0, "yer": 2, "zar": 2, "zmw": 2, "zwg": 2,
}  # fmt: skip

# Stripe's own lists (https://docs.stripe.com/currencies). Stripe disagrees with ISO in places:
# MGA is two-decimal in ISO but zero-decimal at Stripe, so Stripe's list wins for amounts.
STRIPE_ZERO_DECIMAL: Final[frozenset[str]] = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)
STRIPE_THREE_DECIMAL: Final[frozenset[str]] = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])

# Stripe's largest accepted `unit_amount` (eight digits of minor units).
MAX_UNIT_AMOUNT: Final[int] = 99_999_999


def is_valid_currency(code: str) -> bool:
    """True when `code` (any case) is an active ISO 4217 currency."""
    return isinstance(code, str) and code.lower() in ISO_4217_EXPONENTS


def iso_exponent(code: str) -> int:
    """ISO 4217's minor-unit exponent of `code`; KeyError for an unknown code."""
    return ISO_4217_EXPONENTS[_known(code)]


def minor_unit_exponent(code: str) -> int:
    """Stripe's view of how many decimals one unit of `code` has.

    Zero-decimal currencies are 0 and the three-decimal ones 3; Stripe expresses every other
    currency in hundredths, even where ISO says 0 (ISK) or 3 (IQD, LYD), so those are 2.
    """
    known = _known(code)
    if known in STRIPE_ZERO_DECIMAL:
        return 0
    if known in STRIPE_THREE_DECIMAL:
        return 3
    return 2


def format_amount(amount: int, currency: str) -> str:
    """Render minor units as a human amount: `12.50 USD`, `1200 JPY`, `1.500 KWD`."""
    _require_int(amount, what="amount")
    exponent = minor_unit_exponent(currency)
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(amount), 10**exponent)
    digits = f"{whole}.{fraction:0{exponent}d}" if exponent else str(whole)
    return f"{sign}{digits} {currency.upper()}"


@dataclass(frozen=True, slots=True)
class Money:
    """An integer amount of minor units together with its (lower-case) currency."""

    amount: int
    currency: str

    def __post_init__(self) -> None:
        _require_int(self.amount, what="Money.amount")
        if not is_valid_currency(self.currency):
            raise ValueError(f"unknown ISO 4217 currency: {self.currency!r}")
        # Normalised here so two Money values of "USD" and "usd" compare equal.
        object.__setattr__(self, "currency", self.currency.lower())

    def __str__(self) -> str:
        return format_amount(self.amount, self.currency)


def _require_int(value: object, *, what: str) -> None:
    # bool is a subclass of int; `True` cents is always a mistake, never an amount.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int of minor units, got {type(value).__name__}")


def _known(code: str) -> str:
    lowered = code.lower()
    if lowered not in ISO_4217_EXPONENTS:
        raise KeyError(f"unknown ISO 4217 currency: {code!r}")
    return lowered

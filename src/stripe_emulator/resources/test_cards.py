"""Stripe's test cards and the test payment method / token ids that stand for them.

Behaviour as Stripe's testing page documents it (https://docs.stripe.com/testing):

- `4242424242424242` (`pm_card_visa`, `tok_visa`) and `5555555555554444`
  (`pm_card_mastercard`) succeed.
- `4000000000000002` (`pm_card_chargeDeclined`) declines with `generic_decline`, and
  `4000000000009995` (`pm_card_chargeDeclinedInsufficientFunds`) with `insufficient_funds`;
  both fail when attached to a customer or set up (the card check declines), as on Stripe.
- `4000000000000341` (`pm_card_chargeCustomerFail`) attaches and sets up, then declines every
  charge: the card for "a saved card that later fails".
- `4000002500003155` (`pm_card_authenticationRequiredOnSetup`) requires authentication on
  setup and on an on-session payment; once set up (or authenticated on a payment that saved
  it for later), off-session payments succeed without authentication.
- `4000002760003184` (`pm_card_authenticationRequired`) requires authentication on every
  payment and setup; off-session it declines with `authentication_required`.

Any other number that passes the Luhn check is accepted as a succeeding card of the brand its
prefix names (Stripe has many more test numbers); a number that fails it is
`incorrect_number`.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from typing import Literal

Authentication = Literal["none", "until_setup", "always"]

_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class CardBehaviour:
    """What a card number does when used."""

    number: str
    brand: str
    funding: str = "credit"
    country: str = "US"
    # A decline code for charges (None: charges succeed).
    decline_code: str | None = None
    # Whether attaching / setting up the card declines too (Stripe checks the card).
    declines_on_setup: bool = False
    authentication: Authentication = "none"


CARDS: dict[str, CardBehaviour] = {
    card.number: card
    for card in (
        CardBehaviour("4242424242424242", "visa"),
        CardBehaviour("5555555555554444", "mastercard"),
        CardBehaviour(
            "4000000000000002", "visa", decline_code="generic_decline", declines_on_setup=True
        ),
        CardBehaviour(
            "4000000000009995",
            "visa",
            decline_code="insufficient_funds",
            declines_on_setup=True,
        ),
        CardBehaviour("4000000000000341", "visa", decline_code="generic_decline"),
        CardBehaviour("4000002500003155", "visa", authentication="until_setup"),
        CardBehaviour("4000002760003184", "visa", authentication="always"),
    )
}

# Test payment methods and tokens: each use mints a new `pm_...` for the card.
TEST_PAYMENT_METHODS: dict[str, str] = {
    "pm_card_visa": "4242424242424242",
    "pm_card_mastercard": "5555555555554444",
    "pm_card_chargeDeclined": "4000000000000002",
    "pm_card_chargeDeclinedInsufficientFunds": "4000000000009995",
    "pm_card_chargeCustomerFail": "4000000000000341",
    "pm_card_authenticationRequiredOnSetup": "4000002500003155",
    "pm_card_authenticationRequired": "4000002760003184",
}
TEST_TOKENS: dict[str, str] = {
    "tok_visa": "4242424242424242",
    "tok_mastercard": "5555555555554444",
    "tok_chargeDeclined": "4000000000000002",
    "tok_chargeDeclinedInsufficientFunds": "4000000000009995",
    "tok_chargeCustomerFail": "4000000000000341",
    "tok_authenticationRequiredOnSetup": "4000002500003155",
    "tok_authenticationRequired": "4000002760003184",
}

DECLINE_MESSAGES: dict[str, str] = {
    "generic_decline": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
    "authentication_required": (
        "Your card was declined. This transaction requires authentication."
    ),
}


def luhn_valid(number: str) -> bool:
    """The card number checksum."""
    if not number.isdigit() or not 12 <= len(number) <= 19:
        return False
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = int(char)
        if index % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def card_for(number: str) -> CardBehaviour | None:
    """The test card for a number (None when the number is not a card number)."""
    known = CARDS.get(number)
    if known is not None:
        return known
    if not luhn_valid(number):
        return None
    return CardBehaviour(number, _brand(number))


def _brand(number: str) -> str:
    if number.startswith("4"):
        return "visa"
    if number[:2] in ("34", "37"):
        return "amex"
    if number[:2] in ("51", "52", "53", "54", "55") or 2221 <= int(number[:4]) <= 2720:
        return "mastercard"
    if number.startswith(("6011", "65")):
        return "discover"
    return "unknown"


def fingerprint(number: str) -> str:
    """A stable 16-character fingerprint per card number (Stripe's is per account)."""
    digest = hashlib.sha256(f"stripe-emulator:{number}".encode()).digest()
    return "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:16])

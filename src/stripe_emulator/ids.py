"""Object ids with Stripe's prefixes (`prod_`, `price_`, `cus_`, ...)."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits

# Long ids for prices/events/etc. mimic Stripe's 24-character suffixes; products and customers
# really do have short ones (`prod_QXg1hqf4jFNsqG`).
_SHORT_PREFIXES = frozenset({"prod", "cus"})


def new_id(prefix: str) -> str:
    """A fresh random id such as `price_1Pgafm...`."""
    length = 14 if prefix in _SHORT_PREFIXES else 24
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_secret(prefix: str) -> str:
    """A secret such as a webhook endpoint's `whsec_...`."""
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(32))


def new_request_id() -> str:
    """A `Request-Id` header value."""
    return "req_" + "".join(secrets.choice(_ALPHABET) for _ in range(14))

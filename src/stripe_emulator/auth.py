"""API keys: any test-mode secret (`sk_test_`) or restricted (`rk_test_`, read-only) key."""

from __future__ import annotations

import base64
import binascii

from stripe_emulator.errors import StripeError, authentication, permission

_NO_KEY = (
    "You did not provide an API key. You need to provide your API key in the Authorization "
    "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
    "https://stripe.com/docs/api#authentication for details, or we can help at "
    "https://support.stripe.com/."
)


def api_key_from(authorization: str | None) -> str | None:
    """The key from `Bearer <key>` or Basic auth with the key as user name."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip()).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[0] or None
    return None


def check_key(key: str | None, method: str) -> None:
    """Raise Stripe's 401/403 unless `key` may make this request."""
    if key is None:
        raise authentication(_NO_KEY)
    if key.startswith("sk_test_") and len(key) > len("sk_test_"):
        return
    if key.startswith("rk_test_") and len(key) > len("rk_test_"):
        if method != "GET":
            # A read-only restricted key, the kind DESIGN §8 allows for `--dry-run`.
            raise permission(
                "The provided key does not have the required permissions for this endpoint. "
                "Having the 'rak_write' permission would allow this request to continue."
            )
        return
    raise _invalid_key(key)


def _invalid_key(key: str) -> StripeError:
    shown = f"{key[:8]}{'*' * 12}{key[-4:]}" if len(key) > 12 else key
    if key.startswith(("sk_live_", "rk_live_")):
        return authentication(
            f"Invalid API Key provided: {shown}. The Stripe emulator is test mode only."
        )
    return authentication(f"Invalid API Key provided: {shown}")

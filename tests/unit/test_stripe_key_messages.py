"""A key that cannot be a Stripe key says what is wrong with it, consistently with its mask."""

from __future__ import annotations

import pytest

from billing_reconciler.config import ConfigError, load_environment, mask
from billing_reconciler.stripe_gateway.client import redact_key

BODY = "Zq8" * 6  # a key body long enough, in letters and digits only


def key_error(key: str) -> str:
    with pytest.raises(ConfigError) as raised:
        load_environment({"STRIPE_API_KEY": key})
    return str(raised.value)


def test_a_short_key_is_called_too_short_not_an_unknown_kind() -> None:
    message = key_error("sk_test_abc")
    assert message == (
        "STRIPE_API_KEY is too short to be a Stripe key (sk_test_…: 3 characters after the prefix)"
    )
    # The old message said "does not look like a secret (sk_) key" beside `sk_test_…`.
    assert "does not look like" not in message


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        (f"pk_test_{BODY}", "starts with 'pk_test_' (a publishable key"),
        (f"sk_prod_{BODY}", "starts with 'sk_' but not sk_test_ or sk_live_"),
        (f"whsec_{BODY}", "starts with 'whsec_' (a webhook secret"),
        (f"{BODY}", "does not start with sk_test_, sk_live_, rk_test_ or rk_live_"),
        (f'"sk_test_{BODY}"', "starts with a quote"),
        (f"sk_test_{BODY} {BODY}", "contains characters a Stripe key never has"),
    ],
)
def test_a_malformed_key_names_its_fault_and_never_its_body(key: str, fragment: str) -> None:
    message = key_error(key)
    assert message.startswith("STRIPE_API_KEY ")
    assert fragment in message
    assert BODY not in message
    assert BODY[-4:] not in message


@pytest.mark.parametrize("key", [f"sk_test_{BODY}", f"rk_live_{BODY}", "sk_test_emulator"])
def test_well_formed_keys_load(key: str) -> None:
    loaded = load_environment({"STRIPE_API_KEY": key})
    assert loaded.stripe_api_key is not None
    assert loaded.stripe_api_key.reveal() == key


@pytest.mark.parametrize("key", ["sk_test_short", "abc", "opaque", f"sk_test_{BODY}"])
def test_the_gateway_masks_a_key_exactly_as_the_config_does(key: str) -> None:
    # Before: the gateway showed "…" + the last four characters of any key its own pattern
    # missed, so a three-letter key was printed whole ("…abc").
    assert redact_key(key) == mask(key)
    assert key not in redact_key(key)

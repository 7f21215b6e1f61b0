"""Stripe form decoding: `a[b][0][c]=v` into a raw tree of str leaves."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stripe._encode import _api_encode

from stripe_emulator.errors import StripeError
from stripe_emulator.forms import decode_pairs, parse_query, split_key


@pytest.mark.parametrize(
    ("key", "segments"),
    [
        ("name", ["name"]),
        ("metadata[a]", ["metadata", "a"]),
        ("tiers[0][up_to]", ["tiers", "0", "up_to"]),
        ("expand[]", ["expand", ""]),
    ],
)
def test_split_key(key: str, segments: list[str]) -> None:
    assert split_key(key) == segments


@pytest.mark.parametrize("key", ["a[b", "a]b[", "[a]", "a[b]c"])
def test_malformed_keys_are_rejected(key: str) -> None:
    with pytest.raises(StripeError):
        split_key(key)


def test_nested_and_appended_values() -> None:
    tree = parse_query(
        "currency=usd&tiers[0][up_to]=10&tiers[1][up_to]=inf&expand[]=a&expand[]=b&metadata[x]="
    )
    assert tree == {
        "currency": "usd",
        "tiers": {"0": {"up_to": "10"}, "1": {"up_to": "inf"}},
        "expand": {"0": "a", "1": "b"},
        "metadata": {"x": ""},
    }


def test_a_name_cannot_be_both_value_and_hash() -> None:
    with pytest.raises(StripeError):
        decode_pairs([("a", "1"), ("a[b]", "2")])
    with pytest.raises(StripeError):
        decode_pairs([("a[b]", "2"), ("a", "1")])


_keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=8)
_leaves = st.text(max_size=20)
_values = st.recursive(
    _leaves,
    lambda children: st.dictionaries(_keys, children, min_size=1, max_size=4),
    max_leaves=12,
)


def _as_tree(value: object) -> object:
    if isinstance(value, dict):
        return {k: _as_tree(v) for k, v in value.items()}
    return value


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_keys, _values, max_size=5))
def test_decodes_what_the_sdk_encodes(params: dict[str, object]) -> None:
    """Round trip: the SDK's own encoder, then ours, gives back the same nested hashes."""
    query = urlencode(list(_api_encode(params))).replace("%5B", "[").replace("%5D", "]")
    assert parse_query(query) == _as_tree(params)

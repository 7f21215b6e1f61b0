"""Decode Stripe's form encoding (`a[b][0][c]=v`) into a raw tree.

The tree holds only `str` leaves and `dict` nodes: `tiers[0][up_to]=inf` becomes
`{"tiers": {"0": {"up_to": "inf"}}}`. Whether a node is a list, a hash (metadata keys may be
digits too) or a scalar is decided later by `params`, against the SDK's parameter types;
deciding here would turn `metadata[0]=x` into a list.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from stripe_emulator.errors import StripeError, invalid

FormTree = dict[str, Any]

_SEGMENT = re.compile(r"\[([^\[\]]*)\]")


def parse_query(query: str) -> FormTree:
    """Decode a query string or an `application/x-www-form-urlencoded` body."""
    return decode_pairs(parse_qsl(query, keep_blank_values=True))


def split_key(key: str) -> list[str]:
    """`a[b][0]` -> `["a", "b", "0"]`; `a[]` -> `["a", ""]` (append)."""
    head, bracket, rest = key.partition("[")
    if not bracket:
        return [key]
    tail = "[" + rest
    segments = _SEGMENT.findall(tail)
    if "".join(f"[{s}]" for s in segments) != tail or not head:
        raise invalid(f"Invalid parameter name: {key}", param=key)
    return [head, *segments]


def decode_pairs(pairs: list[tuple[str, str]]) -> FormTree:
    """Build the raw tree from decoded `(key, value)` pairs, in order."""
    tree: FormTree = {}
    for key, value in pairs:
        _insert(tree, split_key(key), value, key)
    return tree


def _insert(tree: FormTree, segments: list[str], value: str, key: str) -> None:
    node = tree
    for position, segment in enumerate(segments):
        name = str(len(node)) if segment == "" else segment
        last = position == len(segments) - 1
        if last:
            if isinstance(node.get(name), dict):
                raise _conflict(key)
            node[name] = value
            return
        child = node.setdefault(name, {})
        if not isinstance(child, dict):
            # `a=1&a[b]=2`: one name used both as a scalar and as a hash.
            raise _conflict(key)
        node = child


def _conflict(key: str) -> StripeError:
    return invalid(f"Invalid parameter: {key} was given both as a value and as a hash.", param=key)

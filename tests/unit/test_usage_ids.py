"""Derived revert ids (store.usage.revert_id): bounded, injective, out of callers' reach."""

from __future__ import annotations

import pytest

from billing_reconciler.store.usage import revert_id


def test_a_short_usage_id_gives_the_literal_form() -> None:
    assert revert_id("u1", 1) == "system.revert:u1:1"
    assert revert_id("a:1", 2) == "system.revert:a:1:2"
    assert revert_id("a", 12) != revert_id("a:1", 2)


def test_a_long_usage_id_gives_the_hashed_form_within_255() -> None:
    for length in (240, 241, 255):
        usage_id = "x" * length
        for ordinal in (1, 9, 10, 1000):
            derived = revert_id(usage_id, ordinal)
            assert len(derived) <= 255
            assert derived.endswith(f":{ordinal}")
    assert revert_id("x" * 255, 1).startswith("system.revert#")
    assert revert_id("x" * 255, 1) != revert_id("y" * 255, 1)
    # The longest literal form, then the hashed one from the next character on.
    assert revert_id("x" * 239, 1) == "system.revert:" + "x" * 239 + ":1"
    assert revert_id("x" * 240, 10).startswith("system.revert#")


def test_ordinals_start_at_1() -> None:
    with pytest.raises(ValueError, match="starts at 1"):
        revert_id("u1", 0)

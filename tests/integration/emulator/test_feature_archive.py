"""Archived entitlements features stay archived; their lookup key is free for a new feature."""

from __future__ import annotations

from typing import Any

import pytest
import stripe


def test_archived_feature_cannot_be_unarchived_and_its_key_is_reusable(
    stripe_client: stripe.StripeClient, emulator: Any
) -> None:
    features = stripe_client.v1.entitlements.features
    first = features.create({"lookup_key": "sso", "name": "SSO"})
    with pytest.raises(stripe.InvalidRequestError):
        features.create({"lookup_key": "sso", "name": "SSO again"})
    features.update(first.id, {"active": False})
    with pytest.raises(stripe.InvalidRequestError):
        features.update(first.id, {"active": True})
    second = features.create({"lookup_key": "sso", "name": "SSO"})
    assert second.id != first.id
    listed = features.list({"limit": 100}).data
    assert {(f.id, f.active) for f in listed} == {(first.id, False), (second.id, True)}

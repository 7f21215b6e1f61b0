"""Idempotency keys: replay the first response, refuse reuse with other parameters.

As on Stripe, a key is remembered with a fingerprint of its request (method, path and the
decoded parameters) once the endpoint has started executing; requests rejected before that
(authentication, rate limit, parameter validation, injected faults) leave no trace, so a retry
runs for real. Keys expire 24 hours (emulator time) after first use.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from stripe_emulator.errors import idempotency_conflict

KEY_LIFETIME_SECONDS = 24 * 60 * 60


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """What the first request with a key answered."""

    fingerprint: str
    status: int
    body: bytes
    request_id: str
    created: float


def fingerprint(method: str, path: str, params: dict[str, Any]) -> str:
    """A canonical string for "the same request"."""
    return json.dumps([method, path, params], sort_keys=True, default=str)


class IdempotencyStore:
    """Responses by key, oldest first so expiry is a cheap pop from the front."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()

    def lookup(self, key: str, request_fingerprint: str, now: float) -> StoredResponse | None:
        """The stored response to replay, None for a fresh key, or Stripe's 400 on reuse."""
        self._expire(now)
        stored = self._entries.get(key)
        if stored is None:
            return None
        if stored.fingerprint != request_fingerprint:
            raise idempotency_conflict(key)
        return stored

    def remember(self, key: str, response: StoredResponse) -> None:
        """Keep the first response for `key`."""
        self._entries.setdefault(key, response)

    def clear(self) -> None:
        """Forget every key."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self, now: float) -> None:
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if now - oldest.created < KEY_LIFETIME_SECONDS:
                return
            self._entries.popitem(last=False)

"""Helpers shared by resources: fetch-or-404, metadata rules, enums, update bookkeeping."""

from __future__ import annotations

import copy
import re
from typing import Any

from stripe_emulator.core import RequestContext
from stripe_emulator.errors import invalid, invalid_enum, no_such
from stripe_emulator.state import StripeObject

METADATA_MAX_KEYS = 50
METADATA_MAX_KEY_LENGTH = 40
METADATA_MAX_VALUE_LENGTH = 500

_CURRENCY = re.compile(r"[a-z]{3}")


def fetch(
    ctx: RequestContext,
    kind: str,
    object_id: str,
    noun: str,
    *,
    param: str = "id",
    in_body: bool = False,
) -> StripeObject:
    """The stored object, or Stripe's `No such <noun>: '<id>'` (400 when `in_body`, else 404)."""
    obj = ctx.store.get(kind, object_id)
    if obj is None:
        raise no_such(noun, object_id, param=param, in_body=in_body)
    return obj


def new_metadata(value: Any, *, param: str = "metadata") -> dict[str, str]:
    """Metadata for a new object (`""` values are simply not set)."""
    return apply_metadata({}, value, param=param)


def apply_metadata(
    current: dict[str, str], update: Any, *, param: str = "metadata"
) -> dict[str, str]:
    """Stripe's metadata update: merge keys, `""` unsets a key, `metadata=""` unsets all."""
    if update is None:
        return current
    if update == "":
        return {}
    merged = dict(current)
    for key, value in update.items():
        _check_metadata_entry(key, value, param)
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    if len(merged) > METADATA_MAX_KEYS:
        raise invalid(
            f"Invalid {param}: metadata can have a maximum of {METADATA_MAX_KEYS} keys.",
            param=param,
        )
    return merged


def _check_metadata_entry(key: str, value: Any, param: str) -> None:
    if not isinstance(value, str):
        raise invalid(
            f"Invalid {param}[{key}]: metadata values must be strings", param=f"{param}[{key}]"
        )
    if len(key) > METADATA_MAX_KEY_LENGTH:
        raise invalid(
            f"Metadata keys can have a maximum length of {METADATA_MAX_KEY_LENGTH} characters.",
            param=f"{param}[{key}]",
        )
    if len(value) > METADATA_MAX_VALUE_LENGTH:
        raise invalid(
            f"Metadata values can have a maximum length of {METADATA_MAX_VALUE_LENGTH} characters.",
            param=f"{param}[{key}]",
        )


def check_enum(value: Any, param: str, allowed: tuple[str, ...]) -> None:
    """Stripe enforces these enums even though the SDK types leave them open."""
    if value is not None and value not in allowed:
        raise invalid_enum(param, allowed)


def currency(value: str, *, param: str = "currency") -> str:
    """A lower-cased ISO 4217 code (Stripe accepts `USD` and answers `usd`)."""
    lowered = value.lower()
    if not _CURRENCY.fullmatch(lowered):
        raise invalid(f"Invalid currency: {value}.", param=param, code="parameter_invalid_string")
    return lowered


def nullable(value: Any) -> Any:
    """Update params use `""` to clear a field; stored as null."""
    return None if value == "" else value


def previous_attributes(before: StripeObject, after: StripeObject) -> dict[str, Any]:
    """What `data.previous_attributes` of an `*.updated` event holds: old values of changed
    fields; for metadata only the changed keys (null for keys that were added)."""
    changed: dict[str, Any] = {}
    for key, new in after.items():
        if key.startswith("_") or key == "updated":
            continue
        old = before.get(key)
        if old == new:
            continue
        if key == "metadata" and isinstance(old, dict) and isinstance(new, dict):
            keys = set(old) | set(new)
            changed[key] = {k: old.get(k) for k in sorted(keys) if old.get(k) != new.get(k)}
        else:
            changed[key] = copy.deepcopy(old)
    return changed


def save_update(
    ctx: RequestContext, kind: str, before: StripeObject, after: StripeObject, event: str | None
) -> None:
    """Store `after`; emit `event` with previous attributes when something changed."""
    changes = previous_attributes(before, after)
    if not changes:
        return
    if "updated" in after:
        after["updated"] = ctx.now()
    ctx.store.replace(kind, after)
    if event is not None:
        ctx.emit(event, after, previous_attributes=changes)


def deleted_stub(obj: StripeObject) -> StripeObject:
    """`{"id": ..., "object": ..., "deleted": true}`."""
    return {"id": obj["id"], "object": obj["object"], "deleted": True}

"""Turn stored objects into responses: private keys dropped, `expand` applied.

Every key starting with `_` is the emulator's own bookkeeping (`_subscription` on invoices,
`_unit_amount` inside a subscription's embedded items, ...): `strip_private` drops them at any
depth, for every resource, here and in event payloads (`core.public_copy`). The keys of a
`metadata` object are the user's and are kept as given (`{"_user_key": ...}` included).

Expansion replaces an id with the object it names (`price.product`, `product.default_price`,
nested as `product.default_price`), found by id across the store. Some fields are
*includable*: Stripe leaves them out of responses unless they are expanded (`tiers` and
`currency_options` on prices, `tax` on customers).
"""

from __future__ import annotations

from typing import Any

from stripe_emulator.errors import StripeError, invalid
from stripe_emulator.state import Store, StripeObject

ExpandTree = dict[str, "ExpandTree"]

INCLUDABLE: dict[str, frozenset[str]] = {
    "price": frozenset({"tiers", "currency_options"}),
    "customer": frozenset({"tax", "tax_ids", "subscriptions", "sources"}),
}

# Expandable reference fields that may legitimately be null (expanding them keeps null).
EXPANDABLE: dict[str, frozenset[str]] = {
    "price": frozenset({"product"}),
    "product": frozenset({"default_price", "tax_code"}),
    "customer": frozenset({"test_clock", "default_source"}),
    "customer_balance_transaction": frozenset({"customer", "invoice", "credit_note"}),
    "product_feature": frozenset(),
}

# Stored for indexing but absent from Stripe's responses (meter events have no id).
HIDDEN: dict[str, frozenset[str]] = {"billing.meter_event": frozenset({"id"})}

_MAX_DEPTH = 4


def expand_tree(paths: list[str]) -> ExpandTree:
    """`["data.product", "data.product.default_price"]` -> nested dict."""
    tree: ExpandTree = {}
    for path in paths:
        parts = path.split(".")
        if len(parts) > _MAX_DEPTH:
            raise invalid(
                f"You cannot expand more than {_MAX_DEPTH} levels of a property. Property: {path}",
                param="expand",
            )
        node = tree
        for part in parts:
            node = node.setdefault(part, {})
    return tree


def strip_private(value: Any) -> Any:
    """`value` without private `_` keys at any depth (not inside `metadata` objects). What
    holds no private key is returned as it is, not copied."""
    if isinstance(value, dict):
        changed = False
        kept: list[tuple[str, Any]] = []
        for key, inner in value.items():
            if key.startswith("_"):
                changed = True
                continue
            stripped = inner if key == "metadata" else strip_private(inner)
            changed = changed or stripped is not inner
            kept.append((key, stripped))
        return dict(kept) if changed else value
    if isinstance(value, list):
        items = [strip_private(inner) for inner in value]
        if any(new is not old for new, old in zip(items, value, strict=True)):
            return items
        return value
    return value


def render(store: Store, obj: StripeObject, expand: ExpandTree | None = None) -> StripeObject:
    """The response body for one object (nested values may be shared with the store)."""
    kind = obj.get("object", "")
    hidden = INCLUDABLE.get(kind, frozenset()) | HIDDEN.get(kind, frozenset())
    out = {
        k: v if k == "metadata" else strip_private(v)
        for k, v in obj.items()
        if not k.startswith("_") and k not in hidden
    }
    for name, subtree in (expand or {}).items():
        out[name] = _expanded(store, obj, name, subtree, path=name)
    return out


def _expanded(store: Store, obj: StripeObject, name: str, subtree: ExpandTree, path: str) -> Any:
    kind = obj.get("object", "")
    if name in INCLUDABLE.get(kind, frozenset()):
        return _default_includable(obj, name)
    value = obj.get(name)
    if isinstance(value, str):
        target = store.find(value)
        if target is not None:
            return render(store, target, subtree)
    if value is None and name in EXPANDABLE.get(kind, frozenset()):
        return None
    raise _not_expandable(path)


def _default_includable(obj: StripeObject, name: str) -> Any:
    if name in obj:
        return strip_private(obj[name])
    if name in ("tax_ids", "subscriptions", "sources"):
        url = f"/v1/customers/{obj['id']}/{name}"
        return {"object": "list", "data": [], "has_more": False, "total_count": 0, "url": url}
    return None


def _not_expandable(path: str) -> StripeError:
    return invalid(f"This property cannot be expanded ({path}).", param="expand")


def list_expand_tree(paths: list[str]) -> ExpandTree:
    """For list endpoints: every path must start with `data.`; returns the per-item tree."""
    tree = expand_tree(paths)
    for name in tree:
        if name != "data":
            raise _not_expandable(name)
    return tree.get("data", {})

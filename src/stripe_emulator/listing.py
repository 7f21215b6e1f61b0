"""List endpoints: Stripe's envelope, `limit` bounds, cursors and `created` filters."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from stripe_emulator.errors import invalid, no_such
from stripe_emulator.params import Params
from stripe_emulator.render import ExpandTree, list_expand_tree, render
from stripe_emulator.state import Predicate, Store, StripeObject

DEFAULT_LIMIT = 10
MAX_LIMIT = 100


def list_response(
    store: Store,
    *,
    kind: str,
    params: Params,
    url: str,
    equals: Mapping[str, Iterable[Any]] | None = None,
    predicate: Predicate | None = None,
) -> StripeObject:
    """`{"object": "list", "data": [...], "has_more": ..., "url": ...}` for one page."""
    limit = _limit(params)
    starting_after, ending_before = _cursors(store, kind, params)
    predicate = _and(predicate, created_predicate(params.get("created"), "created"))
    page = store.collection(kind).page(
        equals=equals or {},
        predicate=predicate,
        limit=limit,
        starting_after=starting_after,
        ending_before=ending_before,
    )
    tree = list_expand_tree(params.get("expand", []))
    return envelope([render(store, o, tree) for o in page.objects], page.has_more, url)


def envelope(data: list[StripeObject], has_more: bool, url: str) -> StripeObject:
    """The list object."""
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def expand_of(params: Params) -> ExpandTree:
    """The expand tree of a single-object request."""
    from stripe_emulator.render import expand_tree

    paths: list[str] = params.get("expand", [])
    return expand_tree(paths)


def _limit(params: Params) -> int:
    limit = params.get("limit", DEFAULT_LIMIT)
    if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise invalid(
            f"Invalid limit: must be between 1 and {MAX_LIMIT}",
            param="limit",
            code="parameter_invalid_integer",
        )
    return limit


def _cursors(store: Store, kind: str, params: Params) -> tuple[str | None, str | None]:
    after, before = params.get("starting_after"), params.get("ending_before")
    if after is not None and before is not None:
        raise invalid(
            "You may only specify one of these parameters: ending_before, starting_after."
        )
    for name, value in (("starting_after", after), ("ending_before", before)):
        if value is not None and store.get(kind, value) is None:
            raise no_such(kind.rsplit(".", 1)[-1].replace("_", " "), value, param=name)
    return after, before


def created_predicate(spec: Any, field: str) -> Predicate | None:
    """A filter such as `created=123` or `created[gte]=..&created[lt]=..`."""
    if spec is None:
        return None
    if isinstance(spec, int):
        exact = spec
        return lambda obj: obj.get(field) == exact
    bounds: dict[str, int] = spec

    def matches(obj: StripeObject) -> bool:
        value = obj.get(field)
        if not isinstance(value, int):
            return False
        return (
            value > bounds.get("gt", value - 1)
            and value >= bounds.get("gte", value)
            and value < bounds.get("lt", value + 1)
            and value <= bounds.get("lte", value)
        )

    return matches


def _and(first: Predicate | None, second: Predicate | None) -> Predicate | None:
    if first is None or second is None:
        return first or second
    return lambda obj: first(obj) and second(obj)

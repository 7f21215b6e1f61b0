"""Compare a served JSON object with the SDK's resource class (`stripe.Customer` ...).

The SDK's generated classes declare every field of the pinned API version as a class
annotation: `Optional[...]` for fields that may be null or absent (includable fields such as
`customer.tax`, `deleted`), plain types for fields Stripe always returns. `shape_problems`
walks those annotations against a response and reports

- a served field the class does not declare (`unknown`),
- a non-Optional field the response lacks (`missing`),
- a value whose JSON type does not fit the annotation (`type`),

recursing into nested `StripeObject` classes (`Customer.Tax.Location`), lists of them,
`ListObject[X]` (the items), expandable fields (`Union[str, X]`: an id or the object) and
`UntypedStripeObject[X]` hashes (metadata, `cash_balance.available`).

Annotations are evaluated when the SDK module is imported, except quoted forward references
to other resources (`Optional["CashBalance"]`, `ExpandableField["PaymentMethod"]`), which the
module imports only under `TYPE_CHECKING`. `typing.get_type_hints` resolves them in a
namespace made of the module's globals plus exactly the names those `TYPE_CHECKING` imports
bring in (read from the module's source with `ast`), so each forward reference resolves to the
class its own module means (DESIGN §9 describes the same trick for the params TypedDicts).

A deleted object (`{"id", "object", "deleted": true}`) is checked as the stub it is.

`event_problems` checks an event and its `data.object`; the payloads Stripe documents as
lacking a field the SDK declares non-Optional (`EVENT_PAYLOAD_OMITS`) may lack exactly that
field at their top level, and nothing else is relaxed.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
import types
import typing
from decimal import Decimal
from functools import cache
from typing import Any, Union

import typing_extensions
from stripe._stripe_object import StripeObject, UntypedStripeObject

_DELETED_STUB_FIELDS = frozenset({"id", "object", "deleted"})

# Event payloads that lack a field their SDK class declares non-Optional, as Stripe documents:
# the event reference for `invoice.upcoming`, "Note: The received Invoice object will not have
# an invoice ID" (https://docs.stripe.com/api/events/types#event_types-invoice.upcoming).
EVENT_PAYLOAD_OMITS: dict[str, frozenset[str]] = {"invoice.upcoming": frozenset({"id"})}


def shape_problems(
    data: Any,
    cls: type[StripeObject],
    path: str = "",
    *,
    listed: bool = False,
    may_omit: frozenset[str] = frozenset(),
) -> list[str]:
    """Every difference between `data` (parsed JSON) and what `cls` declares; with `listed`,
    `data` is a list envelope (`ListObject[cls]`) whose items are checked. `may_omit` names
    top-level fields of `data` whose absence is accepted (only `event_problems` passes it)."""
    from stripe._list_object import ListObject

    problems: list[str] = []
    where = path or (f"list of {cls.__name__}" if listed else cls.__name__)
    if listed:
        _check_generic(data, ListObject, (cls,), where, problems)
    else:
        _check_object(data, cls, where, problems, may_omit=may_omit)
    return problems


def event_problems(event: dict[str, Any], classes: dict[str, type[StripeObject]]) -> list[str]:
    """The shape problems of one served event and of its `data.object` when `classes` (by
    `object` name) knows the payload's class; `EVENT_PAYLOAD_OMITS` says which fields the
    payload of its type may lack."""
    import stripe

    problems = shape_problems(event, stripe.Event, event["type"])
    obj = event["data"]["object"]
    cls = classes.get(obj.get("object", ""))
    if cls is not None:
        omits = EVENT_PAYLOAD_OMITS.get(event["type"], frozenset())
        problems += shape_problems(obj, cls, f"{event['type']}.data.object", may_omit=omits)
    return problems


def declared_fields(cls: type[StripeObject]) -> dict[str, Any]:
    """The resolved annotations of `cls` that describe response fields."""
    return dict(_fields(cls))


@cache
def _fields(cls: type[StripeObject]) -> tuple[tuple[str, Any], ...]:
    # Own annotations of each class in the MRO, stopping at `StripeObject` (whose private
    # annotations name things its module never imports at run time).
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if not (inspect.isclass(klass) and issubclass(klass, StripeObject)):
            continue
        if klass in (StripeObject, UntypedStripeObject):
            continue
        own = inspect.get_annotations(klass)
        resolved = typing.get_type_hints(
            _Annotated(own, klass.__module__),
            globalns=_namespace(klass),
            localns=_locals(klass),
        )
        hints.update(resolved)
    return tuple(
        (name, hint)
        for name, hint in hints.items()
        if not name.startswith("_") and typing.get_origin(hint) is not typing.ClassVar
    )


class _Annotated:
    """Something `get_type_hints` reads: one class's own annotations, no MRO."""

    def __init__(self, annotations: dict[str, Any], module: str) -> None:
        self.__annotations__ = dict(annotations)
        self.__module__ = module


def _locals(cls: type) -> dict[str, Any]:
    # Nested classes refer to their siblings (`Customer.Shipping.Address`); the enclosing
    # classes' attributes resolve those.
    names: dict[str, Any] = {}
    qualname = cls.__qualname__.split(".")
    module = sys.modules[cls.__module__]
    owner: Any = module
    for part in qualname:
        owner = getattr(owner, part)
        names.update({k: v for k, v in vars(owner).items() if isinstance(v, type)})
    return names


@cache
def _module_namespace(module_name: str) -> dict[str, Any]:
    module = importlib.import_module(module_name)
    names: dict[str, Any] = dict(vars(module))
    tree = ast.parse(inspect.getsource(module))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom) and statement.module:
                    imported = importlib.import_module(statement.module)
                    for alias in statement.names:
                        names[alias.asname or alias.name] = getattr(imported, alias.name)
    return names


def _namespace(cls: type) -> dict[str, Any]:
    return _module_namespace(cls.__module__)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _check_object(
    data: Any,
    cls: type[StripeObject],
    path: str,
    problems: list[str],
    *,
    may_omit: frozenset[str] = frozenset(),
) -> None:
    if not isinstance(data, dict):
        problems.append(f"{path}: type: expected an object ({cls.__name__}), got {_kind(data)}")
        return
    fields = declared_fields(cls)
    if data.get("deleted") is True:
        extra = set(data) - _DELETED_STUB_FIELDS
        if extra or not {"id", "object"} <= set(data):
            problems.append(f"{path}: deleted stub has fields {sorted(data)}")
        return
    for name in sorted(set(data) - set(fields) - _implicit(cls)):
        problems.append(f"{path}.{name}: unknown (not declared by {cls.__qualname__})")
    for name, hint in fields.items():
        if name == "data" and cls.__name__ == "ListObject":
            continue
        if name not in data:
            if not _is_optional(hint) and name not in may_omit:
                problems.append(f"{path}.{name}: missing (non-Optional in {cls.__qualname__})")
            continue
        _check_value(data[name], hint, f"{path}.{name}", problems)


def _implicit(cls: type[StripeObject]) -> set[str]:
    # `ListObject` declares no `object`; every served object has one.
    return {"object"}


def _is_optional(hint: Any) -> bool:
    return _is_union(hint) and type(None) in typing.get_args(hint)


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (Union, types.UnionType)


def _check_value(value: Any, hint: Any, path: str, problems: list[str]) -> None:
    if value is None:
        if hint is not Any and not _is_optional(hint):
            problems.append(f"{path}: type: null for non-Optional {_name(hint)}")
        return
    if _is_union(hint):
        _check_union(
            value, [a for a in typing.get_args(hint) if a is not type(None)], path, problems
        )
        return
    origin = typing.get_origin(hint)
    if origin in (typing.Literal, typing_extensions.Literal):
        allowed = typing.get_args(hint)
        if value not in allowed:
            problems.append(f"{path}: value {value!r} not in {list(allowed)}")
        return
    if origin is list:
        if not isinstance(value, list):
            problems.append(f"{path}: type: expected a list, got {_kind(value)}")
            return
        for index, item in enumerate(value):
            _check_value(item, typing.get_args(hint)[0], f"{path}[{index}]", problems)
        return
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{path}: type: expected a hash, got {_kind(value)}")
        return
    if inspect.isclass(origin) and issubclass(origin, StripeObject):
        _check_generic(value, origin, typing.get_args(hint), path, problems)
        return
    if inspect.isclass(hint) and issubclass(hint, StripeObject):
        _check_object(value, hint, path, problems)
        return
    _check_scalar(value, hint, path, problems)


def _check_generic(
    value: Any, origin: type, args: tuple[Any, ...], path: str, problems: list[str]
) -> None:
    from stripe._list_object import ListObject

    if not isinstance(value, dict):
        problems.append(f"{path}: type: expected an object, got {_kind(value)}")
        return
    if issubclass(origin, ListObject):
        # The envelope (`data: List[T]` is checked against the list's own item class).
        envelope = {k: v for k, v in value.items() if k != "data"}
        _check_object(envelope, ListObject, path, problems)
        if not isinstance(value.get("data"), list):
            problems.append(f"{path}.data: missing or not a list")
        for index, item in enumerate(value.get("data") or []):
            _check_value(item, args[0], f"{path}.data[{index}]", problems)
        return
    if issubclass(origin, UntypedStripeObject):
        for key, item in value.items():
            _check_value(item, args[0] if args else Any, f"{path}[{key}]", problems)
        return
    _check_object(value, origin, path, problems)


def _check_union(value: Any, options: list[Any], path: str, problems: list[str]) -> None:
    # Expandable fields are `Union[str, X]`; open enums `Union[Literal[...], str]`; a few
    # fields are unions of resources (`default_source`), told apart by `object`.
    if isinstance(value, str) and any(o is str for o in options):
        return
    if len(options) == 1:
        _check_value(value, options[0], path, problems)
        return
    if isinstance(value, dict):
        classes = [o for o in options if _stripe_class(o) is not None]
        for option in classes:
            cls = _stripe_class(option)
            assert cls is not None
            if len(classes) == 1 or getattr(cls, "OBJECT_NAME", None) == value.get("object"):
                _check_value(value, option, path, problems)
                return
    attempts: list[list[str]] = []
    for option in options:
        found: list[str] = []
        _check_value(value, option, path, found)
        if not found:
            return
        attempts.append(found)
    problems.append(f"{path}: fits none of {[_name(o) for o in options]}: {attempts[0]}")


def _stripe_class(hint: Any) -> type | None:
    candidate = typing.get_origin(hint) or hint
    if inspect.isclass(candidate) and issubclass(candidate, StripeObject):
        return candidate
    return None


_SCALARS: dict[Any, tuple[type, ...]] = {
    str: (str,),
    int: (int,),
    float: (int, float),
    bool: (bool,),
    # `Decimal` fields travel as strings (`_field_encodings = {...: "decimal_string"}`).
    Decimal: (str,),
}


def _check_scalar(value: Any, hint: Any, path: str, problems: list[str]) -> None:
    if hint is Any:
        return
    expected = _SCALARS.get(hint)
    if expected is None:
        problems.append(f"{path}: cannot check annotation {_name(hint)}")
        return
    wrong_bool = isinstance(value, bool) and hint is not bool
    if wrong_bool or not isinstance(value, expected):
        problems.append(f"{path}: type: {_kind(value)} for {_name(hint)}")


def _kind(value: Any) -> str:
    return type(value).__name__


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or repr(hint)

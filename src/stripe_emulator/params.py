"""Validate and coerce request parameters against the SDK's own parameter types.

The SDK ships OpenAPI-generated `TypedDict`s (`stripe/params/_price_update_params.py` ...).
An endpoint names its class; we compile it once into a small tree of `Node`s and run every
raw form tree (`forms.FormTree`) through it. That gives Stripe's answers for free: a parameter
the type lacks is `parameter_unknown` (which is how `unit_amount` on a price update fails),
a missing required one is `parameter_missing`, and values come out as `int`/`bool`/lists.

Enum `Literal`s in the SDK are open (`Literal['day', ...]|str`), so enums Stripe enforces
are checked by the resources, not here.
"""

from __future__ import annotations

import importlib
import re
import types
import typing
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any, Union

import typing_extensions

from stripe_emulator.errors import StripeError, invalid, missing_parameter, unknown_parameter

Params = dict[str, Any]

_INTEGER = re.compile(r"-?\d+")

# Bounds Stripe enforces on every string and amount parameter (docs/emulator.md, "Parameter
# limits"): a string parameter is at most 5,000 characters (the published OpenAPI spec's
# `maxLength: 5000`, stripe/openapi#51), an amount (a parameter named below, integer or
# decimal) at most 999,999,999,999 in absolute value, and any integer fits in 64 bits.
MAX_STRING_LENGTH = 5000
MAX_AMOUNT = 999_999_999_999
AMOUNT_NAMES = frozenset(
    {
        "amount",
        "unit_amount",
        "flat_amount",
        "balance",
        "amount_decimal",
        "unit_amount_decimal",
        "flat_amount_decimal",
    }
)
_INT64 = 2**63 - 1

# Keys of `stripe._request_options.RequestOptions`: client options that create-params inherit
# but that never travel as request parameters (they become headers).
_REQUEST_OPTION_KEYS = frozenset(
    {
        "api_key",
        "stripe_version",
        "stripe_account",
        "stripe_context",
        "max_network_retries",
        "idempotency_key",
        "content_type",
        "headers",
    }
)


@dataclass(frozen=True, slots=True)
class Scalar:
    """A leaf: `str`, `int`, `bool`, `float`, `decimal` or `any`."""

    kind: str


@dataclass(frozen=True, slots=True)
class Constant:
    """A closed `Literal[...]` (e.g. `Literal['']` for unsetting, `Literal['inf']`)."""

    values: frozenset[str]


@dataclass(frozen=True, slots=True)
class ListOf:
    """`List[X]`, sent as `a[0]=..&a[1]=..`."""

    item: Node


@dataclass(frozen=True, slots=True)
class MapOf:
    """`Dict[str, X]` (metadata, currency_options)."""

    value: Node


@dataclass(frozen=True, slots=True)
class Obj:
    """A `TypedDict`: known fields, some required."""

    fields: dict[str, Node]
    required: frozenset[str]


@dataclass(frozen=True, slots=True)
class OneOf:
    """A union such as `Literal['']|str` or `PriceListParamsCreated|int`."""

    options: tuple[Node, ...]


Node = Scalar | Constant | ListOf | MapOf | Obj | OneOf


@cache
def schema_for(qualified_name: str) -> Obj:
    """Compile (once) the params class `stripe.params._x_params.XParams`."""
    module_name, _, class_name = qualified_name.rpartition(".")
    module = importlib.import_module(module_name)
    node = _compile_typeddict(getattr(module, class_name), top_level=True)
    assert isinstance(node, Obj)
    return node


def _namespace(cls: type) -> dict[str, Any]:
    # The annotations are strings naming things imported by the params module and a few
    # SDK modules (DESIGN §9), so resolve them in the union of those namespaces.
    names: dict[str, Any] = {}
    for module_name in (
        "stripe._request_options",
        "stripe._stripe_context",
        "stripe._stripe_object",
    ):
        names.update(vars(importlib.import_module(module_name)))
    names.update(vars(importlib.import_module(cls.__module__)))
    return names


@cache
def _compile_typeddict(cls: type, *, top_level: bool = False) -> Node:
    hints = typing.get_type_hints(cls, globalns=_namespace(cls))
    required_keys: frozenset[str] = getattr(cls, "__required_keys__", frozenset())
    fields = {
        name: _compile(hint)
        for name, hint in hints.items()
        if not (top_level and name in _REQUEST_OPTION_KEYS)
    }
    return Obj(fields=fields, required=frozenset(k for k in required_keys if k in fields))


def _compile(hint: Any) -> Node:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return OneOf(tuple(_compile(arg) for arg in typing.get_args(hint)))
    if origin in (typing.Literal, typing_extensions.Literal):
        return Constant(frozenset(str(v) for v in typing.get_args(hint)))
    if origin is list:
        return ListOf(_compile(typing.get_args(hint)[0]))
    if origin is dict:
        return MapOf(_compile(typing.get_args(hint)[1]))
    if typing_extensions.is_typeddict(hint):
        return _compile_typeddict(hint)
    if origin is not None:
        # `UntypedStripeObject[X]` is the SDK's dict-like object: a hash of X on the wire.
        args = typing.get_args(hint)
        return MapOf(_compile(args[-1]) if args else Scalar("any"))
    return Scalar(_SCALAR_KINDS.get(hint, "any"))


_SCALAR_KINDS: dict[Any, str] = {
    str: "str",
    int: "int",
    bool: "bool",
    float: "float",
    Decimal: "decimal",
}


def validate(qualified_name: str, raw: dict[str, Any]) -> Params:
    """Coerce `raw` (a form tree) to typed parameters, or raise Stripe's 400."""
    result = _coerce(schema_for(qualified_name), raw, "")
    assert isinstance(result, dict)
    return result


def _path(parent: str, key: str) -> str:
    return f"{parent}[{key}]" if parent else key


def _coerce(node: Node, raw: Any, path: str) -> Any:
    match node:
        case Scalar(kind=kind):
            return _scalar(kind, raw, path)
        case Constant(values=values):
            if isinstance(raw, str) and raw in values:
                return raw
            raise invalid(f"Invalid {path}: must be one of {sorted(values)}", param=path)
        case ListOf(item=item):
            return _list(item, raw, path)
        case MapOf(value=value):
            if not isinstance(raw, dict):
                raise invalid(f"Invalid hash for {path}", param=path)
            return {k: _coerce(value, v, _path(path, k)) for k, v in raw.items()}
        case Obj():
            return _object(node, raw, path)
        case OneOf(options=options):
            return _one_of(options, raw, path)
    raise AssertionError(node)


def _scalar(kind: str, raw: Any, path: str) -> Any:
    if kind == "any":
        return raw
    if not isinstance(raw, str):
        raise invalid(f"Invalid {path}: expected a single value, got a hash", param=path)
    if kind == "int":
        if not _INTEGER.fullmatch(raw) or len(raw) > 20 or abs(int(raw)) > _INT64:
            raise invalid(f"Invalid integer: {raw}", param=path, code="parameter_invalid_integer")
        value = int(raw)
        _check_amount(value, path)
        return value
    if kind == "bool":
        if raw not in ("true", "false"):
            raise invalid(f"Invalid boolean: {raw}", param=path)
        return raw == "true"
    if kind in ("float", "decimal"):
        return _number(kind, raw, path)
    if len(raw) > MAX_STRING_LENGTH:
        raise invalid(
            f"Invalid string: {raw[:20]}...; must be at most {MAX_STRING_LENGTH} characters",
            param=path,
        )
    return raw


def _leaf(path: str) -> str:
    """The parameter's own name: `items[0][price_data][unit_amount]` -> `unit_amount`."""
    parts = [p for p in re.split(r"[\[\]]+", path) if p and not p.isdigit()]
    return parts[-1] if parts else path


def _check_amount(value: Decimal | int, path: str) -> None:
    if abs(Decimal(value)) > MAX_AMOUNT and _leaf(path) in AMOUNT_NAMES:
        raise invalid(
            f"This value must be less than or equal to {MAX_AMOUNT}.",
            param=path,
            code="parameter_invalid_integer",
        )


def _number(kind: str, raw: str, path: str) -> Any:
    try:
        number = Decimal(raw)
    except InvalidOperation:
        raise invalid(f"Invalid decimal: {raw}", param=path) from None
    if not number.is_finite():
        raise invalid(f"Invalid decimal: {raw}", param=path)
    _check_amount(number, path)
    return float(number) if kind == "float" else raw


def _list(item: Node, raw: Any, path: str) -> list[Any]:
    if not isinstance(raw, dict) or not all(_INTEGER.fullmatch(k) for k in raw):
        raise invalid(f"Invalid array for {path}", param=path)
    ordered = sorted(raw.items(), key=lambda kv: int(kv[0]))
    return [_coerce(item, value, f"{path}[{index}]") for index, (_, value) in enumerate(ordered)]


def _object(node: Obj, raw: Any, path: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise invalid(f"Invalid object for {path}", param=path)
    result: dict[str, Any] = {}
    for key, value in raw.items():
        field = node.fields.get(key)
        if field is None:
            raise unknown_parameter(_path(path, key))
        result[key] = _coerce(field, value, _path(path, key))
    for key in sorted(node.required):
        if key not in result:
            raise missing_parameter(_path(path, key))
    return result


def _one_of(options: tuple[Node, ...], raw: Any, path: str) -> Any:
    errors: list[StripeError] = []
    # Try the shape that fits the raw value first; report the error of the first real type
    # rather than of a `Literal['']`/`Literal['inf']` alternative, so it names the intent.
    ranked = sorted(options, key=lambda o: _shape_rank(o, raw))
    for option in ranked:
        try:
            return _coerce(option, raw, path)
        except StripeError as error:
            errors.append(error)
    typed = [e for o, e in zip(ranked, errors, strict=True) if not isinstance(o, Constant)]
    raise (typed or errors)[0]


def _shape_rank(node: Node, raw: Any) -> int:
    is_container = isinstance(node, ListOf | MapOf | Obj)
    if isinstance(raw, dict):
        return 0 if is_container else 2
    if isinstance(node, Constant):
        return 0
    if isinstance(node, Scalar):
        return 1 if node.kind != "str" else 2
    return 3

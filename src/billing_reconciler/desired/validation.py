"""Checking raw YAML data against a pydantic model and its JSON Schema, with positions.

Both validators run on the same raw data. Pydantic's errors carry our hand-written messages,
so where both complain about one node (or a node and its parent), the schema's message is
dropped: a user sees one clear message per problem. Error locations are mapped back to the
YAML node that caused them.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import jsonschema
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from billing_reconciler.customer_validation import field_path
from billing_reconciler.desired.diagnostics import Diagnostic
from billing_reconciler.desired.yaml_source import Loc, SourceDocument

ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class _Finding:
    loc: Loc
    message: str
    on_key: bool = False


@dataclass(frozen=True, slots=True)
class Checked(Generic[ModelT]):
    """A validation's outcome: the item (None on any error), its diagnostics, and the data
    paths (relative to the validated data) that the diagnostics point at."""

    item: ModelT | None
    diagnostics: list[Diagnostic]
    broken: tuple[Loc, ...] = ()

    def sound(self, loc: Loc) -> bool:
        """Whether the value at `loc` passed: no finding points at it or at a node above it.

        A record with an error elsewhere (an unknown key, a bad amount) still says this value,
        so checks across records can look at it: their errors do not follow from the broken
        part of the record, and a user must see them in the same run.
        """
        return not any(loc[: len(bad)] == bad for bad in self.broken)


def validate(
    document: SourceDocument,
    model: type[ModelT],
    *,
    data: Any,
    at: Loc = (),
    schema: Mapping[str, Any] | None = None,
) -> tuple[ModelT | None, list[Diagnostic]]:
    """Validate `data` (found at `at` in `document`) as `model`, and against `schema`."""
    checked = check(document, model, data=data, at=at, schema=schema)
    return checked.item, checked.diagnostics


def check(
    document: SourceDocument,
    model: type[ModelT],
    *,
    data: Any,
    at: Loc = (),
    schema: Mapping[str, Any] | None = None,
    full_paths: bool = False,
) -> Checked[ModelT]:
    """`validate`, also telling which parts of `data` were wrong (`Checked.sound`).

    `full_paths` names a field by its whole path from the document's root
    (`customers[0].tax_ids[1].type: ...`, as the API's error details do) instead of its key."""
    result: ModelT | None = None
    pydantic_findings: list[_Finding] = []
    prefix = at if full_paths else None
    try:
        result = model.model_validate(data)
    except ValidationError as exc:
        pydantic_findings = [
            _from_pydantic(err, data=data, schema=schema, model=model, prefix=prefix)
            for err in exc.errors(include_url=False)
        ]
    schema_findings = _from_schema(schema, data, prefix) if schema is not None else []
    findings = pydantic_findings + _unrelated(schema_findings, pydantic_findings)
    diagnostics = [document.diagnostic((*at, *f.loc), f.message, key=f.on_key) for f in findings]
    broken = tuple(f.loc for f in findings)
    return Checked((result if not diagnostics else None), diagnostics, broken)


# --------------------------------------------------------------------------------------------
# pydantic errors
# --------------------------------------------------------------------------------------------


def _from_pydantic(
    err: ErrorDetails,
    *,
    data: Any,
    schema: Mapping[str, Any] | None,
    model: type[BaseModel],
    prefix: Loc | None = None,
) -> _Finding:
    loc = data_path(data, err["loc"])
    kind = err["type"]
    field = _field_name(loc)
    named = _named(loc, prefix)
    if kind == "extra_forbidden":
        allowed = _allowed_keys(schema, loc[:-1])
        if not allowed and len(loc) == 1:
            allowed = sorted(model.model_fields)
        return _Finding(loc, _unknown_key(field, allowed), on_key=True)
    if kind == "missing":
        missing = str(err["loc"][-1])
        return _Finding(loc, f"missing required key '{missing}'")
    if kind == "literal_error":
        return _Finding(loc, _bad_choice(named, err))
    message = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind.endswith("_type") or kind.startswith(("greater", "less", "string_", "too_")):
        message = f"{message} (got {_show(err.get('input'))})" if _safe(kind) else message
    if not named or message.startswith(named):
        return _Finding(loc, message)
    return _Finding(loc, f"{named}: {message}")


def _named(loc: Loc, prefix: Loc | None) -> str:
    """How a message names the field at `loc`: its key, or its path from the document's root
    (`customers[0].tax_ids[1].type`) when `prefix` (where the data sits) is given."""
    if prefix is None:
        return _field_name(loc)
    return field_path((*prefix, *loc)) if loc else ""


def data_path(data: Any, loc: Sequence[str | int]) -> Loc:
    """The part of a pydantic location that walks real data (drops union/validator tags)."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if _has(node, part):
            node = node[part]
        elif isinstance(node, Mapping) and isinstance(part, str) and not _is_tag(part):
            path.append(part)  # a missing or unknown key: point at it through its parent
            break
        else:
            continue
        path.append(part)
    return tuple(path)


def _has(node: Any, part: str | int) -> bool:
    if isinstance(node, Mapping):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _is_tag(part: str) -> bool:
    return "[" in part or part in {"str", "int", "bool", "float", "list", "dict", "none"}


def _field_name(loc: Loc) -> str:
    # A list item or the document itself has no field name to prefix a message with.
    return loc[-1] if loc and isinstance(loc[-1], str) else ""


def _unknown_key(key: str, allowed: Sequence[str]) -> str:
    message = f"unknown key '{key}'"
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"{message}; did you mean '{close[0]}'?"
    if allowed:
        return f"{message}; expected one of: {', '.join(sorted(allowed))}"
    return message


def _bad_choice(field: str, err: ErrorDetails) -> str:
    expected = str(err.get("ctx", {}).get("expected", ""))
    options = [part.strip(" '") for part in expected.replace(" or ", ", ").split(",")]
    value = err.get("input")
    message = f"{field}: {_show(value)} is not allowed; expected {expected}"
    if isinstance(value, str):
        close = difflib.get_close_matches(value, options, n=1, cutoff=0.6)
        if close:
            message += f"; did you mean '{close[0]}'?"
    return message


def _safe(kind: str) -> bool:
    # String-valued inputs could be secrets; only show values for non-string complaints.
    return not kind.startswith("string_")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------------------------
# JSON Schema errors
# --------------------------------------------------------------------------------------------


def _from_schema(schema: Mapping[str, Any], data: Any, prefix: Loc | None = None) -> list[_Finding]:
    validator = jsonschema.Draft202012Validator(schema)
    findings = []
    for error in validator.iter_errors(data):
        loc = tuple(error.absolute_path)
        findings.append(_Finding(loc, _schema_message(error, loc, prefix)))
    return findings


def _schema_message(error: jsonschema.ValidationError, loc: Loc, at: Loc | None) -> str:
    field = _named(loc, at)
    prefix = f"{field}: " if field else ""
    kind = error.validator
    if kind == "additionalProperties":
        return f"{prefix}unknown key(s) (schema)"
    if kind == "required":
        return f"{prefix}missing required key (schema)"
    if kind == "type":
        return f"{prefix}expected {error.validator_value} (schema)"
    # Never echo the instance: it may be a pasted secret.
    return f"{prefix}does not match the schema ({kind})"


def _unrelated(schema: list[_Finding], pydantic: list[_Finding]) -> list[_Finding]:
    """Schema findings that no pydantic finding already explains (same node or nearby)."""
    kept = []
    for finding in schema:
        related = any(_prefix(finding.loc, p.loc) or _prefix(p.loc, finding.loc) for p in pydantic)
        if not related:
            kept.append(finding)
    return kept


def _prefix(short: Loc, long: Loc) -> bool:
    return long[: len(short)] == short


def _allowed_keys(schema: Mapping[str, Any] | None, loc: Loc) -> list[str]:
    """Property names the schema allows at `loc`, for "did you mean" suggestions."""
    if schema is None:
        return []
    node: Any = _resolve(schema, schema)
    for part in loc:
        node = _step(schema, node, part)
        if node is None:
            return []
    return sorted(node.get("properties", {}))


def _step(root: Mapping[str, Any], node: Mapping[str, Any], part: str | int) -> Any:
    if isinstance(part, int):
        child = node.get("items")
    else:
        child = node.get("properties", {}).get(part)
        if child is None and isinstance(node.get("additionalProperties"), Mapping):
            child = node["additionalProperties"]
    return _resolve(root, child) if child is not None else None


def _resolve(root: Mapping[str, Any], node: Any) -> Any:
    """Follow `$ref`s and pick the object-or-array branch of an `anyOf`."""
    while isinstance(node, Mapping):
        if "$ref" in node:
            node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        elif "anyOf" in node:
            branches = [b for b in node["anyOf"] if b.get("type") != "null"]
            if not branches:
                return node
            node = branches[0]
        else:
            return node
    return node

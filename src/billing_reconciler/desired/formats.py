"""The two plan-file formats: Frontier's flat form and its apiVersion/kind/spec documents.

Owns: telling the forms apart, checking each form's envelope, and validating every entry
(feature, product, plan) on its own, so one bad product does not hide the rest of the file.
Each valid entry comes back `Located` (with the document and path it came from); the names
of invalid entries are kept so cross-reference checks do not pile on "unknown product".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, StrictStr

from billing_reconciler.desired.diagnostics import Diagnostic, Severity
from billing_reconciler.desired.models import FeatureModel, PlanModel, ProductModel
from billing_reconciler.desired.schema_export import plans_schema, sub_schema
from billing_reconciler.desired.validation import Checked, check, validate
from billing_reconciler.desired.yaml_source import Loc, SourceDocument

T = TypeVar("T")
Kind = Literal["feature", "product", "plan"]

_READ_ONLY_KEYS = ("id", "provider_id", "feature_id", "product_ids")


@dataclass(frozen=True, slots=True)
class Located(Generic[T]):
    """A validated item and where it was written."""

    item: T
    document: SourceDocument
    loc: Loc

    def diagnostic(self, message: str, *, at: Loc = (), warning: bool = False) -> Diagnostic:
        """A diagnostic pointing at this item (or at `at` inside it)."""
        severity: Severity = "warning" if warning else "error"
        return self.document.diagnostic((*self.loc, *at), message, severity=severity)


@dataclass(frozen=True, slots=True)
class PlanRefs:
    """What an invalid plan entry still says about the products it groups.

    A plan with an error elsewhere (an unknown key, a bad interval) still names its products;
    an unknown product there is a mistake of its own, reported in the same run. `name` is None
    when the plan's own name is wrong; `products` holds (index, lower-case name) of each
    reference that validated.
    """

    name: str | None
    products: tuple[tuple[int, str], ...]


@dataclass
class PlanEntries:
    """Everything the plan files declared, valid entries and names of invalid ones, and what
    the invalid plans still reference."""

    features: list[Located[FeatureModel]] = field(default_factory=list)
    products: list[Located[ProductModel]] = field(default_factory=list)
    plans: list[Located[PlanModel]] = field(default_factory=list)
    invalid_names: dict[Kind, set[str]] = field(
        default_factory=lambda: {"feature": set(), "product": set(), "plan": set()}
    )
    invalid_plans: list[Located[PlanRefs]] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)


class _FlatEnvelope(BaseModel):
    """Top level of the flat form; entries are validated one by one afterwards."""

    model_config = ConfigDict(extra="forbid")
    features: list[Any] | None = None
    products: list[Any] | None = None
    plans: list[Any] | None = None


class _DocumentEnvelope(BaseModel):
    model_config = ConfigDict(extra="forbid")
    apiVersion: Literal["v1"] = "v1"
    kind: Literal["BillingProduct", "BillingPlan"]
    spec: list[Any]


class _Named(BaseModel):
    name: StrictStr


_MODELS: dict[Kind, tuple[type[BaseModel], str]] = {
    "feature": (FeatureModel, "FeatureModel"),
    "product": (ProductModel, "ProductModel"),
    "plan": (PlanModel, "PlanModel"),
}
_FLAT_SECTIONS: dict[str, Kind] = {"features": "feature", "products": "product", "plans": "plan"}
_DOCUMENT_KINDS: dict[str, Kind] = {"BillingProduct": "product", "BillingPlan": "plan"}


def read_plan_document(document: SourceDocument, entries: PlanEntries) -> None:
    """Add the entries of one YAML document (either form) to `entries`."""
    data = document.data
    if data is None:
        entries.diagnostics.append(document.diagnostic((), "document is empty"))
    elif not isinstance(data, dict):
        entries.diagnostics.append(
            document.diagnostic(
                (),
                f"the root of a plan file must be a mapping (features/products/plans, or "
                f"apiVersion/kind/spec), not {_kind(data)}",
            )
        )
    elif "kind" in data or "apiVersion" in data or "spec" in data:
        _read_documents_form(document, entries)
    else:
        _read_flat_form(document, entries)


def _read_flat_form(document: SourceDocument, entries: PlanEntries) -> None:
    envelope, problems = validate(document, _FlatEnvelope, data=document.data)
    entries.diagnostics.extend(problems)
    if envelope is None:
        return
    for section, kind in _FLAT_SECTIONS.items():
        for index, raw in enumerate(document.data.get(section) or []):
            _read_entry(document, entries, kind=kind, raw=raw, loc=(section, index))


def _read_documents_form(document: SourceDocument, entries: PlanEntries) -> None:
    envelope, problems = validate(document, _DocumentEnvelope, data=document.data)
    entries.diagnostics.extend(problems)
    if envelope is None:
        return
    kind = _DOCUMENT_KINDS[envelope.kind]
    for index, raw in enumerate(envelope.spec):
        _read_entry(document, entries, kind=kind, raw=raw, loc=("spec", index))


def _read_entry(
    document: SourceDocument, entries: PlanEntries, *, kind: Kind, raw: Any, loc: Loc
) -> None:
    model, name = _MODELS[kind]
    schema = sub_schema(plans_schema(), name)
    checked = check(document, model, data=raw, at=loc, schema=schema)
    item = checked.item
    entries.diagnostics.extend(checked.diagnostics)
    entries.diagnostics.extend(_read_only_warnings(document, raw, loc))
    if item is None:
        entries.invalid_names[kind].add(_raw_name(raw))
        if kind == "plan":
            entries.invalid_plans.append(Located(_plan_refs(raw, checked), document, loc))
        return
    located = Located(item, document, loc)
    if isinstance(item, FeatureModel):
        entries.features.append(located)  # type: ignore[arg-type]
    elif isinstance(item, ProductModel):
        entries.products.append(located)  # type: ignore[arg-type]
    elif isinstance(item, PlanModel):
        entries.plans.append(located)  # type: ignore[arg-type]


def _read_only_warnings(document: SourceDocument, raw: Any, loc: Loc) -> Iterator[Diagnostic]:
    """Frontier's read-only ids are accepted (exports carry them) but never used."""
    for path, key in _find_keys(raw, loc):
        yield document.diagnostic(
            (*path, key),
            f"'{key}' is a read-only id from Frontier and is ignored; the name is the identity",
            key=True,
            severity="warning",
        )


def _find_keys(raw: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    if isinstance(raw, dict):
        for key, value in raw.items():
            if key in _READ_ONLY_KEYS and value not in (None, "", []):
                yield loc, key
            yield from _find_keys(value, (*loc, key))
    elif isinstance(raw, list):
        for index, value in enumerate(raw):
            yield from _find_keys(value, (*loc, index))


def _plan_refs(raw: Any, checked: Checked[BaseModel]) -> PlanRefs:
    """The plan name and product references of an invalid plan, where they validated."""
    if not isinstance(raw, dict):
        return PlanRefs(None, ())
    name = raw.get("name")
    products = raw.get("products")
    refs: list[tuple[int, str]] = []
    if isinstance(products, list):
        for index, ref in enumerate(products):
            product = ref.get("name") if isinstance(ref, dict) else None
            if isinstance(product, str) and checked.sound(("products", index, "name")):
                refs.append((index, product.lower()))
    if not isinstance(name, str) or not checked.sound(("name",)):
        return PlanRefs(None, tuple(refs))
    return PlanRefs(name.lower(), tuple(refs))


def _raw_name(raw: Any) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
        return str(raw["name"]).lower()
    return ""


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    return f"a single value ({type(value).__name__})"

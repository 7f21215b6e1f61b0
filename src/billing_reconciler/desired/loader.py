"""`load_desired(directory)`: read billing.yaml, every plan file and the contract customer
files (`customers/`), check it all, in one go.

Validation is all-or-nothing (DESIGN §3): the result carries every diagnostic of every file,
and a `DesiredState` only when there is no error. Nothing is written anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from pydantic import ValidationError

from billing_reconciler.config import BillingConfig, deprecated_spellings
from billing_reconciler.desired.customers import (
    CUSTOMERS_DIR,
    PlanNames,
    check_customers,
    customer_files,
    customer_specs,
    read_customer_files,
)
from billing_reconciler.desired.diagnostics import Diagnostic, display_path, make, sort_key
from billing_reconciler.desired.formats import Located, PlanEntries, read_plan_document
from billing_reconciler.desired.normalize import (
    feature_spec,
    implicit_features,
    plan_spec,
    product_spec,
)
from billing_reconciler.desired.references import Catalog, UnparsedFiles, check_references
from billing_reconciler.desired.schema_export import billing_schema
from billing_reconciler.desired.secrets_scan import secret_diagnostics
from billing_reconciler.desired.state import (
    CustomerSpec,
    DesiredState,
    PlanSpec,
    ProductSpec,
    content_revision,
)
from billing_reconciler.desired.validation import Checked, check
from billing_reconciler.desired.yaml_source import (
    MAX_FILE_BYTES,
    Loc,
    SourceDocument,
    load_yaml_file,
)

CONFIG_FILE = "billing.yaml"
PLAN_SUFFIXES = frozenset({".yaml", ".yml"})


@dataclass(frozen=True, slots=True)
class LoadResult:
    """The desired state (None iff any error) and every diagnostic, sorted by position."""

    state: DesiredState | None
    diagnostics: tuple[Diagnostic, ...]

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        """Only the errors."""
        return tuple(d for d in self.diagnostics if d.is_error)

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        """Only the warnings."""
        return tuple(d for d in self.diagnostics if not d.is_error)


@dataclass(frozen=True, slots=True)
class _Config:
    config: BillingConfig
    document: SourceDocument | None
    """None when billing.yaml is unusable: config-dependent checks are then skipped."""
    plans_path: str
    plans_path_document: SourceDocument | None


def load_desired(directory: Path) -> LoadResult:
    """Load and validate desired/ (billing.yaml plus the plan files under `plans_path`)."""
    if not directory.is_dir():
        message = f"desired-state directory {display_path(directory)} does not exist"
        return LoadResult(None, (make("error", display_path(directory), message=message),))
    diagnostics: list[Diagnostic] = []
    config_file = directory / CONFIG_FILE
    loaded = _load_config(config_file, diagnostics)
    entries = PlanEntries()
    unparsed: list[str | None] = []
    plans_dir = _plans_directory(loaded, base=directory, diagnostics=diagnostics)
    if plans_dir is not None:
        for file in _plan_files(
            plans_dir, exclude=config_file, customers=directory / CUSTOMERS_DIR
        ):
            if not _read_plan_file(file, entries, diagnostics):
                unparsed.append(_text_of(file))
    diagnostics.extend(entries.diagnostics)
    state = _build_state(directory, loaded, entries, UnparsedFiles(tuple(unparsed)), diagnostics)
    ordered = tuple(sorted(set(diagnostics), key=sort_key))
    has_errors = any(d.is_error for d in ordered)
    return LoadResult(state=None if has_errors else state, diagnostics=ordered)


def _load_config(file: Path, diagnostics: list[Diagnostic]) -> _Config:
    display = display_path(file)
    fallback = _Config(BillingConfig(), None, "plans", None)
    if not file.is_file():
        message = f"{CONFIG_FILE} not found in {display_path(file.parent)}"
        diagnostics.append(make("error", display, message=message))
        return fallback
    documents, problems = load_yaml_file(file, display)
    diagnostics.extend(problems)
    if problems:
        return fallback
    document = _single_mapping(documents, display, diagnostics)
    if document is None:
        return fallback
    for loc, message in deprecated_spellings(document.data):
        diagnostics.append(document.diagnostic(loc, message, key=True, severity="warning"))
    checked = check(document, BillingConfig, data=document.data, schema=billing_schema())
    config, errors = checked.item, checked.diagnostics
    diagnostics.extend(errors)
    # A secret the config rules already named (`stripe_key`, webhook secrets) is one error.
    named = {(e.line, e.column) for e in errors}
    diagnostics.extend(d for d in secret_diagnostics(document) if (d.line, d.column) not in named)
    plans_path = _raw_plans_path(document.data)
    if config is None:
        salvaged = _salvaged_config(document.data, checked)
        if salvaged is None:
            return _Config(BillingConfig(), None, plans_path, document)
        return _Config(salvaged, document, plans_path, document)
    return _Config(config, document, config.billing.plans_path, document)


# Values of an invalid billing.yaml that other files are checked against: where one of them
# validated, its references (a default plan, the overdraft product) are still checked, since
# an unknown name there is a mistake of its own, not an echo of the error elsewhere.
_SALVAGED: tuple[Loc, ...] = (
    ("billing", "default_currency"),
    ("billing", "customer", "default_plan"),
    ("billing", "customer", "credit_overdraft_product"),
)


def _salvaged_config(data: Any, checked: Checked[BillingConfig]) -> BillingConfig | None:
    """A config of only the sound `_SALVAGED` values of an invalid billing.yaml, or None."""
    picked: dict[str, Any] = {}
    for loc in _SALVAGED:
        node: Any = data
        for part in loc:
            node = node.get(part) if isinstance(node, dict) else None
        if node is None or not checked.sound(loc):
            continue
        target = picked
        for part in loc[:-1]:
            target = target.setdefault(str(part), {})
        target[str(loc[-1])] = node
    if not picked:
        return None
    try:
        return BillingConfig.model_validate(picked)
    except ValidationError:
        return None


def _single_mapping(
    documents: list[SourceDocument], display: str, diagnostics: list[Diagnostic]
) -> SourceDocument | None:
    if not documents:
        diagnostics.append(make("error", display, message="file is empty; add a billing: block"))
        return None
    if len(documents) > 1:
        second = documents[1]
        diagnostics.append(second.diagnostic((), f"{CONFIG_FILE} must hold a single YAML document"))
        return None
    document = documents[0]
    if not isinstance(document.data, dict):
        diagnostics.append(
            document.diagnostic((), f"the root of {CONFIG_FILE} must be a mapping (billing:, ...)")
        )
        return None
    return document


def _raw_plans_path(data: Any) -> str:
    billing = data.get("billing") if isinstance(data, dict) else None
    value = billing.get("plans_path") if isinstance(billing, dict) else None
    return value if isinstance(value, str) and value else "plans"


def _plans_directory(loaded: _Config, *, base: Path, diagnostics: list[Diagnostic]) -> Path | None:
    """`plans_path` relative to billing.yaml's directory; a file:// URL is accepted too."""
    raw = loaded.plans_path
    loc = ("billing", "plans_path")
    document = loaded.plans_path_document
    parsed = urlparse(raw)
    if "://" in raw and parsed.scheme != "file":
        message = f"plans_path: only local directories and file:// URLs are supported, not {parsed.scheme}://"
        diagnostics.append(_at_config(document, base, loc, message))
        return None
    path = Path(unquote(parsed.netloc + parsed.path)) if parsed.scheme == "file" else Path(raw)
    directory = path if path.is_absolute() else base / path
    if not directory.is_dir():
        message = f"plans directory {display_path(directory)} does not exist (plans_path: {raw})"
        diagnostics.append(_at_config(document, base, loc, message))
        return None
    return directory


def _at_config(
    document: SourceDocument | None, base: Path, loc: tuple[str, ...], message: str
) -> Diagnostic:
    if document is not None:
        return document.diagnostic(loc, message)
    return make("error", display_path(base / CONFIG_FILE), message=message)


def _plan_files(directory: Path, *, exclude: Path, customers: Path) -> list[Path]:
    """Every *.yaml/*.yml below `directory`, sorted; hidden directories are skipped, and so is
    the customers directory (a `plans_path: .` would otherwise read customers as plans)."""
    excluded = exclude.resolve()
    customers_dir = customers.resolve()
    found = []
    for file in directory.rglob("*"):
        hidden = any(part.startswith(".") for part in file.relative_to(directory).parts)
        wanted = file.suffix in PLAN_SUFFIXES and not hidden and file.is_file()
        if wanted and customers_dir in file.resolve().parents:
            continue
        if wanted and file.resolve() != excluded:
            found.append(file)
    return sorted(found)


def _read_plan_file(file: Path, entries: PlanEntries, diagnostics: list[Diagnostic]) -> bool:
    """Read one plan file into `entries`; False when it could not be parsed at all."""
    display = display_path(file)
    documents, problems = load_yaml_file(file, display)
    diagnostics.extend(problems)
    if not documents and not problems:
        diagnostics.append(
            make("error", display, message="file is empty; add features, products or plans")
        )
    for document in documents:
        diagnostics.extend(secret_diagnostics(document))
        read_plan_document(document, entries)
    return not problems


def _text_of(file: Path) -> str | None:
    """An unparsable file's text, lower-cased, to tell which names it may define."""
    try:
        if file.stat().st_size > MAX_FILE_BYTES:
            return None
        return file.read_text(encoding="utf-8").lower()
    except (OSError, UnicodeDecodeError):
        return None


def _build_state(
    directory: Path,
    loaded: _Config,
    entries: PlanEntries,
    unparsed: UnparsedFiles,
    diagnostics: list[Diagnostic],
) -> DesiredState:
    currency = loaded.config.billing.currency
    features = [Located(feature_spec(f.item), f.document, f.loc) for f in entries.features]
    products: list[Located[ProductSpec]] = []
    for located in entries.products:
        spec, warnings = product_spec(located, default_currency=currency)
        products.append(Located(spec, located.document, located.loc))
        diagnostics.extend(warnings)
    implied = implicit_features(entries.products, {f.item.name for f in features})
    plans = [Located(plan_spec(p.item), p.document, p.loc) for p in entries.plans]
    catalog = Catalog(
        config=loaded.config,
        config_document=loaded.document,
        features=features,
        implied_features=implied,
        products=products,
        plans=plans,
        invalid_names=entries.invalid_names,
        invalid_plans=entries.invalid_plans,
        unparsed=unparsed,
    )
    diagnostics.extend(check_references(catalog))
    all_features = tuple(sorted((f.item for f in features + implied), key=lambda f: f.name))
    product_specs = tuple(sorted((p.item for p in products), key=lambda p: p.name))
    plan_specs = tuple(sorted((p.item for p in plans), key=lambda p: p.name))
    customers = _customers(directory, catalog, plan_specs, diagnostics)
    return DesiredState(
        root=directory.resolve(),
        config=loaded.config,
        features=all_features,
        products=product_specs,
        plans=plan_specs,
        customers=customers,
        revision=content_revision(
            config=loaded.config,
            features=all_features,
            products=product_specs,
            plans=plan_specs,
            customers=customers,
        ),
    )


def _customers(
    directory: Path,
    catalog: Catalog,
    plans: tuple[PlanSpec, ...],
    diagnostics: list[Diagnostic],
) -> tuple[CustomerSpec, ...]:
    """Contract customers: each file and entry validated, then org ids and plan references."""
    per_seat_products = {p.item.name for p in catalog.products if p.item.behavior == "per_seat"}
    entries = read_customer_files(customer_files(directory))
    diagnostics.extend(entries.diagnostics)
    names = PlanNames(
        active=frozenset(p.name for p in plans if p.active),
        inactive=frozenset(p.name for p in plans if not p.active),
        per_seat=frozenset(
            p.name for p in plans if any(seat in p.products for seat in per_seat_products)
        ),
        may_exist=lambda name: not catalog.unknown("plan", name),
    )
    diagnostics.extend(check_customers(entries.references, plans=names))
    currency = catalog.config.billing.currency
    return customer_specs(entries.customers, default_currency=currency)

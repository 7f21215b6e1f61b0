"""Contract customers as code: `desired/customers/*.yaml` (DESIGN §15).

A file holds `customers:`, a list of accounts declared by org id. Each entry is validated on
its own (pydantic + the JSON Schema, so one bad entry does not hide the others), then across
entries and files: an org id declared twice, a plan that is not an active plan of the plan
files. Every diagnostic is positioned (file:line:col). For these accounts the YAML is the
local side of the customer merge and always wins; removing one orphans it, never deletes it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from billing_reconciler.customer_validation import field_path
from billing_reconciler.desired.customer_models import (
    AddressModel,
    CustomerModel,
    CustomersFileModel,
)
from billing_reconciler.desired.diagnostics import Diagnostic, display_path, make
from billing_reconciler.desired.formats import Located
from billing_reconciler.desired.schema_export import customers_schema, sub_schema
from billing_reconciler.desired.secrets_scan import secret_diagnostics
from billing_reconciler.desired.state import AddressSpec, CustomerSpec, TaxIdSpec
from billing_reconciler.desired.validation import Checked, check, validate
from billing_reconciler.desired.yaml_source import SourceDocument, load_yaml_file

CUSTOMERS_DIR: Final[str] = "customers"
CUSTOMER_SUFFIXES: Final[frozenset[str]] = frozenset({".yaml", ".yml"})


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CustomerRefs:
    """What the checks across entries read of one entry: only the values that validated.

    An entry with an error elsewhere (an unknown key, a bad `due_in_days`) still names its
    org id and plan; a duplicate org id or an unknown plan there is a mistake of its own and
    is reported in the same run. A value that is itself wrong is None (its error says it).
    """

    org_id: str | None
    plan: str | None
    seats: int | None


@dataclass
class CustomerEntries:
    """Valid entries with where they were written, what every entry (valid or not) refers
    to, and every diagnostic."""

    customers: list[Located[CustomerModel]] = field(default_factory=list)
    references: list[Located[CustomerRefs]] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PlanNames:
    """What the plan files say about plan names, for the `plan:` reference check."""

    active: frozenset[str]
    inactive: frozenset[str] = frozenset()
    per_seat: frozenset[str] = frozenset()
    """Plans with a `per_seat` product: the only ones a fixed seat count applies to."""
    may_exist: Callable[[str], bool] = lambda _name: False
    """True for a name an invalid or unparsable plan file may define: not reported again."""


def customer_files(desired: Path) -> list[Path]:
    """Every *.yaml/*.yml below `desired/customers`, sorted (hidden ones skipped)."""
    directory = desired / CUSTOMERS_DIR
    if not directory.is_dir():
        return []
    found = []
    for file in directory.rglob("*"):
        hidden = any(part.startswith(".") for part in file.relative_to(directory).parts)
        if file.suffix in CUSTOMER_SUFFIXES and not hidden and file.is_file():
            found.append(file)
    return sorted(found)


def read_customer_files(files: Iterable[Path]) -> CustomerEntries:
    """Parse and validate each file, entry by entry."""
    entries = CustomerEntries()
    for file in files:
        display = display_path(file)
        documents, problems = load_yaml_file(file, display)
        entries.diagnostics.extend(problems)
        if not documents and not problems:
            entries.diagnostics.append(
                make("error", display, message="file is empty; add customers")
            )
        for document in documents:
            entries.diagnostics.extend(secret_diagnostics(document))
            _read_document(document, entries)
    return entries


def _read_document(document: SourceDocument, entries: CustomerEntries) -> None:
    if not isinstance(document.data, dict):
        message = "the root of a customers file must be a mapping with `customers:`"
        entries.diagnostics.append(document.diagnostic((), message))
        return
    envelope, problems = validate(document, CustomersFileModel, data=document.data)
    entries.diagnostics.extend(problems)
    if envelope is None:
        return
    schema = sub_schema(customers_schema(), "CustomerModel")
    for index, raw in enumerate(document.data.get("customers") or []):
        loc = ("customers", index)
        checked = check(document, CustomerModel, data=raw, at=loc, schema=schema, full_paths=True)
        entries.diagnostics.extend(checked.diagnostics)
        if checked.item is not None:
            entries.customers.append(Located(checked.item, document, loc))
            refs = CustomerRefs(checked.item.org_id, checked.item.plan, checked.item.seats)
        else:
            refs = _salvaged_refs(raw, checked)
        entries.references.append(Located(refs, document, loc))


def _salvaged_refs(raw: object, checked: Checked[CustomerModel]) -> CustomerRefs:
    """The org id, plan and seats of an invalid entry, each only where it validated."""
    if not isinstance(raw, dict):
        return CustomerRefs(None, None, None)
    org_id, plan, seats = raw.get("org_id"), raw.get("plan"), raw.get("seats")
    return CustomerRefs(
        org_id if isinstance(org_id, str) and checked.sound(("org_id",)) else None,
        plan if isinstance(plan, str) and checked.sound(("plan",)) else None,
        seats if type(seats) is int and checked.sound(("seats",)) else None,
    )


def check_customers(
    entries: list[Located[CustomerRefs]], *, plans: PlanNames
) -> Iterator[Diagnostic]:
    """Across entries: one declaration per org id; plans that exist and are active.

    `entries` are every entry's references, valid or not (`CustomerEntries.references`)."""
    first: dict[str, Located[CustomerRefs]] = {}
    for located in entries:
        org_id = located.item.org_id
        if org_id is None:
            yield from _plan_reference(located, plans)
            continue
        earlier = first.setdefault(org_id, located)
        if earlier is not located:
            where = earlier.document.position((*earlier.loc, "org_id"))
            yield located.diagnostic(
                f"{_path(located, 'org_id')}: '{org_id}' is already declared at "
                f"{earlier.document.path}:{where.line}:{where.column}",
                at=("org_id",),
            )
        yield from _plan_reference(located, plans)


def _plan_reference(located: Located[CustomerRefs], plans: PlanNames) -> Iterator[Diagnostic]:
    plan = located.item.plan
    if plan is None:
        return
    name = plan.lower()
    if name in plans.active:
        if located.item.seats is not None and name not in plans.per_seat:
            message = (
                f"{_path(located, 'seats')}: plan '{plan}' has no per_seat product to apply a "
                "seat count to"
            )
            yield located.diagnostic(message, at=("seats",))
        return
    if plans.may_exist(name):
        return
    if name in plans.inactive:
        message = f"{_path(located, 'plan')}: '{plan}' is inactive; name an active plan"
        yield located.diagnostic(message, at=("plan",))
        return
    message = f"{_path(located, 'plan')}: unknown plan '{plan}'"
    close = difflib.get_close_matches(name, sorted(plans.active), n=1, cutoff=0.6)
    if close:
        message += f"; did you mean '{close[0]}'?"
    elif plans.active:
        message += f"; expected one of: {', '.join(sorted(plans.active))}"
    yield located.diagnostic(message, at=("plan",))


def _path(located: Located[CustomerRefs], name: str) -> str:
    """A field of an entry by its path from the file's root: `customers[2].plan`."""
    return field_path((*located.loc, name))


def customer_spec(model: CustomerModel, *, default_currency: str) -> CustomerSpec:
    """The canonical spec: plan lower-cased, currency defaulted, tax ids sorted."""
    address = model.address
    return CustomerSpec(
        org_id=model.org_id,
        name=model.name,
        email=model.email,
        phone=model.phone,
        address=None if address is None else _address_spec(address),
        tax_ids=tuple(
            sorted({TaxIdSpec(type=t.type, value=t.value) for t in model.tax_ids}, key=_tax_order)
        ),
        offline=model.offline,
        plan=model.plan.lower() if model.plan else None,
        seats=model.seats,
        credit_min=model.credit_min,
        due_in_days=model.due_in_days,
        currency=(model.currency or default_currency or "usd").lower(),
    )


def _address_spec(address: AddressModel) -> AddressSpec:
    country = address.country.upper() if address.country else None
    return AddressSpec(**{**address.model_dump(), "country": country})


def _tax_order(tax_id: TaxIdSpec) -> tuple[str, str]:
    return (tax_id.type, tax_id.value)


def customer_specs(
    entries: list[Located[CustomerModel]], *, default_currency: str
) -> tuple[CustomerSpec, ...]:
    """Specs sorted by org id (the first declaration of a duplicate wins; it is an error)."""
    specs: dict[str, CustomerSpec] = {}
    for located in entries:
        specs.setdefault(
            located.item.org_id, customer_spec(located.item, default_currency=default_currency)
        )
    return tuple(specs[org_id] for org_id in sorted(specs))

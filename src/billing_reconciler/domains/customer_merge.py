"""The three-way field merge of a billing account with its Stripe customer (DESIGN §15). Pure.

Per merged field (`name`, `email`, `phone`, `address`, `tax_ids`), with local = the store (or
a contract customer's YAML), remote = Stripe, last = what we last pushed to or pulled from
Stripe:

- only local changed -> push to Stripe; only remote changed (the customer edited it in the
  portal) -> pull into the store; neither -> nothing;
- both changed to different values -> local wins, and the change is reported as a conflict;
  both changed to the same value -> nothing to write (the last-applied value catches up);
- a field never applied (no last value: a fresh link to an existing customer, as after a lost
  store) -> the remote value is pulled if the store does not set it (never pushed as a
  clear); set on both sides to different values, local wins and it is reported as a
  conflict; set locally only, it is pushed;
- contract customers: the YAML always wins for every field it sets (for the address, every
  part it sets); a field or address part it leaves out is not the contract's: it is merged
  three ways from the store's value like an ordinary account's (an edit in Stripe is pulled,
  an edit through the API pushed), so plan -> apply -> plan converges;
- metadata, per key, only for the keys we own: those the account's metadata holds, or that we
  last wrote (`last_applied["metadata"]`). A key set in Stripe that we never wrote is the
  user's and never touched; reserved keys (our markers, `br_*`, `org_id`) are never merged.
  A key the account's metadata drops is removed in Stripe (unless Stripe changed it too:
  local wins) and is no longer ours; a key of ours removed in Stripe is removed in the store.
  A key the account newly sets that Stripe holds with another value: local wins, reported
  as a conflict. Changes are named `metadata.<key>`.

The currency is not merged: Stripe fixes a customer's currency with its first billed object
and refuses another, so a remote currency is pulled into an account that has none, and a
different one is refused (reported), never pushed.

Why no `deepdiff` (DESIGN §13 lists it): the merged values are five frozen, canonical values
(`model_customers.CustomerFields.canonical`: tax ids a sorted tuple, an empty address None), so
`==` on each is the whole diff, and a field is the unit of decision (an address is pushed or
pulled whole, as Stripe's `address` parameter is set whole). deepdiff would return paths into
nested structures that we would have to map back onto the same five fields, and its
order-insensitive list comparison is what sorting the tax ids already gives. It would be a
dependency for no decision it makes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Final, TypeAlias

from billing_reconciler.model_customers import (
    MERGED_FIELDS,
    Address,
    CustomerFields,
    TaxId,
    canonical_tax_ids,
    normalize_address,
    owned_metadata,
)

FieldValue: TypeAlias = str | Address | tuple[TaxId, ...] | None
LastApplied: TypeAlias = Mapping[str, FieldValue]
"""Per field, the value last pushed or pulled; a field absent here was never applied."""

_EMPTY: Final[CustomerFields] = CustomerFields()
METADATA: Final = "metadata"
METADATA_PREFIX: Final = "metadata."
_ADDRESS_PARTS: Final = tuple(Address.__dataclass_fields__)


def metadata_key(field: str) -> str | None:
    """The metadata key a change's field names (`metadata.<key>`), or None for a field."""
    return field[len(METADATA_PREFIX) :] if field.startswith(METADATA_PREFIX) else None


class Direction(StrEnum):
    """Which side a field change writes."""

    PUSH = "push"  # write Stripe
    PULL = "pull"  # write the store


class Reason(StrEnum):
    """Why a field is written (closed vocabulary for plans, STYLE 5)."""

    LOCAL_CHANGED = "local_changed"
    REMOTE_CHANGED = "remote_changed"
    BOTH_CHANGED = "both_changed"  # a conflict: local won
    NEVER_APPLIED = "never_applied"
    CONTRACT = "contract"  # the YAML of a contract customer wins


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field written to one side: `old` is the value overwritten there, `new` the value."""

    field: str
    direction: Direction
    reason: Reason
    old: FieldValue
    new: FieldValue

    @property
    def conflict(self) -> bool:
        """Both sides changed since the last apply (or a contract overrode a remote edit)."""
        return self.reason is Reason.BOTH_CHANGED


class CurrencyOutcome(StrEnum):
    UNCHANGED = "unchanged"
    PULL = "pull"  # Stripe set it (first billed object); the account had none
    REFUSED = "refused"  # Stripe holds another currency; a currency once set never changes


@dataclass(frozen=True, slots=True)
class CurrencyMerge:
    outcome: CurrencyOutcome
    local: str | None
    remote: str | None

    @property
    def value(self) -> str | None:
        """The account's currency after the merge."""
        return self.remote if self.outcome is CurrencyOutcome.PULL else self.local


@dataclass(frozen=True, slots=True)
class CustomerMerge:
    """The merge of one customer: the changes per side, and the values both sides then hold."""

    changes: tuple[FieldChange, ...]
    merged: CustomerFields
    """What store and Stripe both hold once the changes are applied; also the new last-applied
    value of every merged field."""
    currency: CurrencyMerge
    metadata: Mapping[str, str] = field(default_factory=dict)
    """The metadata keys we own once the changes are applied, with the value both sides hold
    (the new last-applied metadata)."""

    @property
    def push(self) -> tuple[FieldChange, ...]:
        return tuple(c for c in self.changes if c.direction is Direction.PUSH)

    @property
    def pull(self) -> tuple[FieldChange, ...]:
        return tuple(c for c in self.changes if c.direction is Direction.PULL)

    @property
    def conflicts(self) -> tuple[FieldChange, ...]:
        return tuple(c for c in self.changes if c.conflict)

    @property
    def in_sync(self) -> bool:
        """Nothing to write on either side (a refused currency is reported, not written)."""
        return not self.changes and self.currency.outcome is not CurrencyOutcome.PULL


def merge_customer(
    *,
    local: CustomerFields,
    remote: CustomerFields,
    last_applied: LastApplied | None,
    declared: CustomerFields | None = None,
    local_currency: str | None = None,
    remote_currency: str | None = None,
    local_metadata: Mapping[str, str] | None = None,
    remote_metadata: Mapping[str, str] | None = None,
    last_metadata: Mapping[str, str] | None = None,
) -> CustomerMerge:
    """Merge one account (`local`: the store's fields) with its Stripe customer (`remote`),
    field by field. `declared`: a contract customer's YAML fields; each field (address part)
    it sets wins, the others are merged three ways from `local`. Metadata is merged per key
    (`last_metadata`: what we last wrote); without `local_metadata` it is left alone."""
    local_c, remote_c = local.canonical(), remote.canonical()
    last = _canonical_last(last_applied or {})
    changes: list[FieldChange] = []
    merged: dict[str, FieldValue] = {}
    for name in MERGED_FIELDS:
        mine, theirs = _get(local_c, name), _get(remote_c, name)
        wanted = None if declared is None else _get(declared.canonical(), name)
        if name == "address" and isinstance(wanted, Address):
            found, value = _contract_address(wanted, mine, theirs, last)
            changes += found
            merged[name] = value
            continue
        if wanted is not None and _is_set(wanted):
            change = _contract_field(name, wanted, theirs)
            merged[name] = wanted
        else:
            change = _merge_field(name, mine, theirs, last)
            merged[name] = mine if change is None else change.new
        if change is not None:
            changes.append(change)
    metadata: dict[str, str] = {}
    if local_metadata is not None:
        found_meta, metadata = merge_metadata(
            local=local_metadata, remote=remote_metadata or {}, last=last_metadata or {}
        )
        changes += found_meta
    return CustomerMerge(
        changes=tuple(changes),
        merged=replace(_EMPTY, **merged),  # type: ignore[arg-type]
        currency=merge_currency(local=local_currency, remote=remote_currency),
        metadata=metadata,
    )


def contract_local(declared: CustomerFields, stored: CustomerFields) -> CustomerFields:
    """A contract account's fields as they apply when nothing else changed: the YAML's value
    for each field (address part) it sets, the store's for the others."""
    declared, stored = declared.canonical(), stored.canonical()
    address = stored.address
    if declared.address is not None:
        base = stored.address or Address()
        address = Address(
            **{p: getattr(declared.address, p) or getattr(base, p) for p in _ADDRESS_PARTS}
        )
    return CustomerFields(
        name=declared.name or stored.name,
        email=declared.email or stored.email,
        phone=declared.phone or stored.phone,
        address=address,
        tax_ids=declared.tax_ids or stored.tax_ids,
    ).canonical()


def merge_metadata(
    *, local: Mapping[str, str], remote: Mapping[str, str], last: Mapping[str, str]
) -> tuple[list[FieldChange], dict[str, str]]:
    """The per-key merge of the metadata keys we own (see the module docstring): the changes,
    and the owned keys afterwards with the value both sides then hold."""
    mine_all, theirs_all = owned_metadata(local), owned_metadata(remote)
    before_all = owned_metadata(last)
    changes: list[FieldChange] = []
    merged: dict[str, str] = {}
    for key in sorted(set(mine_all) | set(before_all)):
        name = METADATA_PREFIX + key
        mine, theirs = mine_all.get(key), theirs_all.get(key)
        change: FieldChange | None = None
        if key in before_all:
            change = _merge_field(name, mine, theirs, {name: before_all[key]})
        elif mine != theirs:
            # Ours from now on; a value someone set in Stripe under that key is overwritten
            # and reported.
            reason = Reason.NEVER_APPLIED if theirs is None else Reason.BOTH_CHANGED
            change = FieldChange(name, Direction.PUSH, reason, theirs, mine)
        value = mine if change is None else change.new
        if change is not None:
            changes.append(change)
        if isinstance(value, str) and value:
            merged[key] = value
    return changes, merged


def _contract_address(
    wanted: Address,
    mine: FieldValue,
    theirs: FieldValue,
    last: Mapping[str, FieldValue],
) -> tuple[list[FieldChange], Address | None]:
    """A contract's address: the parts the YAML sets win; each part it leaves out is merged
    three ways (store, Stripe, last applied) like a field. The address is written whole: a
    push when Stripe's differs from the result, a pull when the store's part lost to
    Stripe's (an edit in Stripe of a part the YAML does not declare)."""
    store = mine if isinstance(mine, Address) else None
    remote = theirs if isinstance(theirs, Address) else None
    before = last.get("address")
    before_address = before if isinstance(before, Address) else None
    parts: dict[str, str | None] = {}
    pulled = False
    for part in _ADDRESS_PARTS:
        declared_part: str | None = getattr(wanted, part)
        if declared_part:
            parts[part] = declared_part
            continue
        s, r = _part(store, part), _part(remote, part)
        if s == r:
            parts[part] = s
        elif "address" not in last:
            parts[part] = s if s else r
        else:
            parts[part] = s if s != _part(before_address, part) else r
        pulled = pulled or (parts[part] == r and r != s)
    value = normalize_address(Address(**parts))
    changes: list[FieldChange] = []
    if value != _clean(remote):
        changes.append(FieldChange("address", Direction.PUSH, Reason.CONTRACT, remote, value))
    if pulled and value != _clean(store):
        changes.append(FieldChange("address", Direction.PULL, Reason.REMOTE_CHANGED, store, value))
    return changes, value


def _clean(address: Address | None) -> Address | None:
    """An address with every empty part None (so "" and None compare equal)."""
    if address is None:
        return None
    return normalize_address(Address(**{p: _part(address, p) for p in _ADDRESS_PARTS}))


def _part(address: Address | None, part: str) -> str | None:
    value: str | None = None if address is None else getattr(address, part)
    return value or None


def merge_currency(*, local: str | None, remote: str | None) -> CurrencyMerge:
    """Stripe sets the currency with a customer's first billed object and never changes it."""
    local_l, remote_l = (local or "").lower() or None, (remote or "").lower() or None
    if remote_l is None or remote_l == local_l:
        outcome = CurrencyOutcome.UNCHANGED
    elif local_l is None:
        outcome = CurrencyOutcome.PULL
    else:
        outcome = CurrencyOutcome.REFUSED
    return CurrencyMerge(outcome=outcome, local=local_l, remote=remote_l)


def _merge_field(
    name: str, mine: FieldValue, theirs: FieldValue, last: Mapping[str, FieldValue]
) -> FieldChange | None:
    if mine == theirs:
        return None
    if name not in last:
        # No record (a fresh link to an existing customer: a lost store, the host's PUT
        # again): a field the store does not set is pulled, never pushed as a clear; one both
        # set differently is a conflict, local wins and it is reported.
        if not _is_set(mine):
            return FieldChange(name, Direction.PULL, Reason.NEVER_APPLIED, mine, theirs)
        reason = Reason.BOTH_CHANGED if _is_set(theirs) else Reason.NEVER_APPLIED
        return FieldChange(name, Direction.PUSH, reason, theirs, mine)
    before = last[name]
    local_changed, remote_changed = mine != before, theirs != before
    if local_changed and remote_changed:
        return FieldChange(name, Direction.PUSH, Reason.BOTH_CHANGED, theirs, mine)
    if local_changed:
        return FieldChange(name, Direction.PUSH, Reason.LOCAL_CHANGED, theirs, mine)
    # mine == before and mine != theirs: only Stripe moved.
    return FieldChange(name, Direction.PULL, Reason.REMOTE_CHANGED, mine, theirs)


def _contract_field(name: str, wanted: FieldValue, theirs: FieldValue) -> FieldChange | None:
    """A field the contract's YAML sets: pushed whenever Stripe holds another value."""
    if wanted == theirs:
        return None
    return FieldChange(name, Direction.PUSH, Reason.CONTRACT, theirs, wanted)


def _is_set(value: FieldValue) -> bool:
    return value is not None and value != ()


def _get(fields: CustomerFields, name: str) -> FieldValue:
    value: FieldValue = getattr(fields, name)
    return value


def _canonical_last(last: Mapping[str, FieldValue]) -> dict[str, FieldValue]:
    canonical: dict[str, FieldValue] = {}
    for name in MERGED_FIELDS:
        if name not in last:
            continue
        value = last[name]
        if name == "address":
            canonical[name] = normalize_address(value if isinstance(value, Address) else None)
        elif name == "tax_ids":
            canonical[name] = canonical_tax_ids(value)
        else:
            canonical[name] = value or None
    return canonical


# --------------------------------------------------------------------------------------------
# Conversions at the domain's edges: the store's JSON last-applied form, Stripe's parameters.
# --------------------------------------------------------------------------------------------


def last_applied_from_json(data: Mapping[str, Any]) -> dict[str, FieldValue]:
    """The store's `last_applied` JSON (address a dict, tax ids `[{type, value}]`) as values;
    keys it lacks stay absent (never applied). Non-merge keys (`currency`) are ignored."""
    values: dict[str, FieldValue] = {}
    for name in MERGED_FIELDS:
        if name not in data:
            continue
        raw = data[name]
        if name == "address":
            values[name] = _address_from_json(raw)
        elif name == "tax_ids":
            values[name] = canonical_tax_ids(
                tuple(
                    TaxId(type=str(t["type"]), value=str(t["value"]))
                    for t in raw or ()
                    if isinstance(t, Mapping)
                )
            )
        else:
            values[name] = raw if isinstance(raw, str) and raw else None
    return values


def last_applied_to_json(fields: CustomerFields) -> dict[str, Any]:
    """Every merged field of `fields` in the store's JSON form (the inverse of the above)."""
    canonical = fields.canonical()
    address = canonical.address
    return {
        "name": canonical.name,
        "email": canonical.email,
        "phone": canonical.phone,
        "address": None
        if address is None
        else {
            "line1": address.line1,
            "line2": address.line2,
            "city": address.city,
            "state": address.state,
            "postal_code": address.postal_code,
            "country": address.country,
        },
        "tax_ids": [{"type": t.type, "value": t.value} for t in canonical.tax_ids],
    }


def _address_from_json(raw: object) -> Address | None:
    if not isinstance(raw, Mapping):
        return None
    parts = {k: raw.get(k) for k in Address.__dataclass_fields__}
    return normalize_address(
        Address(**{k: v if isinstance(v, str) and v else None for k, v in parts.items()})
    )


def update_params(changes: tuple[FieldChange, ...]) -> dict[str, Any]:
    """Stripe `POST /v1/customers/{id}` parameters of the pushed scalar fields, address and
    metadata keys ("" unsets a field or a key; Stripe merges `metadata` key by key, so keys we
    do not send, ours or the user's, stay; tax ids have their own endpoints: see
    `tax_id_changes`)."""
    params: dict[str, Any] = {}
    for change in changes:
        if change.direction is not Direction.PUSH or change.field == "tax_ids":
            continue
        key = metadata_key(change.field)
        if key is not None:
            params.setdefault(METADATA, {})[key] = change.new or ""
        elif change.field == "address":
            value = change.new
            params["address"] = value.as_params() if isinstance(value, Address) else ""
        else:
            params[change.field] = change.new or ""
    return params


def tax_id_changes(
    changes: tuple[FieldChange, ...],
) -> tuple[tuple[TaxId, ...], tuple[TaxId, ...]]:
    """(to add, to delete) in Stripe for a pushed `tax_ids` change; ((), ()) without one.
    Stripe has no update of a tax id: a changed one is a delete and a create."""
    for change in changes:
        if change.direction is Direction.PUSH and change.field == "tax_ids":
            new = set(canonical_tax_ids(change.new))
            old = set(canonical_tax_ids(change.old))
            return tuple(sorted(new - old)), tuple(sorted(old - new))
    return (), ()

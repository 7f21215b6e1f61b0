"""Comparable records of the customers domain: a billing account's Stripe customer (DESIGN §15).

Kept apart from `model` (the catalog's records) so the two domains' records can change
independently; like `model` it imports nothing but the standard library and `model`'s marker
constants. The desired side (the store's accounts, contract customers from YAML) and the
observed side (Stripe customers, via the gateway) both become `CustomerRecord`s, so the
three-way merge (`domains.customer_merge`) compares like with like.

Conventions: the key is `customer/<org_id>` (org ids are the host's and case-sensitive, so
unlike catalog names they are not lower-cased); currencies are lower-case ISO 4217 codes or
None (Stripe sets a customer's currency with its first billed object); `metadata` excludes the
marker keys, which ride in `owner`; absent text fields are None, never "".
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Final

from billing_reconciler.model import (
    MANAGED_BY,
    META_INSTALLATION,
    META_KEY,
    META_MANAGED_BY,
    META_REVISION,
)

CUSTOMER_KIND: Final[str] = "customer"
META_ORG_ID: Final[str] = "org_id"
#: Marker keys of a customer (DESIGN §14): §4's plus `org_id`, never user metadata.
CUSTOMER_MARKER_KEYS: Final[frozenset[str]] = frozenset(
    {META_MANAGED_BY, META_KEY, META_INSTALLATION, META_REVISION, META_ORG_ID}
)
AUTO_CREATED_KEY: Final[str] = "auto_created"
#: Keys the controller itself writes into an account's customer besides the markers: DESIGN
#: §15's `auto_created=true`, stamped when the customer of an account created with its org is
#: created. Like the markers they are never merged: an account's metadata edit neither
#: removes nor changes them, a link to an existing customer (a lost store) never adds them,
#: and they are not the user's metadata (the API does not show them).
CONTROLLER_METADATA_KEYS: Final[frozenset[str]] = frozenset({AUTO_CREATED_KEY})
#: The fields the three-way merge owns, in the order plans show them.
MERGED_FIELDS: Final[tuple[str, ...]] = ("name", "email", "phone", "address", "tax_ids")


def deleted_in_stripe_reason(stripe_id: str) -> str:
    """The disabled reason recorded when an account's managed customer was deleted in Stripe.

    The customers domain writes it (never re-creating the customer silently); the API reads
    it to refuse `enable` of such an account (a new billing account starts again)."""
    return f"Stripe customer {stripe_id} deleted in Stripe"


def customer_key(org_id: str) -> str:
    """`customer/<org_id>`: the request key and `br_key` of an org's customer (DESIGN §14)."""
    return f"{CUSTOMER_KIND}/{org_id}"


def org_id_of_key(key: str) -> str | None:
    """The org id a `customer/<org_id>` key names, or None for another kind's key."""
    kind, sep, org_id = key.partition("/")
    return org_id if sep and kind == CUSTOMER_KIND and org_id else None


def creation_idempotency_key(
    *, installation_id: str, org_id: str, account_id: str, salt: str, test_clock: str | None = None
) -> str:
    """The idempotency key of an account's customer creation: derived, never random (STYLE
    9), so a rerun after a crash replays Stripe's stored response instead of creating a second
    one. Scoped by installation (two installations sharing one Stripe account create their
    own), by account (a later account of the org, the first disabled, gets a new customer, not
    a replay of the first's) and salted with the store's identity (a new store never replays
    an old store's answer; across a lost store the listed customer is linked instead). An
    account's test clock is part of it when set: Stripe keeps the answer of a create naming a
    clock it does not have, so the create with the clock corrected (through the API, while no
    customer exists) needs a key of its own; an account without a clock keeps its key."""
    parts = (salt, account_id) if not test_clock else (salt, account_id, test_clock)
    part = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]
    return f"br:{installation_id}:customer/{org_id}:create:{part}"


@dataclass(frozen=True, slots=True)
class Address:
    """A postal address as Stripe holds it; every part optional."""

    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None

    def is_empty(self) -> bool:
        return not any(
            (self.line1, self.line2, self.city, self.state, self.postal_code, self.country)
        )

    def as_params(self) -> dict[str, str]:
        """Stripe's `address[...]` parameters; "" unsets a part."""
        return {
            "line1": self.line1 or "",
            "line2": self.line2 or "",
            "city": self.city or "",
            "state": self.state or "",
            "postal_code": self.postal_code or "",
            "country": self.country or "",
        }


@dataclass(frozen=True, slots=True, order=True)
class TaxId:
    """A tax id (`eu_vat`, `DE123456789`); ordered so a set of them has one canonical tuple."""

    type: str
    value: str


def canonical_tax_ids(tax_ids: object) -> tuple[TaxId, ...]:
    """Tax ids as a sorted tuple without duplicates: Stripe lists them newest first, the store
    in insertion order, and neither order means anything."""
    items: list[TaxId] = []
    for item in tax_ids if isinstance(tax_ids, (list, tuple, set, frozenset)) else ():
        if isinstance(item, TaxId):
            items.append(item)
        elif isinstance(item, tuple) and len(item) == 2:
            items.append(TaxId(type=str(item[0]), value=str(item[1])))
    return tuple(sorted(set(items)))


def normalize_address(address: Address | None) -> Address | None:
    """None for an address with no part set: Stripe answers `address: null` after all parts
    are unset, and the two must not look like a change."""
    return None if address is None or address.is_empty() else address


@dataclass(frozen=True, slots=True)
class CustomerOwner:
    """The marker of a customer we created (DESIGN §4, §14)."""

    installation_id: str
    key: str
    org_id: str
    revision: str = ""

    def as_metadata(self) -> dict[str, str]:
        return {
            META_MANAGED_BY: MANAGED_BY,
            META_KEY: self.key,
            META_INSTALLATION: self.installation_id,
            META_ORG_ID: self.org_id,
            **({META_REVISION: self.revision} if self.revision else {}),
        }

    @staticmethod
    def from_metadata(metadata: Mapping[str, str]) -> CustomerOwner | None:
        """The marker in live metadata, or None for a customer that is not a managed customer
        (not ours, or another kind's key)."""
        key = metadata.get(META_KEY, "")
        if metadata.get(META_MANAGED_BY) != MANAGED_BY or org_id_of_key(key) is None:
            return None
        return CustomerOwner(
            installation_id=metadata.get(META_INSTALLATION, ""),
            key=key,
            org_id=metadata.get(META_ORG_ID) or org_id_of_key(key) or "",
            revision=metadata.get(META_REVISION, ""),
        )


def customer_user_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """Live metadata without the marker keys."""
    return {k: v for k, v in metadata.items() if k not in CUSTOMER_MARKER_KEYS}


def is_reserved_metadata_key(key: str) -> bool:
    """A marker key (DESIGN §14) or any `br_` key: ours to stamp, never an account's metadata
    to merge (the merge neither pushes nor pulls it)."""
    return key in CUSTOMER_MARKER_KEYS or key.startswith("br_")


def owned_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """An account's metadata as the merge owns it (the user's keys): no reserved key, no key
    the controller writes itself (`CONTROLLER_METADATA_KEYS`), no empty value (Stripe removes
    a key set to "")."""
    return {
        k: v
        for k, v in metadata.items()
        if v and not is_reserved_metadata_key(k) and k not in CONTROLLER_METADATA_KEYS
    }


def controller_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """The keys of `metadata` the controller writes itself (`CONTROLLER_METADATA_KEYS`)."""
    return {k: v for k, v in metadata.items() if v and k in CONTROLLER_METADATA_KEYS}


@dataclass(frozen=True, slots=True)
class CustomerFields:
    """The merged fields of a customer, as one comparable value (also the last-applied form)."""

    name: str | None = None
    email: str | None = None
    phone: str | None = None
    address: Address | None = None
    tax_ids: tuple[TaxId, ...] = ()

    def canonical(self) -> CustomerFields:
        """The same fields, normalized: "" is None, tax ids sorted, an empty address None;
        `self` when they already are (every edge builds them so: a fleet's plan asks often)."""
        if self._is_canonical():
            return self
        return CustomerFields(
            name=self.name or None,
            email=self.email or None,
            phone=self.phone or None,
            address=normalize_address(self.address),
            tax_ids=canonical_tax_ids(self.tax_ids),
        )

    def _is_canonical(self) -> bool:
        address, tax_ids = self.address, self.tax_ids
        return (
            self.name != ""
            and self.email != ""
            and self.phone != ""
            and (address is None or not address.is_empty())
            and type(tax_ids) is tuple
            and (
                not tax_ids
                # Strictly ascending: sorted, without duplicates, as `canonical_tax_ids` makes.
                or (
                    all(type(t) is TaxId for t in tax_ids)
                    and all(a < b for a, b in pairwise(tax_ids))
                )
            )
        )


@dataclass(frozen=True, slots=True)
class CustomerRecord:
    """A billing account's Stripe customer: desired (store or YAML) or observed (Stripe).

    `stripe_id` is None for a customer not created yet; `deleted` marks a managed customer
    Stripe answered as deleted (the account is then disabled, never re-created silently).
    `test_clock` is a test clock id (test mode only). `stripe_tax_ids` pairs each observed
    tax id with its Stripe id (`txi_...`): deleting one in Stripe needs it.
    """

    key: str
    org_id: str
    stripe_id: str | None = None
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    address: Address | None = None
    tax_ids: tuple[TaxId, ...] = ()
    currency: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    owner: CustomerOwner | None = None
    test_clock: str | None = None
    deleted: bool = False
    stripe_tax_ids: tuple[tuple[TaxId, str], ...] = ()

    @property
    def fields(self) -> CustomerFields:
        """The merged fields, canonical."""
        return CustomerFields(
            name=self.name,
            email=self.email,
            phone=self.phone,
            address=self.address,
            tax_ids=self.tax_ids,
        ).canonical()


def customer_record(
    org_id: str,
    *,
    fields: CustomerFields,
    stripe_id: str | None = None,
    currency: str | None = None,
    metadata: Mapping[str, str] | None = None,
    owner: CustomerOwner | None = None,
    test_clock: str | None = None,
    deleted: bool = False,
    stripe_tax_ids: tuple[tuple[TaxId, str], ...] = (),
) -> CustomerRecord:
    """A record from its parts, with canonical fields and the key derived from the org id."""
    canonical = fields.canonical()
    return CustomerRecord(
        key=customer_key(org_id),
        org_id=org_id,
        stripe_id=stripe_id,
        name=canonical.name,
        email=canonical.email,
        phone=canonical.phone,
        address=canonical.address,
        tax_ids=canonical.tax_ids,
        currency=currency.lower() if currency else None,
        metadata=dict(metadata or {}),
        owner=owner,
        test_clock=test_clock,
        deleted=deleted,
        stripe_tax_ids=stripe_tax_ids,
    )

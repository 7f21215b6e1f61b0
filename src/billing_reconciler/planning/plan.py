"""The Plan: a self-contained value with a closed vocabulary (DESIGN §6, STYLE 5).

A plan is what the diff decided, in the exact order apply will execute it. Each step carries its
target, the request parameters (with `Ref`s to objects other steps create), the field changes
that explain it, and its idempotency key, so `apply(plan)` needs nothing else.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from billing_reconciler.model import JSONValue

FORMAT_VERSION = 1


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    SUPERSEDE = "supersede"
    ARCHIVE = "archive"
    ADOPT = "adopt"
    REACTIVATE = "reactivate"


class Reason(StrEnum):
    """Why a step exists; renderers and reviewers read these, so they are a closed set."""

    NEW = "new"
    DESIRED_CHANGED = "desired_changed"
    DRIFT = "drift"
    REPLACE_BECAUSE_IMMUTABLE = "replace_because_immutable"
    SUPERSEDED = "superseded"
    DEFAULT_PRICE_REPOINT = "default_price_repoint"
    REMOVED_FROM_DESIRED = "removed_from_desired"
    READDED = "readded"
    ADOPT_REQUESTED = "adopt_requested"
    DUPLICATE = "duplicate"
    # A store-only record (a plan) the store lost while Stripe shows it was applied.
    STORE_LOST = "store_lost"
    # The customers domain (DESIGN §15): a field the customer changed in Stripe, pulled into
    # the store; a managed customer deleted in Stripe (its account is disabled); the domain's
    # own bookkeeping (its events cursor), written with the plan but never a change.
    REMOTE_CHANGED = "remote_changed"
    DELETED_IN_STRIPE = "deleted_in_stripe"
    BOOKKEEPING = "bookkeeping"


@dataclass(frozen=True, slots=True)
class Ref:
    """A placeholder for the Stripe id of another object, resolved when the step executes."""

    key: str


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field going from `before` to `after`. `drift`: live differs from what we applied."""

    path: str
    before: JSONValue
    after: JSONValue
    forces_supersede: bool = False
    drift: bool = False


@dataclass(frozen=True, slots=True)
class Step:
    action: Action
    # A step kind is a string so a domain can bring its own; the catalog's are `model.Kind`.
    kind: str
    key: str
    reason: Reason
    params: Mapping[str, Any] = field(default_factory=dict)
    changes: tuple[FieldChange, ...] = ()
    stripe_id: str | None = None
    parent: Ref | None = None
    impact: str | None = None
    idempotency_key: str = ""
    # Steps with the same batch are independent of each other (one phase of DESIGN §7's
    # order) and may be sent concurrently; None: a batch of its own.
    batch: int | None = None
    # What caused a fleet rewrite: the settings (`billing.stripe_auto_tax`) whose change makes
    # this step; empty for a change of the object's own facts. A fleet plan groups by it and
    # prints it after the group line (DESIGN §14).
    causes: tuple[str, ...] = ()
    # Counted by the mass-change guard (DESIGN §14): the step cancels, downgrades or reprices
    # a live object. The controller refuses a plan whose counted objects exceed
    # `reconcile.max_fleet_change_fraction` of the plan's `population`.
    mass_change: bool = False

    @property
    def destructive(self) -> bool:
        return self.action in (Action.ARCHIVE, Action.SUPERSEDE)


@dataclass(frozen=True, slots=True)
class DriftItem:
    """A field we set whose live value differs from what we last applied (someone edited it)."""

    key: str
    path: str
    applied: JSONValue
    live: JSONValue
    corrected: bool


@dataclass(frozen=True, slots=True)
class Notice:
    """An object the plan reports but leaves alone (orphan, adoptable, protected, foreign)."""

    key: str
    kind: str
    stripe_id: str | None
    message: str


@dataclass(frozen=True, slots=True)
class Population:
    """The live objects of a domain (e.g. 1,204 subscriptions): what the mass-change guard
    takes its fraction of. `noun` is the singular a message names them by."""

    count: int
    noun: str


@dataclass(frozen=True, slots=True)
class SettingChange:
    """A setting changed since the last apply that applies only to future events: nothing
    live is rewritten, and the plan says so (DESIGN §14)."""

    setting: str
    before: JSONValue
    after: JSONValue


@dataclass(frozen=True, slots=True)
class DomainFact:
    """A number a domain states about what its store holds (the credits domain's unsent
    meter events): `reconcile status` shows it under the domain, and `serve` exports it as
    the gauge `metric`, read from the store at each scrape."""

    name: str
    value: float
    metric: str
    help: str


@dataclass(frozen=True, slots=True)
class Plan:
    steps: tuple[Step, ...]
    installation_id: str
    desired_revision: str
    fingerprint: str
    created_at: int
    drift: tuple[DriftItem, ...] = ()
    orphans: tuple[Notice, ...] = ()
    adoptable: tuple[Notice, ...] = ()
    warnings: tuple[str, ...] = ()
    refusals: tuple[str, ...] = ()
    # Stripe ids of existing objects the steps refer to by key (see `Ref`).
    known_ids: Mapping[str, str] = field(default_factory=dict)
    # Store-only records to write again because the store lost them (a new or lost store)
    # while Stripe shows they were applied: no change to Stripe or to what the host sees, so
    # they are neither "changes pending" nor counted; apply writes them after the steps.
    restores: tuple[Step, ...] = ()
    # Objects the plan refuses to change or that wait for something (a plan the account
    # cannot have, an offline account): per object, never a step; no change pending.
    notices: tuple[Notice, ...] = ()
    # Settings changed since the last apply that apply only to future events.
    future_only: tuple[SettingChange, ...] = ()
    # The live objects the domain manages, when it states them (the mass-change guard).
    population: Population | None = None
    # Plain informational lines about the domain's state (a backlog its steps work through):
    # neither a change, a refusal, a wait nor a warning.
    info: tuple[str, ...] = ()

    @property
    def has_changes(self) -> bool:
        """Work is pending: steps to apply, or objects waiting for an explicit adoption."""
        return bool(self.steps) or bool(self.adoptable)

    @property
    def has_work(self) -> bool:
        """Apply has something to do: steps, or store records to restore."""
        return bool(self.steps) or bool(self.restores)

    @property
    def converged(self) -> bool:
        """What a re-plan after apply must be: no steps, and no restores but a domain's
        bookkeeping (an events cursor moved by the events of our own writes)."""
        return not self.steps and all(r.reason is Reason.BOOKKEEPING for r in self.restores)

    @property
    def refused(self) -> bool:
        return bool(self.refusals)

    def counts(self) -> dict[str, int]:
        """The summary line's numbers: every step apply will run, counted once by its action
        (the archive that completes a supersede and a default-price repoint are steps too, so
        the total matches `Apply complete (N steps)`)."""
        counts = {action.value: 0 for action in Action}
        for step in self.steps:
            counts[step.action.value] += 1
        return counts


def refs_in(value: Any) -> list[Ref]:
    """Every `Ref` inside a step's parameters (nested mappings and lists included)."""
    if isinstance(value, Ref):
        return [value]
    if isinstance(value, Mapping):
        return [ref for v in value.values() for ref in refs_in(v)]
    if isinstance(value, list | tuple):
        return [ref for v in value for ref in refs_in(v)]
    return []


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, Refs as `{"$ref": key}`."""
    return json.dumps(to_jsonable(value), sort_keys=True, separators=(",", ":"))


def to_jsonable(value: Any) -> Any:
    if isinstance(value, Ref):
        return {"$ref": value.key}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def from_jsonable(value: Any) -> Any:
    """Inverse of `to_jsonable` for request parameters read back from a saved plan."""
    if isinstance(value, dict):
        if set(value) == {"$ref"}:
            return Ref(str(value["$ref"]))
        return {k: from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    return value


def digest(*parts: str, length: int = 32) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:length]

"""Collects the steps, drift and notices the diff decides, and orders them into a Plan.

The order is DESIGN §7's: meters, features, products, prices, attachments and detachments,
default-price repoints, plan records, the products' attachment records (`br_features`) where
no repoint carried them, then removals in reverse dependency order. Within a phase steps are
sorted by key, so the same inputs always give the same plan, and apply executes it as printed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from billing_reconciler.model import Catalog, Kind, Ownership
from billing_reconciler.planning.plan import (
    Action,
    DriftItem,
    FieldChange,
    Notice,
    Plan,
    Step,
    canonical_json,
    digest,
    refs_in,
)


class Phase(IntEnum):
    METERS = 10
    FEATURES = 20
    PRODUCTS = 30
    PRICES = 40
    ATTACH = 50
    REPOINT = 60
    PLANS = 70
    # Detaching needs nothing archived first; before the repoints, so the product update that
    # repoints a default price can also record the product's attachments (one request).
    DETACH = 55
    RECORD_FEATURES = 85
    ARCHIVE_PRICES = 90
    ARCHIVE_PRODUCTS = 100
    ARCHIVE_FEATURES = 110
    ARCHIVE_METERS = 120
    ARCHIVE_PLANS = 130


@dataclass(frozen=True, slots=True)
class PlanPolicy:
    """The knobs of one planning run (from the `reconcile:` config block and CLI flags)."""

    installation_id: str
    revision: str
    prune: bool = False
    max_archive_fraction: float = 0.25
    correct_drift: bool = True
    adopt_all: bool = False
    adopt_keys: frozenset[str] = frozenset()
    allow_mass_archive: bool = False
    now: int = 0
    # Plan keys of steps already completed within Stripe's 24 h idempotency window (from the
    # journal): a new step never gets one of them, even when it repeats the very same write.
    spent_keys: frozenset[str] = frozenset()
    # The store's identity: a new or lost store derives keys no earlier store sent.
    key_salt: str = ""
    # List every product's attachments instead of trusting its `br_features` record.
    verify_attachments: bool = False

    def owner(self, key: str) -> Ownership:
        return Ownership(installation_id=self.installation_id, key=key, revision=self.revision)

    def adopts(self, key: str) -> bool:
        return self.adopt_all or key in self.adopt_keys


@dataclass(frozen=True, slots=True)
class AppliedState:
    """What we last wrote for one object: its Stripe id and the fields we set."""

    stripe_id: str | None
    fields: Mapping[str, Any]


@dataclass(slots=True)
class PlanBuilder:
    policy: PlanPolicy
    _steps: list[tuple[Phase, int, Step]] = field(default_factory=list)
    # What each queued step acts on (by queue position), for re-deriving an amended key.
    _befores: list[object] = field(default_factory=list)
    drift: list[DriftItem] = field(default_factory=list)
    orphans: list[Notice] = field(default_factory=list)
    adoptable: list[Notice] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    known_ids: dict[str, str] = field(default_factory=dict)
    _restores: list[Step] = field(default_factory=list)

    def restore(self, step: Step) -> None:
        """Queue a store-only record the store lost (see `Plan.restores`)."""
        self._restores.append(
            dataclasses.replace(
                step,
                idempotency_key=self._unspent(
                    digest(
                        self.policy.installation_id,
                        self.policy.key_salt,
                        "restore",
                        step.key,
                        canonical_json(step.params),
                    )
                ),
            )
        )

    def add(self, phase: Phase, step: Step, *, before: object = None) -> None:
        """Queue `step`, deriving its idempotency key from what it does and what it acts on.

        A key may replay only the write it was made for: a retry, or the same step after a
        crash (its journal row is not `done`, so the rerun derives the same key). The same
        write intended again after it completed (archive, reactivate, archive again within
        Stripe's 24 h key lifetime) must not reuse the spent key, or Stripe replays the first
        response and nothing happens; it takes the next key of the same derivation instead.
        """
        self._steps.append((phase, len(self._steps), self._keyed(phase, step, before)))
        self._befores.append(before)

    def merge_metadata(
        self, phase: Phase, key: str, metadata: Mapping[str, str], change: FieldChange
    ) -> bool:
        """Fold a metadata write into the queued `phase` step of `key`, if there is one (one
        request instead of two); False when there is none."""
        for position, (queued_phase, order, step) in enumerate(self._steps):
            if queued_phase is not phase or step.key != key:
                continue
            params = {**step.params, "metadata": {**step.params.get("metadata", {}), **metadata}}
            merged = dataclasses.replace(step, params=params, changes=(*step.changes, change))
            keyed = self._keyed(phase, merged, self._befores[order])
            self._steps[position] = (queued_phase, order, keyed)
            return True
        return False

    def _keyed(self, phase: Phase, step: Step, before: object) -> Step:
        intent = digest(
            self.policy.installation_id,
            self.policy.key_salt,
            step.action.value,
            step.key,
            canonical_json(step.params),
            step.stripe_id or "",
            canonical_json(_plain(before)),
        )
        return dataclasses.replace(step, idempotency_key=self._unspent(intent), batch=int(phase))

    def _unspent(self, intent: str) -> str:
        key, generation = intent, 0
        while key in self.policy.spent_keys:
            generation += 1
            key = digest(intent, f"generation {generation}")
        return key

    def record_drift(
        self, key: str, drift: tuple[FieldChange, ...], applied: Mapping[str, Any]
    ) -> None:
        for change in drift:
            top = change.path.split(".", 1)
            was = applied.get(top[0])
            if len(top) == 2 and isinstance(was, dict):
                was = was.get(top[1])
            self.drift.append(
                DriftItem(
                    key=key,
                    path=change.path,
                    applied=was,
                    live=change.before,
                    corrected=self.policy.correct_drift,
                )
            )

    def notice_adoptable(self, *, key: str, kind: Kind, stripe_id: str | None, why: str) -> None:
        self.adoptable.append(Notice(key=key, kind=kind, stripe_id=stripe_id, message=why))

    def notice_orphan(self, *, key: str, kind: Kind, stripe_id: str | None, why: str) -> None:
        self.orphans.append(Notice(key=key, kind=kind, stripe_id=stripe_id, message=why))

    def steps(self) -> tuple[Step, ...]:
        ordered = sorted(self._steps, key=lambda item: (item[0], item[2].key, item[1]))
        return tuple(step for _, _, step in ordered)

    def build(self, *, observed: Catalog) -> Plan:
        steps = self.steps()
        self._refuse_unresolvable(steps)
        return Plan(
            steps=steps,
            installation_id=self.policy.installation_id,
            desired_revision=self.policy.revision,
            fingerprint=fingerprint(observed),
            created_at=self.policy.now,
            drift=tuple(sorted(self.drift, key=lambda d: (d.key, d.path))),
            orphans=tuple(sorted(self.orphans, key=lambda n: n.key)),
            adoptable=tuple(sorted(self.adoptable, key=lambda n: n.key)),
            warnings=tuple(self.warnings),
            refusals=tuple(self.refusals),
            known_ids=dict(sorted(self.known_ids.items())),
            restores=tuple(sorted(self._restores, key=lambda s: s.key)),
        )

    def _refuse_unresolvable(self, steps: tuple[Step, ...]) -> None:
        """Refuse, before any write, a plan whose step refers to an object that will have no
        Stripe id when the step runs: one awaiting adoption, or one the plan cannot make.
        Found at apply time, it would stop the apply half-way."""
        resolvable = set(self.known_ids)
        awaiting = {notice.key: notice for notice in self.adoptable}
        for step in steps:
            refs = [*refs_in(step.params), *([step.parent] if step.parent else [])]
            for missing in dict.fromkeys(r.key for r in refs if r.key not in resolvable):
                self.refusals.append(_unresolvable(step, missing, awaiting.get(missing)))
            if step.action in _MAKES_AN_ID:
                resolvable.add(step.key)


_MAKES_AN_ID = frozenset({Action.CREATE, Action.SUPERSEDE, Action.REACTIVATE, Action.ADOPT})


def _unresolvable(step: Step, missing: str, adoptable: Notice | None) -> str:
    if adoptable is not None:
        return (
            f"{step.key} depends on {missing}, which awaits adoption ({adoptable.message}; "
            f"Stripe id {adoptable.stripe_id}): re-run with --adopt, or list {missing!r} under "
            "reconcile.adopt"
        )
    return (
        f"{step.key} depends on {missing}, which neither exists in Stripe nor is created by "
        "this plan"
    )


def _plain(value: object) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def fingerprint(observed: Catalog) -> str:
    """A digest of the observed state a plan was computed from (saved plans compare it).

    Records become nested tuples (mappings sorted by key, so Stripe's key order does not
    matter) whose `repr` is hashed: several times cheaper than JSON through `asdict`, which
    counts at 10,000 prices."""
    parts: list[str] = []
    for records in (
        observed.meters,
        observed.features,
        observed.products,
        observed.prices,
        observed.product_features,
        observed.plans,
    ):
        parts.append(repr(sorted(repr(_canonical(record)) for record in records)))
    return digest(*parts, length=24)


def _canonical(value: object) -> object:
    if value is None or isinstance(value, str | int):
        return value
    names = _field_names(type(value))
    if names is not None:
        return (type(value).__name__, *(_canonical(getattr(value, n)) for n in names))
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _canonical(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_canonical(v) for v in value)
    return value


_FIELD_NAMES: dict[type, tuple[str, ...] | None] = {}


def _field_names(cls: type) -> tuple[str, ...] | None:
    """The fields of a dataclass type, None for any other type (cached per type)."""
    if cls not in _FIELD_NAMES:
        is_record = dataclasses.is_dataclass(cls)
        _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls)) if is_record else None
    return _FIELD_NAMES[cls]

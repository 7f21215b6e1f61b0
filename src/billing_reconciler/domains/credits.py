"""The credits domain (DESIGN §14, §17): a composition of parts, each a small pure domain of
its own (meter events sent to Stripe, overdraft invoices, ...). Pure: all I/O is the readers'.

The ledger itself is written by the host API in the store (usages, grants, reverts); what the
domain reconciles is what Stripe must learn from it. Each part (`CreditPart`) states its step
kinds, its desired and observed records and its rules; `CreditsDomain` is the `Domain` the
registry runs, and its kinds, desired, observed and plan are the union of its parts':
- `desired` / `observe`: one value per part, by part name (`CreditsDesired`,
  `CreditsObserved`); each part observes through its own reader, which the domain's reader
  hands out by part name (`CreditsReader.part`);
- `plan`: the parts' steps in `CREDIT_PARTS` order, their notices, warnings and restores
  joined into one `Plan`;
- `scope_of`, `event_routes`, `refresh_seconds`: the first part that claims a key, every
  part's routes, the shortest non-zero interval of the parts.

Adding a part (see `/tmp/h/credits_parts.md` for the contract): a module
`domains/credit_<part>.py` with a class implementing `CreditPart`, one entry in
`CREDIT_PARTS`, its reader and executors in `effects/credit_<part>.py`, one entry in
`effects.credits.PARTS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from billing_reconciler.desired.state import DesiredState
from billing_reconciler.domains.base import PlanContext
from billing_reconciler.domains.credit_meters import MeterPart
from billing_reconciler.domains.credit_overdraft import OverdraftPart
from billing_reconciler.domains.credit_parts import CreditPart, PartPlan
from billing_reconciler.model_customers import org_id_of_key
from billing_reconciler.planning.plan import Plan, digest

NAME: Final = "credits"

__all__ = [
    "CREDIT_PARTS",
    "NAME",
    "CreditPart",
    "CreditsDesired",
    "CreditsDomain",
    "CreditsObserved",
    "CreditsReader",
    "PartPlan",
]


class CreditsReader(Protocol):
    """What the domain reads: each part's reader, by part name (`effects.credits`)."""

    def part(self, name: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class CreditsDesired:
    by_part: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CreditsObserved:
    by_part: Mapping[str, Any] = field(default_factory=dict)


#: The parts, in the order their steps are planned and applied.
CREDIT_PARTS: tuple[CreditPart, ...] = (MeterPart(), OverdraftPart())


class CreditsDomain:
    """See the module docstring."""

    name: Final = NAME
    #: Its plan is a fleet: identical changes are grouped when rendered (DESIGN §14).
    fleet: Final = True

    def __init__(self, parts: tuple[CreditPart, ...] = CREDIT_PARTS) -> None:
        self.parts = parts
        kinds: set[str] = set()
        for part in parts:
            if kinds & part.kinds:
                raise ValueError(f"credit part {part.name!r} plans a kind another part plans")
            kinds |= part.kinds
        self.kinds = frozenset(kinds)
        self.event_routes = tuple(route for part in parts for route in part.event_routes)

    def refresh_seconds(self, state: DesiredState) -> int:
        intervals = [s for part in self.parts if (s := part.refresh_seconds(state)) > 0]
        return min(intervals, default=0)

    def desired(self, state: DesiredState, context: PlanContext) -> CreditsDesired:
        return CreditsDesired({p.name: p.desired(state, context) for p in self.parts})

    def observe(
        self, reader: CreditsReader, desired: CreditsDesired, context: PlanContext
    ) -> CreditsObserved:
        return CreditsObserved(
            {
                p.name: p.observe(reader.part(p.name), desired.by_part[p.name], context)
                for p in self.parts
            }
        )

    def plan(
        self, desired: CreditsDesired, observed: CreditsObserved, context: PlanContext
    ) -> Plan:
        planned = [
            part.plan(desired.by_part[part.name], observed.by_part[part.name], context)
            for part in self.parts
        ]
        return Plan(
            steps=tuple(s for p in planned for s in p.steps),
            installation_id=context.installation_id,
            desired_revision=context.state.revision,
            fingerprint=digest(*(p.fingerprint for p in planned)),
            created_at=context.now,
            notices=tuple(n for p in planned for n in p.notices),
            warnings=tuple(w for p in planned for w in p.warnings),
            restores=tuple(r for p in planned for r in p.restores),
            info=tuple(line for p in planned for line in p.info),
        )

    def annotate(self, plan: Plan, reader: CreditsReader) -> Plan:
        del reader
        return plan

    def desired_fields(self, desired: CreditsDesired) -> dict[str, dict[str, Any]]:
        del desired
        return {}

    def scope_of(self, key: str) -> str | None:
        # A request key of its own: the API's and webhooks' `customer/<org_id>` requests
        # reconcile every fleet domain whose scope includes the key (runtime.api_request).
        if org_id_of_key(key) is not None:
            return key
        for part in self.parts:
            if (scope := part.scope_of(key)) is not None:
                return scope
        return None

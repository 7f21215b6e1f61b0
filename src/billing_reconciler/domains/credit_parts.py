"""The shape of a part of the credits domain (`domains.credits`): `CreditPart`, the small
pure domain a part is, and `PartPlan`, what its rules return. Apart from `domains.credits` so
a part's module imports it without importing the composition that lists the parts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from billing_reconciler.desired.state import DesiredState
from billing_reconciler.domains.base import PlanContext
from billing_reconciler.domains.event_routes import EventRoute
from billing_reconciler.planning.plan import Notice, Step

__all__ = ["CreditPart", "PartPlan"]


@dataclass(frozen=True, slots=True)
class PartPlan:
    """What one part's rules decided: its steps (in order), per-object notices (waits,
    refusals, the outbox's depth), plan warnings, store-only restores, a fingerprint of what
    it observed, `facts`: short domain-agnostic lines for `reconcile status`, and `info`:
    plain informational lines of the plan (`Plan.info`: the outbox's depth)."""

    steps: tuple[Step, ...] = ()
    notices: tuple[Notice, ...] = ()
    warnings: tuple[str, ...] = ()
    restores: tuple[Step, ...] = ()
    fingerprint: str = ""
    facts: tuple[str, ...] = ()
    info: tuple[str, ...] = ()


class CreditPart(Protocol):
    """One part of the credits domain: a pure domain without a registration of its own."""

    @property
    def name(self) -> str: ...

    @property
    def kinds(self) -> frozenset[str]: ...

    @property
    def event_routes(self) -> tuple[EventRoute, ...]: ...

    def refresh_seconds(self, state: DesiredState) -> int:
        """How often `serve` should run the part (0: the part has no schedule of its own)."""
        ...

    def desired(self, state: DesiredState, context: PlanContext) -> Any: ...

    def observe(self, reader: Any, desired: Any, context: PlanContext) -> Any:
        """Through the part's own reader (`CreditsReader.part(name)`)."""
        ...

    def plan(self, desired: Any, observed: Any, context: PlanContext) -> PartPlan: ...

    def scope_of(self, key: str) -> str | None:
        """`customer/<org_id>` for a key of this part's steps, None for any other key."""
        ...

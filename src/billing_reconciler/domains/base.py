"""The protocol every billing domain implements (DESIGN §14, STYLE 15): pure, one shape.

A domain is catalog, customers, subscriptions, ...: one part of billing with its own desired
records, observed records and rules. The shared machinery (controller, applier, journal, run
table, queue, status, metrics) runs every domain through this protocol alone and never spells
a domain's name; the registry lists the domains in apply order.

What a domain states (all of it pure; no store, no gateway, no SQL or Stripe import):
- `name`: its name in the run table, metrics, status, requests and the plan's sections;
- `kinds`: the step kinds its plans contain (the applier finds an executor for each);
- `refresh_seconds(state)`: how often `serve` reconciles all of it (0: schedule disabled);
- `desired(state, context)`: its desired records, from validated `desired/`;
- `observe(reader, desired, context)`: its observed records. The domain says *what* to read
  by calling a reader it declares as a `Protocol`; the edge (`effects/<domain>.py`) implements
  that reader over the gateway and the store, so all I/O stays outside this package;
- `plan(desired, observed, context)`: the pure rules, returning the ordered `Plan`;
- `annotate(plan, reader)`: read-only facts added to steps after planning (impact), or the
  plan unchanged;
- `desired_fields(desired)`: per object key, the fields apply records as last applied;
- `scope_of(key)`: the request key (`product/<name>`, `customer/<org_id>`) an object key
  belongs to, or None; a targeted request keeps only the steps whose `scope_of` is in scope;
- `event_routes`: the Stripe event types (or prefixes) it reconciles on, each with the pure
  function naming the request keys an event's object asks for (`domains.event_routes`).

Optional, read by the controller when a domain has them (DESIGN §14, fleet changes):
- `future_only_settings: tuple[str, ...]`: dotted `billing.yaml` paths
  (`billing.plan_change.proration_behavior`) that apply only to future events; a change of
  one since the last apply is stated on the plan (`Plan.future_only`), nothing rewritten.
- `fleet_settings: tuple[str, ...]`: dotted paths (`billing.stripe_auto_tax`) whose change
  rewrites live objects (steps with `Step.causes`). Only a whole-domain plan applies such a
  rewrite: a targeted plan is made with the values a whole-domain pass last put in force
  (the desired ones until one did), and a whole plan states a changed one that no step
  follows from like a future-only setting.
- `guarded_settings: frozenset[str]`: those of the fleet settings whose rewrites the
  mass-change guard counts (a whole plan marks their steps `Step.mass_change`); a targeted
  plan holds back a step they cause, for the whole-domain pass.
Facts a domain states on its plan for the shared renderers and guards: `Step.causes` (the
settings a fleet rewrite follows from: grouped and printed), `Step.mass_change` with
`Plan.population` (the mass-change guard), `Plan.notices` (per-object refusals and waits).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from billing_reconciler.desired.state import DesiredState
from billing_reconciler.domains.event_routes import EventRoute
from billing_reconciler.planning.builder import AppliedState
from billing_reconciler.planning.plan import Plan


@dataclass(frozen=True, slots=True)
class PlanOptions:
    adopt_all: bool = False
    allow_mass_archive: bool = False
    # Allow cancelling, downgrading or repricing more than
    # `reconcile.max_fleet_change_fraction` of a domain's live objects (`--allow-mass-change`).
    allow_mass_change: bool = False
    # Request keys a targeted (webhook-triggered) reconcile is limited to; None = everything.
    scope: frozenset[str] | None = None
    # Plan with the fleet settings in force, as a targeted plan does, and hold back the
    # rewrites of the guarded ones: a whole-domain pass of everything but a fleet rewrite the
    # mass-change guard refused (`serve`: the rest of the fleet's work is not held up by it).
    fleet_in_force: bool = False


@dataclass(frozen=True, slots=True)
class PlanContext:
    """Everything a domain's rules may read beside its desired and observed records."""

    state: DesiredState
    options: PlanOptions
    # What we last applied, per object key of this domain (the third side of the diff).
    applied: Mapping[str, AppliedState]
    # Keys of steps completed within Stripe's idempotency window: never given to new writes.
    spent_keys: frozenset[str]
    # The store's identity, salting every idempotency key.
    key_salt: str
    now: int
    # Of `spent_keys`, those whose step Stripe refused (applied nothing): a whole-domain pass
    # may leave a refused create alone until its input changes rather than retry it blindly.
    refused_keys: frozenset[str] = frozenset()

    @property
    def installation_id(self) -> str:
        return self.state.config.reconcile.installation_id


class Domain(Protocol):
    """See the module docstring. Desired and observed values are the domain's own types."""

    @property
    def name(self) -> str: ...

    @property
    def kinds(self) -> frozenset[str]: ...

    def refresh_seconds(self, state: DesiredState) -> int: ...

    def desired(self, state: DesiredState, context: PlanContext) -> Any: ...

    def observe(self, reader: Any, desired: Any, context: PlanContext) -> Any: ...

    def plan(self, desired: Any, observed: Any, context: PlanContext) -> Plan: ...

    def annotate(self, plan: Plan, reader: Any) -> Plan: ...

    def desired_fields(self, desired: Any) -> Mapping[str, Mapping[str, Any]]: ...

    def scope_of(self, key: str) -> str | None: ...

    @property
    def event_routes(self) -> tuple[EventRoute, ...]: ...

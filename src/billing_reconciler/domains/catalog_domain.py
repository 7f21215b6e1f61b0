"""The catalog as a `Domain`: meters, features, products, prices, attachments, plan records.

The catalog's rules are `planning.diff`; its desired records come from `domains.catalog`. It
reads through a `CatalogReader` (implemented over the gateway and the store by
`effects.catalog`): the live catalog (attachments listed only for the products the planner
picks, so observation stays at ceil(N/100) calls per type), the plan records of the store, and
the usage of each price a step retires: how many live subscriptions of ours bill it and their
monthly revenue per currency (`domains.price_impact`; the edge reads the store's mirror of the
subscriptions, never Stripe), stated on the step with what `reconcile.price_migration` does
with them (the subscriptions domain plans the moves).
Targeted requests name products (`product/<name>`); a product's prices and attachments belong
to it.

A new or lost store meets a Stripe that may already match desired/: the diff then plans no
step, so apply would record nothing as last applied, and the third side of the diff (drift
detection) and the host API's catalog reads would stay empty for good. Every object of ours
that is live, equal to desired and without a last-applied record is therefore planned as a
*restore* of kind `RECORD_KIND`: its last-applied state is written to the store by the next
apply, nothing is sent to Stripe, and a dry run still says "No changes." (a restore is not a
change; the plan lists it among the store records to write).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, Final, Protocol

from billing_reconciler.desired.state import DesiredState
from billing_reconciler.domains.base import PlanContext
from billing_reconciler.domains.catalog import desired_catalog
from billing_reconciler.domains.catalog_events import CATALOG_ROUTES
from billing_reconciler.domains.price_impact import PriceUsage, price_impact, render_impact
from billing_reconciler.model import (
    Catalog,
    CatalogRecord,
    FeatureRecord,
    Kind,
    MeterRecord,
    PlanRecord,
    PriceRecord,
    ProductFeatureRecord,
    ProductRecord,
    object_key,
)
from billing_reconciler.planning.builder import PlanPolicy
from billing_reconciler.planning.diff import diff
from billing_reconciler.planning.fields import comparable_fields, three_way
from billing_reconciler.planning.plan import Action, Plan, Reason, Step, canonical_json, digest
from billing_reconciler.planning.rules.attachments import (
    products_to_list,
    record_in_sync,
    wanted_features,
)
from billing_reconciler.planning.scope import product_of

NAME: Final = "catalog"
# The step kind of a restore that records an object's last-applied state (store only).
RECORD_KIND: Final = "last_applied"


class CatalogReader(Protocol):
    """What the catalog reads; `effects.catalog.CatalogIO` implements it."""

    def live_catalog(
        self, *, products_with_features: Callable[[Sequence[ProductRecord]], Iterable[str]]
    ) -> Catalog: ...

    def plan_records(self) -> tuple[PlanRecord, ...]: ...

    def price_usage(
        self, price_ids: Sequence[str], *, installation_id: str
    ) -> Mapping[str, PriceUsage]:
        """The live subscriptions of ours on each of `price_ids` (a price none bills is
        left out)."""
        ...


class CatalogDomain:
    """See the module docstring."""

    name: Final = NAME
    kinds: Final = frozenset(kind.value for kind in Kind) | {RECORD_KIND}
    event_routes: Final = CATALOG_ROUTES

    def refresh_seconds(self, state: DesiredState) -> int:
        return int(state.config.billing.refresh_interval.catalog)

    def desired(self, state: DesiredState, context: PlanContext) -> Catalog:
        return desired_catalog(state, installation_id=context.installation_id)

    def observe(self, reader: CatalogReader, desired: Catalog, context: PlanContext) -> Catalog:
        observed = reader.live_catalog(
            products_with_features=_attachments_to_list(desired, context)
        )
        return replace(observed, plans=reader.plan_records())

    def plan(self, desired: Catalog, observed: Catalog, context: PlanContext) -> Plan:
        plan = diff(desired, observed, context.applied, _policy(context))
        plan = _with_migration_policy(plan, context.state.config.reconcile.price_migration)
        records = in_sync_records(desired, observed, plan, context)
        if not records:
            return plan
        restores = sorted((*plan.restores, *records), key=lambda step: step.key)
        return replace(plan, restores=tuple(restores))

    def annotate(self, plan: Plan, reader: CatalogReader) -> Plan:
        """State how many live subscriptions (and how much monthly revenue) sit on each price a
        step supersedes or archives; a price none bills gets no impact line."""
        retiring = [s.stripe_id for s in plan.steps if _retires(s) and s.stripe_id]
        usage = (
            reader.price_usage(sorted(set(retiring)), installation_id=plan.installation_id)
            if retiring
            else {}
        )
        return replace(plan, steps=tuple(_with_impact(step, usage) for step in plan.steps))

    def desired_fields(self, desired: Catalog) -> dict[str, dict[str, Any]]:
        records: tuple[CatalogRecord, ...] = (
            *desired.meters,
            *desired.features,
            *desired.products,
            *desired.prices,
            *desired.product_features,
            *desired.plans,
        )
        return {record.key: comparable_fields(record) for record in records}

    def scope_of(self, key: str) -> str | None:
        return product_of(key)


def _attachments_to_list(
    desired: Catalog, context: PlanContext
) -> Callable[[Sequence[ProductRecord]], list[str]]:
    """The live products whose attachments observation lists (the attachment rule's choice)."""
    return functools.partial(
        products_to_list,
        desired,
        applied_keys=context.applied,
        installation_id=context.installation_id,
        verify=context.state.config.reconcile.verify_attachments,
    )


_Live = MeterRecord | FeatureRecord | ProductRecord | PriceRecord | ProductFeatureRecord


def in_sync_records(
    desired: Catalog, observed: Catalog, plan: Plan, context: PlanContext
) -> tuple[Step, ...]:
    """Restores recording the last-applied state of our live objects that already equal
    desired but have none (a new or lost store): see the module docstring.

    An object qualifies when it is ours (our installation's marker; a meter: billed by a live
    price of ours; an attachment: on a product of ours), live and active, the only such object
    of its key, untouched by the plan (no step, drift or restore of it), and equal to desired
    field by field. Its record holds what apply records after writing it: the desired fields.
    """
    touched = {s.key for s in (*plan.steps, *plan.restores)} | {d.key for d in plan.drift}
    live: dict[str, list[_Live]] = {}
    for ours in _ours(desired, observed, context):
        live.setdefault(ours.key, []).append(ours)
    wanted: tuple[_Live, ...] = (
        *desired.meters,
        *desired.features,
        *desired.products,
        *desired.prices,
        *desired.product_features,
    )
    steps: list[Step] = []
    for record in wanted:
        found = live.get(record.key, [])
        if record.key in context.applied or record.key in touched or len(found) != 1:
            continue
        fields = comparable_fields(record)
        if not three_way(fields, comparable_fields(found[0]), None).empty:
            continue
        steps.append(_record_step(record.key, found[0].stripe_id, fields, context))
    return tuple(steps)


def _ours(desired: Catalog, observed: Catalog, context: PlanContext) -> list[_Live]:
    candidates: list[FeatureRecord | ProductRecord | PriceRecord] = [
        *observed.features,
        *observed.products,
        *observed.prices,
    ]
    marked = [
        record
        for record in candidates
        if record.active
        and record.owner is not None
        and record.owner.installation_id == context.installation_id
    ]
    meters = {
        record.recurring.meter_key
        for record in marked
        if isinstance(record, PriceRecord) and record.recurring and record.recurring.meter_key
    }
    products = [record for record in marked if isinstance(record, ProductRecord)]
    return [
        *(meter for meter in observed.meters if meter.active and meter.key in meters),
        *marked,
        *_our_attachments(desired, observed, products, context),
    ]


def _our_attachments(
    desired: Catalog,
    observed: Catalog,
    products: Sequence[ProductRecord],
    context: PlanContext,
) -> Iterator[ProductFeatureRecord]:
    """The attachments of our products: as listed, for the products observation listed; as
    their `br_features` record says, for the others (the attachment rule trusts a record that
    matches desired; see `planning.rules.attachments`). Taken from the record, an attachment's
    own Stripe id is unknown: nothing needs it (a detach goes by the listed id)."""
    listed = set(_attachments_to_list(desired, context)(observed.products))
    wanted = wanted_features(desired)
    for product in products:
        if product.stripe_id in listed:
            yield from (a for a in observed.product_features if a.product_key == product.key)
            continue
        features = wanted.get(product.key)
        if features and record_in_sync(product, features, None):
            for feature_key in sorted(features):
                yield ProductFeatureRecord(
                    key=object_key(
                        Kind.PRODUCT_FEATURE,
                        product.key.split("/", 1)[1],
                        feature_key.split("/", 1)[1],
                    ),
                    product_key=product.key,
                    feature_key=feature_key,
                    product_stripe_id=product.stripe_id,
                )


def _record_step(
    key: str, stripe_id: str | None, fields: Mapping[str, Any], context: PlanContext
) -> Step:
    # Store-only, so nothing is replayed by Stripe; still a key no done step has spent, as the
    # journal keys every step by it.
    intent = digest(context.installation_id, context.key_salt, RECORD_KIND, key)
    idempotency_key, generation = intent, 0
    while idempotency_key in context.spent_keys:
        generation += 1
        idempotency_key = digest(intent, f"generation {generation}")
    return Step(
        action=Action.CREATE,
        kind=RECORD_KIND,
        key=key,
        reason=Reason.STORE_LOST,
        params={"object": key.split("/", 1)[0], "fields_hash": digest(canonical_json(fields))},
        stripe_id=stripe_id,
        idempotency_key=idempotency_key,
    )


def _policy(context: PlanContext) -> PlanPolicy:
    settings = context.state.config.reconcile
    return PlanPolicy(
        installation_id=settings.installation_id,
        revision=context.state.revision,
        prune=settings.prune,
        max_archive_fraction=float(settings.max_archive_fraction),
        correct_drift=settings.drift == "correct",
        adopt_all=context.options.adopt_all,
        adopt_keys=frozenset(settings.adopt),
        allow_mass_archive=context.options.allow_mass_archive,
        now=context.now,
        verify_attachments=settings.verify_attachments,
        spent_keys=context.spent_keys,
        key_salt=context.key_salt,
    )


#: `Step.impact` of a retiring price between `plan` and `annotate`: the policy, by which
#: `annotate` renders the usage it reads.
_POLICY_PREFIX: Final = "price_migration="


def _retires(step: Step) -> bool:
    return step.kind == Kind.PRICE and step.action in (Action.SUPERSEDE, Action.ARCHIVE)


def _with_migration_policy(plan: Plan, policy: str) -> Plan:
    """Each retiring price step remembers the policy (and whether a successor price exists)
    for `annotate`. The archive that completes a supersede is not stated twice."""
    superseded = {s.stripe_id for s in plan.steps if s.action is Action.SUPERSEDE}
    steps = []
    for step in plan.steps:
        if _retires(step) and not (step.action is Action.ARCHIVE and step.stripe_id in superseded):
            successor = step.action is Action.SUPERSEDE or step.reason is Reason.SUPERSEDED
            step = replace(step, impact=f"{_POLICY_PREFIX}{policy}:{int(successor)}")
        steps.append(step)
    return replace(plan, steps=tuple(steps))


def _with_impact(step: Step, usage: Mapping[str, PriceUsage]) -> Step:
    if not (step.impact or "").startswith(_POLICY_PREFIX):
        return step
    policy, _, successor = (step.impact or "").removeprefix(_POLICY_PREFIX).partition(":")
    found = usage.get(step.stripe_id or "")
    if found is None or not found.subscriptions:
        return replace(step, impact=None)
    text = render_impact(
        price_impact(found),
        price_id=step.stripe_id or "",
        policy=policy,
        superseded=successor == "1",
    )
    return replace(step, impact=text)

"""`diff(desired, observed, applied, policy) -> Plan`: the pure heart of the reconciler.

Rules (DESIGN §4, §5):
- we act only on objects marked with our installation id (meters, which carry no metadata, are
  ours when our inventory holds their id); unmarked look-alikes are adoptable, never modified
  without `--adopt`; objects of another installation are never touched;
- a price's immutable fields change by superseding: create the new price (taking over the lookup
  key), repoint the product's default price, archive the old one — in that order;
- an archived price whose fields match the desired ones again is reactivated, not duplicated;
- removal from YAML archives only with `prune`; otherwise the object is reported as an orphan;
  `protect` objects are never archived or superseded; a mass archive is refused.
"""

from __future__ import annotations

from collections.abc import Mapping

from billing_reconciler.model import (
    Catalog,
    FeatureRecord,
    PriceRecord,
    ProductRecord,
)
from billing_reconciler.planning.builder import AppliedState, PlanBuilder, PlanPolicy
from billing_reconciler.planning.plan import Action, Plan, Reason
from billing_reconciler.planning.rules.attachments import plan_product_features
from billing_reconciler.planning.rules.features import plan_features
from billing_reconciler.planning.rules.meters import plan_meters
from billing_reconciler.planning.rules.plans import plan_plans
from billing_reconciler.planning.rules.prices import plan_prices
from billing_reconciler.planning.rules.products import plan_products

__all__ = ["AppliedState", "PlanPolicy", "diff"]


def diff(
    desired: Catalog,
    observed: Catalog,
    applied: Mapping[str, AppliedState],
    policy: PlanPolicy,
) -> Plan:
    """Compare desired with observed (and what we last applied) and return the ordered Plan."""
    builder = PlanBuilder(policy)
    plan_meters(builder, desired.meters, observed, applied)
    plan_features(builder, desired.features, observed.features, applied)
    products = plan_products(builder, desired.products, observed.products, applied)
    plan_prices(builder, desired, observed, applied, products)
    plan_product_features(builder, desired, observed, applied)
    plan_plans(builder, desired.plans, observed.plans, observed.products)
    _guard_mass_archive(builder, observed, applied)
    _notice_blind_drift(builder, observed, applied)
    return builder.build(observed=observed)


def _notice_blind_drift(
    builder: PlanBuilder, observed: Catalog, applied: Mapping[str, AppliedState]
) -> None:
    """Stripe's metadata is the inventory, so a new or lost store plans the same steps; only
    the third side of the diff is missing, and the reader should know."""
    if applied:
        return
    installation = builder.policy.installation_id
    records: list[FeatureRecord | ProductRecord | PriceRecord] = [
        *observed.features,
        *observed.products,
        *observed.prices,
    ]
    managed = sum(1 for r in records if r.owner and r.owner.installation_id == installation)
    if managed:
        builder.warnings.append(
            f"the store holds no last-applied state for the {managed} managed objects in "
            "Stripe (a new or lost store): a live value that differs from desired is planned as "
            "a desired change, since drift cannot be told apart from it"
        )


# --- the mass-archive guard ----------------------------------------------------------------


def _guard_mass_archive(
    builder: PlanBuilder, observed: Catalog, applied: Mapping[str, AppliedState]
) -> None:
    removals = [
        step
        for step in builder.steps()
        if step.action is Action.ARCHIVE and step.reason is Reason.REMOVED_FROM_DESIRED
    ]
    if not removals or builder.policy.allow_mass_archive:
        return
    managed = _managed_count(builder, observed, applied)
    fraction = len(removals) / max(managed, 1)
    if len(removals) == managed:
        builder.refusals.append(
            f"the plan would archive every managed object ({managed}); the desired state may be "
            "empty by mistake. Re-run with --allow-mass-archive if this is intended"
        )
    elif fraction > builder.policy.max_archive_fraction:
        builder.refusals.append(
            f"the plan would archive {len(removals)} of {managed} managed objects "
            f"({fraction:.0%} > reconcile.max_archive_fraction "
            f"{builder.policy.max_archive_fraction:.0%}). Re-run with --allow-mass-archive "
            "if this is intended"
        )


def _managed_count(
    builder: PlanBuilder, observed: Catalog, applied: Mapping[str, AppliedState]
) -> int:
    installation = builder.policy.installation_id
    records: list[FeatureRecord | ProductRecord | PriceRecord] = [
        *observed.features,
        *observed.products,
        *observed.prices,
    ]
    marked = [
        r
        for r in records
        if r.active and r.owner is not None and r.owner.installation_id == installation
    ]
    meters = [m for m in observed.meters if m.active and m.key in applied]
    plans = [plan for plan in observed.plans if plan.active]
    return len(marked) + len(meters) + len(plans)

"""Entitlements features: archived features stay archived; a new one takes their place."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from billing_reconciler.model import (
    FeatureRecord,
    Kind,
)
from billing_reconciler.planning import params as p
from billing_reconciler.planning.builder import AppliedState, Phase, PlanBuilder
from billing_reconciler.planning.fields import (
    comparable_fields,
)
from billing_reconciler.planning.plan import Action, Reason, Step
from billing_reconciler.planning.rules.common import (
    adopt,
    applied_fields,
    ours_by_key,
    remove_unwanted,
    update_simple,
)

# --- features ------------------------------------------------------------------------------


def plan_features(
    builder: PlanBuilder,
    desired: Sequence[FeatureRecord],
    observed: Sequence[FeatureRecord],
    applied: Mapping[str, AppliedState],
) -> None:
    ours = ours_by_key(builder, observed)
    unmarked = {f.lookup_key: f for f in observed if f.owner is None and f.active}
    for feature in desired:
        # Stripe never unarchives a feature: an archived one is history, and a new feature
        # (its lookup key is free again) takes its place.
        live = next((f for f in ours.get(feature.key, []) if f.active), None)
        if live is None:
            _create_or_adopt_feature(builder, feature, unmarked.get(feature.lookup_key))
            continue
        assert live.stripe_id is not None
        builder.known_ids[feature.key] = live.stripe_id
        update_simple(
            builder,
            phase=Phase.FEATURES,
            kind=Kind.FEATURE,
            desired=comparable_fields(feature),
            live_record=live,
            applied=applied_fields(applied, feature.key),
            renames={"title": "name"},
        )
    remove_unwanted(builder, ours, {f.key for f in desired}, Kind.FEATURE, Phase.ARCHIVE_FEATURES)


def _create_or_adopt_feature(
    builder: PlanBuilder, feature: FeatureRecord, match: FeatureRecord | None
) -> None:
    if match is None:
        builder.add(
            Phase.FEATURES,
            Step(
                Action.CREATE,
                Kind.FEATURE,
                feature.key,
                Reason.NEW,
                p.feature_create_params(feature, builder.policy.owner(feature.key)),
            ),
        )
        return
    adopt(
        builder,
        Phase.FEATURES,
        Kind.FEATURE,
        feature.key,
        match,
        comparable_fields(feature),
        {"title": "name"},
    )

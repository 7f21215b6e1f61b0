"""Feature attachments of products: attach what is desired, detach only what we attached."""

from __future__ import annotations

from collections.abc import Mapping

from billing_reconciler.model import (
    Catalog,
    Kind,
    ProductFeatureRecord,
)
from billing_reconciler.planning.builder import AppliedState, Phase, PlanBuilder
from billing_reconciler.planning.plan import Action, FieldChange, Reason, Ref, Step
from billing_reconciler.planning.rules.common import (
    previous_id,
)

# --- product features ----------------------------------------------------------------------


def plan_product_features(
    builder: PlanBuilder,
    desired: Catalog,
    observed: Catalog,
    applied: Mapping[str, AppliedState],
) -> None:
    live_by_key: dict[str, ProductFeatureRecord] = {pf.key: pf for pf in observed.product_features}
    wanted = {pf.key for pf in desired.product_features}
    for attachment in desired.product_features:
        if attachment.key in live_by_key:
            continue
        builder.add(
            Phase.ATTACH,
            Step(
                Action.CREATE,
                Kind.PRODUCT_FEATURE,
                attachment.key,
                Reason.NEW,
                {"entitlement_feature": Ref(attachment.feature_key)},
                (FieldChange("feature", None, attachment.feature_key),),
                parent=Ref(attachment.product_key),
            ),
            before=previous_id(applied, attachment.key),
        )
    desired_products = {prod.key for prod in desired.products}
    for key, live in sorted(live_by_key.items()):
        # Only attachments we made, on products still desired: the rest are someone else's.
        if key in wanted or key not in applied or live.product_key not in desired_products:
            continue
        builder.add(
            Phase.DETACH,
            Step(
                Action.ARCHIVE,
                Kind.PRODUCT_FEATURE,
                key,
                Reason.REMOVED_FROM_DESIRED,
                {},
                (FieldChange("feature", live.feature_key, None),),
                stripe_id=live.stripe_id,
                parent=Ref(live.product_key),
            ),
        )

"""Feature attachments of products: attach what is desired, detach only what we attached.

Stripe is the inventory (issue 8): each product we manage records the features we attached in
its `br_features` metadata, written after its attachments changed. Observation lists a
product's attachments (`/v1/products/{id}/features`, one call) only when that record may
differ from the truth: it differs from the desired set, it is absent or unreadable, or the
store's last-applied attachments disagree. Otherwise the attachments are taken as recorded,
which keeps a no-op plan at ceil(N/100) list calls per type. The cost: an attachment removed
in the dashboard alone (the product's metadata untouched) goes unseen until the product's
features change again, or until a plan with `reconcile.verify_attachments: true` lists them
all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from billing_reconciler.model import (
    META_FEATURES,
    NO_FEATURES,
    Catalog,
    Kind,
    ProductFeatureRecord,
    ProductRecord,
    features_inventory,
    object_key,
    recorded_features,
)
from billing_reconciler.planning.builder import AppliedState, Phase, PlanBuilder
from billing_reconciler.planning.plan import Action, FieldChange, Reason, Ref, Step
from billing_reconciler.planning.rules.common import previous_id

_PF_PREFIX = Kind.PRODUCT_FEATURE.value + "/"


def wanted_features(desired: Catalog) -> dict[str, frozenset[str]]:
    """Desired feature keys per desired product key (every desired product, even featureless)."""
    wanted: dict[str, set[str]] = {product.key: set() for product in desired.products}
    for attachment in desired.product_features:
        wanted.setdefault(attachment.product_key, set()).add(attachment.feature_key)
    return {key: frozenset(features) for key, features in wanted.items()}


def applied_features(applied_keys: Iterable[str]) -> dict[str, frozenset[str]]:
    """Feature keys per product key among the attachments the store says we applied."""
    found: dict[str, set[str]] = defaultdict(set)
    for key in applied_keys:
        if key.startswith(_PF_PREFIX):
            product, feature = key[len(_PF_PREFIX) :].split("/", 1)
            found[object_key(Kind.PRODUCT, product)].add(object_key(Kind.FEATURE, feature))
    return {key: frozenset(features) for key, features in found.items()}


def record_in_sync(
    product: ProductRecord, wanted: frozenset[str], applied: frozenset[str] | None
) -> bool:
    """Whether the product's `br_features` record can stand for its live attachments.

    `applied` is the store's view (None when the store holds no last-applied state at all):
    after a crash between an attachment and the record, the store knows better."""
    if product.features_record != features_inventory(wanted):
        return False
    return applied is None or applied == wanted


def products_to_list(
    desired: Catalog,
    live_products: Iterable[ProductRecord],
    applied_keys: Iterable[str],
    *,
    installation_id: str,
    verify: bool = False,
) -> list[str]:
    """Stripe ids of the live products whose attachments observation must list (`verify`:
    every desired product of ours, record or not)."""
    wanted = wanted_features(desired)
    applied = _store_view(applied_keys)
    titles = {p.title.lower(): p.key for p in desired.products if wanted.get(p.key)}
    ids: list[str] = []
    for product in live_products:
        owner = product.owner
        if owner is not None and owner.installation_id == installation_id:
            if owner.key in wanted and (
                verify or not record_in_sync(product, wanted[owner.key], _for(applied, owner.key))
            ):
                ids.append(product.stripe_id or "")
        elif owner is None and product.active and product.title.lower() in titles:
            # A look-alike that may be adopted: its existing attachments must be known.
            ids.append(product.stripe_id or "")
    return [i for i in ids if i]


def _store_view(applied_keys: Iterable[str]) -> dict[str, frozenset[str]] | None:
    keys = list(applied_keys)
    return applied_features(keys) if keys else None


def _for(view: dict[str, frozenset[str]] | None, product_key: str) -> frozenset[str] | None:
    return None if view is None else view.get(product_key, frozenset())


# --- the rule --------------------------------------------------------------------------------


def plan_product_features(
    builder: PlanBuilder,
    desired: Catalog,
    observed: Catalog,
    applied: Mapping[str, AppliedState],
) -> None:
    wanted = wanted_features(desired)
    store = _store_view(applied)
    live_products = _ours(builder, observed.products)
    # By the product's Stripe id: a look-alike being adopted has no key of ours yet.
    live_by_product: dict[str, dict[str, ProductFeatureRecord]] = defaultdict(dict)
    for pf in observed.product_features:
        live_by_product[pf.product_stripe_id or ""][pf.feature_key] = pf
    for product_key, features in sorted(wanted.items()):
        live = live_products.get(product_key)
        trusted = not builder.policy.verify_attachments
        if trusted and live and record_in_sync(live, features, _for(store, product_key)):
            continue
        product_id = live.stripe_id if live else builder.known_ids.get(product_key)
        attached = live_by_product.get(product_id or "", {})
        ours = recorded_features(live.features_record) if live else None
        _attach(builder, product_key, features, attached, applied)
        _detach(builder, product_key, features, attached, applied, ours or frozenset())
        # Written after the attachments change (a later phase), so a record that matches the
        # desired set never claims attachments that are not there.
        recorded = _recorded(builder, product_key, live)
        if recorded != features_inventory(features):
            _record(builder, product_key, live, recorded, features_inventory(features))


def _recorded(builder: PlanBuilder, product_key: str, live: ProductRecord | None) -> str | None:
    """The product's `br_features` once this plan's earlier steps ran: a product it creates
    starts with an empty record; one it adopts (a known id, not yet ours) has none."""
    if live is not None:
        return live.features_record
    return None if product_key in builder.known_ids else NO_FEATURES


def _ours(builder: PlanBuilder, products: Iterable[ProductRecord]) -> dict[str, ProductRecord]:
    mine: dict[str, ProductRecord] = {}
    for product in sorted(products, key=lambda p: (not p.active, p.stripe_id or "")):
        owner = product.owner
        if owner is not None and owner.installation_id == builder.policy.installation_id:
            mine.setdefault(owner.key, product)
    return mine


def _attach(
    builder: PlanBuilder,
    product_key: str,
    features: frozenset[str],
    attached: Mapping[str, ProductFeatureRecord],
    applied: Mapping[str, AppliedState],
) -> bool:
    missing = sorted(features - set(attached))
    for feature_key in missing:
        key = _attachment_key(product_key, feature_key)
        builder.add(
            Phase.ATTACH,
            Step(
                Action.CREATE,
                Kind.PRODUCT_FEATURE,
                key,
                Reason.NEW,
                {"entitlement_feature": Ref(feature_key)},
                (FieldChange("feature", None, feature_key),),
                parent=Ref(product_key),
            ),
            before=previous_id(applied, key),
        )
    return bool(missing)


def _detach(
    builder: PlanBuilder,
    product_key: str,
    features: frozenset[str],
    attached: Mapping[str, ProductFeatureRecord],
    applied: Mapping[str, AppliedState],
    recorded: frozenset[str],
) -> bool:
    """Detach attachments no longer desired that we made (the store or the product's record
    says so); the rest are someone else's."""
    extra = [
        pf
        for feature_key, pf in sorted(attached.items())
        if feature_key not in features and (pf.key in applied or feature_key in recorded)
    ]
    for pf in extra:
        builder.add(
            Phase.DETACH,
            Step(
                Action.ARCHIVE,
                Kind.PRODUCT_FEATURE,
                pf.key,
                Reason.REMOVED_FROM_DESIRED,
                {},
                (FieldChange("feature", pf.feature_key, None),),
                stripe_id=pf.stripe_id,
                parent=Ref(product_key),
            ),
        )
    return bool(extra)


def _record(
    builder: PlanBuilder,
    product_key: str,
    live: ProductRecord | None,
    before: str | None,
    after: str,
) -> None:
    """Write the product's attachment inventory, after its attachments changed: folded into
    the product's default-price repoint when it has one (that runs after attaching too)."""
    change = FieldChange(f"metadata.{META_FEATURES}", before, after)
    if builder.merge_metadata(Phase.REPOINT, product_key, {META_FEATURES: after}, change):
        return
    builder.add(
        Phase.RECORD_FEATURES,
        Step(
            Action.UPDATE,
            Kind.PRODUCT,
            product_key,
            Reason.DESIRED_CHANGED,
            {"metadata": {META_FEATURES: after}},
            (change,),
            stripe_id=live.stripe_id if live else None,
            parent=Ref(product_key),
        ),
        before=live,
    )


def _attachment_key(product_key: str, feature_key: str) -> str:
    return object_key(
        Kind.PRODUCT_FEATURE, product_key.split("/", 1)[1], feature_key.split("/", 1)[1]
    )

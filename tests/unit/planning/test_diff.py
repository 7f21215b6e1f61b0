"""The diff's rules, each on the smallest catalog that shows it (DESIGN §4, §5)."""

from __future__ import annotations

import dataclasses

from billing_reconciler.model import Catalog, Kind
from billing_reconciler.planning.diff import diff
from billing_reconciler.planning.plan import Action, Reason, Ref

from .factories import applied_from, link, live, policy, price, product


def _converged(desired: Catalog, **live_overrides: object) -> Catalog:
    products = [live(p) for p in desired.products]
    prices = [live(pr) for pr in desired.prices]
    products, prices = link(products, prices)
    return Catalog(products=tuple(products), prices=tuple(prices))


def _desired(*names: str) -> Catalog:
    return Catalog(
        products=tuple(product(n) for n in names),
        prices=tuple(price(n) for n in names),
    )


def test_fresh_catalog_creates_products_then_prices_then_repoints_defaults() -> None:
    plan = diff(_desired("team", "base"), Catalog(), {}, policy())

    assert [(s.action, s.kind, s.key) for s in plan.steps] == [
        (Action.CREATE, Kind.PRODUCT, "product/base"),
        (Action.CREATE, Kind.PRODUCT, "product/team"),
        (Action.CREATE, Kind.PRICE, "price/base/monthly"),
        (Action.CREATE, Kind.PRICE, "price/team/monthly"),
        (Action.UPDATE, Kind.PRODUCT, "product/base"),
        (Action.UPDATE, Kind.PRODUCT, "product/team"),
    ]
    create_price = plan.steps[3]
    assert create_price.params["product"] == Ref("product/team")
    assert create_price.params["metadata"]["br_key"] == "price/team/monthly"
    assert create_price.params["metadata"]["br_installation"] == "test"
    assert plan.steps[5].params == {"default_price": Ref("price/team/monthly")}
    # Every step is counted: the two default-price repoints are updates.
    assert plan.counts() == {
        "create": 4,
        "update": 2,
        "supersede": 0,
        "archive": 0,
        "adopt": 0,
        "reactivate": 0,
    }
    assert sum(plan.counts().values()) == len(plan.steps)


def test_converged_catalog_plans_nothing() -> None:
    desired = _desired("team")
    observed = _converged(desired)
    plan = diff(desired, observed, applied_from(observed), policy())
    assert plan.steps == ()
    assert not plan.has_changes


def test_idempotency_keys_are_deterministic_and_distinct() -> None:
    first = diff(_desired("team", "base"), Catalog(), {}, policy())
    second = diff(_desired("team", "base"), Catalog(), {}, policy())
    assert [s.idempotency_key for s in first.steps] == [s.idempotency_key for s in second.steps]
    assert len({s.idempotency_key for s in first.steps}) == len(first.steps)
    other = diff(_desired("team", "base"), Catalog(), {}, policy(installation_id="other"))
    assert not {s.idempotency_key for s in first.steps} & {s.idempotency_key for s in other.steps}


def test_title_change_is_an_in_place_update() -> None:
    desired = _desired("team")
    observed = _converged(desired)
    renamed = dataclasses.replace(
        desired, products=(dataclasses.replace(desired.products[0], title="Team Plus"),)
    )
    plan = diff(renamed, observed, applied_from(observed), policy())

    [step] = plan.steps
    assert (step.action, step.reason) == (Action.UPDATE, Reason.DESIRED_CHANGED)
    assert step.params["name"] == "Team Plus"
    assert [(c.path, c.before, c.after) for c in step.changes] == [("title", "Team", "Team Plus")]


def test_amount_change_supersedes_then_repoints_then_archives() -> None:
    desired = _desired("team")
    observed = _converged(desired)
    old_id = observed.prices[0].stripe_id
    cheaper = dataclasses.replace(desired, prices=(price("team", amount=900),))
    plan = diff(cheaper, observed, applied_from(observed), policy())

    assert [(s.action, s.reason) for s in plan.steps] == [
        (Action.SUPERSEDE, Reason.REPLACE_BECAUSE_IMMUTABLE),
        (Action.UPDATE, Reason.DEFAULT_PRICE_REPOINT),
        (Action.ARCHIVE, Reason.SUPERSEDED),
    ]
    supersede, _, archive = plan.steps
    assert supersede.params["unit_amount"] == 900
    assert supersede.params["transfer_lookup_key"] is True
    assert supersede.changes[0].forces_supersede
    assert archive.stripe_id == old_id
    assert plan.counts()["supersede"] == 1
    # The archive of the superseded price and the repoint are steps the apply runs too.
    assert plan.counts()["archive"] == 1
    assert sum(plan.counts().values()) == len(plan.steps)


def test_readded_price_is_reactivated_not_duplicated() -> None:
    desired = _desired("team")
    observed = _converged(desired)
    old = dataclasses.replace(observed.prices[0], active=False, lookup_key=None)
    newer = live(price("team", amount=900))
    observed = dataclasses.replace(observed, prices=(old, newer))
    plan = diff(desired, observed, {}, policy())

    actions = [(s.action, s.kind, s.stripe_id) for s in plan.steps]
    assert (Action.REACTIVATE, Kind.PRICE, old.stripe_id) in actions
    assert (Action.ARCHIVE, Kind.PRICE, newer.stripe_id) in actions
    assert not any(s.action is Action.CREATE for s in plan.steps)
    reactivate = next(s for s in plan.steps if s.action is Action.REACTIVATE)
    assert reactivate.params["lookup_key"] == "team_monthly"


def test_removed_objects_are_orphans_without_prune_and_archived_with_it() -> None:
    desired = _desired("team", "base", "extra", "more", "again")
    observed = _converged(desired)
    smaller = _desired("team", "base", "extra", "more")

    plan = diff(smaller, observed, applied_from(observed), policy())
    assert plan.steps == ()
    assert {n.key for n in plan.orphans} == {"product/again", "price/again/monthly"}

    pruned = diff(smaller, observed, applied_from(observed), policy(prune=True))
    assert [(s.action, s.key) for s in pruned.steps] == [
        (Action.UPDATE, "product/again"),  # unset its default price first
        (Action.ARCHIVE, "price/again/monthly"),
        (Action.ARCHIVE, "product/again"),
    ]
    assert pruned.steps[0].params == {"default_price": ""}
    assert not pruned.refused


def test_mass_archive_is_refused_without_override() -> None:
    desired = _desired("team", "base")
    observed = _converged(desired)
    plan = diff(Catalog(), observed, applied_from(observed), policy(prune=True))
    assert plan.refused
    assert "every managed object" in plan.refusals[0]
    allowed = diff(
        Catalog(), observed, applied_from(observed), policy(prune=True, allow_mass_archive=True)
    )
    assert not allowed.refused


def test_protected_objects_are_never_archived_or_superseded() -> None:
    desired = Catalog(products=(product("team"),), prices=(price("team", protect=True),))
    observed = _converged(desired)
    changed = dataclasses.replace(desired, prices=(price("team", amount=1, protect=True),))
    plan = diff(changed, observed, applied_from(observed), policy())
    assert plan.refused
    assert "protected" in plan.refusals[0]
    assert not any(s.action is Action.SUPERSEDE for s in plan.steps)


def test_drift_is_corrected_and_reported_or_only_reported_with_warn() -> None:
    desired = _desired("team")
    observed = _converged(desired)
    applied = applied_from(observed)
    edited = dataclasses.replace(
        observed, products=(dataclasses.replace(observed.products[0], title="Hacked"),)
    )

    plan = diff(desired, edited, applied, policy())
    [step] = plan.steps
    assert (step.action, step.reason, step.params["name"]) == (Action.UPDATE, Reason.DRIFT, "Team")
    assert [(d.path, d.applied, d.live, d.corrected) for d in plan.drift] == [
        ("title", "Team", "Hacked", True)
    ]

    warned = diff(desired, edited, applied, policy(correct_drift=False))
    assert warned.steps == ()
    assert [d.corrected for d in warned.drift] == [False]


def test_metadata_keys_we_never_set_are_left_alone() -> None:
    desired = _desired("team")
    observed = _converged(desired)
    applied = applied_from(observed)
    human = dataclasses.replace(observed.products[0], metadata={"crm_id": "42"})
    plan = diff(desired, dataclasses.replace(observed, products=(human,)), applied, policy())
    assert plan.steps == ()


def test_unmarked_lookalike_is_adoptable_and_adopted_only_when_asked() -> None:
    desired = _desired("team")
    unmarked = link([live(product("team"), marked=False)], [live(price("team"), marked=False)])
    observed = Catalog(products=tuple(unmarked[0]), prices=tuple(unmarked[1]))

    plan = diff(desired, observed, {}, policy())
    assert {n.key for n in plan.adoptable} == {"product/team", "price/team/monthly"}
    assert not any(s.action in (Action.CREATE, Action.ADOPT) for s in plan.steps)
    assert plan.has_changes

    adopted = diff(desired, observed, {}, policy(adopt_all=True))
    adopt_steps = [s for s in adopted.steps if s.action is Action.ADOPT]
    assert {s.key for s in adopt_steps} == {"product/team", "price/team/monthly"}
    assert all(s.params["metadata"]["managed_by"] == "billing-reconciler" for s in adopt_steps)


def test_objects_of_another_installation_are_never_touched() -> None:
    desired = _desired("team")
    theirs = link(
        [live(product("other"), installation="them")], [live(price("other"), installation="them")]
    )
    observed = Catalog(products=tuple(theirs[0]), prices=tuple(theirs[1]))
    plan = diff(desired, observed, {}, policy(prune=True))
    assert all(s.key.endswith("team") or "team" in s.key for s in plan.steps)
    assert not any(s.action is Action.ARCHIVE for s in plan.steps)
    assert plan.orphans == ()


def test_archived_feature_desired_again_is_created_anew() -> None:
    from billing_reconciler.model import FeatureRecord, Ownership

    feature = FeatureRecord(key="feature/sso", lookup_key="sso", title="SSO")
    archived = dataclasses.replace(
        feature,
        active=False,
        stripe_id="feat_old",
        owner=Ownership(installation_id="test", key="feature/sso"),
    )
    plan = diff(Catalog(features=(feature,)), Catalog(features=(archived,)), {}, policy())
    [step] = plan.steps
    assert (step.action, step.key, step.stripe_id) == (Action.CREATE, "feature/sso", None)


def test_fingerprint_ignores_key_order_and_sees_every_field() -> None:
    from billing_reconciler.planning.builder import fingerprint

    desired = _desired("team")
    observed = _converged(desired)
    product_ = observed.products[0]
    one = dataclasses.replace(product_, metadata={"a": "1", "b": "2"})
    other_order = dataclasses.replace(product_, metadata={"b": "2", "a": "1"})
    changed = dataclasses.replace(product_, metadata={"a": "1", "b": "3"})
    base = fingerprint(dataclasses.replace(observed, products=(one,)))
    assert fingerprint(dataclasses.replace(observed, products=(other_order,))) == base
    assert fingerprint(dataclasses.replace(observed, products=(changed,))) != base
    cheaper = dataclasses.replace(observed.prices[0], unit_amount=999)
    assert fingerprint(dataclasses.replace(observed, prices=(cheaper,))) != fingerprint(observed)

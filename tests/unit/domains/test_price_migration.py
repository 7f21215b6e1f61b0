"""Price migration (DESIGN §16, issue 11 point 8) without Stripe or a store: 20 live
subscriptions on a superseded seat price under each `reconcile.price_migration` policy, the
mass-change guard, `protect`, and the impact the catalog's retiring price steps state."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from fractions import Fraction

import pytest

from billing_reconciler.controller import Controller, Registration
from billing_reconciler.domains.base import PlanContext, PlanOptions
from billing_reconciler.domains.catalog import desired_catalog
from billing_reconciler.domains.catalog_domain import CatalogDomain, _with_migration_policy
from billing_reconciler.domains.price_impact import (
    HOLD_PENDING_CANCEL,
    HOLD_PENDING_CHANGE,
    HOLD_SCHEDULED,
    SETTING_PRICE_MIGRATION,
    MigrationHold,
    PriceAmounts,
    PriceUsage,
    UsageLine,
    held_back,
    monthly_amount,
    price_impact,
    render_impact,
    usage_of,
)
from billing_reconciler.domains.subscription_rules import (
    OP_SCHEDULE_CREATE,
    OP_UPDATE,
    SCHEDULE_STEP,
    SUBSCRIPTION_STEP,
    subscriptions_plan,
)
from billing_reconciler.domains.subscription_types import (
    AccountSubscriptions,
    CancelRequest,
    CatalogPrice,
    PlanCatalog,
    SubscriptionsObserved,
    plan_catalog,
)
from billing_reconciler.domains.subscriptions import SubscriptionsDomain
from billing_reconciler.effects.catalog import superseding_price_keys
from billing_reconciler.effects.subscriptions import EXECUTORS
from billing_reconciler.model import Kind
from billing_reconciler.model_subscriptions import (
    ItemRecord,
    PendingChange,
    PhaseItem,
    SchedulePhase,
    ScheduleRecord,
)
from billing_reconciler.planning.fields import comparable_fields
from billing_reconciler.planning.plan import Action, Plan, Reason, Ref, Step
from billing_reconciler.store import LastApplied
from tests.unit.domains.test_subscription_rules import (
    OLD_PRICE_IDS,
    PERIOD_END,
    PERIOD_START,
    PRICE_IDS,
    _account,
    _context,
    _intent,
    _owner,
    _sub,
)

SEAT_KEY = "price/team_seat/monthly"
OLD_SEAT = "price_seat_m_2025"  # a superseded id of the seat price (OLD_PRICE_IDS)
N = 20


def _migration_context(policy: str, **reconcile: object) -> PlanContext:
    context = _context()
    state = context.state
    settings = state.config.reconcile.model_copy(update={"price_migration": policy, **reconcile})
    config = state.config.model_copy(update={"reconcile": settings})
    return dataclasses.replace(context, state=state.model_copy(update={"config": config}))


def _catalog(*, replacing: bool = False, protect: bool = False) -> PlanCatalog:
    catalog = plan_catalog(
        _context().state,
        PRICE_IDS,
        old_price_ids=OLD_PRICE_IDS,
        replacing=frozenset({SEAT_KEY}) if replacing else frozenset(),
    )
    if not protect:
        return catalog

    def protected(price: CatalogPrice) -> CatalogPrice:
        return dataclasses.replace(price, protect=True) if price.key == SEAT_KEY else price

    plans = {
        name: dataclasses.replace(plan, prices=tuple(protected(p) for p in plan.prices))
        for name, plan in catalog.plans.items()
    }
    by_id = {k: protected(v) for k, v in catalog.prices_by_id.items()}
    return PlanCatalog(plans=plans, prices_by_id=by_id)


def _on(seat_price: str, index: int) -> tuple[ItemRecord, ...]:
    """A team subscription's items with the seat item on `seat_price` (3 seats)."""
    items = (("price_base_m", 1), (seat_price, 3), ("price_api_m", None))
    return tuple(
        ItemRecord(
            price_id=price,
            quantity=quantity,
            item_id=f"si_{index}_{n}",
            current_period_start=PERIOD_START,
            current_period_end=PERIOD_END,
            price_key=SEAT_KEY if price == seat_price else None,
        )
        for n, (price, quantity) in enumerate(items)
    )


def _fleet(
    seat_price: str = OLD_SEAT, n: int = N, schedules: bool = False
) -> list[AccountSubscriptions]:
    return [
        AccountSubscriptions(
            account=_account(i),
            intent=_intent(),
            seats=3,
            subscriptions=(_sub(index=i, items=_on(seat_price, i)),),
            schedules=(_renewal_schedule(i),) if schedules else (),
        )
        for i in range(n)
    ]


def _plan(
    policy: str,
    fleet: Sequence[AccountSubscriptions],
    *,
    catalog: PlanCatalog | None = None,
    context: PlanContext | None = None,
) -> Plan:
    return subscriptions_plan(
        None,
        SubscriptionsObserved(accounts=tuple(fleet), catalog=catalog or _catalog()),
        context or _migration_context(policy),
    )


def _guard(plan: Plan, policy: str, *, allow: bool = False) -> Plan:
    controller = Controller(
        registration=Registration(SubscriptionsDomain(), lambda g, s: None, {}),
        state=_migration_context(policy).state,
        gateway=None,  # type: ignore[arg-type]
        store=None,  # type: ignore[arg-type]
    )
    return controller._guard_mass_change(plan, PlanOptions(allow_mass_change=allow))


# --- 20 subscriptions on a superseded price, under each policy -------------------------------


def test_none_leaves_them_grandfathered() -> None:
    plan = _plan("none", _fleet())
    assert plan.steps == ()
    assert not _guard(plan, "none").refused


def test_now_moves_each_seat_item_in_place_with_the_immediate_proration() -> None:
    context = _migration_context("now")
    billing = context.state.config.billing
    billing = billing.model_copy(
        update={
            "plan_change": billing.plan_change.model_copy(
                update={"immediate_proration_behavior": "always_invoice"}
            )
        }
    )
    config = context.state.config.model_copy(update={"billing": billing})
    context = dataclasses.replace(
        context, state=context.state.model_copy(update={"config": config})
    )
    plan = _plan("now", _fleet(), context=context)
    assert len(plan.steps) == N
    assert {(s.kind, s.action, s.params["op"]) for s in plan.steps} == {
        (SUBSCRIPTION_STEP, Action.UPDATE, OP_UPDATE)
    }
    assert [s.stripe_id for s in plan.steps] == [f"sub_{i}" for i in range(N)]
    first = plan.steps[0]
    # Only the seat item: its price replaced on the item id, its quantity kept.
    assert first.params["items"] == [{"id": "si_0_1", "price": "price_seat_m", "quantity": 3}]
    assert first.params["proration_behavior"] == "always_invoice"
    assert first.changes[0].path == f"price[{SEAT_KEY}]"
    assert (first.changes[0].before, first.changes[0].after) == (OLD_SEAT, "price_seat_m")
    assert {(s.causes, s.mass_change) for s in plan.steps} == {((SETTING_PRICE_MIGRATION,), True)}
    assert first.params["settings"] == [SETTING_PRICE_MIGRATION]
    # Keys differ per subscription and are stable across re-plans.
    assert len({s.idempotency_key for s in plan.steps}) == N
    assert [s.idempotency_key for s in _plan("now", _fleet(), context=context).steps] == [
        s.idempotency_key for s in plan.steps
    ]


def test_now_after_the_move_plans_nothing() -> None:
    assert _plan("now", _fleet("price_seat_m")).steps == ()


def test_now_before_the_catalog_apply_targets_the_price_key() -> None:
    """In a plan made before the catalog's apply supersedes the price (a dry run), the
    items are still on the current id: the move names the price's key, resolved when it
    runs (after the catalog's apply has created the new price)."""
    plan = _plan("now", _fleet("price_seat_m"), catalog=_catalog(replacing=True))
    assert len(plan.steps) == N
    assert plan.steps[0].params["items"] == [
        {"id": "si_0_1", "price": Ref(SEAT_KEY), "replaces": "price_seat_m", "quantity": 3}
    ]
    assert plan.steps[0].changes[0].after == f"new {SEAT_KEY}"
    # Under none the same plan moves nothing.
    assert _plan("none", _fleet("price_seat_m"), catalog=_catalog(replacing=True)).steps == ()


def test_at_renewal_writes_a_schedule_swapping_the_price_at_the_period_end() -> None:
    plan = _plan("at_renewal", _fleet())
    assert len(plan.steps) == N
    assert {(s.kind, s.action, s.params["op"]) for s in plan.steps} == {
        (SCHEDULE_STEP, Action.CREATE, OP_SCHEDULE_CREATE)
    }
    assert {(s.causes, s.mass_change) for s in plan.steps} == {((SETTING_PRICE_MIGRATION,), True)}
    step = plan.steps[0]
    assert step.params["from_subscription"] == "sub_0"
    assert step.params["end_behavior"] == "release"
    current, renewal = step.params["phases"]
    assert current["end_date"] == PERIOD_END
    assert [i["price"] for i in current["items"]] == ["price_base_m", OLD_SEAT, "price_api_m"]
    assert renewal["items"] == [
        {"price": "price_base_m", "quantity": 1},
        {"price": "price_seat_m", "quantity": 3},
        {"price": "price_api_m"},
    ]
    assert renewal["proration_behavior"] == "none"
    assert renewal["duration"] == {"interval": "month", "interval_count": 1}
    assert renewal["metadata"] == {"plan": "team_monthly"}
    assert ("effective_at", None, PERIOD_END) in {(c.path, c.before, c.after) for c in step.changes}


def _renewal_schedule(index: int) -> ScheduleRecord:
    return ScheduleRecord(
        stripe_id=f"sub_sched_{index}",
        subscription_id=f"sub_{index}",
        customer_id=f"cus_{index}",
        status="active",
        end_behavior="release",
        phases=(
            SchedulePhase(
                PERIOD_START,
                PERIOD_END,
                (
                    PhaseItem("price_base_m", 1),
                    PhaseItem(OLD_SEAT, 3),
                    PhaseItem("price_api_m", None),
                ),
                plan="team_monthly",
            ),
            SchedulePhase(
                PERIOD_END,
                PERIOD_END + 30 * 86_400,
                (
                    PhaseItem("price_base_m", 1),
                    PhaseItem("price_seat_m", 3),
                    PhaseItem("price_api_m", None),
                ),
                plan="team_monthly",
            ),
        ),
        owner=_owner(org=f"org-{index}"),
    )


def test_at_renewal_with_its_schedule_written_plans_nothing_and_after_the_renewal_neither() -> None:
    assert _plan("at_renewal", _fleet(schedules=True)).steps == ()
    # Past the period end the items bill the new id; the schedule's last phase runs and then
    # releases: nothing to migrate, and the schedule is not cut back.
    moved = _plan(
        "at_renewal",
        _fleet("price_seat_m", schedules=True),
        context=dataclasses.replace(_migration_context("at_renewal"), now=PERIOD_END + 60),
    )
    assert [s for s in moved.steps if s.kind == SCHEDULE_STEP] == []


def test_now_waits_for_a_subscription_on_a_schedule() -> None:
    plan = _plan("now", _fleet(schedules=True)[:1])
    assert not [s for s in plan.steps if s.causes]
    assert [n.message for n in plan.notices] == [
        "price migration waits: sub_0 is on a subscription schedule"
    ]


@pytest.mark.parametrize("policy", ["now", "at_renewal"])
def test_the_guard_holds_a_migration_of_the_whole_fleet_unless_allowed(policy: str) -> None:
    plan = _plan(policy, _fleet())
    held = _guard(plan, policy)
    assert held.refusals == (
        f"the plan would cancel, downgrade or reprice {N} of {N} live subscriptions "
        "(100.0% > reconcile.max_fleet_change_fraction 10%). "
        "Re-run with --allow-mass-change if this is intended",
    )
    assert not _guard(plan, policy, allow=True).refused
    # 2 of 20 on the old price: within the fraction.
    mixed = [*_fleet(n=2), *_fleet("price_seat_m")[2:]]
    assert len(_plan(policy, mixed).steps) == 2
    assert not _guard(_plan(policy, mixed), policy).refused


@pytest.mark.parametrize("policy", ["now", "at_renewal"])
def test_protect_keeps_them_on_the_price(policy: str) -> None:
    plan = _plan(policy, _fleet(), catalog=_catalog(protect=True))
    assert plan.steps == ()
    assert plan.warnings == (
        f"{SEAT_KEY} is protected: {N} live subscription(s) on a superseded id of it are not "
        f"migrated (reconcile.price_migration: {policy})",
    )


# --- the impact on the catalog's steps -------------------------------------------------------


def test_monthly_normalisation_is_exact_and_rounded_once_per_currency() -> None:
    assert monthly_amount(1200, "year") == 100
    assert monthly_amount(1000, "week") == Fraction(1000 * 52, 12)
    assert monthly_amount(100, "day") == Fraction(36500, 12)
    assert monthly_amount(900, "month", 3) == 300
    assert monthly_amount(900, None) == 0
    # 20 yearly seats at 100.00 USD: 166.67 USD/month (not 20 x 8.33).
    yearly = PriceUsage(
        20,
        tuple(UsageLine("usd", 1) for _ in range(20)),
        PriceAmounts({"usd": 10_000}, "year"),
    )
    assert price_impact(yearly).monthly == {"usd": 16_667}


def test_the_impact_line_states_count_and_revenue_by_currency_with_the_exponent() -> None:
    usage = PriceUsage(
        20,
        (
            *(UsageLine("usd", 3) for _ in range(18)),
            UsageLine("jpy", 2),
            UsageLine("usd", None),
        ),
        PriceAmounts({"usd": 900, "jpy": 1200}, "month"),
    )
    impact = price_impact(usage)
    assert impact.monthly == {"jpy": 2400, "usd": 48_600}
    assert impact.metered_items == 1
    assert render_impact(impact, price_id="price_old", policy="none", superseded=True) == (
        "20 live subscriptions, 2400 JPY/month, 486.00 USD/month on price_old "
        "(1 metered item not counted): they stay on it, grandfathered "
        "(reconcile.price_migration: none)"
    )
    assert render_impact(impact, price_id="p", policy="now", superseded=True).endswith(
        ": moved to the new price now (reconcile.price_migration: now)"
    )
    assert "at their next renewal" in render_impact(
        impact, price_id="p", policy="at_renewal", superseded=True
    )
    assert render_impact(impact, price_id="p", policy="now", superseded=False).endswith(
        "they stay on it (archived without a successor: nothing to migrate to)"
    )


def test_usage_of_counts_subscriptions_once_and_keeps_their_items() -> None:
    subs = [("usd", [("p1", 3), ("p2", 1)]), ("eur", [("p1", 2), ("p1", 1)]), ("usd", [("p3", 1)])]
    assert usage_of(["p1", "p9"], subs) == {
        "p1": PriceUsage(
            2,
            (UsageLine("usd", 3), UsageLine("eur", 2), UsageLine("eur", 1)),
            holds=(MigrationHold(), MigrationHold()),
        )
    }


class _Reader:
    def __init__(self, usage: Mapping[str, PriceUsage]) -> None:
        self.usage = usage
        self.asked: list[list[str]] = []

    def price_usage(
        self, price_ids: Sequence[str], *, installation_id: str
    ) -> Mapping[str, PriceUsage]:
        self.asked.append(list(price_ids))
        return {k: v for k, v in self.usage.items() if k in price_ids}


def _catalog_plan(policy: str) -> Plan:
    """A supersede of price_old (and the archive completing it) and an archive of price_gone,
    as the catalog's rules leave them for `annotate`."""
    steps = (
        Step(
            Action.SUPERSEDE,
            Kind.PRICE,
            SEAT_KEY,
            Reason.REPLACE_BECAUSE_IMMUTABLE,
            {},
            (),
            "price_old",
        ),
        Step(Action.ARCHIVE, Kind.PRICE, SEAT_KEY, Reason.SUPERSEDED, {}, (), "price_old"),
        Step(
            Action.ARCHIVE,
            Kind.PRICE,
            "price/x/y",
            Reason.REMOVED_FROM_DESIRED,
            {},
            (),
            "price_gone",
        ),
        Step(
            Action.ARCHIVE,
            Kind.PRICE,
            "price/x/z",
            Reason.REMOVED_FROM_DESIRED,
            {},
            (),
            "price_idle",
        ),
    )
    plan = Plan(
        steps=steps, installation_id="test", desired_revision="r", fingerprint="f", created_at=0
    )
    return _with_migration_policy(plan, policy)


@pytest.mark.parametrize("policy", ["none", "at_renewal", "now"])
def test_the_catalogs_retiring_steps_state_the_impact(policy: str) -> None:
    usage = {
        "price_old": PriceUsage(
            20, tuple(UsageLine("usd", 3) for _ in range(20)), PriceAmounts({"usd": 900}, "month")
        ),
        "price_gone": PriceUsage(1, (UsageLine("usd", 1),), None),
    }
    reader = _Reader(usage)
    plan = CatalogDomain().annotate(_catalog_plan(policy), reader)  # type: ignore[arg-type]
    assert reader.asked == [["price_gone", "price_idle", "price_old"]]
    supersede, archive, gone, idle = plan.steps
    fate = {
        "none": "they stay on it, grandfathered (reconcile.price_migration: none)",
        "at_renewal": "moved to the new price at their next renewal "
        "(reconcile.price_migration: at_renewal)",
        "now": "moved to the new price now (reconcile.price_migration: now)",
    }[policy]
    assert supersede.impact == f"20 live subscriptions, 540.00 USD/month on price_old: {fate}"
    assert archive.impact is None  # the supersede says it
    assert gone.impact == (
        "1 live subscription on price_gone (1 item of unknown amount not counted): they stay "
        "on it (archived without a successor: nothing to migrate to)"
    )
    assert idle.impact is None  # no live subscription on it


# --- which prices the catalog's next apply supersedes ----------------------------------------


def _applied(**changed: Mapping[str, object]) -> dict[str, LastApplied]:
    """Last-applied records equal to the desired prices, but for `changed` fields (by key)."""
    state = _context().state
    entries = {}
    for price in desired_catalog(state, installation_id="test").prices:
        fields = {**comparable_fields(price), **changed.get(price.key, {})}
        entries[price.key] = LastApplied(
            installation_id="test",
            object_key=price.key,
            kind="price",
            stripe_id=PRICE_IDS.get(price.key, "price_x"),
            fields=fields,
            content_hash="",
            revision="",
            applied_at=datetime.now(UTC),
        )
    return entries


def test_a_price_is_about_to_be_superseded_when_an_immutable_field_changed() -> None:
    state = _context().state
    assert superseding_price_keys(state, _applied(), installation_id="test") == frozenset()
    amount = _applied(**{SEAT_KEY: {"unit_amount": 800}})
    assert superseding_price_keys(state, amount, installation_id="test") == {SEAT_KEY}
    # A currency option the desired price no longer has also needs a new price.
    options = comparable_fields(
        next(p for p in desired_catalog(state, installation_id="test").prices if p.key == SEAT_KEY)
    )["currency_options"]
    assert isinstance(options, dict)
    removed = _applied(**{SEAT_KEY: {"currency_options": {**options, "gbp": {"unit_amount": 700}}}})
    assert superseding_price_keys(state, removed, installation_id="test") == {SEAT_KEY}
    # A mutable field (nickname) is updated in place; an unapplied price is not superseded.
    nickname = _applied(**{SEAT_KEY: {"nickname": "old"}})
    assert superseding_price_keys(state, nickname, installation_id="test") == frozenset()
    unapplied = {k: v for k, v in amount.items() if k != SEAT_KEY}
    assert superseding_price_keys(state, unapplied, installation_id="test") == frozenset()


@pytest.mark.parametrize("policy", ["now", "at_renewal"])
def test_a_move_run_before_the_catalog_superseded_the_price_sends_nothing(policy: str) -> None:
    """A `serve` pass planned between a desired/ change and the catalog's apply: the price's
    key still resolves to the id the item is on; the executor sends nothing (no gateway
    call: there is none here) and a later pass moves it. Resolved to the new id, it writes."""
    [step, *_] = _plan(policy, _fleet("price_seat_m"), catalog=_catalog(replacing=True)).steps
    step = dataclasses.replace(step, params={**step.params, "installation_id": "test"})
    executor = EXECUTORS[step.kind]
    result = executor.send(None, step, {SEAT_KEY: "price_seat_m"})  # type: ignore[arg-type]
    assert result is not None
    assert (result.stripe_id, result.request_id) == (step.stripe_id, None)
    with pytest.raises(AttributeError):  # it would write: no gateway to write with
        executor.send(None, step, {SEAT_KEY: "price_seat_new"})  # type: ignore[arg-type]


def test_held_back_is_the_subscriptions_domains_rule_for_not_moving_one() -> None:
    change, cancel, scheduled = (
        MigrationHold(pending_change=True),
        MigrationHold(cancel=True),
        MigrationHold(scheduled=True),
    )
    assert [held_back("now", h) for h in (change, cancel, scheduled, MigrationHold())] == [
        HOLD_PENDING_CHANGE,
        HOLD_PENDING_CANCEL,
        HOLD_SCHEDULED,
        None,
    ]
    # `at_renewal` rewrites our schedule; `none` moves nothing, so it holds nothing back.
    assert held_back("at_renewal", scheduled) is None
    assert held_back("at_renewal", change) == HOLD_PENDING_CHANGE
    assert {held_back("none", h) for h in (change, cancel, scheduled)} == {None}


def test_the_impact_line_says_how_many_are_moved_and_held_back_and_why() -> None:
    """Tester T1 finding 6: a subscription with a pending plan change is not moved."""
    holds = (
        MigrationHold(),
        MigrationHold(pending_change=True),
        MigrationHold(scheduled=True),
        MigrationHold(cancel=True, scheduled=True),
    )
    usage = PriceUsage(
        4, tuple(UsageLine("usd", 1) for _ in holds), PriceAmounts({"usd": 900}, "month"), holds
    )
    impact = price_impact(usage)
    assert render_impact(impact, price_id="p", policy="now", superseded=True) == (
        "4 live subscriptions, 36.00 USD/month on p: 1 moved to the new price now "
        "(reconcile.price_migration: now); 3 held back (1 with a pending cancel, 1 with a "
        "pending plan change, 1 with a subscription schedule: the pending change or cancel "
        "moves or ends it at its period end; the schedule's phases would put the old price "
        "back)"
    )
    assert render_impact(impact, price_id="p", policy="at_renewal", superseded=True) == (
        "4 live subscriptions, 36.00 USD/month on p: 2 moved to the new price at their next "
        "renewal (reconcile.price_migration: at_renewal); 2 held back (1 with a pending "
        "cancel, 1 with a pending plan change: the pending change or cancel moves or ends it "
        "at its period end)"
    )
    # Nothing is moved under `none`, nor off a price archived without a successor.
    assert "held back" not in render_impact(impact, price_id="p", policy="none", superseded=True)
    assert "held back" not in render_impact(impact, price_id="p", policy="now", superseded=False)


def test_a_pending_change_or_cancel_keeps_the_rules_from_moving_it() -> None:
    """The rules move exactly what `held_back` does not hold back."""
    fleet = _fleet(n=3)
    bundles = (
        fleet[0],
        dataclasses.replace(
            fleet[1],
            intent=_intent(pending_change=PendingChange("team_yearly", None)),
        ),
        dataclasses.replace(
            fleet[2],
            intent=_intent(
                cancel=CancelRequest(immediate=False),
                pending_change=PendingChange(None, None, reason="cancel"),
            ),
        ),
    )
    for policy in ("now", "at_renewal"):
        plan = _plan(policy, bundles)
        moved = {s.key for s in plan.steps if SETTING_PRICE_MIGRATION in s.causes}
        kind = SCHEDULE_STEP if policy == "at_renewal" else SUBSCRIPTION_STEP
        assert moved == {f"{kind}/{fleet[0].org_id}"}, (policy, moved)

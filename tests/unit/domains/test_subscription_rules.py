"""The subscriptions domain's rules without Stripe or a store (DESIGN §16): the desired
subscription an intent derives, and the steps the plan orders for creates, seats, tax, plan
changes through schedules, trials and cancels; foreign objects untouched; idempotency keys;
the fingerprint; a 100k-account plan's CPU."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import replace
from functools import cache
from pathlib import Path
from tempfile import mkdtemp

import pytest

from billing_reconciler.controller import Controller, Registration
from billing_reconciler.desired import load_desired
from billing_reconciler.domains.base import PlanContext, PlanOptions
from billing_reconciler.domains.subscription_rules import (
    MIRROR_STEP,
    OP_CANCEL,
    OP_CREATE,
    OP_SCHEDULE_CREATE,
    OP_SCHEDULE_UPDATE,
    OP_UPDATE,
    SCHEDULE_STEP,
    SETTING_AUTO_TAX,
    SETTING_SEAT_CHANGE,
    SUBSCRIPTION_STEP,
    Refusal,
    desired_subscription,
    fleet_settings,
    org_id_of_step_key,
    subscriptions_plan,
)
from billing_reconciler.domains.subscription_types import (
    SOURCE_DEFAULT_PLAN,
    AccountSubscriptions,
    CancelRequest,
    PlanCatalog,
    SubscriptionAccount,
    SubscriptionIntent,
    SubscriptionMirror,
    SubscriptionsObserved,
    plan_catalog,
)
from billing_reconciler.domains.subscriptions import SubscriptionsDomain
from billing_reconciler.model_subscriptions import (
    DesiredSubscription,
    ItemRecord,
    PendingChange,
    PhaseItem,
    SchedulePhase,
    ScheduleRecord,
    SubscriptionOwner,
    SubscriptionRecord,
)
from billing_reconciler.planning.plan import Action, Plan, Population, Reason, Step

INSTALLATION = "test"
NOW = 1_900_000_000
PERIOD_START, PERIOD_END = NOW - 10 * 86_400, NOW + 20 * 86_400

PLANS = """
products:
  - name: platform_free
    title: Free
    prices:
      - {name: monthly, interval: month, amount: 0, currency: usd,
         currency_options: {eur: {amount: 0}}}
  - name: team_base
    title: Team base
    prices:
      - {name: monthly, interval: month, amount: 4900, currency: usd,
         currency_options: {eur: {amount: 4500}}}
      - {name: yearly, interval: year, amount: 49000, currency: usd,
         currency_options: {eur: {amount: 45000}}}
  - name: team_seat
    title: Team seat
    behavior: per_seat
    config: {seat_limit: 50}
    prices:
      - {name: monthly, interval: month, amount: 900, currency: usd,
         currency_options: {eur: {amount: 800}}}
      - {name: yearly, interval: year, amount: 9000, currency: usd,
         currency_options: {eur: {amount: 8000}}}
  - name: api_usage
    title: API
    prices:
      - name: monthly
        interval: month
        usage_type: metered
        amount: 5
        currency: usd
        currency_options: {eur: {amount: 4}}
        meter: {event_name: api_requests, display_name: API requests}
  - name: credits
    title: Credits
    behavior: credits
    config: {credit_amount: 100}
    prices:
      - {name: pack, amount: 1000, currency: usd, currency_options: {eur: {amount: 900}}}
  - name: ent_seat
    title: Enterprise seat
    behavior: per_seat
    config: {seat_limit: 0}
    prices:
      - {name: monthly, interval: month, amount: 5000, currency: usd}
  - name: solo_base
    title: Solo
    prices:
      - {name: monthly, interval: month, amount: 1000, currency: usd}
plans:
  - {name: free_monthly, title: Free, interval: month, products: [{name: platform_free}]}
  - name: team_monthly
    title: Team
    interval: month
    trial_days: 14
    products: [{name: team_base}, {name: team_seat}, {name: api_usage}, {name: credits}]
  - name: team_yearly
    title: Team yearly
    interval: year
    products: [{name: team_base}, {name: team_seat}]
  - {name: solo_monthly, title: Solo, interval: month, products: [{name: solo_base}]}
  - {name: ent_monthly, title: Enterprise, interval: month, products: [{name: ent_seat}]}
  - name: legacy_monthly
    title: Legacy
    interval: month
    state: inactive
    products: [{name: solo_base}, {name: platform_free}]
"""

PRICE_IDS = {
    "price/platform_free/monthly": "price_free",
    "price/team_base/monthly": "price_base_m",
    "price/team_base/yearly": "price_base_y",
    "price/team_seat/monthly": "price_seat_m",
    "price/team_seat/yearly": "price_seat_y",
    "price/api_usage/monthly": "price_api_m",
    "price/credits/pack": "price_credits",
    "price/solo_base/monthly": "price_solo",
    "price/ent_seat/monthly": "price_ent",
}
# A superseded seat price id the catalog still knows (grandfathered subscriptions).
OLD_PRICE_IDS = {"price_seat_m_2025": "price/team_seat/monthly"}


@cache
def _context(billing: str = "") -> PlanContext:
    root = Path(mkdtemp(prefix="subs-"))
    (root / "plans").mkdir()
    (root / "plans" / "plans.yaml").write_text(PLANS)
    (root / "billing.yaml").write_text(
        f"billing:\n  default_currency: usd\n{billing}"
        f"reconcile:\n  installation_id: {INSTALLATION}\n"
    )
    result = load_desired(root)
    assert result.state is not None, result.diagnostics
    return PlanContext(
        state=result.state,
        options=PlanOptions(),
        applied={},
        spent_keys=frozenset(),
        key_salt="salt",
        now=NOW,
    )


@cache
def _catalog() -> PlanCatalog:
    return plan_catalog(_context().state, PRICE_IDS, old_price_ids=OLD_PRICE_IDS)


AUTO_TAX = "  stripe_auto_tax: true\n"
INCREMENTAL = "  product:\n    seat_change_behavior: incremental\n"
TRIAL_CANCEL = "  subscription:\n    behavior_after_trial: cancel\n"
CHANGE_SETTINGS = (
    "  plan_change:\n    proration_behavior: none\n"
    "    immediate_proration_behavior: always_invoice\n    collection_method: send_invoice\n"
)


def _account(index: int = 0, **parts: object) -> SubscriptionAccount:
    account = SubscriptionAccount(
        account_id=f"acct_{index}",
        org_id=f"org-{index}",
        stripe_customer_id=f"cus_{index}",
        currency="usd",
        due_in_days=15,
    )
    return replace(account, **parts)  # type: ignore[arg-type]


def _intent(plan: str | None = "team_monthly", **parts: object) -> SubscriptionIntent:
    return replace(SubscriptionIntent(intent_id="int_1", plan=plan), **parts)  # type: ignore[arg-type]


def _owner(
    plan: str = "team_monthly", org: str = "org-0", installation: str = INSTALLATION
) -> SubscriptionOwner:
    return SubscriptionOwner(installation_id=installation, org_id=org, plan=plan, intent_id="int_1")


def _items(plan: str = "team_monthly", seats: int = 3) -> tuple[ItemRecord, ...]:
    prices = {
        "team_monthly": (("price_base_m", 1), ("price_seat_m", seats), ("price_api_m", None)),
        "team_yearly": (("price_base_y", 1), ("price_seat_y", seats)),
        "free_monthly": (("price_free", 1),),
        "solo_monthly": (("price_solo", 1),),
    }[plan]
    return tuple(
        ItemRecord(
            price_id=price,
            quantity=quantity,
            item_id=f"si_{price}",
            current_period_start=PERIOD_START,
            current_period_end=PERIOD_END,
        )
        for price, quantity in prices
    )


def _sub(
    plan: str = "team_monthly", seats: int = 3, index: int = 0, **parts: object
) -> SubscriptionRecord:
    sub = SubscriptionRecord(
        stripe_id=f"sub_{index}",
        customer_id=f"cus_{index}",
        status="active",
        currency="usd",
        items=_items(plan, seats),
        created=NOW - 100,
        pending_invoice_item_interval=("month", 1) if plan == "team_yearly" else None,
        owner=_owner(plan, org=f"org-{index}"),
    )
    return replace(sub, **parts)  # type: ignore[arg-type]


def _bundle(
    *,
    seats: int = 3,
    intent: SubscriptionIntent | None = None,
    subs: tuple[SubscriptionRecord, ...] = (),
    schedules: tuple[ScheduleRecord, ...] = (),
    history: frozenset[str] = frozenset(),
    mirrors: tuple[SubscriptionMirror, ...] = (),
    index: int = 0,
    **account: object,
) -> AccountSubscriptions:
    return AccountSubscriptions(
        account=replace(_account(index), **account),  # type: ignore[arg-type]
        intent=_intent() if intent is None else intent,
        seats=seats,
        plan_history=history,
        subscriptions=subs,
        schedules=schedules,
        mirrors=mirrors,
    )


def _plan(*bundles: AccountSubscriptions, billing: str = "") -> Plan:
    return subscriptions_plan(
        None, SubscriptionsObserved(accounts=bundles, catalog=_catalog()), _context(billing)
    )


def _desired(bundle: AccountSubscriptions, billing: str = "", **kw: str) -> DesiredSubscription:
    context = _context(billing)
    desired = desired_subscription(
        bundle,
        catalog=_catalog(),
        billing=context.state.config.billing,
        installation_id=INSTALLATION,
        **kw,
    )
    assert isinstance(desired, DesiredSubscription), desired
    return desired


def _only(plan: Plan) -> Step:
    assert len(plan.steps) == 1, plan.steps
    return plan.steps[0]


def _changes(step: Step) -> dict[str, tuple[object, object]]:
    return {c.path: (c.before, c.after) for c in step.changes}


# --- desired_subscription -------------------------------------------------------------------


def test_desired_has_one_item_per_price_of_the_plan_at_its_interval_without_credits() -> None:
    desired = _desired(_bundle(seats=4))
    assert [(i.price_key, i.price_id, i.quantity, i.per_seat) for i in desired.items] == [
        ("price/team_base/monthly", "price_base_m", 1, False),
        ("price/team_seat/monthly", "price_seat_m", 4, True),
        ("price/api_usage/monthly", "price_api_m", None, False),
    ]
    assert desired.seats == 4
    assert desired.interval == "month"
    assert desired.currency == "usd"
    assert desired.customer_id == "cus_0"
    assert desired.metadata == {
        "managed_by": "billing-reconciler",
        "br_key": "subscription/org-0",
        "br_installation": INSTALLATION,
        "org_id": "org-0",
        "plan": "team_monthly",
        "br_intent": "int_1",
    }


def test_seats_are_at_least_one() -> None:
    assert _desired(_bundle(seats=0)).seats == 1


def test_the_account_currency_picks_currency_options() -> None:
    assert _desired(_bundle(currency="eur")).currency == "eur"


def test_a_plan_without_a_price_in_the_accounts_currency_is_refused() -> None:
    bundle = _bundle(intent=_intent("solo_monthly"), currency="eur")
    refused = desired_subscription(
        bundle,
        catalog=_catalog(),
        billing=_context().state.config.billing,
        installation_id=INSTALLATION,
    )
    assert isinstance(refused, Refusal)
    assert "no price in eur" in refused.reason
    assert "price/solo_base/monthly" in refused.reason
    plan = _plan(bundle)
    assert plan.steps == ()
    assert [n.key for n in plan.notices] == ["subscription/org-0"]
    assert plan.notices[0].message.startswith("refused: plan 'solo_monthly' has no price in eur")


def test_seats_above_the_seat_limit_are_refused() -> None:
    plan = _plan(_bundle(seats=51))
    assert plan.steps == ()
    assert "51 seats are above the seat_limit 50 of plan 'team_monthly'" in plan.notices[0].message


def test_a_seat_limit_of_zero_is_unlimited() -> None:
    assert _catalog().plans["ent_monthly"].prices[0].seat_limit is None
    assert _desired(_bundle(seats=500, intent=_intent("ent_monthly"))).seats == 500


def test_a_price_not_created_in_stripe_yet_is_refused() -> None:
    catalog = plan_catalog(_context().state, {})
    refused = desired_subscription(
        _bundle(),
        catalog=catalog,
        billing=_context().state.config.billing,
        installation_id=INSTALLATION,
    )
    assert isinstance(refused, Refusal)
    assert "not created in Stripe yet" in refused.reason


def test_automatic_tax_follows_the_setting_and_is_off_for_a_free_plan() -> None:
    assert _desired(_bundle()).automatic_tax is False
    assert _desired(_bundle(), AUTO_TAX).automatic_tax is True
    assert _desired(_bundle(intent=_intent("free_monthly")), AUTO_TAX).automatic_tax is False


def test_yearly_plans_bill_seats_monthly() -> None:
    assert _desired(_bundle(intent=_intent("team_yearly"))).pending_invoice_item_interval == (
        "month",
        1,
    )
    assert _desired(_bundle()).pending_invoice_item_interval is None


def test_trial_once_per_plan_and_never_when_skipped_or_for_the_default_plan() -> None:
    assert _desired(_bundle()).trial_days == 14
    assert _desired(_bundle(intent=_intent(skip_trial=True))).trial_days == 0
    assert _desired(_bundle(intent=_intent(source=SOURCE_DEFAULT_PLAN))).trial_days == 0
    assert _desired(_bundle(history=frozenset({"team_monthly"}))).trial_days == 0
    ended = _sub(status="canceled")
    assert _desired(_bundle(subs=(ended,))).trial_days == 0
    assert _desired(_bundle(history=frozenset({"team_yearly"}))).trial_days == 14


def test_collection_method_send_invoice_takes_the_accounts_days_until_due() -> None:
    desired = _desired(_bundle(), collection_method="send_invoice")
    assert (desired.collection_method, desired.days_until_due) == ("send_invoice", 15)
    assert _desired(_bundle()).days_until_due is None


def test_trial_end_behavior_from_the_setting_or_the_intent() -> None:
    assert _desired(_bundle()).trial_end_behavior == "release"
    assert _desired(_bundle(), TRIAL_CANCEL).trial_end_behavior == "cancel"
    assert _desired(_bundle(intent=_intent(cancel_after_trial=True))).trial_end_behavior == (
        "cancel"
    )


# --- create ---------------------------------------------------------------------------------


def test_an_online_account_without_a_subscription_gets_one_created() -> None:
    step = _only(_plan(_bundle(seats=2)))
    assert (step.action, step.kind, step.key, step.reason, step.batch) == (
        Action.CREATE,
        SUBSCRIPTION_STEP,
        "subscription/org-0",
        Reason.NEW,
        1,
    )
    params = step.params
    assert params["op"] == OP_CREATE
    assert params["customer"] == "cus_0"
    assert params["items"] == [
        {"price": "price_base_m", "quantity": 1},
        {"price": "price_seat_m", "quantity": 2},
        {"price": "price_api_m"},
    ]
    assert params["automatic_tax"] == {"enabled": False}
    assert params["collection_method"] == "charge_automatically"
    assert params["billing_mode"] == {"type": "flexible"}
    assert params["trial_period_days"] == 14
    assert params["trial_settings"] == {
        "end_behavior": {"missing_payment_method": "create_invoice"}
    }
    assert params["metadata"]["plan"] == "team_monthly"
    assert "pending_invoice_item_interval" not in params
    assert "cancel_at_period_end" not in params
    assert fleet_settings(step) == ()


def test_a_trial_that_cancels_at_its_end_is_created_so_and_then_cancel_at_is_set() -> None:
    step = _only(_plan(_bundle(), billing=TRIAL_CANCEL))
    assert step.params["trial_settings"] == {"end_behavior": {"missing_payment_method": "cancel"}}
    assert step.params["cancel_at_period_end"] is True
    trialing = _sub(
        status="trialing", trial_end=NOW + 86_400, trial_missing_payment_method="cancel"
    )
    update = _only(_plan(_bundle(subs=(trialing,))))
    assert update.params["cancel_at"] == NOW + 86_400
    assert _changes(update)["cancel_at"] == (None, NOW + 86_400)
    done = replace(trialing, cancel_at=NOW + 86_400)
    assert _plan(_bundle(subs=(done,))).steps == ()


def test_a_released_trial_gets_no_cancel_at() -> None:
    trialing = _sub(status="trialing", trial_end=NOW + 86_400)
    assert _plan(_bundle(subs=(trialing,))).steps == ()


def test_a_yearly_create_bills_seats_monthly() -> None:
    step = _only(_plan(_bundle(intent=_intent("team_yearly"))))
    assert step.params["pending_invoice_item_interval"] == {
        "interval": "month",
        "interval_count": 1,
    }


def test_offline_accounts_and_accounts_without_a_customer_or_intent_get_nothing() -> None:
    offline = _bundle(offline=True, stripe_customer_id=None, intent=_intent(source="default_plan"))
    registered_no_customer = _bundle(stripe_customer_id=None)
    disabled = _bundle(state="disabled")
    no_intent = replace(_bundle(), intent=None)
    no_plan = _bundle(intent=_intent(None))
    plan = _plan(offline, registered_no_customer, disabled, no_intent, no_plan)
    assert plan.steps == ()
    assert plan.notices == ()


def test_the_default_plan_is_created_at_registration_without_a_trial() -> None:
    intent = _intent("free_monthly", source=SOURCE_DEFAULT_PLAN)
    assert _plan(_bundle(intent=intent, offline=True, stripe_customer_id=None)).steps == ()
    step = _only(_plan(_bundle(intent=intent)))
    assert step.params["items"] == [{"price": "price_free", "quantity": 1}]
    assert "trial_period_days" not in step.params


def test_idempotency_keys_are_stable_across_runs_and_differ_per_intent_and_store() -> None:
    first = _only(_plan(_bundle())).idempotency_key
    assert first == _only(_plan(_bundle())).idempotency_key
    assert first.startswith(f"br:{INSTALLATION}:subscription/org-0:create:")
    other_intent = _only(_plan(_bundle(intent=_intent(intent_id="int_2")))).idempotency_key
    other_plan = _only(_plan(_bundle(intent=_intent("team_yearly")))).idempotency_key
    assert len({first, other_intent, other_plan}) == 3
    context = _context()
    observed = SubscriptionsObserved(accounts=(_bundle(),), catalog=_catalog())
    salted = subscriptions_plan(None, observed, replace(context, key_salt="other"))
    assert salted.steps[0].idempotency_key != first
    spent = subscriptions_plan(None, observed, replace(context, spent_keys=frozenset({first})))
    assert spent.steps[0].idempotency_key not in {first, ""}


def test_a_cancelled_subscription_of_the_intent_is_not_re_created() -> None:
    plan = _plan(_bundle(subs=(_sub(status="canceled"),)))
    assert plan.steps == ()
    assert "canceled in Stripe: not re-created" in plan.notices[0].message


# --- foreign and other installations' subscriptions -----------------------------------------


def test_a_foreign_subscription_is_never_modified_and_blocks_a_second_one() -> None:
    foreign = _sub(seats=9, owner=None, automatic_tax=True)
    plan = _plan(_bundle(subs=(foreign,), intent=_intent(cancel=CancelRequest(immediate=True))))
    assert plan.steps == ()
    plan = _plan(_bundle(subs=(foreign,)))
    assert plan.steps == ()
    assert "not made by us" in plan.notices[0].message


def test_another_installations_subscription_is_never_touched() -> None:
    theirs = _sub(seats=9, owner=_owner(installation="other"))
    plan = _plan(_bundle(subs=(theirs,), intent=_intent(cancel=CancelRequest(immediate=True))))
    assert all(step.stripe_id != theirs.stripe_id for step in plan.steps)
    plan = _plan(_bundle(subs=(theirs,)), billing=AUTO_TAX)
    assert [s.action for s in plan.steps] == [Action.CREATE]


def test_a_foreign_schedule_on_our_subscription_is_left_alone() -> None:
    schedule = _schedule(foreign=True)
    intent = _intent(pending_change=PendingChange("team_yearly", None))
    plan = _plan(
        _bundle(subs=(_sub(schedule_id=schedule.stripe_id),), intent=intent, schedules=(schedule,))
    )
    assert plan.steps == ()
    assert "not made by us" in plan.notices[0].message


# --- seats, tax, metadata -------------------------------------------------------------------


def test_an_in_sync_subscription_plans_nothing() -> None:
    plan = _plan(_bundle(subs=(_sub(),)))
    assert plan.steps == ()
    assert plan.notices == ()
    assert plan.warnings == ()


def test_exact_follows_seats_up_and_down() -> None:
    up = _only(_plan(_bundle(seats=5, subs=(_sub(seats=3),))))
    assert (up.action, up.params["op"], up.batch) == (Action.UPDATE, OP_UPDATE, 2)
    assert up.params["items"] == [{"id": "si_price_seat_m", "quantity": 5}]
    assert up.params["proration_behavior"] == "create_prorations"
    assert _changes(up) == {"quantity": (3, 5)}
    assert fleet_settings(up) == ()
    down = _only(_plan(_bundle(seats=2, subs=(_sub(seats=3),))))
    assert down.params["items"] == [{"id": "si_price_seat_m", "quantity": 2}]
    assert _changes(down) == {"quantity": (3, 2)}
    assert fleet_settings(down) == (SETTING_SEAT_CHANGE,)


def test_incremental_only_goes_up() -> None:
    assert _plan(_bundle(seats=2, subs=(_sub(seats=3),)), billing=INCREMENTAL).steps == ()
    up = _only(_plan(_bundle(seats=4, subs=(_sub(seats=3),)), billing=INCREMENTAL))
    assert up.params["items"] == [{"id": "si_price_seat_m", "quantity": 4}]


def test_a_grandfathered_seat_item_still_follows_seats_and_unknown_prices_are_left() -> None:
    items = (
        replace(_items()[1], price_id="price_seat_m_2025", item_id="si_old"),
        replace(_items()[0], price_id="price_unknown", quantity=7),
    )
    step = _only(_plan(_bundle(seats=6, subs=(_sub(items=items),))))
    assert step.params["items"] == [{"id": "si_old", "quantity": 6}]


def test_a_superseded_seat_price_the_catalog_does_not_list_is_known_by_its_key() -> None:
    """A grandfathered item whose old price id the catalog lacks (only the current id is
    last-applied) is found by the price's `br_key`: it follows the seats and is mirrored."""
    items = (
        _items()[0],
        replace(
            _items()[1],
            price_id="price_seat_m_2024",
            item_id="si_2024",
            price_key="price/team_seat/monthly",
        ),
        # An unknown id with no key, and a metered item (no quantity) under a per-seat key.
        replace(_items()[2], price_id="price_unknown"),
        replace(
            _items()[2],
            price_id="price_was_metered",
            item_id="si_m",
            price_key="price/team_seat/monthly",
        ),
    )
    step = _only(_plan(_bundle(seats=6, subs=(_sub(items=items),))))
    assert step.params["items"] == [{"id": "si_2024", "quantity": 6}]
    assert _changes(step) == {"quantity": (3, 6)}
    [mirror] = _plan(_bundle(seats=3, subs=(_sub(items=items),))).restores
    assert mirror.params["mirror"]["seats"] == 3
    unkeyed = tuple(replace(i, price_key=None) for i in items)
    assert _plan(_bundle(seats=6, subs=(_sub(items=unkeyed),))).steps == ()


def test_another_licensed_quantity_is_set_back_to_one() -> None:
    items = (replace(_items()[0], quantity=2), *_items()[1:])
    step = _only(_plan(_bundle(subs=(_sub(items=items),))))
    assert step.params["items"] == [{"id": "si_price_base_m", "quantity": 1}]
    assert _changes(step) == {"quantity[price/team_base/monthly]": (2, 1)}


def test_stripe_auto_tax_rewrites_live_paid_subscriptions_not_free_ones() -> None:
    paid = _bundle(subs=(_sub(),))
    free = _bundle(
        subs=(_sub("free_monthly", index=1),),
        intent=_intent("free_monthly"),
        index=1,
    )
    step = _only(_plan(paid, free, billing=AUTO_TAX))
    assert step.stripe_id == "sub_0"
    assert step.params["automatic_tax"] == {"enabled": True}
    assert _changes(step) == {"automatic_tax": (False, True)}
    assert fleet_settings(step) == (SETTING_AUTO_TAX,)
    forced_off = _bundle(
        subs=(_sub("free_monthly", automatic_tax=True),), intent=_intent("free_monthly")
    )
    off = _only(_plan(forced_off, billing=AUTO_TAX))
    assert _changes(off) == {"automatic_tax": (True, False)}


def test_a_fleet_rewrite_groups_identical_steps() -> None:
    bundles = [
        AccountSubscriptions(
            account=_account(i), intent=_intent(), seats=3, subscriptions=(_sub(index=i),)
        )
        for i in range(20)
    ]
    plan = _plan(*bundles, billing=AUTO_TAX)
    assert len(plan.steps) == 20
    signatures = {(s.action, s.kind, s.reason, s.changes, fleet_settings(s)) for s in plan.steps}
    assert len(signatures) == 1


def test_yearly_seats_billed_monthly_is_set_on_a_live_yearly_subscription() -> None:
    sub = _sub("team_yearly", pending_invoice_item_interval=None)
    step = _only(_plan(_bundle(subs=(sub,), intent=_intent("team_yearly"))))
    assert step.params["pending_invoice_item_interval"] == {
        "interval": "month",
        "interval_count": 1,
    }
    assert _changes(step) == {"pending_invoice_item_interval": (None, "1 month")}


def test_a_checkout_made_subscription_without_the_plan_marker_gets_it() -> None:
    sub = _sub(owner=replace(_owner(), plan=""))
    step = _only(_plan(_bundle(subs=(sub,))))
    assert step.params["metadata"] == {"plan": "team_monthly"}


def test_future_only_settings_produce_no_steps_for_live_subscriptions() -> None:
    live = _bundle(subs=(_sub(),))
    for billing in (CHANGE_SETTINGS, TRIAL_CANCEL, "  customer:\n    default_plan: free_monthly\n"):
        assert _plan(live, billing=billing).steps == (), billing


# --- fleet changes (DESIGN §14): causes, population, the mass-change guard, future-only ---


def _fleet(n: int, *, automatic_tax: bool = False) -> list[AccountSubscriptions]:
    """`n` accounts, each with a live paid team subscription of ours (3 seats)."""
    return [
        AccountSubscriptions(
            account=_account(i),
            intent=_intent(),
            seats=3,
            subscriptions=(_sub(index=i, automatic_tax=automatic_tax),),
        )
        for i in range(n)
    ]


def test_stripe_auto_tax_flipped_over_a_fleet_is_a_step_per_subscription_with_its_cause() -> None:
    plan = _plan(*_fleet(7), billing=AUTO_TAX)
    assert [s.stripe_id for s in plan.steps] == [f"sub_{i}" for i in range(7)]
    for step in plan.steps:
        assert step.causes == (SETTING_AUTO_TAX,)
        assert step.mass_change
        assert _changes(step) == {"automatic_tax": (False, True)}
    assert plan.population == Population(7, "subscription")
    # And back off: the same fleet, each step naming the setting again.
    back = _plan(*_fleet(7, automatic_tax=True))
    assert {(s.causes, s.mass_change) for s in back.steps} == {((SETTING_AUTO_TAX,), True)}
    assert {_changes(s)["automatic_tax"] for s in back.steps} == {(True, False)}


def test_the_population_counts_every_live_subscription_of_ours_only() -> None:
    fleet = _fleet(3)
    canceled = _bundle(subs=(_sub(index=3, status="canceled"),), index=3)
    foreign = _bundle(subs=(_sub(index=4, owner=None),), index=4)
    other = _bundle(subs=(_sub(index=5, owner=_owner(installation="other")),), index=5)
    free = _bundle(subs=(_sub("free_monthly", index=6),), intent=_intent("free_monthly"), index=6)
    offline = _bundle(index=7, offline=True, stripe_customer_id=None)
    plan = _plan(*fleet, canceled, foreign, other, free, offline, billing=AUTO_TAX)
    # Three paid and one free live subscription of ours; the free one is not rewritten.
    assert plan.population == Population(4, "subscription")
    assert sorted(s.stripe_id or "" for s in plan.steps if s.mass_change) == [
        "sub_0",
        "sub_1",
        "sub_2",
    ]


def test_an_accounts_own_changes_are_not_counted_by_the_guard() -> None:
    seats_up = _bundle(seats=5, subs=(_sub(seats=3),))
    seats_down = _bundle(seats=2, subs=(_sub(seats=3, index=1),), index=1)
    cancel = _bundle(
        intent=_intent(cancel=CancelRequest(immediate=True)), subs=(_sub(index=2),), index=2
    )
    new = _bundle(index=3)
    plan = _plan(seats_up, seats_down, cancel, new)
    assert len(plan.steps) == 4
    assert not any(s.mass_change for s in plan.steps)
    # A seat reduction still names the setting that makes it (`exact`): grouped by it.
    [down] = [s for s in plan.steps if s.stripe_id == "sub_1"]
    assert down.causes == (SETTING_SEAT_CHANGE,)


def test_a_targeted_plan_states_no_population_and_counts_nothing() -> None:
    context = replace(_context(AUTO_TAX), options=PlanOptions(scope=frozenset({"customer/org-1"})))
    plan = subscriptions_plan(None, SubscriptionsObserved(tuple(_fleet(5)), _catalog()), context)
    [step] = plan.steps
    assert (step.stripe_id, step.causes, step.mass_change) == ("sub_1", (SETTING_AUTO_TAX,), False)
    assert plan.population is None


def test_the_domain_declares_its_future_only_settings_and_they_rewrite_nothing() -> None:
    declared = SubscriptionsDomain().future_only_settings
    assert set(declared) == {
        "billing.customer.default_plan",
        "billing.plan_change.proration_behavior",
        "billing.plan_change.immediate_proration_behavior",
        "billing.plan_change.collection_method",
        "billing.subscription.behavior_after_trial",
    }
    assert SETTING_AUTO_TAX not in declared
    assert SETTING_SEAT_CHANGE not in declared
    config = _context(CHANGE_SETTINGS + TRIAL_CANCEL).state.config.model_dump(mode="json")
    for setting in declared:  # each names a real billing.yaml setting
        value: object = config
        for part in setting.split("."):
            assert isinstance(value, dict), setting
            assert part in value, setting
            value = value[part]
    live = _fleet(3)
    for billing in (CHANGE_SETTINGS, TRIAL_CANCEL, "  customer:\n    default_plan: free_monthly\n"):
        plan = _plan(*live, billing=billing)
        assert plan.steps == (), billing
        assert plan.population == Population(3, "subscription")


def _guard(plan: Plan, *, billing: str = "", allow: bool = False) -> Plan:
    """The controller's mass-change guard over `plan` (no Stripe, no store is read)."""
    controller = Controller(
        registration=Registration(SubscriptionsDomain(), lambda g, s: None, {}),
        state=_context(billing).state,
        gateway=None,  # type: ignore[arg-type]
        store=None,  # type: ignore[arg-type]
    )
    return controller._guard_mass_change(plan, PlanOptions(allow_mass_change=allow))


def test_a_fleet_rewrite_above_the_fraction_is_held_back_unless_allowed() -> None:
    # 3 of 20 live subscriptions rewritten (15% > 10%): refused, nothing applied.
    taxed = _fleet(20, automatic_tax=True)
    untaxed = _fleet(3)
    fleet = [*untaxed, *taxed[3:]]
    plan = _plan(*fleet, billing=AUTO_TAX)
    assert len(plan.steps) == 3
    held = _guard(plan, billing=AUTO_TAX)
    assert held.refused
    assert held.refusals == (
        "the plan would cancel, downgrade or reprice 3 of 20 live subscriptions "
        "(15.0% > reconcile.max_fleet_change_fraction 10%). "
        "Re-run with --allow-mass-change if this is intended",
    )
    allowed = _guard(plan, billing=AUTO_TAX, allow=True)
    assert not allowed.refused
    assert allowed.steps == plan.steps
    # 2 of 20 (10%) is within the guard; so is 3 of 20 with a fraction of 0.2.
    assert not _guard(_plan(*fleet[1:], taxed[0], billing=AUTO_TAX), billing=AUTO_TAX).refused
    assert not _guard_with_fraction(plan, 0.2).refused


def _guard_with_fraction(plan: Plan, fraction: float) -> Plan:
    state = _context(AUTO_TAX).state
    reconcile = state.config.reconcile.model_copy(update={"max_fleet_change_fraction": fraction})
    config = state.config.model_copy(update={"reconcile": reconcile})
    controller = Controller(
        registration=Registration(SubscriptionsDomain(), lambda g, s: None, {}),
        state=state.model_copy(update={"config": config}),
        gateway=None,  # type: ignore[arg-type]
        store=None,  # type: ignore[arg-type]
    )
    return controller._guard_mass_change(plan, PlanOptions())


def test_member_changes_over_a_small_fleet_are_never_held_back() -> None:
    plan = _plan(_bundle(seats=2, subs=(_sub(seats=3),)))
    assert len(plan.steps) == 1
    assert not _guard(plan).refused


# --- plan changes through schedules ---------------------------------------------------------


def _schedule(
    phases: tuple[SchedulePhase, ...] | None = None,
    end_behavior: str = "release",
    owner: SubscriptionOwner | None = None,
    *,
    foreign: bool = False,
    **parts: object,
) -> ScheduleRecord:
    if phases is None:
        phases = (
            SchedulePhase(
                PERIOD_START,
                PERIOD_END,
                (
                    PhaseItem("price_base_m", 1),
                    PhaseItem("price_seat_m", 3),
                    PhaseItem("price_api_m", None),
                ),
                plan="team_monthly",
            ),
            SchedulePhase(
                PERIOD_END,
                PERIOD_END + 365 * 86_400,
                (PhaseItem("price_base_y", 1), PhaseItem("price_seat_y", 3)),
                plan="team_yearly",
            ),
        )
    schedule = ScheduleRecord(
        stripe_id="sub_sched_0",
        subscription_id="sub_0",
        customer_id="cus_0",
        status="active",
        end_behavior=end_behavior,
        phases=phases,
        owner=None if foreign else (owner or _owner()),
    )
    return replace(schedule, **parts)  # type: ignore[arg-type]


def test_a_period_end_change_creates_a_two_phase_schedule() -> None:
    intent = _intent(pending_change=PendingChange("team_yearly", PERIOD_END))
    step = _only(_plan(_bundle(subs=(_sub(),), intent=intent), billing=CHANGE_SETTINGS))
    assert (step.action, step.kind, step.key, step.batch) == (
        Action.CREATE,
        SCHEDULE_STEP,
        "subscription_schedule/org-0",
        3,
    )
    params = step.params
    assert params["op"] == OP_SCHEDULE_CREATE
    assert params["from_subscription"] == "sub_0"
    assert params["end_behavior"] == "release"
    first, second = params["phases"]
    assert first == {
        "items": [
            {"price": "price_base_m", "quantity": 1},
            {"price": "price_seat_m", "quantity": 3},
            {"price": "price_api_m"},
        ],
        "metadata": {"plan": "team_monthly"},
        "start_date": PERIOD_START,
        "end_date": PERIOD_END,
        # Every phase written carries its plan's automatic tax (T1 finding 3).
        "automatic_tax": {"enabled": False},
    }
    assert second["automatic_tax"] == {"enabled": False}
    assert second["items"] == [
        {"price": "price_base_y", "quantity": 1},
        {"price": "price_seat_y", "quantity": 3},
    ]
    assert second["metadata"] == {"plan": "team_yearly"}
    assert second["proration_behavior"] == "none"
    assert second["collection_method"] == "send_invoice"
    assert second["invoice_settings"] == {"days_until_due": 15}
    assert second["duration"] == {"interval": "year", "interval_count": 1}
    assert "proration_behavior" not in params
    assert _changes(step) == {
        "plan": ("team_monthly", "team_yearly"),
        "effective_at": (None, PERIOD_END),
    }


def _schedule_step(plan: Plan) -> Step:
    [step] = [s for s in plan.steps if s.kind == SCHEDULE_STEP]
    return step


def test_an_immediate_change_ends_the_current_phase_now_with_the_immediate_proration() -> None:
    intent = _intent(pending_change=PendingChange("team_yearly", None, immediate=True))
    plan = _plan(_bundle(subs=(_sub(),), intent=intent), billing=CHANGE_SETTINGS)
    step = _schedule_step(plan)
    first, second = step.params["phases"]
    assert first["end_date"] == "now"
    assert second["proration_behavior"] == "always_invoice"
    assert step.params["proration_behavior"] == "always_invoice"
    # The yearly plan's monthly billing of added seats goes with the change (an update
    # before the schedule step), so the pass after it plans nothing (helper H3).
    [update] = [s for s in plan.steps if s.kind == SUBSCRIPTION_STEP]
    assert (update.batch, step.batch) == (2, 3)
    assert update.params["pending_invoice_item_interval"] == {
        "interval": "month",
        "interval_count": 1,
    }
    assert _changes(update) == {"pending_invoice_item_interval": (None, "1 month")}


def test_a_period_end_change_to_a_yearly_plan_sets_no_pending_interval_before_it() -> None:
    intent = _intent(pending_change=PendingChange("team_yearly", PERIOD_END))
    plan = _plan(_bundle(subs=(_sub(),), intent=intent))
    assert [s.kind for s in plan.steps] == [SCHEDULE_STEP]


def test_an_applied_change_schedule_plans_nothing_and_a_differing_one_is_updated() -> None:
    intent = _intent(pending_change=PendingChange("team_yearly", PERIOD_END))
    schedule = _schedule()
    sub = _sub(schedule_id=schedule.stripe_id)
    assert _plan(_bundle(subs=(sub,), intent=intent, schedules=(schedule,))).steps == ()
    # A member joined since: the next phase's seats follow.
    step = _only(
        _plan(
            _bundle(
                seats=4,
                subs=(_sub(seats=4, schedule_id="sub_sched_0"),),
                intent=intent,
                schedules=(schedule,),
            )
        )
    )
    assert (step.action, step.params["op"], step.params["schedule"]) == (
        Action.UPDATE,
        OP_SCHEDULE_UPDATE,
        "sub_sched_0",
    )
    assert step.params["phases"][1]["items"][1] == {"price": "price_seat_y", "quantity": 4}


def test_an_immediate_change_over_a_period_end_schedule_updates_it() -> None:
    intent = _intent(pending_change=PendingChange("team_yearly", None, immediate=True))
    schedule = _schedule()
    bundle = _bundle(subs=(_sub(schedule_id="sub_sched_0"),), intent=intent, schedules=(schedule,))
    step = _schedule_step(_plan(bundle))
    assert step.params["op"] == OP_SCHEDULE_UPDATE
    assert step.params["phases"][0]["end_date"] == "now"


def test_the_plan_catalog_reads_currency_options_tiers_and_unlimited_seats() -> None:
    prices = {p.key: p for p in _catalog().plans["team_monthly"].prices}
    seat = prices["price/team_seat/monthly"]
    assert (seat.key, seat.stripe_id, seat.per_seat, seat.seat_limit) == (
        "price/team_seat/monthly",
        "price_seat_m",
        True,
        50,
    )
    assert seat.amounts == {"usd": 900, "eur": 800}
    assert _catalog().price("price_seat_m_2025") == seat
    api = prices["price/api_usage/monthly"]
    assert (api.metered, api.per_seat) == (True, False)
    assert not _catalog().plans["legacy_monthly"].active


def test_a_change_that_took_effect_plans_nothing() -> None:
    intent = _intent(pending_change=PendingChange("team_yearly", PERIOD_START))
    moved = _sub("team_yearly", schedule_id="sub_sched_0")
    schedule = _schedule(phases=(_schedule().phases[1],))
    schedule = replace(schedule, phases=(replace(schedule.phases[0], start=NOW - 5),))
    assert _plan(_bundle(subs=(moved,), intent=intent, schedules=(schedule,))).steps == ()


def test_cancelling_an_upcoming_change_puts_the_schedule_back_to_the_current_phase() -> None:
    schedule = _schedule()
    sub = _sub(schedule_id=schedule.stripe_id)
    step = _only(_plan(_bundle(subs=(sub,), schedules=(schedule,))))
    assert (step.kind, step.params["op"], step.params["end_behavior"]) == (
        SCHEDULE_STEP,
        OP_SCHEDULE_UPDATE,
        "release",
    )
    assert [p["metadata"]["plan"] for p in step.params["phases"]] == ["team_monthly"]
    assert step.params["phases"][0]["end_date"] == PERIOD_END
    assert _changes(step) == {"upcoming_plan": ("team_yearly", None)}
    back = _schedule(phases=(schedule.phases[0],))
    assert _plan(_bundle(subs=(sub,), schedules=(back,))).steps == ()


def test_plan_changes_that_cannot_be_made_are_refused() -> None:
    sub = _sub()
    for target, why in (
        ("team_monthly", "it is the current plan"),
        ("legacy_monthly", "the plan is inactive"),
        ("nope", "not in the catalog"),
    ):
        intent = _intent(pending_change=PendingChange(target, None))
        plan = _plan(_bundle(subs=(sub,), intent=intent))
        assert plan.steps == (), target
        assert why in plan.notices[0].message, target
    intent = _intent(pending_change=PendingChange("solo_monthly", None))
    plan = _plan(_bundle(subs=(replace(sub, currency="eur"),), intent=intent, currency="eur"))
    assert plan.steps == ()
    assert "no price in eur" in plan.notices[0].message


def test_a_change_to_a_plan_whose_seat_limit_is_below_the_members_is_refused() -> None:
    sub = _sub("solo_monthly")
    intent = _intent("solo_monthly", pending_change=PendingChange("team_monthly", None))
    plan = _plan(_bundle(seats=60, subs=(sub,), intent=intent))
    assert plan.steps == ()
    assert "seat_limit 50" in plan.notices[0].message


# --- cancel -------------------------------------------------------------------------------


def test_an_immediate_cancel_invoices_now_and_prorates() -> None:
    intent = _intent(cancel=CancelRequest(immediate=True))
    step = _only(_plan(_bundle(subs=(_sub(),), intent=intent)))
    assert (step.action, step.kind, step.batch, step.stripe_id) == (
        Action.ARCHIVE,
        SUBSCRIPTION_STEP,
        4,
        "sub_0",
    )
    assert step.params == {
        "op": OP_CANCEL,
        "subscription": "sub_0",
        "invoice_now": True,
        "prorate": True,
        "settings": [],
    }
    assert _changes(step) == {"status": ("active", "canceled")}


def test_a_period_end_cancel_ends_the_schedule_at_the_period_end_with_cancel() -> None:
    for intent in (
        _intent(cancel=CancelRequest(immediate=False)),
        _intent(pending_change=PendingChange(None, PERIOD_END, reason="cancel")),
    ):
        step = _only(_plan(_bundle(subs=(_sub(),), intent=intent)))
        assert (step.kind, step.params["op"], step.params["end_behavior"]) == (
            SCHEDULE_STEP,
            OP_SCHEDULE_CREATE,
            "cancel",
        )
        assert [p["end_date"] for p in step.params["phases"]] == [PERIOD_END]
        assert _changes(step) == {"cancel_at": (None, PERIOD_END)}
    # Over a change schedule: the schedule is updated to the current phase, ending in cancel.
    schedule = _schedule()
    intent = _intent(cancel=CancelRequest(immediate=False))
    step = _only(
        _plan(
            _bundle(subs=(_sub(schedule_id="sub_sched_0"),), intent=intent, schedules=(schedule,))
        )
    )
    assert (step.params["op"], step.params["end_behavior"]) == (OP_SCHEDULE_UPDATE, "cancel")
    done = _schedule(phases=(schedule.phases[0],), end_behavior="cancel")
    assert (
        _plan(
            _bundle(subs=(_sub(schedule_id="sub_sched_0"),), intent=intent, schedules=(done,))
        ).steps
        == ()
    )


def test_a_cancelled_account_gets_no_new_subscription() -> None:
    intent = _intent(cancel=CancelRequest(immediate=True))
    assert _plan(_bundle(subs=(_sub(status="canceled"),), intent=intent)).steps == ()
    assert _plan(_bundle(intent=intent)).steps == ()


def test_a_paid_intent_replaces_a_live_free_subscription() -> None:
    free = _sub("free_monthly", owner=replace(_owner("free_monthly"), intent_id="int_0"))
    plan = _plan(_bundle(subs=(free,), intent=_intent(intent_id="int_2")))
    create, cancel = plan.steps
    assert (create.action, create.batch) == (Action.CREATE, 1)
    assert (cancel.action, cancel.batch, cancel.stripe_id) == (Action.ARCHIVE, 4, free.stripe_id)
    assert (cancel.params["invoice_now"], cancel.params["prorate"]) == (False, False)
    assert (create.key, cancel.key) == (
        "subscription/org-0",
        f"subscription/org-0/{free.stripe_id}",
    )
    assert {org_id_of_step_key(s.key) for s in plan.steps} == {"org-0"}
    # The next pass, with both live: only the free one's cancel is left.
    paid = _sub(
        index=0, stripe_id="sub_paid", owner=replace(_owner(), intent_id="int_2"), created=NOW
    )
    plan = _plan(_bundle(subs=(free, paid), intent=_intent(intent_id="int_2")))
    assert [(s.action, s.stripe_id) for s in plan.steps] == [(Action.ARCHIVE, free.stripe_id)]
    assert plan.warnings == ()


def test_a_live_paid_subscription_on_another_plan_is_not_replaced() -> None:
    plan = _plan(_bundle(subs=(_sub("solo_monthly"),)))
    assert plan.steps == ()
    assert "changed through a plan change" in plan.warnings[0]


# --- the mirror -----------------------------------------------------------------------------


def _mirror(sub: SubscriptionRecord, **parts: object) -> SubscriptionMirror:
    seats = next((i.quantity for i in sub.items if i.price_id.startswith("price_seat")), None)
    mirror = SubscriptionMirror(
        stripe_subscription_id=sub.stripe_id,
        plan=sub.owner.plan if sub.owner is not None else "",
        status=sub.status,
        seats=seats,
        trial_end=sub.trial_end,
        current_period_start=sub.current_period_start,
        current_period_end=sub.current_period_end,
        cancel_at=sub.cancel_at,
        canceled_at=sub.canceled_at,
        schedule_id=sub.schedule_id,
    )
    return replace(mirror, **parts)  # type: ignore[arg-type]


def test_the_mirror_is_written_when_stripe_shows_other_facts_and_only_then() -> None:
    sub = _sub(status="past_due")
    new = _plan(_bundle(subs=(sub,)))
    (restore,) = new.restores
    assert (restore.kind, restore.action, restore.reason) == (
        MIRROR_STEP,
        Action.CREATE,
        Reason.BOOKKEEPING,
    )
    assert restore.params["mirror"] == {
        "stripe_subscription_id": "sub_0",
        "plan": "team_monthly",
        "status": "past_due",
        "seats": 3,
        "trial_end": None,
        "current_period_start": PERIOD_START,
        "current_period_end": PERIOD_END,
        "cancel_at": None,
        "canceled_at": None,
        "schedule_id": None,
    }
    assert "intent" not in restore.params
    assert new.converged
    stale = _plan(_bundle(subs=(sub,), mirrors=(_mirror(sub, status="active"),)))
    assert [r.action for r in stale.restores] == [Action.UPDATE]
    assert _plan(_bundle(subs=(sub,), mirrors=(_mirror(sub),))).restores == ()
    foreign = _sub(owner=None)
    assert _plan(_bundle(subs=(foreign,))).restores == ()


def test_a_change_that_took_effect_moves_the_intent_on() -> None:
    intent = _intent(pending_change=PendingChange("team_yearly", PERIOD_START))
    moved = _sub("team_yearly")
    plan = _plan(_bundle(subs=(moved,), intent=intent, mirrors=(_mirror(moved),)))
    (restore,) = plan.restores
    assert restore.params["intent"] == {
        "intent_id": "int_1",
        "plan": "team_yearly",
        "pending_change": None,
    }
    assert plan.steps == ()


# --- scope and fingerprint ------------------------------------------------------------------


def test_step_keys_name_their_org() -> None:
    assert org_id_of_step_key("subscription/a.b:c") == "a.b:c"
    assert org_id_of_step_key("subscription_schedule/o") == "o"
    assert org_id_of_step_key("subscription_mirror/o/sub_1") == "o"
    assert org_id_of_step_key("customer/o") is None
    assert org_id_of_step_key("subscription/") is None


def test_a_targeted_request_plans_only_its_customer() -> None:
    a = _bundle()
    b = replace(a, account=_account(1))
    context = replace(_context(), options=PlanOptions(scope=frozenset({"customer/org-1"})))
    plan = subscriptions_plan(None, SubscriptionsObserved((a, b), _catalog()), context)
    assert [s.key for s in plan.steps] == ["subscription/org-1"]


def _fingerprint(*bundles: AccountSubscriptions) -> str:
    return _plan(*bundles).fingerprint


def _full_bundle() -> AccountSubscriptions:
    """A bundle with every nested record present, so each field can be changed."""
    intent = _intent(
        pending_change=PendingChange("team_yearly", PERIOD_END),
        cancel=CancelRequest(immediate=False, requested_at=5),
        requested_by="user-1",
    )
    sub = _sub(metadata={"a": "1"}, schedule_id="sub_sched_0")
    return _bundle(
        intent=intent,
        subs=(sub,),
        schedules=(_schedule(current_phase=(PERIOD_START, PERIOD_END)),),
        history=frozenset({"free_monthly"}),
        mirrors=(_mirror(sub),),
    )


# A value for a field that is None in the full bundle, where an int would not type-check.
NONE_VALUES: dict[str, object] = {"pending_invoice_item_interval": ("week", 2)}


def _changed(value: object, name: str) -> object:
    if value is None:
        return NONE_VALUES.get(name, 7)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, frozenset):
        return value | {"zz"}
    if isinstance(value, dict):
        return {**value, "zz": "1"}
    assert isinstance(value, tuple), value
    return (*value, 1)


def _variants(record: object, path: str) -> list[tuple[str, object]]:
    """`record` with one field (at any depth) changed, for every field, named by path."""
    out: list[tuple[str, object]] = []
    for f in dataclasses.fields(record):  # type: ignore[arg-type]
        value = getattr(record, f.name)
        name = f"{path}.{f.name}"
        if dataclasses.is_dataclass(value):
            out += [
                (p, replace(record, **{f.name: v}))  # type: ignore[type-var]
                for p, v in _variants(value, name)
            ]
        elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            out += [
                (p, replace(record, **{f.name: (v, *value[1:])}))  # type: ignore[type-var]
                for p, v in _variants(value[0], f"{name}[0]")
            ]
        else:
            out.append((name, replace(record, **{f.name: _changed(value, f.name)})))  # type: ignore[type-var]
    return out


VARIANTS = dict(_variants(_full_bundle(), "bundle"))


def test_the_variants_reach_every_record_type() -> None:
    reached = {path.rsplit(".", 1)[0] for path in VARIANTS}
    assert {
        "bundle.account",
        "bundle.intent",
        "bundle.intent.pending_change",
        "bundle.intent.cancel",
        "bundle.subscriptions[0]",
        "bundle.subscriptions[0].items[0]",
        "bundle.subscriptions[0].owner",
        "bundle.schedules[0]",
        "bundle.schedules[0].phases[0]",
        "bundle.schedules[0].phases[0].items[0]",
        "bundle.schedules[0].owner",
        "bundle.mirrors[0]",
    } <= reached


@pytest.mark.parametrize("path", sorted(VARIANTS))
def test_the_fingerprint_changes_with_any_observed_value(path: str) -> None:
    base = _fingerprint(_full_bundle())
    assert base == _fingerprint(_full_bundle())
    changed = VARIANTS[path]
    assert isinstance(changed, AccountSubscriptions)
    assert _fingerprint(changed) != base, path


def test_the_fingerprint_changes_with_the_catalog() -> None:
    observed = SubscriptionsObserved((_bundle(),), _catalog())
    base = subscriptions_plan(None, observed, _context()).fingerprint
    other = plan_catalog(_context().state, {**PRICE_IDS, "price/solo_base/monthly": "price_x"})
    changed = subscriptions_plan(None, replace(observed, catalog=other), _context()).fingerprint
    assert changed != base


def test_the_fingerprint_ignores_metadata_order() -> None:
    one = _sub(metadata={"a": "1", "b": "2"})
    two = _sub(metadata={"b": "2", "a": "1"})
    assert _fingerprint(_bundle(subs=(one,))) == _fingerprint(_bundle(subs=(two,)))


# --- scale ----------------------------------------------------------------------------------


def test_a_100k_account_plan_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    """100,000 accounts with an in-sync subscription each, 1% with a member more: the plan's
    CPU time (target < 5 s; reported, asserted only loosely for slow shared machines)."""
    count = 100_000
    bundles = tuple(
        AccountSubscriptions(
            account=_account(i),
            intent=_intent(),
            seats=4 if i % 100 == 0 else 3,
            plan_history=frozenset({"free_monthly"}),
            subscriptions=(_sub(index=i),),
            mirrors=(_mirror(_sub(index=i)),),
        )
        for i in range(count)
    )
    observed = SubscriptionsObserved(bundles, _catalog())
    context = _context()
    started = time.process_time()
    plan = subscriptions_plan(None, observed, context)
    elapsed = time.process_time() - started
    with capsys.disabled():
        print(f"\n100k-account subscriptions plan: {elapsed:.2f} s CPU, {len(plan.steps)} steps")
    assert len(plan.steps) == count // 100
    assert plan.restores == ()  # the mirror holds what Stripe shows (3 seats until applied)
    assert all(s.params["items"][0]["quantity"] == 4 for s in plan.steps)
    assert elapsed < 30


def test_records_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        _bundle().seats = 2  # type: ignore[misc]

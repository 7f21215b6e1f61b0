"""Contract customers' declared `plan` and `seats` (DESIGN §15: the YAML wins) in the
subscriptions domain's rules: a missing subscription is created on the declared plan under a
synthetic intent derived from org and plan, another plan is changed at its period end, a
declared seat count is the per-seat quantity whatever the members, and the API's intent is
not followed."""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from pathlib import Path
from tempfile import mkdtemp

from billing_reconciler.desired import load_desired
from billing_reconciler.domains.base import PlanContext, PlanOptions
from billing_reconciler.domains.subscription_rules import (
    OP_CREATE,
    OP_SCHEDULE_CREATE,
    OP_UPDATE,
    SCHEDULE_STEP,
    SUBSCRIPTION_STEP,
    contract_intent_id,
    subscription_creation_key,
    subscriptions_plan,
)
from billing_reconciler.domains.subscription_types import (
    AccountSubscriptions,
    CancelRequest,
    SubscriptionsObserved,
)
from billing_reconciler.model_subscriptions import META_INTENT
from billing_reconciler.planning.plan import Action, Plan

from .test_subscription_rules import (
    INSTALLATION,
    NOW,
    PERIOD_END,
    PLANS,
    _bundle,
    _catalog,
    _intent,
    _only,
    _sub,
)


@cache
def _contract_context(entry: str) -> PlanContext:
    """The rules' test catalog with one contract customer (`entry`: its YAML flow mapping)."""
    root = Path(mkdtemp(prefix="subs-contract-"))
    (root / "plans").mkdir()
    (root / "plans" / "plans.yaml").write_text(PLANS)
    (root / "customers").mkdir()
    (root / "customers" / "contracts.yaml").write_text(f"customers:\n  - {entry}\n")
    (root / "billing.yaml").write_text(
        f"billing:\n  default_currency: usd\nreconcile:\n  installation_id: {INSTALLATION}\n"
    )
    result = load_desired(root)
    assert result.state is not None, result.diagnostics
    assert result.state.customers, "the contract customer was not loaded"
    return PlanContext(
        state=result.state,
        options=PlanOptions(),
        applied={},
        spent_keys=frozenset(),
        key_salt="salt",
        now=NOW,
    )


TEAM_5 = "{org_id: org-0, name: Org Zero, plan: team_monthly, seats: 5}"
TEAM = "{org_id: org-0, name: Org Zero, plan: team_monthly}"
NO_PLAN = "{org_id: org-0, name: Org Zero}"


def _plan(entry: str, *bundles: AccountSubscriptions) -> Plan:
    return subscriptions_plan(
        None,
        SubscriptionsObserved(accounts=bundles, catalog=_catalog()),
        _contract_context(entry),
    )


def _no_intent(**parts: object) -> AccountSubscriptions:
    return replace(_bundle(**parts), intent=None)  # type: ignore[arg-type]


def test_a_declared_plan_without_a_subscription_is_created_with_the_fixed_seats() -> None:
    step = _only(_plan(TEAM_5, _no_intent(seats=2)))
    assert (step.action, step.kind, step.key) == (
        Action.CREATE,
        SUBSCRIPTION_STEP,
        "subscription/org-0",
    )
    assert step.params["op"] == OP_CREATE
    assert step.params["plan"] == "team_monthly"
    assert step.params["items"] == [
        {"price": "price_base_m", "quantity": 1},
        {"price": "price_seat_m", "quantity": 5},
        {"price": "price_api_m"},
    ]
    # A contract is billed as agreed: no trial, though team_monthly has 14 days.
    assert "trial_period_days" not in step.params
    intent_id = contract_intent_id("org-0", "team_monthly")
    assert step.params["metadata"][META_INTENT] == intent_id
    assert step.idempotency_key == subscription_creation_key(
        installation_id=INSTALLATION,
        org_id="org-0",
        plan="team_monthly",
        intent_id=intent_id,
        salt="salt",
    )
    # Derived, never random: the same key on a rerun after a crash.
    assert _only(_plan(TEAM_5, _no_intent(seats=7))).idempotency_key == step.idempotency_key


def test_the_declared_plan_wins_over_the_apis_intent() -> None:
    # The store's intent says solo_monthly (an API subscribe); the YAML says team_monthly.
    step = _only(_plan(TEAM, _bundle(seats=3, intent=_intent("solo_monthly"))))
    assert (step.action, step.params["op"], step.params["plan"]) == (
        Action.CREATE,
        OP_CREATE,
        "team_monthly",
    )
    assert {"price": "price_seat_m", "quantity": 3} in step.params["items"]


def test_an_api_cancel_of_a_contract_subscription_is_not_followed() -> None:
    cancel = _intent(cancel=CancelRequest(immediate=True))
    assert _plan(TEAM, _bundle(intent=cancel, subs=(_sub(seats=3),))).steps == ()


def test_a_live_subscription_on_another_plan_is_changed_at_its_period_end() -> None:
    live = _sub("solo_monthly")
    step = _only(_plan(TEAM_5, _bundle(intent=_intent("solo_monthly"), subs=(live,))))
    assert (step.action, step.kind, step.params["op"]) == (
        Action.CREATE,
        SCHEDULE_STEP,
        OP_SCHEDULE_CREATE,
    )
    first, second = step.params["phases"]
    assert first["end_date"] == PERIOD_END
    assert second["metadata"] == {"plan": "team_monthly"}
    assert {"price": "price_seat_m", "quantity": 5} in second["items"]
    assert {c.path: (c.before, c.after) for c in step.changes}["plan"] == (
        "solo_monthly",
        "team_monthly",
    )


def test_fixed_seats_are_the_quantity_whatever_the_members() -> None:
    up = _only(_plan(TEAM_5, _bundle(seats=9, subs=(_sub(seats=3),))))
    assert (up.action, up.params["op"]) == (Action.UPDATE, OP_UPDATE)
    assert up.params["items"] == [{"id": "si_price_seat_m", "quantity": 5}]
    for members in (1, 5, 40):
        assert _plan(TEAM_5, _bundle(seats=members, subs=(_sub(seats=5),))).steps == ()


def test_without_seats_the_members_are_counted() -> None:
    up = _only(_plan(TEAM, _bundle(seats=9, subs=(_sub(seats=3),))))
    assert up.params["items"] == [{"id": "si_price_seat_m", "quantity": 9}]


def test_fixed_seats_above_the_seat_limit_are_refused() -> None:
    plan = _plan(
        "{org_id: org-0, name: Org Zero, plan: team_monthly, seats: 60}", _no_intent(seats=1)
    )
    assert plan.steps == ()
    assert any("60 seats are above the seat_limit 50" in n.message for n in plan.notices)


def test_without_a_declared_plan_the_intent_is_followed_as_today() -> None:
    step = _only(_plan(NO_PLAN, _bundle(seats=3, intent=_intent("solo_monthly"))))
    assert step.params["plan"] == "solo_monthly"
    assert _plan(NO_PLAN, _no_intent()).steps == ()


def test_a_declared_plan_is_created_send_invoice_due_in_the_accounts_days() -> None:
    """DESIGN §16: collection method and `days_until_due` from config and account. A contract
    customer is invoiced as agreed (its `due_in_days`: 15 here), so the create needs no card
    (charge_automatically without a payment method fails in Stripe on every pass)."""
    step = _only(_plan(TEAM_5, _no_intent(seats=2)))
    assert step.params["collection_method"] == "send_invoice"
    assert step.params["days_until_due"] == 15
    # An ordinary account's subscribe is still charged automatically.
    ordinary = subscriptions_plan(
        None,
        SubscriptionsObserved(accounts=(_bundle(),), catalog=_catalog()),
        _contract_context(NO_PLAN),
    )
    created = [s for s in ordinary.steps if s.action is Action.CREATE]
    assert [s.params["collection_method"] for s in created] == ["charge_automatically"]
    assert "days_until_due" not in created[0].params

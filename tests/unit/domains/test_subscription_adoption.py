"""The subscriptions rules after a lost store (DESIGN §16, README: Stripe is the inventory)
and for a disabled account: a live subscription of ours is adopted by an account whose intent
is none or only the default plan's, never duplicated or replaced by the default plan; two
live paid ones are a conflict for a human; a disabled account's live subscription is
cancelled before anything else. And the domain reads from Stripe an account whose intent asks
for a subscription while nothing of it is mirrored."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Sequence
from typing import Any

from billing_reconciler.desired.state import DesiredState
from billing_reconciler.domains.customer_types import CursorState, EventPosition
from billing_reconciler.domains.subscription_rules import (
    MIRROR_STEP,
    OP_CANCEL,
    SCHEDULE_STEP,
    SUBSCRIPTION_STEP,
)
from billing_reconciler.domains.subscription_types import (
    CancelRequest,
    PlanCatalog,
    SubscriptionsObserved,
)
from billing_reconciler.domains.subscriptions import (
    LiveSubscriptions,
    StoredSubscriber,
    SubscriptionChanges,
    SubscriptionsDomain,
)
from billing_reconciler.model_subscriptions import (
    PendingChange,
    SubscriptionOwner,
    SubscriptionRecord,
)
from billing_reconciler.planning.plan import Action, Plan
from tests.unit.domains.test_subscription_rules import (
    INSTALLATION,
    NOW,
    PERIOD_END,
    _bundle,
    _catalog,
    _context,
    _intent,
    _plan,
    _schedule,
    _sub,
)

DEFAULT = _intent("free_monthly", intent_id="int_new", source="default_plan")


def _old(
    plan: str = "team_monthly", *, index: int = 0, intent_id: str = "int_old", **kw: object
) -> SubscriptionRecord:
    owner = SubscriptionOwner(
        installation_id=INSTALLATION, org_id="org-0", plan=plan, intent_id=intent_id
    )
    sub = _sub(plan)
    return dataclasses.replace(sub, stripe_id=f"sub_{plan}_{index}", owner=owner, **kw)  # type: ignore[arg-type]


def _adopts(plan: Plan, sub_id: tuple[str, str]) -> dict[str, Any]:
    restores = [r for r in plan.restores if r.kind == MIRROR_STEP and "adopt" in r.params]
    assert [(r.stripe_id, r.params["adopt"]["plan"]) for r in restores] == [sub_id]
    adopt: dict[str, Any] = restores[0].params["adopt"]
    return adopt


def test_a_default_plan_intent_adopts_a_live_paid_subscription_and_creates_nothing() -> None:
    paid = _old()
    plan = _plan(_bundle(intent=DEFAULT, subs=(paid,)))
    assert not [s for s in plan.steps if s.action is Action.CREATE]
    assert not [s for s in plan.steps if s.params.get("op") == OP_CANCEL]
    adopt = _adopts(plan, (paid.stripe_id, "team_monthly"))
    assert adopt == {"intent_id": "int_old", "plan": "team_monthly", "replaces": "int_new"}
    assert not [w for w in plan.warnings if "team_monthly" in w]


def test_no_intent_adopts_the_live_subscription() -> None:
    free = _old("free_monthly")
    bundle = dataclasses.replace(_bundle(subs=(free,)), intent=None)
    plan = _plan(bundle)
    assert plan.steps == ()
    adopt = _adopts(plan, (free.stripe_id, "free_monthly"))
    assert adopt["replaces"] is None


def test_the_paid_one_wins_over_the_default_plans_own_free_one_which_is_replaced() -> None:
    paid = _old(created=NOW - 5000)
    own_free = _old("free_monthly", intent_id="int_new", created=NOW - 10)
    plan = _plan(_bundle(intent=DEFAULT, subs=(paid, own_free)))
    _adopts(plan, (paid.stripe_id, "team_monthly"))
    cancels = [s for s in plan.steps if s.params.get("op") == OP_CANCEL]
    assert [(s.stripe_id, s.params["invoice_now"]) for s in cancels] == [
        (own_free.stripe_id, False)
    ]
    assert not [s for s in plan.steps if s.action is Action.CREATE]


def test_two_live_paid_subscriptions_are_a_conflict_never_cancelled() -> None:
    older = _old(index=1, intent_id="int_a", created=NOW - 9000)
    newer = _old(index=2, intent_id="int_b", created=NOW - 100)
    plan = _plan(_bundle(intent=DEFAULT, subs=(older, newer)))
    _adopts(plan, (newer.stripe_id, "team_monthly"))
    assert not [s for s in plan.steps if s.params.get("op") == OP_CANCEL]
    assert not [s for s in plan.steps if s.action is Action.CREATE]
    (warning,) = [w for w in plan.warnings if "conflict" in w]
    assert f"{newer.stripe_id} is used; {older.stripe_id} left as is" in warning


def test_a_schedule_that_cancels_at_period_end_is_adopted_as_the_cancel_and_kept() -> None:
    """A lost store's cancel at period end, held by our schedule (its one phase ends at the
    period end, `end_behavior: cancel`): the adopted intent asks for it, and the schedule is
    neither released nor rewritten."""
    paid = _old()
    cancelling = _schedule(
        _schedule().phases[:1],
        "cancel",
        owner=paid.owner,
        subscription_id=paid.stripe_id,
    )
    plan = _plan(_bundle(intent=DEFAULT, subs=(paid,), schedules=(cancelling,)))
    adopt = _adopts(plan, (paid.stripe_id, "team_monthly"))
    assert adopt == {
        "intent_id": "int_old",
        "plan": "team_monthly",
        "replaces": "int_new",
        "cancel": {"immediate": False, "effective_at": PERIOD_END},
    }
    assert not [s for s in plan.steps if s.kind == SCHEDULE_STEP], plan.steps
    assert plan.steps == ()


def test_a_schedule_with_a_later_phase_is_adopted_as_the_change_not_a_cancel() -> None:
    paid = _old()
    changing = _schedule(owner=paid.owner, subscription_id=paid.stripe_id)
    plan = _plan(_bundle(intent=DEFAULT, subs=(paid,), schedules=(changing,)))
    adopt = _adopts(plan, (paid.stripe_id, "team_monthly"))
    assert adopt["pending_change"] == {"plan": "team_yearly", "effective_at": PERIOD_END}
    assert "cancel" not in adopt
    assert plan.steps == ()


def test_a_subscription_stripe_cancels_at_period_end_is_adopted_with_the_cancel() -> None:
    """Without a schedule: Stripe's `cancel_at_period_end` outside a trial is a cancel then
    (a trial's is its `behavior_after_trial`, not a cancel request)."""
    paid = _old(cancel_at_period_end=True, cancel_at=PERIOD_END)
    plan = _plan(_bundle(intent=DEFAULT, subs=(paid,)))
    adopt = _adopts(plan, (paid.stripe_id, "team_monthly"))
    assert adopt["cancel"] == {"immediate": False, "effective_at": PERIOD_END}
    assert plan.steps == ()
    trial = _old(cancel_at_period_end=True, cancel_at=PERIOD_END, status="trialing")
    adopt = _adopts(
        _plan(_bundle(intent=DEFAULT, subs=(trial,))), (trial.stripe_id, "team_monthly")
    )
    assert "cancel" not in adopt


def test_a_subscribed_intent_adopts_nothing() -> None:
    paid = _old()
    plan = _plan(_bundle(intent=_intent("solo_monthly", source="subscribe"), subs=(paid,)))
    assert not [r for r in plan.restores if "adopt" in r.params]


def test_the_plan_of_an_unmarked_plan_comes_from_its_items_price_keys() -> None:
    sub = _old("free_monthly")
    assert sub.owner is not None
    keyed = dataclasses.replace(
        sub,
        owner=dataclasses.replace(sub.owner, plan=""),
        items=tuple(
            dataclasses.replace(i, price_key="price/platform_free/monthly") for i in sub.items
        ),
    )
    bundle = dataclasses.replace(_bundle(subs=(keyed,)), intent=None)
    _adopts(_plan(bundle), (keyed.stripe_id, "free_monthly"))


def test_a_disabled_account_has_its_live_subscriptions_cancelled_first() -> None:
    paid = _old()
    disabled = _bundle(intent=_intent(), subs=(paid,), state="disabled")
    new_account = _bundle(intent=_intent("free_monthly", intent_id="int_9"), index=1)
    new_account = dataclasses.replace(
        new_account, account=dataclasses.replace(new_account.account, org_id="org-0")
    )
    plan = _plan(disabled, new_account)
    first, *rest = plan.steps
    assert (first.stripe_id, first.params["op"], first.batch) == (paid.stripe_id, OP_CANCEL, 0)
    assert (first.params["invoice_now"], first.params["prorate"]) == (True, True)
    assert first.key == f"{SUBSCRIPTION_STEP}/org-0/{paid.stripe_id}"
    assert [s.action for s in rest] == [Action.CREATE]
    assert len({s.key for s in plan.steps}) == len(plan.steps)


def test_an_org_re_created_beside_its_disabled_account_plans_unique_step_keys() -> None:
    """A deleted org's account (disabled, its cancel now, at period end or none pending, on a
    paid or a free plan, with its schedule or without) and the org's re-created account (its
    default plan to create, or the same plan): one plan, in either order, never holds two
    steps with one key, and the old account's cancel names its subscription."""
    cancels = {
        "now": (CancelRequest(immediate=True), None),
        "period_end": (
            CancelRequest(immediate=False),
            PendingChange(None, PERIOD_END, reason="cancel"),
        ),
        "none": (None, None),
    }
    for (cancel, pending), plan_name, scheduled, new_plan in itertools.product(
        cancels.values(), ("team_monthly", "free_monthly"), (False, True), ("free_monthly", None)
    ):
        sub = _old(plan_name)
        schedules = (
            (
                _schedule(
                    _schedule().phases[:1], "cancel", owner=sub.owner, subscription_id=sub.stripe_id
                ),
            )
            if scheduled
            else ()
        )
        old = _bundle(
            intent=_intent(plan_name, intent_id="int_old", cancel=cancel, pending_change=pending),
            subs=(sub,),
            schedules=schedules,
            state="disabled",
        )
        new = _bundle(intent=_intent(new_plan or plan_name, intent_id="int_9"), index=1)
        new = dataclasses.replace(new, account=dataclasses.replace(new.account, org_id="org-0"))
        for bundles in ((old, new), (new, old)):
            plan = _plan(*bundles)
            keys = [s.key for s in plan.steps]
            assert len(set(keys)) == len(keys), keys
            ends = [s for s in plan.steps if s.stripe_id == sub.stripe_id]
            assert [(s.key, s.params["op"]) for s in ends] == [
                (f"{SUBSCRIPTION_STEP}/org-0/{sub.stripe_id}", OP_CANCEL)
            ]
            assert f"{SUBSCRIPTION_STEP}/org-0" in keys  # the new account's create


# --- the domain: an unmirrored account is read from Stripe ------------------------------------


class _Reader:
    def __init__(self, subscribers: Sequence[StoredSubscriber]) -> None:
        self.subscribers = subscribers
        self.read: list[list[str]] = []

    def accounts(self, org_ids: frozenset[str] | None) -> Sequence[StoredSubscriber]:
        return self.subscribers

    def catalog(self, state: DesiredState, *, installation_id: str) -> PlanCatalog:
        return _catalog()

    def cursor(self) -> CursorState:
        return CursorState(EventPosition("evt_1", NOW - 10), full_resync_at=NOW - 10)

    def changes_since(self, position: EventPosition | None) -> SubscriptionChanges:
        return SubscriptionChanges((), position, full_resync=False)

    def all_subscriptions(self, *, installation_id: str) -> LiveSubscriptions:
        raise AssertionError("not a full resync")

    def subscriptions_of(
        self, customer_ids: Iterable[str], *, installation_id: str
    ) -> LiveSubscriptions:
        self.read.append(list(customer_ids))
        return LiveSubscriptions(subscriptions=(_old(),))


def test_an_account_with_nothing_mirrored_is_read_from_stripe_between_full_resyncs() -> None:
    unmirrored = StoredSubscriber(facts=_bundle(intent=DEFAULT))
    mirrored = StoredSubscriber(facts=_bundle(index=1), mirrored=(_sub(index=1),))
    no_intent = StoredSubscriber(facts=dataclasses.replace(_bundle(index=2), intent=None))
    reader = _Reader([unmirrored, mirrored, no_intent])
    domain = SubscriptionsDomain()
    observed = domain.observe(reader, None, _context())
    assert reader.read == [["cus_0"]]
    assert observed.fresh == frozenset({"org-0"})
    plan = domain.plan(None, observed, _context())
    assert not [s for s in plan.steps if s.action is Action.CREATE]
    assert isinstance(observed.observed, SubscriptionsObserved)


def test_a_cancel_of_an_intent_without_a_subscription_never_cancels_another_intents() -> None:
    """The paid intent Stripe refused (no subscription made for it) asks for a cancel: the
    live free subscription of the default intent it was to replace is not its own."""
    free = _old("free_monthly", intent_id="int_default")
    for immediate in (True, False):
        paid = _intent(
            "team_monthly",
            intent_id="int_paid",
            cancel=CancelRequest(immediate=immediate),
        )
        plan = _plan(_bundle(intent=paid, subs=(free,)))
        assert not [s for s in plan.steps if s.stripe_id == free.stripe_id], plan.steps
        assert not [s for s in plan.steps if s.action is Action.CREATE]


def test_an_immediate_cancel_still_cancels_an_adopted_one_under_a_new_intent_id() -> None:
    paid = _old("team_monthly", intent_id="int_lost")
    intent = _intent("team_monthly", intent_id="int_new", cancel=CancelRequest(immediate=True))
    plan = _plan(_bundle(intent=intent, subs=(paid,)))
    assert [s.stripe_id for s in plan.steps if s.params.get("op") == OP_CANCEL] == [paid.stripe_id]


# --- seats of an adopted subscription while the host has not re-sent its members -------------


def _seat_quantities(plan: Plan) -> list[object]:
    """Every per-seat quantity the plan's steps would write (the subscription's items and
    each schedule phase's)."""
    found: list[object] = []
    for step in plan.steps:
        for change in step.changes:
            if "seat" in change.path or "quantity" in change.path:
                found.append((step.kind, change.path, change.before, change.after))
    return found


def test_an_adopted_subscriptions_seats_are_held_while_the_org_has_no_members() -> None:
    """A lost store: the host re-PUT the org (its default plan's intent) but not its members
    yet. The adoption pass, and every pass after it on the adopted intent, keeps Stripe's 3
    seats (no update to 1 with its prorated credit), and says why."""
    paid = _old()
    plan = _plan(_bundle(intent=DEFAULT, subs=(paid,), seats=0))
    _adopts(plan, (paid.stripe_id, "team_monthly"))
    assert plan.steps == (), plan.steps
    (notice,) = [n for n in plan.notices if "seats held" in n.message]
    assert "seats held at 3" in notice.message
    adopted = _intent("team_monthly", intent_id="int_old", requested_by=f"adopted {paid.stripe_id}")
    later = _plan(_bundle(intent=adopted, subs=(paid,), seats=0))
    assert later.steps == (), later.steps
    # The first member the host sends ends it: the quantity follows the members.
    (update,) = _plan(_bundle(intent=adopted, subs=(paid,), seats=1)).steps
    assert update.kind == SUBSCRIPTION_STEP
    assert (3, 1) in {(c.before, c.after) for c in update.changes}, update.changes
    # An intent of this store's own (not adopted) with no member: one seat, as before.
    own = _plan(_bundle(intent=_intent("team_monthly", intent_id="int_old"), subs=(paid,), seats=0))
    assert own.steps, "a non-adopted intent follows its members (at least 1)"


def test_an_adopted_schedules_next_phase_keeps_stripes_seat_quantity() -> None:
    """The pending change our schedule holds is adopted, and its next phase's seat quantity
    (3) is not rewritten to 1 before the members are re-sent."""
    paid = _old()
    changing = _schedule(owner=paid.owner, subscription_id=paid.stripe_id)
    plan = _plan(_bundle(intent=DEFAULT, subs=(paid,), schedules=(changing,), seats=0))
    adopt = _adopts(plan, (paid.stripe_id, "team_monthly"))
    assert adopt["pending_change"] == {"plan": "team_yearly", "effective_at": PERIOD_END}
    assert plan.steps == (), _seat_quantities(plan)
    adopted = _intent(
        "team_monthly",
        intent_id="int_old",
        requested_by=f"adopted {paid.stripe_id}",
        pending_change=PendingChange("team_yearly", PERIOD_END),
    )
    later = _plan(_bundle(intent=adopted, subs=(paid,), schedules=(changing,), seats=0))
    assert later.steps == (), _seat_quantities(later)

"""A crash between the two calls of a schedule write (DESIGN §7, §16).

A pending plan change is written as `POST /v1/subscription_schedules {from_subscription}`
then `POST /v1/subscription_schedules/{id} {phases, end_behavior, metadata}`: Stripe takes
nothing else with `from_subscription`, so between the two calls the schedule carries no
marker. A run that dies there (the second call refused with a 500, or the first one's
connection lost after Stripe committed it) leaves that unmarked schedule on our
subscription; the rerun must take it as ours and finish it (one schedule, two phases,
marked), never leave the change undone as "someone else's schedule", never create a second
one (the emulator, as Stripe, refuses a second schedule on a subscription).
"""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from billing_reconciler.apply import ApplyError
from billing_reconciler.controller import Controller, PlanOptions
from billing_reconciler.desired import load_desired
from billing_reconciler.domains.subscription_rules import SCHEDULE_STEP
from billing_reconciler.model_subscriptions import PendingChange
from billing_reconciler.registry import SUBSCRIPTIONS
from billing_reconciler.store import IntentRepository
from billing_reconciler.stripe_gateway import NO_RETRY, StripeGateway
from stripe_emulator.control import FaultKind

from .conftest import FEB_15, World

CREATE = "/v1/subscription_schedules"
MODIFY = "/v1/subscription_schedules/"  # .../{id}: the phases and the marker


def _crashing(world: World) -> Controller:
    """The subscriptions controller of a run that dies at its first failed request."""
    result = load_desired(world.directory)
    assert result.state is not None
    return Controller(
        registration=SUBSCRIPTIONS,
        state=result.state,
        gateway=StripeGateway(api_key="sk_test_crash", api_base=world.emulator.url, retry=NO_RETRY),
        store=world.store,
        clock=world.now,
    )


def _schedules(world: World, customer: str) -> list[Any]:
    params: dict[str, Any] = {"customer": customer, "limit": 100}
    return list(world.stripe.v1.subscription_schedules.list(params).auto_paging_iter())  # type: ignore[arg-type]


def _team_monthly_changing_to_free(world: World) -> tuple[str, str]:
    """acme live on team_monthly (mirrored), a change to free_monthly at the period end
    pending; (customer id, subscription id)."""
    world.configure(default_plan="")
    world.open("acme", members=1)
    world.reconcile()
    world.add_card("acme")
    world.subscribe("acme", "team_monthly")
    world.reconcile()
    world.reconcile()
    account = world.account("acme")
    [sub] = world.subscriptions("acme")
    with world.store.session() as session:
        IntentRepository(session).set_pending_change(
            account.id, PendingChange("free_monthly", FEB_15)
        )
    assert account.stripe_customer_id is not None
    return account.stripe_customer_id, sub.id


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        (MODIFY, "500"),  # created, then the phases never written
        (CREATE, "drop_after_commit"),  # created in Stripe; we never saw its id
        (MODIFY, "drop_after_commit"),  # both written; the answer lost
    ],
    ids=["modify-500", "create-dropped", "modify-dropped"],
)
def test_a_crash_between_the_schedule_calls_is_finished_by_the_rerun(
    world: World, path: str, kind: FaultKind
) -> None:
    customer, sub_id = _team_monthly_changing_to_free(world)
    world.emulator.control.add_fault(method="POST", path_prefix=path, nth=1, kind=kind)
    crashing = _crashing(world)
    planned = crashing.plan(PlanOptions())
    assert [s.params["op"] for s in planned.plan.steps if s.kind == SCHEDULE_STEP] == [
        "schedule_create"
    ]
    with pytest.raises(ApplyError):
        crashing.apply(planned)
    assert world.emulator.control.faults()[0]["fired"]
    world.emulator.control.clear_faults()
    [left] = _schedules(world, customer)
    assert left.subscription == sub_id
    if kind == "500" or path == CREATE:
        assert len(left.phases) == 1  # from_subscription's copy of the current period
        assert "managed_by" not in left.metadata

    # Stripe (and the emulator) refuse a second schedule on the subscription.
    with pytest.raises(stripe.InvalidRequestError, match="already attached"):
        world.stripe.v1.subscription_schedules.create({"from_subscription": sub_id})

    plan = world.reconcile()  # the restart: a new controller on the same store
    assert plan.notices == () or all("not made by us" not in n.message for n in plan.notices)

    [schedule] = _schedules(world, customer)  # never a second one
    assert schedule.id == left.id
    assert schedule.status == "active"
    assert schedule.metadata["managed_by"] == "billing-reconciler"
    assert schedule.metadata["br_key"] == "subscription/acme"
    assert [(p.to_dict().get("metadata") or {}).get("plan") for p in schedule.phases] == [
        "team_monthly",
        "free_monthly",
    ]
    assert schedule.phases[0].end_date == schedule.phases[1].start_date
    assert world.stripe.v1.subscriptions.retrieve(sub_id).schedule == schedule.id
    assert world.reconcile().steps == ()

    # The change then takes effect at the period end as any other.
    end = schedule.phases[0].end_date
    world.advance(end + 3600)
    world.reconcile()
    live = world.stripe.v1.subscriptions.retrieve(sub_id)
    assert live.status == "active"
    assert live.metadata["plan"] in ("team_monthly", "free_monthly")
    with world.store.session() as session:
        intent = IntentRepository(session).current(world.account("acme").id)
    assert intent is not None
    assert (intent.plan, intent.pending_change) == ("free_monthly", None)


def test_a_schedule_someone_else_made_on_our_subscription_is_still_left_alone(
    world: World,
) -> None:
    """The claim is narrow: a schedule on our subscription that already holds a change of
    its own (a second phase) is not the half of our write, so it stays foreign."""
    customer, sub_id = _team_monthly_changing_to_free(world)
    made = world.stripe.v1.subscription_schedules.create({"from_subscription": sub_id})
    current = made.phases[0]
    items = [{"price": i.price, "quantity": i.quantity} for i in current["items"]]
    change: dict[str, Any] = {
        "phases": [
            {"items": items, "start_date": current.start_date, "end_date": current.end_date},
            {"items": items, "duration": {"interval": "month", "interval_count": 1}},
        ],
        "metadata": {"owner": "someone else"},
    }
    world.stripe.v1.subscription_schedules.update(made.id, change)  # type: ignore[arg-type]
    plan = world.reconcile()
    assert [s for s in plan.steps if s.kind == SCHEDULE_STEP] == []
    assert any("not made by us" in n.message for n in plan.notices)
    [schedule] = _schedules(world, customer)
    assert schedule.metadata.to_dict() == {"owner": "someone else"}
    assert len(schedule.phases) == 2

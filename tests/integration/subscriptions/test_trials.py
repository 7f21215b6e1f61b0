"""Trials end to end (DESIGN §16, issue 11): a plan's `trial_days` through the admin subscribe
route; at the trial's end `subscription.behavior_after_trial: release` starts the paid
subscription (invoiced), `cancel` (or the subscribe's `cancel_after_trial`) cancels it
without an invoice, also when the customer has a card; a cancel at the period end asked for
during a trial ends the subscription at the trial's end, without an invoice. The API over
HTTP on the world's store, the domains against the emulator, time moved by the test clock."""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from billing_reconciler.store import IntentRepository

from .conftest import DAY, T0, World
from .host import ADMIN, APP, V1, Host

SUBS = f"{V1}/organizations/acme/billing/subscriptions"
TARGETED = frozenset({"customer/acme"})
TRIAL_END = T0 + 14 * DAY
PRICE = 2900 + 900  # trial_base + one team_seat, monthly

BILLING = """\
billing:
  default_currency: usd
  stripe_auto_tax: false
  customer:
    default_plan: ""
  subscription:
    behavior_after_trial: {behavior}
reconcile:
  installation_id: test
"""

TRIAL_PLAN = """\
products:
  - name: trial_base
    title: Team platform fee (trial plan)
    prices:
      - name: monthly
        interval: month
        amount: 2900
        currency: usd
      - name: yearly
        interval: year
        amount: 29000
        currency: usd
plans:
  - name: team_trial
    title: Team (with a trial)
    interval: month
    trial_days: 14
    products:
      - name: trial_base
      - name: team_seat
  - name: team_trial_yearly
    title: Team (with a trial, yearly)
    interval: year
    products:
      - name: trial_base
      - name: team_seat
"""


@pytest.fixture
def trials(world: World) -> World:
    (world.directory / "plans" / "trial.yaml").write_text(textwrap.dedent(TRIAL_PLAN))
    return world


@contextlib.contextmanager
def _start(world: World, behavior: str, **subscribe: Any) -> Iterator[tuple[Host, str, str]]:
    """acme (one member, a card) subscribed to team_trial through the API and reconciled:
    (the host, the subscription's id, its Stripe id)."""
    (world.directory / "billing.yaml").write_text(BILLING.format(behavior=behavior))
    world.open("acme", members=1)
    world.reconcile()  # the catalog and the customer
    world.add_card("acme")
    host = Host(world)
    try:
        answer = host.client.post(SUBS, json={"plan": "team_trial", **subscribe}, headers=ADMIN)
        assert answer.status_code == 201, answer.text
        world.reconcile(TARGETED)
        world.reconcile(TARGETED)  # mirrored (and, to cancel at its end, cancel_at set)
        [sub] = world.subscriptions("acme")
        assert sub.status == "trialing"
        assert sub.trial_end == TRIAL_END
        yield host, str(answer.json()["id"]), sub.id
    finally:
        host.close()


def _invoices(world: World) -> list[Any]:
    customer = world.account("acme").stripe_customer_id
    assert customer is not None
    params: dict[str, Any] = {"customer": customer, "limit": 100}
    return list(world.stripe.v1.invoices.list(params).auto_paging_iter())  # type: ignore[arg-type]


def _charged(world: World) -> list[tuple[str, int]]:
    """Invoices that ask for money (Stripe's $0 invoice of a trial's start is none)."""
    return [(i.id, i.amount_due) for i in _invoices(world) if i.amount_due or i.total]


def _after_the_trial(world: World) -> Any:
    world.advance(TRIAL_END + 3600)
    world.reconcile()
    world.reconcile()
    [sub] = world.subscriptions("acme")
    return sub


@pytest.mark.parametrize(
    ("behavior", "subscribe"),
    [("cancel", {}), ("release", {"cancel_after_trial": True})],
    ids=["behavior_after_trial-cancel", "cancel_after_trial"],
)
def test_a_trial_to_cancel_ends_canceled_at_its_end_without_an_invoice(
    trials: World, behavior: str, subscribe: dict[str, Any]
) -> None:
    world = trials
    with _start(world, behavior, **subscribe) as (host, sub_id, stripe_id):
        live = world.stripe.v1.subscriptions.retrieve(stripe_id)
        assert (
            live.to_dict()["trial_settings"]["end_behavior"]["missing_payment_method"] == "cancel"
        )
        assert live.cancel_at == TRIAL_END  # with a card too: it cancels at the trial's end
        assert world.reconcile(TARGETED).steps == ()

        sub = _after_the_trial(world)
        assert (sub.id, sub.status) == (stripe_id, "canceled")
        assert _charged(world) == []
        answer = host.client.get(f"{SUBS}/{sub_id}", headers=APP).json()
        assert answer["state"] == "canceled"
        assert world.reconcile().steps == ()  # never re-created
        assert len(world.subscriptions("acme")) == 1


def test_a_trial_to_release_starts_the_paid_subscription_at_its_end(trials: World) -> None:
    world = trials
    with _start(world, "release") as (host, sub_id, stripe_id):
        live = world.stripe.v1.subscriptions.retrieve(stripe_id)
        assert live.cancel_at is None
        assert (
            live.to_dict()["trial_settings"]["end_behavior"]["missing_payment_method"]
            == "create_invoice"
        )
        sub = _after_the_trial(world)
        assert (sub.id, sub.status) == (stripe_id, "active")
        assert [amount for _, amount in _charged(world)] == [PRICE]
        assert host.client.get(f"{SUBS}/{sub_id}", headers=APP).json()["state"] == "active"


def test_a_cancel_at_the_period_end_during_a_trial_ends_it_at_the_trial_end(
    trials: World,
) -> None:
    world = trials
    with _start(world, "release") as (host, sub_id, stripe_id):
        answer = host.client.post(f"{SUBS}/{sub_id}/cancel", json={"immediate": False}, headers=APP)
        assert answer.status_code == 200, answer.text
        assert answer.json()["pending_change"]["reason"] == "cancel"
        world.reconcile(TARGETED)
        world.reconcile(TARGETED)
        live = world.stripe.v1.subscriptions.retrieve(stripe_id)
        assert live.status == "trialing"  # still the trial: not ended, not billed early
        assert live.trial_end == TRIAL_END
        assert _charged(world) == []
        assert world.reconcile(TARGETED).steps == ()

        sub = _after_the_trial(world)
        assert (sub.id, sub.status) == (stripe_id, "canceled")
        assert _charged(world) == []
        with world.store.session() as session:
            assert IntentRepository(session).current(world.account("acme").id) is None
        assert host.client.get(f"{SUBS}/{sub_id}", headers=APP).json()["state"] == "canceled"
        assert world.reconcile().steps == ()


def test_a_change_to_a_yearly_plan_asked_during_the_trial_takes_effect_at_the_trial_end(
    trials: World,
) -> None:
    """Tester T1 finding 1: a period-end change monthly -> yearly asked in a trial is the
    schedule's next phase; at the trial's end Stripe enters it (the schedule is not
    released), the first invoice is the yearly one, and the product mirrors the change: one
    schedule (no second one a month later), the plan history kept, no pending change."""
    world = trials
    with _start(world, "release") as (host, sub_id, stripe_id):
        answer = host.client.post(
            f"{SUBS}/{sub_id}/change", json={"plan": "team_trial_yearly"}, headers=APP
        )
        assert answer.status_code == 200, answer.text
        pending = answer.json()["pending_change"]
        assert pending["plan"] == "team_trial_yearly"
        world.reconcile(TARGETED)
        world.reconcile(TARGETED)
        live = world.stripe.v1.subscriptions.retrieve(stripe_id)
        assert (live.status, live.trial_end) == ("trialing", TRIAL_END)
        schedule = str(live.schedule)
        answered = host.client.get(f"{SUBS}/{sub_id}", headers=APP).json()
        assert answered["pending_change"]["effective_at"] == "2026-01-29T00:00:00Z"
        assert world.reconcile(TARGETED).steps == ()

        sub = _after_the_trial(world)
        assert (sub.id, sub.status, sub.schedule) == (stripe_id, "active", schedule)
        year = 29000 + 9000
        assert [amount for _, amount in _charged(world)] == [year]
        assert {(i.current_period_start, i.current_period_end) for i in sub["items"].data} == {
            (TRIAL_END, TRIAL_END + 365 * DAY)
        }
        assert world.stripe.v1.subscription_schedules.retrieve(schedule).status == "active"
        customer = world.account("acme").stripe_customer_id
        assert customer is not None
        schedules = world.stripe.v1.subscription_schedules.list({"customer": customer})
        assert [s.id for s in schedules.data] == [schedule]
        answered = host.client.get(f"{SUBS}/{sub_id}", headers=APP).json()
        assert (answered["plan"], answered["pending_change"]) == ("team_trial_yearly", None)
        with world.store.session() as session:
            intent = IntentRepository(session).current(world.account("acme").id)
            assert intent is not None
            assert intent.plan == "team_trial_yearly"
        assert world.reconcile().steps == ()
        # A month later nothing moved: no second schedule, no monthly invoice.
        world.advance(TRIAL_END + 32 * DAY)
        assert world.reconcile().steps == ()
        assert [amount for _, amount in _charged(world)] == [year]
        schedules = world.stripe.v1.subscription_schedules.list({"customer": customer})
        assert [s.id for s in schedules.data] == [schedule]

"""A subscribe Stripe refused (here: a paid plan without a trial and no payment method) holds
back its own org only, in a scheduled whole-domain pass as `serve` runs them (`DomainRunner`):
the pass applies the other orgs' work and ends applied, with the held-back org and Stripe's
refusal recorded on the run (what `reconcile status` shows), not a failed pass. The next
scheduled passes do not send the refused create again (it waits for the subscribe to be sent
again). A targeted run of the refused org still fails with
Stripe's verdict (the API's subscribe answers it). Emulator over HTTP, SQLite and
PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from billing_reconciler.controller import PlanOptions
from billing_reconciler.registry import CATALOG, CUSTOMERS, SUBSCRIPTIONS
from billing_reconciler.runtime.events import ReconcileRequest
from billing_reconciler.store import JournalRepository, RunRecord, RunRepository, RunResult

from .conftest import World
from .host import APP, V1, Host


def _customers_and_catalog(world: World) -> None:
    for registration in (CATALOG, CUSTOMERS):
        controller = world.controller(registration)
        planned = controller.plan(PlanOptions())
        if planned.plan.has_work:
            controller.apply(planned)


def _run(world: World, run_id: str) -> RunRecord:
    with world.store.session() as session:
        run = RunRepository(session).get(run_id)
    assert run is not None
    return run


def _live_plans(world: World, org: str) -> list[Any]:
    return [
        s.metadata["plan"]
        for s in world.subscriptions(org)
        if s.status not in ("canceled", "incomplete_expired")
    ]


def test_a_refused_subscribe_holds_back_its_org_and_the_whole_pass_is_not_failed(
    world: World,
) -> None:
    world.open("acme", members=2)
    world.reconcile()
    world.reconcile()
    assert _live_plans(world, "acme") == ["free_monthly"]
    intent = world.subscribe("acme", "team_monthly")  # no card: Stripe refuses the create
    world.open("globex")  # beside it, a new org whose free subscription is due
    _customers_and_catalog(world)
    runner = world.runner(SUBSCRIPTIONS)

    result = runner.reconcile(
        ReconcileRequest("subscriptions", None, "refresh 1"), may_write=lambda: True
    )
    assert result.result == RunResult.APPLIED.value, result
    run = _run(world, result.run_id)
    assert run.result is RunResult.APPLIED
    held_back = run.summary["held_back"]
    assert isinstance(held_back, list), run.summary
    [held] = held_back
    assert isinstance(held, dict), held_back
    assert held["scope"] == "customer/acme", held
    assert held["org_id"] == "acme", held
    assert held["key"] == "subscription/acme", held
    assert "payment" in held["error"].lower(), held  # Stripe's refusal, as it said it
    assert run.error is not None
    assert "acme" in run.error
    assert "held back" in run.error
    # The rest applied: globex is on its free plan; acme keeps its free one only.
    assert _live_plans(world, "globex") == ["free_monthly"]
    assert _live_plans(world, "acme") == ["free_monthly"]
    with world.store.session() as session:
        failed = [e for e in JournalRepository(session).for_run(result.run_id) if e.error]
    assert [e.object_key for e in failed] == ["subscription/acme"]

    # The next scheduled passes do not send the refused create again (each would be another
    # declined charge on a card): the plan says it waits, and the pass is not failed.
    subscriptions_before = len(world.subscriptions("acme"))
    for attempt in (2, 3):
        world.emulator.control.clear_requests()
        planned = world.controller(SUBSCRIPTIONS).plan(PlanOptions())
        assert [s.key for s in planned.plan.steps] == [], planned.plan.steps
        assert any(
            "refused this subscription's create" in n.message for n in planned.plan.notices
        ), planned.plan.notices
        result = runner.reconcile(
            ReconcileRequest("subscriptions", None, f"refresh {attempt}"),
            may_write=lambda: True,
        )
        assert result.result != RunResult.FAILED.value, result
        posts = [r.path for r in world.emulator.control.requests(method="POST")]
        assert not any(p.startswith("/v1/subscriptions") for p in posts), posts
    assert len(world.subscriptions("acme")) == subscriptions_before

    # A targeted run of acme (the API's subscribe waits on it) still fails with the refusal.
    with pytest.raises(Exception, match="subscription/acme"):
        runner.reconcile(
            ReconcileRequest("subscriptions", frozenset({"customer/acme"}), "subscribe"),
            may_write=lambda: True,
        )

    # The refused intent stays the current one, visible in the API with its refusal.
    host = Host(world)
    try:
        got = host.client.get(
            f"{V1}/organizations/acme/billing/subscriptions/{intent}", headers=APP
        )
    finally:
        host.close()
    assert got.status_code == 200, got.text
    body = got.json()
    assert (body["plan"], body["stripe_subscription_id"]) == ("team_monthly", None), body
    assert body["refusal"] is not None
    assert "refused" in body["refusal"], body

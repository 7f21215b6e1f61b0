"""A contract customer's declared `plan` and `seats` (DESIGN §15: the YAML wins) through the
real catalog, customers and subscriptions domains on the emulator: the declared org gets one
subscription on its plan with the fixed seat count, a re-plan is empty, and a member added
in the store leaves the count as declared."""

from __future__ import annotations

import textwrap

from fastapi import FastAPI
from fastapi.testclient import TestClient

from billing_reconciler.api import ApiContext, ApiTokens, api_router, install_error_handlers
from billing_reconciler.config import Secret
from billing_reconciler.controller import PlanOptions
from billing_reconciler.desired import load_desired
from billing_reconciler.domains.subscription_rules import MIRROR_STEP
from billing_reconciler.registry import CATALOG, CUSTOMERS
from billing_reconciler.store import MemberRepository

from .conftest import World
from .host import ADMIN, ADMIN_TOKEN, APP, APP_TOKEN, V1

CONTRACT = """\
customers:
  - org_id: acme
    name: Acme Corporation
    plan: team_monthly
    seats: 5
"""


def _assert_converged(world: World) -> None:
    replan = world.plan()
    assert replan.steps == ()
    assert [r.key for r in replan.restores if r.kind == MIRROR_STEP] == []


def test_a_declared_plan_and_seat_count_are_subscribed_and_kept(world: World) -> None:
    folder = world.directory / "customers"
    folder.mkdir()
    (folder / "contracts.yaml").write_text(textwrap.dedent(CONTRACT))
    # The customers domain opens the account and its customer; the card is added before the
    # subscriptions domain runs (a paid subscription charged automatically needs one).
    for registration in (CATALOG, CUSTOMERS):
        controller = world.controller(registration)
        planned = controller.plan(PlanOptions())
        _, _, residual = controller.apply(planned)
        assert residual.converged, residual
    assert world.account("acme").contract
    world.add_card("acme")
    world.reconcile()
    subs = [s for s in world.subscriptions("acme") if s.status in ("active", "trialing")]
    assert len(subs) == 1, subs
    sub = subs[0]
    assert sub.metadata["plan"] == "team_monthly"
    assert sub.status == "active"  # a contract is billed as agreed: no trial
    quantities = sorted((item.price.id, item.quantity) for item in sub["items"]["data"])
    # The platform fee once, the seats at the declared 5 (the org has no member yet).
    assert sorted(q for _, q in quantities) == [1, 5], quantities
    # The next pass writes the store's mirror of it, and nothing else; then nothing is left.
    assert world.reconcile().steps == ()
    _assert_converged(world)
    with world.store.session() as session:
        for index in range(8):
            MemberRepository(session).upsert("acme", f"user-{index}")
    world.reconcile()
    after = [s for s in world.subscriptions("acme") if s.status in ("active", "trialing")]
    assert [s.id for s in after] == [sub.id]
    assert sorted((i.price.id, i.quantity) for i in after[0]["items"]["data"]) == quantities
    _assert_converged(world)


def test_the_api_refuses_to_subscribe_change_or_cancel_a_declared_plan(world: World) -> None:
    folder = world.directory / "customers"
    folder.mkdir()
    (folder / "contracts.yaml").write_text(textwrap.dedent(CONTRACT))
    result = load_desired(world.directory)
    assert result.state is not None
    state = result.state
    context = ApiContext(
        store=world.store,
        tokens=ApiTokens(app=(Secret(APP_TOKEN),), admin=(Secret(ADMIN_TOKEN),)),
        config=lambda: state.config,
        installation_id=lambda: "test",
        declared_plan=lambda org: next((c.plan for c in state.customers if c.org_id == org), None),
    )
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(api_router(context))
    catalog = world.controller(CATALOG)
    catalog.apply(catalog.plan(PlanOptions()))
    world.open("acme")
    world.open("beta")
    subs = f"{V1}/organizations/acme/billing/subscriptions"
    with TestClient(app, raise_server_exceptions=True) as client:
        answers = [
            client.post(subs, json={"plan": "team_yearly"}, headers=ADMIN),
            client.post(f"{subs}/int_any/change", json={"plan": "team_yearly"}, headers=APP),
            client.post(f"{subs}/int_any/cancel", json={"immediate": True}, headers=APP),
        ]
        for answer in answers:
            assert answer.status_code == 409, answer.text
            error = answer.json()["error"]
            assert error["code"] == "failed_precondition"
            assert "declared in desired/customers" in error["message"]
            assert error["details"] == {"org_id": "acme", "plan": "team_monthly"}
        # An org no contract declares is subscribed as before.
        beta = client.post(
            f"{V1}/organizations/beta/billing/subscriptions",
            json={"plan": "team_yearly"},
            headers=ADMIN,
        )
        assert beta.status_code in (201, 202), beta.text


def test_a_declared_plan_without_a_card_is_invoiced_due_in_the_contracts_days(
    world: World,
) -> None:
    """Tester T1 finding 8: a contract `plan` on a customer with no payment method. The
    subscription is created `send_invoice` with `days_until_due` = the contract's
    `due_in_days` (DESIGN §16: collection and days_until_due from config and account), not a
    charge_automatically create that Stripe refuses on every pass."""
    folder = world.directory / "customers"
    folder.mkdir()
    (folder / "contracts.yaml").write_text(
        textwrap.dedent(CONTRACT).replace("    seats: 5\n", "    seats: 5\n    due_in_days: 45\n")
    )
    for registration in (CATALOG, CUSTOMERS):
        controller = world.controller(registration)
        _, _, residual = controller.apply(controller.plan(PlanOptions()))
        assert residual.converged, residual
    world.reconcile()  # no card added
    subs = [s for s in world.subscriptions("acme") if s.status in ("active", "trialing")]
    assert len(subs) == 1, subs
    assert (subs[0].collection_method, subs[0].days_until_due) == ("send_invoice", 45)
    assert world.reconcile().steps == ()
    _assert_converged(world)

"""Contract customers (`desired/customers/*.yaml`) against the emulator: a declared account
that is disabled is reported as such, never as an orphan (T1 finding 17).
"""

from __future__ import annotations

from billing_reconciler.planning.fleet import render_fleet_markdown, render_fleet_text
from billing_reconciler.store import AccountRepository
from tests.integration.customers.conftest import World

CONTRACT = """\
customers:
  - org_id: acme
    name: Acme Corporation
    email: ap@acme.test
"""


def _disable(world: World, org_id: str) -> None:
    with world.store.session() as session:
        repository = AccountRepository(session)
        account = repository.active_for_org(org_id)
        assert account is not None
        repository.set_state(account.id, "disabled", reason="disabled through the API")


def test_a_declared_contract_whose_account_is_disabled_is_not_an_orphan(world: World) -> None:
    world.write_contract(CONTRACT)
    world.apply()
    [customer] = world.customers()
    _disable(world, "acme")

    plan = world.plan()
    assert plan.steps == ()
    assert plan.orphans == ()
    [notice] = plan.notices
    assert (notice.kind, notice.key, notice.stripe_id) == (
        "billing_account",
        "billing_account/acme",
        customer.id,
    )
    assert "declared in desired/customers" in notice.message
    assert "enable it through the API" in notice.message
    text = render_fleet_text(plan)
    assert "Orphans" not in text
    assert f"billing_account/acme {customer.id}: declared in desired/customers" in text
    assert "billing_account/acme :" not in text
    markdown = render_fleet_markdown(plan)
    assert "Orphans" not in markdown
    assert f"`billing_account/acme` `{customer.id}`" in markdown
    # Left alone: nothing pending, and nothing is created for the org.
    world.apply()
    assert [c.id for c in world.customers()] == [customer.id]
    assert world.get("acme").state == "disabled"


def test_an_offline_declared_contract_disabled_has_no_blank_stripe_id(world: World) -> None:
    world.write_contract(CONTRACT + "    offline: true\n")
    world.apply()
    _disable(world, "acme")
    plan = world.plan()
    [notice] = plan.notices
    assert notice.stripe_id is None
    text = render_fleet_text(plan)
    assert "billing_account/acme: declared in desired/customers" in text

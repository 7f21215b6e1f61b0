"""Contract customers (`desired/customers/*.yaml`) against the emulator: a declared account
that is disabled is reported as such, never as an orphan (T1 finding 17); a contract's org
gets its organization row with the account, so the host API serves it (T1 finding 5).
"""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import delete, select

from billing_reconciler.planning.fleet import render_fleet_markdown, render_fleet_text
from billing_reconciler.planning.plan import Reason
from billing_reconciler.store import AccountRepository, OrganizationRepository
from billing_reconciler.store.tables import BillingAccountModel, OrganizationModel
from tests.integration.api.conftest import APP, Settings, build_app
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


# --- T1 finding 5: a contract customer's org is visible to the host API ----------------------


def _api(world: World) -> TestClient:
    """The host API on the world's store (no reconcile run from it)."""
    return TestClient(build_app(world.store, Settings()), raise_server_exceptions=True)


def _served(world: World) -> None:
    """What the host sees of `acme` through the API after the contract applied."""
    base = "/v1beta1/organizations/acme/billing"
    with _api(world) as api:
        got = api.get(base, headers=APP)
        assert got.status_code == 200, got.text
        assert (got.json()["name"], got.json()["email"]) == ("Acme Corporation", "ap@acme.test")
        assert got.json()["stripe_customer_id"] == world.get("acme").stripe_customer_id
        balance = api.get(f"{base}/balance", headers=APP)
        assert balance.status_code == 200, balance.text
        assert balance.json()["amount"] == 50  # the onboard credits
        transactions = api.get(f"{base}/transactions", headers=APP)
        assert transactions.status_code == 200, transactions.text
        assert len(transactions.json()["data"]) == 1
        patched = api.patch(base, json={"phone": "+1 555 0100"}, headers=APP)
        assert patched.status_code == 200, patched.text
        assert api.post(f"{base}/disable", headers=APP).status_code == 200
        enabled = api.post(f"{base}/enable", headers=APP)
        assert enabled.status_code == 200, enabled.text
        assert enabled.json()["state"] == "active"
    with world.store.session() as session:
        org = OrganizationRepository(session).get("acme")
    assert org is not None
    assert (org.title, org.owner_email, org.deleted_at) == (
        "Acme Corporation",
        "ap@acme.test",
        None,
    )


def test_a_contract_apply_opens_the_org_for_the_host_api(world: World) -> None:
    world.write_contract(CONTRACT)
    world.apply()
    _served(world)
    world.apply()  # the API's phone edit pushed
    assert world.plan().converged


def test_a_contract_account_without_an_org_row_gets_one(world: World) -> None:
    """A contract account opened before the org row was written with it (or a host that
    never PUT the org): the next pass writes the org row, in the contract's store step."""
    world.write_contract(CONTRACT)
    world.apply()
    with world.store.engine.begin() as connection:
        connection.execute(delete(OrganizationModel))
    plan = world.plan()
    [step] = plan.steps
    assert (step.kind, step.key, step.reason) == (
        "billing_account",
        "billing_account/acme",
        Reason.DESIRED_CHANGED,
    )
    world.apply()
    _served(world)


def test_a_contract_never_overwrites_or_revives_the_hosts_org(world: World) -> None:
    with world.store.session() as session:
        OrganizationRepository(session).upsert("acme", title="Acme (host)", owner_email=None)
    world.write_contract(CONTRACT)
    world.apply()
    with world.store.session() as session:
        org = OrganizationRepository(session).get("acme")
        assert org is not None
        assert (org.title, org.owner_email) == ("Acme (host)", None)
        OrganizationRepository(session).mark_deleted("acme")
    assert world.plan().converged
    with world.store.session() as session:
        org = OrganizationRepository(session).get("acme")
    assert org is not None
    assert org.deleted_at is not None


def test_a_contract_org_the_host_deleted_is_reported_with_the_way_back(world: World) -> None:
    """After `DELETE /organizations/acme` the account is disabled and enable is 404 (no org):
    the notice says to PUT the org again first; done so, enable works."""
    world.write_contract(CONTRACT)
    world.apply()
    [customer] = world.customers()
    base = "/v1beta1/organizations/acme"
    with _api(world) as api:
        assert api.delete(base, headers=APP).status_code == 204
        assert api.post(f"{base}/billing/enable", headers=APP).status_code == 404
        [notice] = world.plan().notices
        assert notice.stripe_id == customer.id
        assert "PUT /organizations/acme again (it opens no new account" in notice.message
        put = api.put(base, json={"title": "Acme"}, headers=APP)
        assert put.status_code == 201, put.text
        enabled = api.post(f"{base}/billing/enable", headers=APP)
        assert enabled.status_code == 200, enabled.text
    world.apply()
    assert world.get("acme").stripe_customer_id == customer.id
    assert world.plan().converged


def _accounts(world: World, org_id: str) -> list[tuple[str, str | None, bool]]:
    with world.store.session() as session:
        return sorted(
            (a.state, a.stripe_customer_id, a.contract)
            for a in session.scalars(
                select(BillingAccountModel).where(BillingAccountModel.org_id == org_id)
            )
        )


def test_a_deleted_contract_org_put_again_keeps_its_declared_account(world: World) -> None:
    """The notice's way back with `auto_create_with_org` (fresh-user finding): disable, DELETE,
    PUT again, enable. The PUT opens no account for a declared org (a second one would get a
    second Stripe customer with br_key customer/acme); enable re-enables the declared one,
    with its customer."""
    world.write_contract(CONTRACT)
    world.apply()
    [customer] = world.customers()
    settings = Settings()
    settings.configure(auto_create_with_org=True)
    base = "/v1beta1/organizations/acme"
    with TestClient(build_app(world.store, settings), raise_server_exceptions=True) as api:
        assert api.post(f"{base}/billing/disable", headers=APP).status_code == 200
        assert api.delete(base, headers=APP).status_code == 204
        world.apply()
        [notice] = world.plan().notices
        assert notice.stripe_id == customer.id
        assert "PUT /organizations/acme again (it opens no new account" in notice.message
        put = api.put(base, json={"title": "Acme"}, headers=APP)
        assert put.status_code == 201, put.text
        assert _accounts(world, "acme") == [("disabled", customer.id, True)]
        got = api.get(f"{base}/billing", headers=APP)
        assert (got.status_code, got.json()["state"]) == (200, "disabled"), got.text
        enabled = api.post(f"{base}/billing/enable", headers=APP)
        assert enabled.status_code == 200, enabled.text
        assert enabled.json()["stripe_customer_id"] == customer.id
        assert enabled.json()["state"] == "active"
    world.apply()
    assert _accounts(world, "acme") == [("active", customer.id, True)]
    assert [c.id for c in world.customers()] == [customer.id]
    plan = world.plan()
    assert not [w for w in plan.warnings if "br_key" in w], plan.warnings
    assert plan.notices == ()
    assert plan.converged


def test_an_ordinary_org_put_again_after_delete_gets_a_new_account(world: World) -> None:
    """Not a contract: a re-created org still gets a fresh auto-created account."""
    settings = Settings()
    settings.configure(auto_create_with_org=True)
    base = "/v1beta1/organizations/globex"
    with TestClient(build_app(world.store, settings), raise_server_exceptions=True) as api:
        assert api.put(base, json={"title": "Globex"}, headers=APP).status_code == 201
        world.apply()
        [old] = _accounts(world, "globex")
        assert old[0] == "active"
        assert old[1] is not None
        assert not old[2]
        assert api.delete(base, headers=APP).status_code == 204
        world.apply()
        put = api.put(base, json={"title": "Globex"}, headers=APP)
        assert put.status_code == 201, put.text
    with world.store.session() as session:
        accounts = AccountRepository(session)
        fresh = accounts.active_for_org("globex")
        assert fresh is not None
        assert fresh.stripe_customer_id is None
        assert fresh.metadata.get("auto_created") == "true"
    assert _accounts(world, "globex") == [("active", None, False), ("disabled", old[1], False)]

"""Stripe refusing a customer write: the step's key is spent, so the corrected step is sent
under the next key (a refusal applied nothing); a failure of unknown outcome keeps its key (a
crash replay must never create a second customer). One refused customer holds back no other
org's changes."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from billing_reconciler.apply import ApplyError
from billing_reconciler.controller import PlanOptions
from billing_reconciler.planning.plan import Action
from billing_reconciler.store import JournalRepository, JournalState, RunRepository
from billing_reconciler.store import TaxId as StoredTaxId
from billing_reconciler.stripe_gateway.errors import PermanentStripeError
from tests.integration.customers.conftest import World


def _create_key(world: World, org: str) -> str:
    [step] = [
        s for s in world.plan().steps if s.key == f"customer/{org}" and s.action is Action.CREATE
    ]
    return step.idempotency_key


def _apply_fails(world: World, scope: frozenset[str] | None = None) -> ApplyError:
    controller = world.controller()
    with pytest.raises(ApplyError) as raised:
        controller.apply(controller.plan(PlanOptions(scope=scope)))
    return raised.value


@pytest.fixture(autouse=True)
def _real_time(world: World) -> None:
    # Spent keys are the journal's within Stripe's 24 hours, measured on the store's clock.
    world.now = time.time


def test_a_refused_create_is_fixed_by_correcting_the_account(world: World) -> None:
    world.account("tx1", name="Tx One", tax_ids=(StoredTaxId(type="xx_vat", value="123"),))
    first = _create_key(world, "tx1")
    error = _apply_fails(world)
    assert error.step.key == "customer/tx1"
    assert world.customers() == []
    # Refused again with the same parameters: never stuck on the spent key either.
    assert _create_key(world, "tx1") != first

    world.update("tx1", tax_ids=(StoredTaxId(type="eu_vat", value="DE123456789"),))
    fixed = _create_key(world, "tx1")
    assert fixed != first
    world.apply()
    [customer] = world.customers()
    assert customer.metadata["br_key"] == "customer/tx1"
    assert world.get("tx1").stripe_customer_id == customer.id
    assert world.plan().converged


def test_a_create_of_unknown_outcome_keeps_its_key(world: World) -> None:
    """Stripe committed the create, the answer was lost (twice: the retry too): the journal
    says failed, but the key is not spent (a re-sent create replays Stripe's customer)."""
    world.account("acme", name="Acme")
    first = _create_key(world, "acme")
    control = world.emulator.control
    control.add_fault(method="POST", path_prefix="/v1/customers", nth=1, kind="drop_after_commit")
    control.add_fault(method="POST", path_prefix="/v1/customers", nth=2, kind="drop_after_commit")
    _apply_fails(world)
    assert len(world.customers()) == 1
    with world.store.session() as session:
        run = RunRepository(session).latest("customers")
        assert run is not None
        [entry] = JournalRepository(session).for_run(run.run_id)
        spent = JournalRepository(session).spent_step_keys(
            "test", since=datetime.fromtimestamp(time.time() - 3600, UTC)
        )
    assert entry.state is JournalState.FAILED
    assert first not in spent
    world.apply()  # the full listing finds the customer: linked
    assert len(world.customers()) == 1
    [customer] = world.customers()
    assert world.get("acme").stripe_customer_id == customer.id


def test_one_refused_customer_holds_back_no_other_org(world: World) -> None:
    """tc1's create is refused every run; off2's rename (a push in a later phase) and a new
    org's create (the same phase) still reach Stripe, and the run names the failing key."""
    world.account("off2", name="Off Two")
    world.apply()
    [off2] = world.customers()
    world.account("tc1", name="Tc One", tax_ids=(StoredTaxId(type="xx_vat", value="1"),))
    world.account("new3", name="New Three")
    world.update("off2", name="Off Two GmbH")

    error = _apply_fails(world)
    assert error.step.key == "customer/tc1"
    assert [f.step.key for f in error.failures] == ["customer/tc1"]
    assert "customer/tc1" in str(error)
    assert world.stripe.v1.customers.retrieve(off2.id).name == "Off Two GmbH"
    assert world.get("new3").stripe_customer_id is not None
    with world.store.session() as session:
        run = RunRepository(session).latest("customers")
    assert run is not None
    assert run.result.value == "failed"
    # Only tc1 is left to do.
    assert {s.key for s in world.plan().steps} == {"customer/tc1"}


def test_a_refused_tax_id_of_a_create_names_its_field_path(world: World) -> None:
    # Stripe says `tax_id_data[0][value]`; the apply error names our field, counted in the
    # canonical order the create sends (eu_vat before us_ein).
    world.account(
        "tx3",
        tax_ids=(
            StoredTaxId(type="us_ein", value="12-3456789"),
            StoredTaxId(type="eu_vat", value="XX123"),
        ),
    )
    error = _apply_fails(world)
    assert error.step.key == "customer/tx3"
    assert isinstance(error.cause, PermanentStripeError)
    assert error.cause.param == "tax_ids[0].value"
    assert "param=tax_ids[0].value" in str(error)


def test_a_refused_tax_id_of_an_update_names_its_field_path(world: World) -> None:
    # A tax id added to an existing customer is its own call (`POST .../tax_ids`, param
    # `value`): named by its place among the customer's tax ids (eu_vat, then gb_vat).
    world.account("tx4")
    world.apply()
    world.update(
        "tx4",
        tax_ids=(
            StoredTaxId(type="gb_vat", value="GB12"),
            StoredTaxId(type="eu_vat", value="DE123456789"),
        ),
    )
    error = _apply_fails(world)
    assert error.step.key == "customer/tx4"
    assert isinstance(error.cause, PermanentStripeError)
    assert error.cause.param == "tax_ids[1].value"

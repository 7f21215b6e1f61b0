"""Fleet rendering: identical changes grouped with example keys; directions shown."""

from __future__ import annotations

from billing_reconciler.planning.fleet import render_fleet_text
from billing_reconciler.planning.plan import Action, FieldChange, Plan, Reason, Step
from billing_reconciler.planning.sections import Section, sections_to_json


def _plan(steps: tuple[Step, ...]) -> Plan:
    return Plan(
        steps=steps, installation_id="i", desired_revision="r", fingerprint="f", created_at=0
    )


def test_a_fleet_of_creates_is_one_line_with_examples() -> None:
    steps = tuple(
        Step(Action.CREATE, "customer", f"customer/org{n:04}", Reason.NEW, params={"name": "x"})
        for n in range(1204)
    )
    text = render_fleet_text(_plan(steps))
    assert "+ 1,204 customers to create  (new)" in text
    assert "e.g. customer/org0000, customer/org0001, customer/org0002, ... (1,201 more" in text
    assert "Plan: 1,204 to create" in text


def test_small_groups_show_each_step_with_its_direction() -> None:
    push = Step(
        Action.UPDATE,
        "customer",
        "customer/a",
        Reason.DRIFT,
        changes=(FieldChange("name", "Portal", "Local", drift=True),),
    )
    pull = Step(
        Action.UPDATE,
        "billing_account",
        "billing_account/b",
        Reason.REMOTE_CHANGED,
        changes=(FieldChange("email", "a@x", "b@x"),),
    )
    text = render_fleet_text(_plan((push, pull)))
    assert 'name: "Portal" -> "Local"  # push ->  # conflict' in text
    assert 'email: "a@x" <- "b@x"  # pull <-' in text


def test_the_json_of_several_domains_has_a_summary_and_every_step() -> None:
    steps = tuple(Step(Action.CREATE, "customer", f"customer/o{n}", Reason.NEW) for n in range(10))
    text = sections_to_json([Section("catalog", _plan(())), Section("customers", _plan(steps))])
    assert '"has_changes": true' in text
    assert text.count('"key": "customer/o') == 10

"""A fleet plan's facts about settings (DESIGN §14): steps grouped by their cause
(`Step.causes`) in the text, Markdown and JSON plans; per-object refusals and waits
(`Plan.notices`); settings that apply to future events only (`Plan.future_only`); the
population and the mass-change marks carried by the JSON plan."""

from __future__ import annotations

import json
from dataclasses import replace

from billing_reconciler.planning.fleet import group_steps, render_fleet_markdown, render_fleet_text
from billing_reconciler.planning.plan import (
    Action,
    FieldChange,
    Notice,
    Plan,
    Population,
    Reason,
    SettingChange,
    Step,
)
from billing_reconciler.planning.render import render_markdown, render_text
from billing_reconciler.planning.sections import Section, sections_to_json
from billing_reconciler.planning.serialize import plan_from_json, plan_to_json

AUTO_TAX = "billing.stripe_auto_tax"
SEATS = "billing.product.seat_change_behavior"
PRORATION = "billing.plan_change.proration_behavior"


def _tax(index: int, before: bool = False, after: bool = True) -> Step:
    return Step(
        Action.UPDATE,
        "subscription",
        f"subscription/org-{index:03}",
        Reason.DESIRED_CHANGED,
        params={"op": "update", "automatic_tax": {"enabled": after}},
        changes=(FieldChange("automatic_tax", before, after),),
        stripe_id=f"sub_{index:03}",
        causes=(AUTO_TAX,),
        mass_change=True,
    )


def _seats(index: int, before: int, after: int, causes: tuple[str, ...] = (SEATS,)) -> Step:
    return Step(
        Action.UPDATE,
        "subscription",
        f"subscription/seats-{index}",
        Reason.DESIRED_CHANGED,
        changes=(FieldChange("quantity", before, after),),
        stripe_id=f"sub_seats_{index}",
        causes=causes,
    )


def _plan(*steps: Step, **parts: object) -> Plan:
    plan = Plan(
        steps=steps, installation_id="i", desired_revision="r", fingerprint="f", created_at=0
    )
    return replace(plan, **parts)  # type: ignore[arg-type]


def _fleet() -> Plan:
    """37 subscriptions taxed, 1 untaxed, 6 seat reductions (values differ), one account's
    own seat increase; a refusal, a future-only setting, 200 live subscriptions."""
    return _plan(
        *(_tax(n) for n in range(37)),
        _tax(90, before=True, after=False),
        *(_seats(n, 5 + n, 3) for n in range(6)),
        _seats(99, 2, 3, causes=()),
        notices=(
            Notice(
                "subscription/org-x",
                "subscription",
                "sub_x",
                "refused: plan 'team' has no price in eur",
            ),
        ),
        future_only=(SettingChange(PRORATION, "create_prorations", "none"),),
        population=Population(200, "subscription"),
    )


def test_steps_are_grouped_by_cause_and_values() -> None:
    groups = group_steps(_fleet().steps)
    assert [(len(g), g[0].causes) for g in groups] == [
        (37, (AUTO_TAX,)),
        (1, (AUTO_TAX,)),  # the other direction: too few to be a group of its own
        (6, (SEATS,)),
        (1, ()),  # the same field changed, but by the account's own facts: apart
    ]
    # The same change with another cause is another group.
    other = replace(_tax(200), causes=("billing.other",))
    assert len(group_steps((*(_tax(n) for n in range(5)), other))) == 2


def test_the_text_plan_names_each_groups_cause_on_its_line() -> None:
    text = render_fleet_text(_fleet())
    lines = text.splitlines()
    head = "  ~ 37 subscriptions: automatic_tax false -> true  (billing.stripe_auto_tax)"
    index = lines.index(head)
    assert lines[index + 1] == (
        "      e.g. subscription/org-000, subscription/org-001, subscription/org-002, "
        "... (34 more in the JSON plan)"
    )
    # A step below the group size is listed with its cause where the reason would be.
    assert "  ~ subscription/org-090 sub_090  (billing.stripe_auto_tax)" in lines
    assert "      automatic_tax: true -> false  # push ->" in lines
    # Values that differ: one line with the cause, the field named, examples.
    assert "  ~ 6 subscriptions to update  (billing.product.seat_change_behavior)" in lines
    assert "      fields: quantity (values differ per subscription)" in lines
    # Not caused by a setting: the reason.
    assert "  ~ subscription/seats-99 sub_seats_99  (desired_changed)" in lines
    assert "Plan: 0 to create, 45 to update (45 push, 0 pull), 0 to disable" in text


def test_the_markdown_plan_states_the_same_groups_and_causes() -> None:
    markdown = render_fleet_markdown(_fleet())
    rows = [line for line in markdown.splitlines() if line.startswith("| `~`")]
    assert len(rows) == 4
    assert rows[0].startswith(
        "| `~`  | update | 37 subscriptions (e.g. `subscription/org-000`, "
        "`subscription/org-001`, `subscription/org-002`, ... (34 more in the JSON plan)) |"
    )
    assert rows[0].endswith(
        "| desired_changed | `automatic_tax`: false → true (push → Stripe)"
        "<br>caused by `billing.stripe_auto_tax` |"
    )
    assert "`subscription/org-090` `sub_090`" in rows[1]
    assert "caused by `billing.stripe_auto_tax`" in rows[1]
    assert "6 subscriptions (e.g. `subscription/seats-0`" in rows[2]
    assert rows[2].endswith(
        "fields: quantity (values differ per subscription)"
        "<br>caused by `billing.product.seat_change_behavior` |"
    )
    assert "caused by" not in rows[3]
    assert "**Plan: 0 to create, 45 to update (45 push, 0 pull), 0 to disable" in markdown


def test_a_plan_that_is_not_a_fleet_prints_the_cause_under_the_step() -> None:
    plan = _plan(_tax(1))
    text = render_text(plan)
    assert "  ~ subscription/org-001 sub_001  (desired_changed)" in text
    assert "      caused by billing.stripe_auto_tax" in text
    assert "caused by `billing.stripe_auto_tax`" in render_markdown(plan)
    assert "caused by" not in render_text(_plan(_seats(1, 2, 3, causes=())))


def test_the_json_plan_has_every_step_with_its_cause_and_mark_and_round_trips() -> None:
    plan = _fleet()
    data = json.loads(plan_to_json(plan))
    assert len(data["steps"]) == 45
    taxed = [s for s in data["steps"] if s["causes"] == [AUTO_TAX]]
    assert len(taxed) == 38
    assert all(s["mass_change"] for s in taxed)
    assert not any(s["mass_change"] for s in data["steps"] if s["causes"] != [AUTO_TAX])
    assert [s["causes"] for s in data["steps"][-1:]] == [[]]
    assert data["population"] == {"count": 200, "noun": "subscription"}
    assert data["future_only"] == [
        {"setting": PRORATION, "before": "create_prorations", "after": "none"}
    ]
    assert data["notices"] == [
        {
            "key": "subscription/org-x",
            "kind": "subscription",
            "stripe_id": "sub_x",
            "message": "refused: plan 'team' has no price in eur",
        }
    ]
    assert plan_from_json(plan_to_json(plan)) == plan
    # In the sections of several domains too: every step, under its domain.
    sections = json.loads(
        sections_to_json([Section("catalog", _plan()), Section("subscriptions", plan, fleet=True)])
    )
    [subs] = [d for d in sections["domains"] if d["domain"] == "subscriptions"]
    assert len(subs["steps"]) == 45
    assert subs["population"]["count"] == 200


def test_notices_and_future_only_settings_in_text_and_markdown() -> None:
    text = render_fleet_text(_fleet())
    assert "Refused or waiting (1; left alone, nothing pending):" in text
    assert (
        "  x subscription subscription/org-x sub_x: refused: plan 'team' has no price in eur"
        in text
    )
    assert (
        "Settings changed since the last apply that apply to future events only "
        "(nothing live is rewritten):"
    ) in text
    future = (
        f'{PRORATION} changed ("create_prorations" -> "none"): applies to future events only; '
        "no live subscription rewritten"
    )
    assert f"  i {future}" in text
    markdown = render_fleet_markdown(_fleet())
    assert "<details><summary>Refused or waiting (1; left alone, nothing pending)</summary>" in (
        markdown
    )
    assert "- `subscription/org-x` `sub_x`: refused: plan 'team' has no price in eur" in markdown
    assert f"- `{PRORATION}`" + future.removeprefix(PRORATION) in markdown


def test_notices_and_future_only_settings_alone_are_no_changes() -> None:
    plan = replace(_fleet(), steps=())
    assert not plan.has_changes
    text = render_fleet_text(plan)
    assert text.endswith("No changes.\n")
    assert "Refused or waiting (1;" in text
    assert f"  i {PRORATION} changed" in text
    markdown = render_fleet_markdown(plan)
    assert "**No changes.**" in markdown
    assert f"`{PRORATION}` changed" in markdown
    # Without a population the line names no noun it does not know.
    unknown = render_fleet_text(replace(plan, population=None))
    assert "applies to future events only; no live object rewritten" in unknown


def test_two_identical_fleet_steps_are_one_line() -> None:
    """Tester T1 finding 14b: two identical automatic-tax rewrites printed as two entries."""
    plan = _plan(_tax(0), _tax(1), population=Population(7, "subscription"))
    assert [len(g) for g in group_steps(plan.steps)] == [2]
    lines = render_fleet_text(plan).splitlines()
    assert "  ~ 2 subscriptions: automatic_tax false -> true  (billing.stripe_auto_tax)" in lines
    assert "      e.g. subscription/org-000, subscription/org-001" in lines
    assert not any(line.startswith("  ~ subscription/org-00") for line in lines)
    rows = [line for line in render_fleet_markdown(plan).splitlines() if line.startswith("| `~`")]
    assert len(rows) == 1
    assert "2 subscriptions (e.g. `subscription/org-000`, `subscription/org-001`)" in rows[0]


def test_three_identical_fleet_steps_are_one_line_apart_from_a_different_one() -> None:
    plan = _plan(_tax(0), _tax(1), _tax(2), _tax(3, before=True, after=False))
    assert [len(g) for g in group_steps(plan.steps)] == [3, 1]
    lines = render_fleet_text(plan).splitlines()
    assert "  ~ 3 subscriptions: automatic_tax false -> true  (billing.stripe_auto_tax)" in lines
    assert "      e.g. subscription/org-000, subscription/org-001, subscription/org-002" in lines
    assert "  ~ subscription/org-003 sub_003  (billing.stripe_auto_tax)" in lines
    assert "      automatic_tax: true -> false  # push ->" in lines
    rows = [line for line in render_fleet_markdown(plan).splitlines() if line.startswith("| `~`")]
    assert len(rows) == 2
    # Four of them, still identical: one line, its examples cut at three.
    four = render_fleet_text(_plan(*(_tax(n) for n in range(4)))).splitlines()
    head = "  ~ 4 subscriptions: automatic_tax false -> true  (billing.stripe_auto_tax)"
    assert four[four.index(head) + 1].endswith(", ... (1 more in the JSON plan)")


def test_a_few_steps_whose_values_differ_are_listed_one_by_one() -> None:
    plan = _plan(_seats(0, 5, 3), _seats(1, 6, 3))
    assert [len(g) for g in group_steps(plan.steps)] == [2]
    lines = render_fleet_text(plan).splitlines()
    assert "  ~ subscription/seats-0 sub_seats_0  (billing.product.seat_change_behavior)" in lines
    assert "  ~ subscription/seats-1 sub_seats_1  (billing.product.seat_change_behavior)" in lines
    assert not any("2 subscriptions" in line for line in lines)

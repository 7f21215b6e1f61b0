"""Fleet rendering: identical changes grouped with example keys; directions shown."""

from __future__ import annotations

from dataclasses import replace

from billing_reconciler.planning.fleet import render_fleet_markdown, render_fleet_text
from billing_reconciler.planning.plan import Action, DriftItem, FieldChange, Plan, Reason, Step
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


def _customers_plan() -> Plan:
    """A customers plan with every kind of fact: creates, a push with a conflict, pulls (one
    and a group), a disabled account, a link to restore and the cursor's bookkeeping."""
    push = Step(
        Action.UPDATE,
        "customer",
        "customer/a",
        Reason.DRIFT,
        changes=(FieldChange("name", "Portal", "Local", drift=True),),
        stripe_id="cus_a",
    )
    pull = Step(
        Action.UPDATE,
        "billing_account",
        "billing_account/b",
        Reason.REMOTE_CHANGED,
        changes=(FieldChange("email", "a@x", "b@x"),),
    )
    pulls = tuple(
        Step(
            Action.UPDATE,
            "billing_account",
            f"billing_account/p{n}",
            Reason.REMOTE_CHANGED,
            changes=(FieldChange("phone", None, "+1 555"),),
        )
        for n in range(6)
    )
    disable = Step(
        Action.ARCHIVE,
        "billing_account",
        "billing_account/c",
        Reason.DELETED_IN_STRIPE,
        stripe_id="cus_c",
        impact="its Stripe customer cus_c was deleted in Stripe: the account is disabled",
    )
    link = Step(
        Action.UPDATE,
        "billing_account",
        "billing_account/acme",
        Reason.STORE_LOST,
        stripe_id="cus_acme",
    )
    cursor = Step(Action.UPDATE, "customers_cursor", "cursor/customers", Reason.BOOKKEEPING)
    return replace(
        _plan((push, pull, *pulls, disable)),
        drift=(DriftItem("customer/a", "name", "Old", "Portal", corrected=True),),
        restores=(cursor, link),
    )


def test_markdown_and_text_state_the_same_fleet_facts() -> None:
    plan = _customers_plan()
    text = render_fleet_text(plan)
    markdown = render_fleet_markdown(plan)
    summary = "Plan: 0 to create, 8 to update (1 push, 7 pull), 1 to disable, 1 conflict(s)."
    assert summary in text
    assert f"**{summary}**" in markdown
    # A pull is named as one, with its direction (before: the push arrow in Markdown).
    assert 'email: "a@x" <- "b@x"  # pull <-' in text
    assert '`email`: "a@x" ← "b@x" (**pull** ← edited in Stripe)' in markdown
    assert "| update (pull) | `billing_account/b` |" in markdown
    assert '`name`: "Portal" → "Local" (push → Stripe) ⚠️ **conflict**' in markdown
    # Conflicts: both sides' values and the winner.
    conflict = 'customer/a name: last applied "Old", Stripe "Portal", local "Local"; local wins'
    assert f"  ! {conflict}" in text
    assert "> - `customer/a` `name`: " + conflict.split(": ", 1)[1] in markdown
    # Links to restore (the cursor's bookkeeping is not shown in either).
    assert "  = billing_account/acme -> cus_acme" in text
    assert "- `billing_account/acme` → `cus_acme`" in markdown
    assert "cursor/customers" not in text
    assert "cursor/customers" not in markdown
    # The disabled account, with why.
    assert "- billing_account/c cus_c  (deleted_in_stripe)" in text
    assert "| disable | `billing_account/c` `cus_c` | deleted_in_stripe |" in markdown
    assert markdown.count("was deleted in Stripe: the account is disabled") == 1
    # The group of six pulls: one line in both, with examples.
    assert "~ 6 billing accounts to update (pull)  (remote_changed)" in text
    assert '      phone: (none) <- "+1 555"  # pull <- (edited in Stripe)' in text
    assert "| update (pull) | 6 billing accounts (e.g. `billing_account/p0`, " in markdown
    assert '`phone`: (none) ← "+1 555" (**pull** ← edited in Stripe)' in markdown
    assert "billing_account/p5" not in text
    assert "billing_account/p5" not in markdown


def test_markdown_of_a_fleet_with_only_links_is_no_changes_with_the_links() -> None:
    plan = replace(_customers_plan(), steps=(), drift=())
    markdown = render_fleet_markdown(plan)
    assert "**No changes.**" in markdown
    assert "- `billing_account/acme` → `cus_acme`" in markdown


def test_the_summary_counts_a_store_only_update_apart_from_pushes_and_pulls() -> None:
    """A contract's YAML written into its account is an update of the store only: neither a
    push to Stripe (as it used to be counted) nor a pull."""
    push = Step(
        Action.UPDATE,
        "customer",
        "customer/a",
        Reason.DESIRED_CHANGED,
        stripe_id="cus_a",
        changes=(FieldChange("name", "Old", "New"),),
    )
    pull = Step(
        Action.UPDATE,
        "billing_account",
        "billing_account/a",
        Reason.REMOTE_CHANGED,
        changes=(FieldChange("phone", None, "+1 555"),),
    )
    store = Step(
        Action.UPDATE,
        "billing_account",
        "billing_account/b",
        Reason.DESIRED_CHANGED,
        changes=(FieldChange("credit_min", 0, -100),),
    )
    plan = _plan((push, pull, store))
    summary = "Plan: 0 to create, 3 to update (1 push, 1 pull, 1 store), 0 to disable"
    assert summary in render_fleet_text(plan)
    assert summary in render_fleet_markdown(plan)
    assert "credit_min: 0 -> -100\n" in render_fleet_text(plan)  # no push arrow
    assert "# push" not in render_fleet_text(_plan((pull, store)))

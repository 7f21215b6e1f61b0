"""Rendering a fleet domain's plan (customers, later subscriptions): identical changes grouped.

A fleet plan may hold a step per customer. Steps with the same action, kind, reason and
changed fields form a group; a group of `GROUP_MIN` or more is one line
(`+ 1,204 customers to create  (new)`) with its fields, the values when every step of the
group shares them, and a few example keys; smaller groups are listed step by step. The JSON
plan still has every step (DESIGN §14). Field changes show their direction: `->` pushed to
Stripe, `<-` pulled from Stripe into the store; a conflict (both sides changed since the last
apply) is flagged, local having won. The domain's bookkeeping restores (its events cursor)
are not shown; links to a customer found by its marker are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Final

from billing_reconciler.planning.plan import Action, Plan, Reason, Step
from billing_reconciler.planning.render import (
    LEGEND,
    SYMBOLS,
    leaf_changes,
    render_markdown,
    render_text,
    summary_line,
)

GROUP_MIN: Final = 5
EXAMPLES: Final = 3
# Fields a create carries for the executor, not for the reviewer.
_CREATE_HIDDEN: Final = frozenset({"installation_id", "revision", "org_id", "onboard_credits"})


def _signature(step: Step) -> tuple[object, ...]:
    return (step.action, step.kind, step.reason, tuple((c.path, c.drift) for c in step.changes))


def group_steps(steps: Sequence[Step]) -> list[list[Step]]:
    """Steps grouped by signature, groups in order of first appearance."""
    groups: dict[tuple[object, ...], list[Step]] = {}
    for step in steps:
        groups.setdefault(_signature(step), []).append(step)
    return list(groups.values())


def _noun(kind: str, count: int) -> str:
    word = kind.replace("_", " ")
    return word if count == 1 else f"{word}s"


def _verb(step: Step) -> str:
    if step.action is Action.ARCHIVE and step.reason is Reason.DELETED_IN_STRIPE:
        return "to disable"
    return f"to {step.action.value}"


def _arrow(step: Step, before: str, after: str, *, drift: bool) -> str:
    if step.reason is Reason.REMOTE_CHANGED:
        text = f"{before} <- {after}  # pull <- (edited in Stripe)"
    else:
        text = (
            f"{before} -> {after}  # push ->"
            if step.kind != "billing_account"
            else (f"{before} -> {after}")
        )
    return text + ("  # conflict: changed on both sides, local wins" if drift else "")


def _change_lines(step: Step) -> list[str]:
    lines: list[str] = []
    for change in step.changes:
        for path, before, after in leaf_changes(change, None):
            lines.append(f"      {path}: {_arrow(step, before, after, drift=change.drift)}")
    return lines


def _step_text(step: Step) -> list[str]:
    target = f" {step.stripe_id}" if step.stripe_id else ""
    lines = [f"  {SYMBOLS[step.action]} {step.key}{target}  ({step.reason.value})"]
    if step.changes:
        lines += _change_lines(step)
    elif step.action is Action.CREATE:
        shown = {k: v for k, v in step.params.items() if k not in _CREATE_HIDDEN}
        body = render_text(replace(_EMPTY, steps=(replace(step, params=shown),)))
        lines += [line for line in body.splitlines() if line.startswith("      ")]
    if step.impact:
        lines.append(f"      ! {step.impact}")
    return [*lines, ""]


def _group_text(group: Sequence[Step]) -> list[str]:
    first = group[0]
    count = len(group)
    lines = [
        f"  {SYMBOLS[first.action]} {count:,} {_noun(first.kind, count)} {_verb(first)}"
        f"  ({first.reason.value})"
    ]
    same = all(step.changes == first.changes for step in group)
    if first.changes and same:
        lines += _change_lines(first)
    elif first.changes:
        fields = ", ".join(dict.fromkeys(c.path for c in first.changes))
        lines.append(f"      fields: {fields} (values differ per {first.kind.replace('_', ' ')})")
    examples = ", ".join(step.key for step in group[:EXAMPLES])
    more = f", ... ({count - EXAMPLES:,} more in the JSON plan)" if count > EXAMPLES else ""
    lines.append(f"      e.g. {examples}{more}")
    if first.impact:
        lines.append(f"      ! {first.impact}")
    return [*lines, ""]


def _visible_restores(plan: Plan) -> tuple[Step, ...]:
    return tuple(step for step in plan.restores if step.reason is not Reason.BOOKKEEPING)


def fleet_summary(plan: Plan) -> str:
    if plan.refused or not plan.has_changes:
        return summary_line(plan)
    pulls = sum(1 for s in plan.steps if s.reason is Reason.REMOTE_CHANGED)
    disables = sum(1 for s in plan.steps if s.reason is Reason.DELETED_IN_STRIPE)
    creates = sum(1 for s in plan.steps if s.action is Action.CREATE)
    updates = sum(1 for s in plan.steps if s.action is Action.UPDATE)
    conflicts = len(plan.drift)
    return (
        f"Plan: {creates:,} to create, {updates:,} to update ({updates - pulls:,} push, "
        f"{pulls:,} pull), {disables:,} to disable, {conflicts:,} conflict(s)."
    )


def render_fleet_text(plan: Plan) -> str:
    lines: list[str] = []
    if plan.steps:
        lines += [
            "billing-reconciler will perform these actions "
            f'(installation "{plan.installation_id}", desired revision {plan.desired_revision}):',
            LEGEND,
            "",
        ]
        for group in group_steps(plan.steps):
            if len(group) >= GROUP_MIN:
                lines += _group_text(group)
            else:
                for step in group:
                    lines += _step_text(step)
    if plan.drift:
        lines.append("Conflicts (changed in Stripe and locally since the last apply; local wins):")
        lines += [
            f"  ! {d.key} {d.path}: last applied {d.applied!r}, Stripe {d.live!r}"
            for d in plan.drift
        ]
        lines.append("")
    links = _visible_restores(plan)
    if links:
        lines.append("Links to restore (the store lost them; Stripe shows the customer ours):")
        lines += [f"  = {step.key} -> {step.stripe_id}" for step in links]
        lines.append("")
    rest = render_text(replace(plan, steps=(), drift=(), restores=()))
    lines += rest.splitlines()[:-1]
    lines.append(fleet_summary(plan))
    return "\n".join(lines) + "\n"


def render_fleet_markdown(plan: Plan) -> str:
    """The Markdown plan with each large group as one row."""
    grouped: list[Step] = []
    for group in group_steps(plan.steps):
        if len(group) < GROUP_MIN:
            grouped += group
            continue
        first = group[0]
        label = f"{len(group):,} {_noun(first.kind, len(group))} (e.g. {group[0].key})"
        grouped.append(replace(first, key=label, params={}, stripe_id=None))
    body = render_markdown(replace(plan, steps=tuple(grouped), restores=_visible_restores(plan)))
    return body.replace(
        f"**{summary_line(replace(plan, steps=tuple(grouped)))}**",
        (f"**{fleet_summary(plan)}**"),
        1,
    )


_EMPTY: Final = Plan(
    steps=(), installation_id="", desired_revision="", fingerprint="", created_at=0
)

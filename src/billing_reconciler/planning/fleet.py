"""Rendering a fleet domain's plan (customers, later subscriptions): identical changes grouped.

A fleet plan may hold a step per customer. Steps with the same action, kind, reason, changed
fields and cause (the settings a step names in `Step.causes`) form a group; within it, the
steps that also share their values form a group of their own when there are `GROUP_MIN` or
more of them (or two or more, when the whole group is smaller than that). A group of
`GROUP_MIN` or more, or of two or more identical changes (the same fields and values), is
one line (`+ 1,204 customers to create (new)`) with its fields, the values when every step
of the group shares them, and a few example keys; other groups are listed step by step. A
caused group names its cause where the reason would be, on one line when it changes one field
(`~ 1,204 subscriptions: automatic_tax false -> true  (billing.stripe_auto_tax)`). The JSON
plan still has every step (DESIGN §14). Field changes show their direction: `->` pushed to
Stripe, `<-` pulled from Stripe into the store; a conflict (both sides changed since the last
apply) is flagged, local having won, and listed with both sides' values. The domain's
bookkeeping restores (its events cursor) are not shown; links to a customer found by its
marker are. The text and the Markdown plan (a pull request comment) state the same facts:
the same groups, directions, conflicts, links and disabled accounts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Final

from billing_reconciler.model import JSONValue
from billing_reconciler.planning.plan import (
    Action,
    DriftItem,
    Plan,
    Reason,
    Step,
    canonical_json,
)
from billing_reconciler.planning.render import (
    LEGEND,
    SYMBOLS,
    format_value,
    leaf_changes,
    markdown_changes,
    markdown_footer,
    markdown_head,
    markdown_notices,
    markdown_row,
    markdown_table,
    render_text,
    summary_line,
)

GROUP_MIN: Final = 5
EXAMPLES: Final = 3
# Fields a create carries for the executor, not for the reviewer.
_CREATE_HIDDEN: Final = frozenset({"installation_id", "revision", "org_id", "onboard_credits"})


def _signature(step: Step) -> tuple[object, ...]:
    return (
        step.action,
        step.kind,
        step.reason,
        tuple((c.path, c.drift) for c in step.changes),
        step.causes,
    )


def _values(step: Step) -> str:
    return canonical_json([[c.before, c.after] for c in step.changes])


def group_steps(steps: Sequence[Step]) -> list[list[Step]]:
    """Steps grouped by signature, groups in order of first appearance. Within a signature,
    the steps sharing their values too (`GROUP_MIN` or more of them; in a signature of fewer
    steps than that, two or more) are a group of their own (`1,000 false -> true` apart from
    `4 true -> false`); the rest stay together."""
    groups: dict[tuple[object, ...], list[Step]] = {}
    for step in steps:
        groups.setdefault(_signature(step), []).append(step)
    result: list[list[Step]] = []
    for members in groups.values():
        by_values: dict[str, list[Step]] = {}
        for step in members:
            by_values.setdefault(_values(step), []).append(step)
        if len(by_values) == 1:
            result.append(members)
            continue
        least = GROUP_MIN if len(members) >= GROUP_MIN else 2
        large = [group for group in by_values.values() if len(group) >= least]
        rest = [step for group in by_values.values() if len(group) < least for step in group]
        result += large
        if rest:
            result.append(rest)
    return result


def one_line(group: Sequence[Step]) -> bool:
    """Whether a group is rendered as one line: `GROUP_MIN` steps or more, or two or more
    identical changes (`~ 2 subscriptions: automatic_tax false -> true`)."""
    return len(group) >= GROUP_MIN or (len(group) >= 2 and _same_changes(group))


def _noun(kind: str, count: int) -> str:
    word = kind.replace("_", " ")
    return word if count == 1 else f"{word}s"


def _action(step: Step) -> str:
    """The action as a reviewer reads it: a deleted customer's account is disabled, a pull
    is named as one."""
    if step.action is Action.ARCHIVE and step.reason is Reason.DELETED_IN_STRIPE:
        return "disable"
    if step.reason is Reason.REMOTE_CHANGED:
        return f"{step.action.value} (pull)"
    return step.action.value


def _verb(step: Step) -> str:
    return f"to {_action(step)}"


def _direction(step: Step) -> str:
    """`pull` (Stripe -> store), `push` (store -> Stripe) or `store` (a store-only write)."""
    if step.reason is Reason.REMOTE_CHANGED:
        return "pull"
    return "store" if step.kind == "billing_account" else "push"


def _arrow(step: Step, before: str, after: str, *, drift: bool) -> str:
    direction = _direction(step)
    if direction == "pull":
        text = f"{before} <- {after}  # pull <- (edited in Stripe)"
    elif direction == "push":
        text = f"{before} -> {after}  # push ->"
    else:
        text = f"{before} -> {after}"
    return text + ("  # conflict: changed on both sides, local wins" if drift else "")


def _markdown_arrow(step: Step, before: str, after: str, *, drift: bool) -> str:
    direction = _direction(step)
    if direction == "pull":
        text = f"{before} ← {after} (**pull** ← edited in Stripe)"
    elif direction == "push":
        text = f"{before} → {after} (push → Stripe)"
    else:
        text = f"{before} → {after}"
    return text + (" ⚠️ **conflict**: changed on both sides, local wins" if drift else "")


def _markdown_change_lines(step: Step) -> list[str]:
    return [
        f"`{path}`: {_markdown_arrow(step, before, after, drift=change.drift)}"
        for change in step.changes
        for path, before, after in leaf_changes(change, None)
    ]


def _change_lines(step: Step) -> list[str]:
    lines: list[str] = []
    for change in step.changes:
        for path, before, after in leaf_changes(change, None):
            lines.append(f"      {path}: {_arrow(step, before, after, drift=change.drift)}")
    return lines


def _why(step: Step) -> str:
    """What the parenthesis after a step or group names: its cause, else its reason."""
    return ", ".join(step.causes) if step.causes else step.reason.value


def _step_text(step: Step) -> list[str]:
    target = f" {step.stripe_id}" if step.stripe_id else ""
    lines = [f"  {SYMBOLS[step.action]} {step.key}{target}  ({_why(step)})"]
    if step.changes:
        lines += _change_lines(step)
    elif step.action is Action.CREATE:
        shown = {k: v for k, v in step.params.items() if k not in _CREATE_HIDDEN}
        # Its impact is appended below, once (render_text would print it as well).
        bare = replace(step, params=shown, causes=(), impact=None)
        body = render_text(replace(_EMPTY, steps=(bare,)))
        lines += [line for line in body.splitlines() if line.startswith("      ")]
    if step.impact:
        lines.append(f"      ! {step.impact}")
    return [*lines, ""]


def _group_text(group: Sequence[Step]) -> list[str]:
    first = group[0]
    count = len(group)
    head = f"  {SYMBOLS[first.action]} {count:,} {_noun(first.kind, count)}"
    single = _single_leaf(group)
    if single is not None:
        # DESIGN §14: `~ 1,204 subscriptions: automatic_tax false -> true  (billing....)`
        path, before, after = single
        lines = [f"{head}: {path} {before} -> {after}  ({_why(first)})"]
    else:
        lines = [f"{head} {_verb(first)}  ({_why(first)})"]
        if _same_changes(group):
            lines += _change_lines(first)
        elif first.changes:
            lines.append(f"      {_differing_fields(first)}")
    lines.append(f"      e.g. {_examples(group, lambda key: key)}")
    if first.impact:
        lines.append(f"      ! {first.impact}")
    return [*lines, ""]


def _single_leaf(group: Sequence[Step]) -> tuple[str, str, str] | None:
    """The one field a caused group of pushes changes, when they all change it alike."""
    first = group[0]
    if not first.causes or _direction(first) != "push" or not _same_changes(group):
        return None
    leaves = [leaf for change in first.changes for leaf in leaf_changes(change, None)]
    if len(leaves) != 1 or any(change.drift for change in first.changes):
        return None
    return leaves[0]


def _same_changes(group: Sequence[Step]) -> bool:
    return bool(group[0].changes) and all(step.changes == group[0].changes for step in group)


def _differing_fields(step: Step) -> str:
    fields = ", ".join(dict.fromkeys(c.path for c in step.changes))
    return f"fields: {fields} (values differ per {step.kind.replace('_', ' ')})"


def _examples(group: Sequence[Step], show: Callable[[str], str]) -> str:
    count = len(group)
    examples = ", ".join(show(step.key) for step in group[:EXAMPLES])
    more = f", ... ({count - EXAMPLES:,} more in the JSON plan)" if count > EXAMPLES else ""
    return examples + more


def _local_value(plan: Plan, item: DriftItem) -> tuple[bool, JSONValue]:
    """The value local wins with: the push step's new value of the conflicting field."""
    for step in plan.steps:
        if step.key != item.key:
            continue
        for change in step.changes:
            if change.drift and change.path == item.path:
                return True, change.after
    return False, None


def _conflict(plan: Plan, item: DriftItem, code: Callable[[str], str]) -> str:
    """`customer/a name: last applied "A", Stripe "B", local "C"; local wins`."""
    found, local = _local_value(plan, item)
    values = [
        f"last applied {format_value(item.applied)}",
        f"Stripe {format_value(item.live)}",
        *([f"local {format_value(local)}"] if found else []),
    ]
    verdict = "local wins" if item.corrected else "reported only"
    return f"{code(item.key)} {code(item.path)}: {', '.join(values)}; {verdict}"


def _visible_restores(plan: Plan) -> tuple[Step, ...]:
    return tuple(step for step in plan.restores if step.reason is not Reason.BOOKKEEPING)


def fleet_summary(plan: Plan) -> str:
    if plan.refused or not plan.has_changes:
        return summary_line(plan)
    # Updates by direction: a store-only write (a contract's YAML into its account) is
    # neither a push to Stripe nor a pull from it.
    directions = [_direction(s) for s in plan.steps if s.action is Action.UPDATE]
    pushes, pulls, stores = (directions.count(d) for d in ("push", "pull", "store"))
    disables = sum(1 for s in plan.steps if s.reason is Reason.DELETED_IN_STRIPE)
    creates = sum(1 for s in plan.steps if s.action is Action.CREATE)
    conflicts = len(plan.drift)
    store = f", {stores:,} store" if stores else ""
    return (
        f"Plan: {creates:,} to create, {len(directions):,} to update ({pushes:,} push, "
        f"{pulls:,} pull{store}), {disables:,} to disable, {conflicts:,} conflict(s)."
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
            if one_line(group):
                lines += _group_text(group)
            else:
                for step in group:
                    lines += _step_text(step)
    if plan.drift:
        lines.append(f"{CONFLICTS}:")
        lines += [f"  ! {_conflict(plan, d, _plain)}" for d in plan.drift]
        lines.append("")
    links = _visible_restores(plan)
    if links:
        lines.append(f"{LINKS}:")
        lines += [f"  = {step.key} -> {step.stripe_id}" for step in links]
        lines.append("")
    rest = render_text(replace(plan, steps=(), drift=(), restores=()))
    lines += rest.splitlines()[:-1]
    lines.append(fleet_summary(plan))
    return "\n".join(lines) + "\n"


def render_fleet_markdown(plan: Plan) -> str:
    """The Markdown plan (a pull-request comment) with the facts of `render_fleet_text`: each
    large group as one row, directions named, conflicts with both sides' values and the
    winner, links to restore, disabled accounts, then the notices every plan has."""
    lines = markdown_head(plan, fleet_summary(plan))
    rows: list[str] = []
    for group in group_steps(plan.steps):
        if one_line(group):
            rows.append(_group_row(group))
        else:
            rows += [_step_row(step) for step in group]
    if rows:
        lines += markdown_table(rows)
    if plan.drift:
        lines += ["> [!WARNING]", f"> **{CONFLICTS}**", ">"]
        lines += [f"> - {_conflict(plan, d, _code)}" for d in plan.drift]
        lines.append("")
    links = _visible_restores(plan)
    if links:
        lines += [f"**{LINKS}**", ""]
        lines += [f"- `{step.key}` → `{step.stripe_id}`" for step in links]
        lines.append("")
    lines += markdown_notices(replace(plan, restores=()))
    lines.append(markdown_footer(plan))
    return "\n".join(lines) + "\n"


def _step_row(step: Step) -> str:
    target = f"`{step.key}`" + (f" `{step.stripe_id}`" if step.stripe_id else "")
    if step.changes:
        changes = _markdown_change_lines(step)
    elif step.action is Action.CREATE:
        shown = {k: v for k, v in step.params.items() if k not in _CREATE_HIDDEN}
        changes = markdown_changes(replace(step, params=shown))
    else:
        changes = []
    return markdown_row(step, action=_action(step), target=target, changes=changes)


def _group_row(group: Sequence[Step]) -> str:
    first = group[0]
    count = len(group)
    target = f"{count:,} {_noun(first.kind, count)} (e.g. {_examples(group, _code)})"
    if _same_changes(group):
        changes = _markdown_change_lines(first)
    elif first.changes:
        changes = [_differing_fields(first)]
    else:
        changes = []
    return markdown_row(first, action=_action(first), target=target, changes=changes)


def _plain(text: str) -> str:
    return text


def _code(text: str) -> str:
    return f"`{text}`"


CONFLICTS: Final = "Conflicts (changed in Stripe and locally since the last apply; local wins)"
LINKS: Final = "Links to restore (the store lost them; Stripe shows the customer ours)"


_EMPTY: Final = Plan(
    steps=(), installation_id="", desired_revision="", fingerprint="", created_at=0
)

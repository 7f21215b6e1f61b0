"""Renderers: pure `Plan -> str` functions (text like `terraform plan`, and Markdown for PRs).

Amounts are shown by their currency's exponent (JPY has none, KWD three), never divided by 100
blindly. Our ownership metadata is noise to a reviewer and is left out; nothing secret is ever
in a plan to begin with.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from billing_reconciler.model import INVENTORY_METADATA_KEYS, OWNERSHIP_METADATA_KEYS, JSONValue
from billing_reconciler.money import format_amount, is_valid_currency
from billing_reconciler.planning.plan import (
    Action,
    FieldChange,
    Notice,
    Plan,
    Ref,
    SettingChange,
    Step,
)

SYMBOLS: Mapping[Action, str] = {
    Action.CREATE: "+",
    Action.UPDATE: "~",
    Action.SUPERSEDE: "-/+",
    Action.ARCHIVE: "-",
    Action.ADOPT: "<=",
    Action.REACTIVATE: "^",
}
LEGEND = (
    "Symbols: + create   ~ update in place   -/+ supersede (create new, archive old)   "
    "- archive   <= adopt   ^ reactivate"
)
_AMOUNT_FIELDS = ("unit_amount", "flat_amount", "total")
# Our bookkeeping keys: noise in a new object's listing (a change of them is still shown).
_HIDDEN_METADATA = OWNERSHIP_METADATA_KEYS | INVENTORY_METADATA_KEYS


def summary_line(plan: Plan) -> str:
    if plan.refused:
        return "Plan refused: nothing will be applied."
    if not plan.has_changes:
        return "No changes."
    counts = plan.counts()
    line = (
        f"Plan: {counts['create']} to create, {counts['update']} to update, "
        f"{counts['supersede']} to supersede, {counts['archive']} to archive."
    )
    extra = [
        f"{counts[action]} to {action}" for action in ("adopt", "reactivate") if counts[action]
    ]
    if plan.adoptable:
        extra.append(f"{len(plan.adoptable)} awaiting adoption")
    return line if not extra else f"{line[:-1]}, {', '.join(extra)}."


def render_text(plan: Plan) -> str:
    lines: list[str] = []
    if plan.steps:
        lines += [
            "billing-reconciler will perform these actions "
            f'(installation "{plan.installation_id}", desired revision {plan.desired_revision}):',
            LEGEND,
            "",
        ]
        for step in plan.steps:
            lines += _step_text(step)
    lines += _sections_text(plan)
    lines.append(summary_line(plan))
    return "\n".join(lines) + "\n"


def _step_text(step: Step) -> list[str]:
    target = f" {step.stripe_id}" if step.stripe_id else ""
    head = f"  {SYMBOLS[step.action]} {step.key}{target}  ({step.reason.value})"
    lines = [head]
    currency = _currency_of(step)
    if step.changes:
        for change in step.changes:
            note = "  # forces supersede" if change.forces_supersede else ""
            note += "  # drift" if change.drift else ""
            for path, before, after in leaf_changes(change, currency):
                lines.append(f"      {path}: {before} -> {after}{note}")
    elif step.action in (Action.CREATE, Action.SUPERSEDE):
        lines += [f"      {path}: {value}" for path, value in _flatten(step.params, currency)]
    if step.causes:
        lines.append(f"      {causes_text(step.causes)}")
    if step.impact:
        lines.append(f"      ! {step.impact}")
    return [*lines, ""]


def causes_text(causes: Sequence[str]) -> str:
    """`caused by billing.stripe_auto_tax`: the settings a fleet rewrite follows from."""
    return "caused by " + ", ".join(causes)


NOTICES_TITLE = "Refused or waiting"
#: `Plan.info`: plain facts about the domain's state (nothing refused, nothing waiting).
INFO_TITLE = "Info"


def notices_title(notices: Sequence[Notice]) -> str:
    """The heading of the per-object refusals and waits: left alone, nothing pending."""
    return f"{NOTICES_TITLE} ({len(notices)}; left alone, nothing pending)"


FUTURE_ONLY_TITLE = (
    "Settings changed since the last apply that apply to future events only "
    "(nothing live is rewritten)"
)


def future_only_line(plan: Plan, change: SettingChange) -> str:
    """`billing.plan_change.proration_behavior changed ("a" -> "b"): applies to future
    events only; no live subscription rewritten`."""
    noun = plan.population.noun if plan.population is not None else "object"
    return (
        f"{change.setting} changed ({_json(change.before)} -> {_json(change.after)}): "
        f"applies to future events only; no live {noun} rewritten"
    )


def _sections_text(plan: Plan) -> list[str]:
    lines: list[str] = []
    if plan.drift:
        lines.append("Drift (live Stripe differs from what we applied):")
        for d in plan.drift:
            verdict = (
                "will be corrected" if d.corrected else "reported only (reconcile.drift: warn)"
            )
            lines.append(
                f"  ~ {d.key} {d.path}: applied {_json(d.applied)}, live {_json(d.live)}; {verdict}"
            )
        lines.append("")
    for title, notices in (
        ("Orphans (managed, no longer desired; left alone):", plan.orphans),
        ("Adoptable (unmanaged objects matching desired ones; run with --adopt):", plan.adoptable),
    ):
        if notices:
            lines.append(title)
            lines += [f"  ? {n.kind} {n.key}{_target(n)}: {n.message}" for n in notices]
            lines.append("")
    if plan.notices:
        lines.append(notices_title(plan.notices) + ":")
        lines += [_notice_text(n) for n in plan.notices]
        lines.append("")
    if plan.future_only:
        lines.append(FUTURE_ONLY_TITLE + ":")
        lines += [f"  i {future_only_line(plan, c)}" for c in plan.future_only]
        lines.append("")
    if plan.restores:
        lines.append(restores_title(plan.restores) + ":")
        lines += [f"  + {restore_line(step)}" for step in plan.restores]
        lines.append("")
    if plan.info:
        lines += [f"{INFO_TITLE}:", *(f"  i {line}" for line in plan.info), ""]
    if plan.warnings:
        lines += ["Warnings:", *(f"  ! {w}" for w in plan.warnings), ""]
    if plan.refusals:
        lines += ["Refused:", *(f"  x {r}" for r in plan.refusals), ""]
    return lines


def _notice_text(notice: Notice) -> str:
    return f"  x {notice.kind} {notice.key}{_target(notice)}: {notice.message}"


def _target(notice: Notice) -> str:
    """` cus_123`, or nothing for an object without a Stripe id (an offline account)."""
    return f" {notice.stripe_id}" if notice.stripe_id else ""


def restores_title(restores: Sequence[Step]) -> str:
    """The heading of the store records a plan writes (a new or lost store): not changes."""
    return (
        f"Store records to write ({len(restores)}; the store lacks them and Stripe already "
        "shows them applied: nothing is sent to Stripe)"
    )


def restore_line(step: Step) -> str:
    """`plan/team  (plan)`, `product/base prod_1  (last_applied)`: the record and its kind."""
    target = f" {step.stripe_id}" if step.stripe_id else ""
    return f"{step.key}{target}  ({step.kind})"


def render_markdown(plan: Plan) -> str:
    lines = markdown_head(plan, summary_line(plan))
    if plan.steps:
        lines += markdown_table(
            markdown_row(
                step,
                action=step.action.value,
                target=f"`{step.key}`",
                changes=markdown_changes(step),
            )
            for step in plan.steps
        )
    if plan.drift:
        lines += ["> [!WARNING]", "> **Drift**: live Stripe differs from what we applied", ">"]
        lines += [
            f"> - `{d.key}` `{d.path}`: applied {_json(d.applied)}, live {_json(d.live)}"
            + ("" if d.corrected else " (reported only)")
            for d in plan.drift
        ]
        lines.append("")
    lines += markdown_notices(plan)
    lines.append(markdown_footer(plan))
    return "\n".join(lines) + "\n"


def markdown_head(plan: Plan, summary: str) -> list[str]:
    """The heading, the summary line in bold, and any refusal."""
    lines = ["### billing-reconciler plan", "", f"**{summary}**", ""]
    if plan.refusals:
        lines += ["> [!CAUTION]", *(f"> {r}" for r in plan.refusals), ""]
    return lines


def markdown_table(rows: Iterable[str]) -> list[str]:
    """The steps table (rows from `markdown_row`), blank line after."""
    return ["| | action | object | reason | changes |", "|---|---|---|---|---|", *rows, ""]


def markdown_row(step: Step, *, action: str, target: str, changes: Sequence[str]) -> str:
    """One row: symbol (destructive steps flagged), action, object, reason, changes and the
    step's impact, each line of a cell separated by `<br>`."""
    flag = "⚠️ **destructive**" if step.destructive else ""
    cause = [causes_markdown(step.causes)] if step.causes else []
    notes = [*changes, *cause, *([f"⚠️ {step.impact}"] if step.impact else [])]
    cell = "<br>".join(markdown_cell(note) for note in notes)
    return (
        f"| `{SYMBOLS[step.action]}` {flag} | {action} | {target} | {step.reason.value} | {cell} |"
    )


def causes_markdown(causes: Sequence[str]) -> str:
    return "caused by " + ", ".join(f"`{c}`" for c in causes)


def markdown_cell(text: str) -> str:
    """Text safe inside a table cell (a `|` would end the cell, a newline the row)."""
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_notices(plan: Plan) -> list[str]:
    """Orphans, objects awaiting adoption, refused or waiting objects, settings that apply to
    future events only, store records to write, warnings."""
    lines: list[str] = []
    for title, notices in (("Orphans", plan.orphans), ("Awaiting adoption", plan.adoptable)):
        if notices:
            lines += [f"<details><summary>{title} ({len(notices)})</summary>", ""]
            lines += [f"- `{n.key}`{_target(n)}: {n.message}" for n in notices]
            lines += ["", "</details>", ""]
    if plan.notices:
        lines += [f"<details><summary>{notices_title(plan.notices)}</summary>", ""]
        lines += [
            f"- `{n.key}`" + (f" `{n.stripe_id}`" if n.stripe_id else "") + f": {n.message}"
            for n in plan.notices
        ]
        lines += ["", "</details>", ""]
    if plan.future_only:
        lines += [f"**{FUTURE_ONLY_TITLE}**", ""]
        lines += [f"- {_code_setting(future_only_line(plan, c), c)}" for c in plan.future_only]
        lines.append("")
    if plan.restores:
        lines += [f"<details><summary>{restores_title(plan.restores)}</summary>", ""]
        lines += [f"- `{step.key}` {_restore_detail(step)}" for step in plan.restores]
        lines += ["", "</details>", ""]
    if plan.info:
        lines += [f"**{INFO_TITLE}**", "", *(f"- {line}" for line in plan.info), ""]
    if plan.warnings:
        lines += ["**Warnings**", "", *(f"- {w}" for w in plan.warnings), ""]
    return lines


def _code_setting(line: str, change: SettingChange) -> str:
    return line.replace(change.setting, f"`{change.setting}`", 1)


def markdown_footer(plan: Plan) -> str:
    return f"<sub>installation `{plan.installation_id}` · revision `{plan.desired_revision}`</sub>"


def _restore_detail(step: Step) -> str:
    target = f"`{step.stripe_id}` " if step.stripe_id else ""
    return f"{target}({step.kind})"


def markdown_changes(step: Step) -> list[str]:
    """A step's changes as Markdown cell lines (a new object: what it will be)."""
    currency = _currency_of(step)
    if step.changes:
        return [
            f"`{path}`: {before} → {after}{_markdown_notes(change)}"
            for change in step.changes
            for path, before, after in leaf_changes(change, currency)
        ]
    # A new object: what it will be (a reviewer must see what a new price costs).
    return [f"`{path}`: {value}" for path, value in _flatten(step.params, currency)]


def _markdown_notes(change: FieldChange) -> str:
    """What the text plan's `# forces supersede` and `# drift` notes say."""
    notes = ["**forces supersede**"] if change.forces_supersede else []
    notes += ["drift"] if change.drift else []
    return f" ({', '.join(notes)})" if notes else ""


def leaf_changes(change: FieldChange, currency: str | None) -> list[tuple[str, str, str]]:
    """A change of a nested value (currency options, tiers) as the leaves that differ."""
    before = dict(_flatten(change.before, currency, change.path))
    after = dict(_flatten(change.after, currency, change.path))
    if set(before) == {change.path} and set(after) == {change.path}:
        return [(change.path, before[change.path], after[change.path])]
    missing = _json(None)
    return [
        (path, before.get(path, missing), after.get(path, missing))
        for path in sorted(set(before) | set(after))
        if before.get(path, missing) != after.get(path, missing)
    ]


def _currency_of(step: Step) -> str | None:
    currency = step.params.get("currency")
    return currency if isinstance(currency, str) and is_valid_currency(currency) else None


def _flatten(value: Any, currency: str | None, prefix: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, Mapping) and value:
        for key, inner in sorted(value.items()):
            if prefix == "metadata" and key in _HIDDEN_METADATA:
                continue
            path = f"{prefix}.{key}" if prefix else str(key)
            # A currency option is shown in its own currency.
            inner_currency = key if prefix.endswith("currency_options") else currency
            yield from _flatten(inner, inner_currency, path)
    elif isinstance(value, list | tuple) and value:
        for index, inner in enumerate(value):
            yield from _flatten(inner, currency, f"{prefix}[{index}]")
    elif isinstance(value, list | tuple | Mapping):
        yield prefix, "(none)"
    else:
        yield prefix, _value(prefix, value, currency)


def _value(path: str, value: Any, currency: str | None) -> str:
    if isinstance(value, Ref):
        return f"(id of {value.key})"
    leaf = path.rsplit(".", 1)[-1]
    if (
        currency
        and leaf in _AMOUNT_FIELDS
        and isinstance(value, int)
        and not isinstance(value, bool)
    ):
        return format_amount(value, currency)
    return _json(value)


def format_value(value: JSONValue | object) -> str:
    """A plan value as the renderers show it: strings quoted, None as `(none)`."""
    return _json(value)


def _json(value: JSONValue | object) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)

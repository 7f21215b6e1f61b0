"""A plan per domain: the sections `reconcile --dry-run` shows, and their saved JSON form.

Each registered domain plans on its own (its own fingerprint, revision checks and run row),
so the whole reconcile is an ordered tuple of `Section`s, in apply order. Rendering keeps the
single-domain output exactly as one plan renders (the golden files, the JSON contract); with
several domains each plan is shown under its domain's heading, and the JSON holds a `domains`
list of plans, each with its `domain` name beside the usual plan keys, and a `summary` of
them all (`has_changes`, `refused`, step counts). A fleet domain's section (`fleet=True`)
groups identical changes (`planning.fleet`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from billing_reconciler.planning.fleet import render_fleet_markdown, render_fleet_text
from billing_reconciler.planning.plan import FORMAT_VERSION, Plan
from billing_reconciler.planning.render import render_markdown, render_text
from billing_reconciler.planning.serialize import (
    PlanFormatError,
    plan_from_dict,
    plan_from_json,
    plan_to_dict,
    plan_to_json,
)


@dataclass(frozen=True, slots=True)
class Section:
    domain: str
    plan: Plan
    fleet: bool = False

    def text(self) -> str:
        return render_fleet_text(self.plan) if self.fleet else render_text(self.plan)

    def markdown(self) -> str:
        return render_fleet_markdown(self.plan) if self.fleet else render_markdown(self.plan)


def render_sections_text(sections: Sequence[Section]) -> str:
    if len(sections) == 1:
        return sections[0].text()
    return "\n".join(f"== {s.domain} ==\n{s.text()}" for s in sections)


def render_sections_markdown(sections: Sequence[Section]) -> str:
    if len(sections) == 1:
        return sections[0].markdown()
    heading = "### billing-reconciler plan"
    return "\n".join(s.markdown().replace(heading, f"{heading}: {s.domain}", 1) for s in sections)


def sections_to_json(sections: Sequence[Section]) -> str:
    if len(sections) == 1:
        return plan_to_json(sections[0].plan)
    plans = [s.plan for s in sections]
    counts: dict[str, int] = {}
    for plan in plans:
        for action, count in plan.counts().items():
            counts[action] = counts.get(action, 0) + count
    data = {
        "format_version": FORMAT_VERSION,
        "summary": {
            **counts,
            "has_changes": any(p.has_changes for p in plans),
            "refused": any(p.refused for p in plans),
        },
        "domains": [{"domain": s.domain, **plan_to_dict(s.plan)} for s in sections],
    }
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def sections_from_json(text: str, *, sole_domain: str) -> dict[str, Plan]:
    """The saved plans by domain. A single plan (the format of a one-domain reconcile) is
    `sole_domain`'s: the first registered domain, which is what wrote it."""
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as error:
        raise PlanFormatError(f"not a JSON plan: {error}") from error
    if not isinstance(data, dict) or "domains" not in data:
        return {sole_domain: plan_from_json(text)}
    if data.get("format_version") != FORMAT_VERSION:
        raise PlanFormatError(
            f"unsupported plan format_version (this version reads {FORMAT_VERSION})"
        )
    try:
        return {
            str(section["domain"]): plan_from_dict({"format_version": FORMAT_VERSION, **section})
            for section in data["domains"]
        }
    except (KeyError, TypeError, ValueError) as error:
        raise PlanFormatError(f"malformed plan: {error!r}") from error

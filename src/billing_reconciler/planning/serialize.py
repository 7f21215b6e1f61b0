"""The canonical, versioned JSON form of a Plan, and reading it back for `--plan FILE`.

The JSON is the contract other tools read (documented in the README): keys are stable, sorted,
and secrets never appear (plans hold request parameters, which never include keys).
"""

from __future__ import annotations

import json
from typing import Any

from billing_reconciler.model import Kind
from billing_reconciler.planning.plan import (
    FORMAT_VERSION,
    Action,
    DriftItem,
    FieldChange,
    Notice,
    Plan,
    Population,
    Reason,
    Ref,
    SettingChange,
    Step,
    from_jsonable,
    to_jsonable,
)


class PlanFormatError(ValueError):
    """A saved plan that cannot be read (wrong version, missing fields)."""


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "installation_id": plan.installation_id,
        "desired_revision": plan.desired_revision,
        "fingerprint": plan.fingerprint,
        "created_at": plan.created_at,
        "summary": {**plan.counts(), "has_changes": plan.has_changes, "refused": plan.refused},
        "steps": [_step_to_dict(step) for step in plan.steps],
        "drift": [
            {
                "key": d.key,
                "path": d.path,
                "applied": d.applied,
                "live": d.live,
                "corrected": d.corrected,
            }
            for d in plan.drift
        ],
        "orphans": [_notice_to_dict(n) for n in plan.orphans],
        "adoptable": [_notice_to_dict(n) for n in plan.adoptable],
        "warnings": list(plan.warnings),
        "refusals": list(plan.refusals),
        "known_ids": dict(plan.known_ids),
        "restores": [_step_to_dict(step) for step in plan.restores],
        "notices": [_notice_to_dict(n) for n in plan.notices],
        "future_only": [
            {"setting": c.setting, "before": c.before, "after": c.after} for c in plan.future_only
        ],
        "population": None
        if plan.population is None
        else {"count": plan.population.count, "noun": plan.population.noun},
        "info": list(plan.info),
    }


def plan_to_json(plan: Plan) -> str:
    return json.dumps(plan_to_dict(plan), indent=2, sort_keys=True) + "\n"


def _step_to_dict(step: Step) -> dict[str, Any]:
    return {
        "action": step.action.value,
        "kind": str(step.kind),
        "key": step.key,
        "reason": step.reason.value,
        "stripe_id": step.stripe_id,
        "parent": None if step.parent is None else step.parent.key,
        "params": to_jsonable(step.params),
        "changes": [
            {
                "path": c.path,
                "before": c.before,
                "after": c.after,
                "forces_supersede": c.forces_supersede,
                "drift": c.drift,
            }
            for c in step.changes
        ],
        "impact": step.impact,
        "destructive": step.destructive,
        "idempotency_key": step.idempotency_key,
        "batch": step.batch,
        "causes": list(step.causes),
        "mass_change": step.mass_change,
    }


def _notice_to_dict(notice: Notice) -> dict[str, Any]:
    return {
        "key": notice.key,
        "kind": str(notice.kind),
        "stripe_id": notice.stripe_id,
        "message": notice.message,
    }


def plan_from_json(text: str) -> Plan:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise PlanFormatError(f"not a JSON plan: {error}") from error
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        raise PlanFormatError(
            f"unsupported plan format_version (this version reads {FORMAT_VERSION})"
        )
    return plan_from_dict(data)


def plan_from_dict(data: dict[str, Any]) -> Plan:
    """A plan from its JSON data (`PlanFormatError` when it is malformed)."""
    try:
        return _plan_from_dict(data)
    except (KeyError, TypeError, ValueError) as error:
        raise PlanFormatError(f"malformed plan: {error!r}") from error


def _plan_from_dict(data: dict[str, Any]) -> Plan:
    return Plan(
        steps=tuple(_step_from_dict(s) for s in data["steps"]),
        installation_id=str(data["installation_id"]),
        desired_revision=str(data["desired_revision"]),
        fingerprint=str(data["fingerprint"]),
        created_at=int(data["created_at"]),
        drift=tuple(
            DriftItem(
                key=d["key"],
                path=d["path"],
                applied=d["applied"],
                live=d["live"],
                corrected=d["corrected"],
            )
            for d in data["drift"]
        ),
        orphans=tuple(_notice_from_dict(n) for n in data["orphans"]),
        adoptable=tuple(_notice_from_dict(n) for n in data["adoptable"]),
        warnings=tuple(data["warnings"]),
        refusals=tuple(data["refusals"]),
        known_ids=dict(data["known_ids"]),
        restores=tuple(_step_from_dict(s) for s in data.get("restores", [])),
        notices=tuple(_notice_from_dict(n) for n in data.get("notices", [])),
        future_only=tuple(
            SettingChange(setting=str(c["setting"]), before=c["before"], after=c["after"])
            for c in data.get("future_only", [])
        ),
        population=_population(data.get("population")),
        info=tuple(str(line) for line in data.get("info", [])),
    )


def _population(data: Any) -> Population | None:
    if data is None:
        return None
    return Population(count=int(data["count"]), noun=str(data["noun"]))


def _step_from_dict(data: dict[str, Any]) -> Step:
    return Step(
        action=Action(data["action"]),
        kind=_kind(data["kind"]),
        key=data["key"],
        reason=Reason(data["reason"]),
        params=from_jsonable(data["params"]),
        changes=tuple(
            FieldChange(
                path=c["path"],
                before=c["before"],
                after=c["after"],
                forces_supersede=c["forces_supersede"],
                drift=c["drift"],
            )
            for c in data["changes"]
        ),
        stripe_id=data["stripe_id"],
        parent=None if data["parent"] is None else Ref(data["parent"]),
        impact=data["impact"],
        idempotency_key=data["idempotency_key"],
        batch=data.get("batch"),
        causes=tuple(str(c) for c in data.get("causes", [])),
        mass_change=bool(data.get("mass_change", False)),
    )


def _kind(value: Any) -> str:
    """The catalog's kinds come back as `Kind` members (code compares them by identity);
    another domain's kinds stay plain strings."""
    text = str(value)
    return Kind(text) if text in _CATALOG_KINDS else text


_CATALOG_KINDS = frozenset(kind.value for kind in Kind)


def _notice_from_dict(data: dict[str, Any]) -> Notice:
    return Notice(
        key=data["key"],
        kind=_kind(data["kind"]),
        stripe_id=data["stripe_id"],
        message=data["message"],
    )

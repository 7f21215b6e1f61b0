"""Frontier's own sample files applied unmodified, and golden files of the fresh plan.

Golden files pin what reviewers and other tools read: the canonical JSON plan, the text plan
and the Markdown PR comment for a fresh apply of `CATALOG_YAML`. Values that differ run to run
(creation time, observed-state fingerprint, idempotency keys, Stripe ids) are normalised before
comparing. `BR_UPDATE_GOLDEN=1 pytest tests/integration/catalog/test_compat_and_golden.py`
rewrites the files; review the diff like code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from billing_reconciler.desired import load_desired
from billing_reconciler.planning.render import render_markdown, render_text
from billing_reconciler.planning.serialize import plan_from_json, plan_to_dict, plan_to_json
from tests import compat_files

from .conftest import MakeController, converge, write_desired

FRONTIER = compat_files.FRONTIER
GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("BR_UPDATE_GOLDEN") == "1"

# Stripe object ids as the emulator and Stripe spell them (prefix, underscore, base62).
STRIPE_ID = re.compile(r"\b(prod|price|feat|prodft|mtr|meter)_[A-Za-z0-9]+\b")


def test_frontier_samples_apply_unmodified_and_converge(
    tmp_path: Path, emulator: Any, make_controller: MakeController
) -> None:
    desired = tmp_path / "desired"
    (desired / "plans").mkdir(parents=True)
    shutil.copyfile(FRONTIER / "billing-config-sample.yaml", desired / "billing.yaml")
    shutil.copyfile(FRONTIER / "plans-sample.yaml", desired / "plans" / "sample.yaml")
    result = load_desired(desired)
    assert result.state is not None, [str(d) for d in result.diagnostics]

    controller = make_controller(result.state)
    first = controller.plan().plan
    assert first.counts()["create"] > 0
    assert {s.key for s in first.steps} >= {
        "product/support_credits",
        "product/starter_per_seat",
        "price/starter_access/yearly",
        "plan/starter_monthly",
    }
    converge(controller)
    assert controller.plan().plan.steps == ()


# --- golden files ---------------------------------------------------------------------------


def normalise(value: Any, field: str = "") -> Any:
    """The plan's JSON with every run-to-run value replaced by a placeholder."""
    if isinstance(value, dict):
        return {k: normalise(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v, field) for v in value]
    if field == "created_at":
        return 0
    if field in ("fingerprint", "idempotency_key") and value:
        return f"<{field}>"
    if isinstance(value, str):
        return STRIPE_ID.sub(lambda m: f"<{m.group(1)}_id>", value)
    return value


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return
    assert path.exists(), f"{path} is missing: run with BR_UPDATE_GOLDEN=1 to create it"
    assert actual == path.read_text(), (
        f"{name} differs from the golden file; if the change is intended, rerun with "
        "BR_UPDATE_GOLDEN=1 and review the diff"
    )


@pytest.fixture
def fresh_plan_json(tmp_path: Path, emulator: Any, make_controller: MakeController) -> str:
    """The normalised canonical JSON of the fresh plan of `CATALOG_YAML`."""
    plan = make_controller(write_desired(tmp_path)).plan().plan
    raw = plan_to_dict(plan)
    assert raw["created_at"] > 0
    assert all(step["idempotency_key"] for step in raw["steps"])
    return json.dumps(normalise(raw), indent=2, sort_keys=True) + "\n"


def test_fresh_plan_json_matches_golden(fresh_plan_json: str) -> None:
    check_golden("fresh_plan.json", fresh_plan_json)


def test_fresh_plan_text_matches_golden(fresh_plan_json: str) -> None:
    check_golden("fresh_plan.txt", render_text(plan_from_json(fresh_plan_json)))


def test_fresh_plan_markdown_matches_golden(fresh_plan_json: str) -> None:
    check_golden("fresh_plan.md", render_markdown(plan_from_json(fresh_plan_json)))


def test_normalised_json_is_still_a_readable_plan(fresh_plan_json: str) -> None:
    # The golden JSON round-trips through the reader: it is the format, not a lookalike.
    assert plan_to_json(plan_from_json(fresh_plan_json)) == fresh_plan_json


def test_fresh_plan_is_stable_across_runs(
    tmp_path: Path, emulator: Any, make_controller: MakeController
) -> None:
    """Two fresh plans of the same desired state in different directories are identical once
    normalised (the golden file is not pinned to one machine or one run)."""
    plans = []
    keys = []
    for sub in ("one", "two"):
        plan = make_controller(write_desired(tmp_path / sub)).plan().plan
        plans.append(normalise(plan_to_dict(plan)))
        keys.append([step.idempotency_key for step in plan.steps])
    assert plans[0] == plans[1]
    # The idempotency keys themselves are derived, not random: equal across the two runs.
    assert keys[0] == keys[1]


def test_golden_plan_applies(
    tmp_path: Path, emulator: Any, make_controller: MakeController
) -> None:
    """What the golden file shows is what converges."""
    converge(make_controller(write_desired(tmp_path)))

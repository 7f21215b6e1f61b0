"""The PR-check workflow parses and only uses `reconcile` options that exist."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from billing_reconciler.cli import app

WORKFLOW = Path(__file__).resolve().parents[2] / "deploy" / "github" / "reconcile-plan.yml"


def _reconcile_commands() -> list[list[str]]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    commands = []
    for step in workflow["jobs"]["plan"]["steps"]:
        for line in str(step.get("run", "")).splitlines():
            line = line.strip()
            if line.startswith("reconcile "):
                commands.append(line.split(">")[0].split())
    return commands


def test_workflow_runs_validate_and_a_markdown_dry_run() -> None:
    commands = [" ".join(c) for c in _reconcile_commands()]
    assert "reconcile validate --desired desired --format github" in commands
    assert "reconcile --dry-run --desired desired --format markdown" in commands


def test_every_option_the_workflow_uses_exists() -> None:
    runner = CliRunner()
    for command in _reconcile_commands():
        sub = [command[1]] if command[1] in {"validate", "schema"} else []
        help_text = runner.invoke(app, [*sub, "--help"], terminal_width=200).output
        for option in (word for word in command if word.startswith("--")):
            assert re.search(rf"{re.escape(option)}\b", help_text), (option, sub)

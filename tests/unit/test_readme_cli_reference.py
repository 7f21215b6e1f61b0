"""README.md's CLI reference and exit-code table against the real command tree, so they
cannot drift: every command and every option (no more, no fewer), flags shown as flags,
choices as the code accepts them, required options without brackets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from billing_reconciler.cli import app

README = Path(__file__).resolve().parents[2] / "README.md"


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n{title}\n")
    following = re.search(r"\n#{2,3} ", text[start + len(title) + 2 :])
    assert following
    return text[start : start + len(title) + 2 + following.start()]


def documented_commands() -> dict[str, str]:
    """Command name ("" for `reconcile` itself) -> its synopsis (continuation lines joined)."""
    block = re.search(r"```\n(.*?)```", section("## CLI reference"), re.DOTALL)
    assert block, "the CLI reference has a code block"
    entries: dict[str, str] = {}
    name = None
    for line in block.group(1).splitlines():
        if line.startswith("reconcile"):
            words = line.split()
            name = words[1] if len(words) > 1 and re.fullmatch(r"[a-z-]+", words[1]) else ""
            assert name not in entries, f"`reconcile {name}` is documented twice"
            entries[name] = line
        elif line.strip():
            assert name is not None
            entries[name] += " " + line.strip()
    return entries


def real_commands() -> dict[str, typer.core.TyperCommand | typer.core.TyperGroup]:
    root = typer.main.get_command(app)
    assert isinstance(root, typer.core.TyperGroup)
    return {"": root, **root.commands}  # type: ignore[dict-item]


def real_options(name: str) -> dict[str, typer.core.TyperOption]:
    return {
        option: param
        for param in real_commands()[name].params
        if isinstance(param, typer.core.TyperOption)
        for option in param.opts
        if option != "--help"
    }


def test_every_command_is_documented_and_nothing_else() -> None:
    assert sorted(documented_commands()) == sorted(real_commands())


@pytest.mark.parametrize("name", sorted(real_commands()), ids=lambda n: n or "reconcile")
def test_a_commands_documented_options_are_its_real_options(name: str) -> None:
    synopsis = documented_commands()[name]
    documented = set(re.findall(r"--[a-z][a-z-]*", synopsis))
    assert documented == set(real_options(name)), f"`reconcile {name}`: {synopsis}"


@pytest.mark.parametrize("name", sorted(real_commands()), ids=lambda n: n or "reconcile")
def test_flags_values_choices_and_required_options_are_shown_as_they_are(name: str) -> None:
    synopsis = documented_commands()[name]
    for option, param in real_options(name).items():
        usage = re.search(rf"(\[?){re.escape(option)}(?: ([^\]\s]+))?(\]?)", synopsis)
        assert usage, option
        opening, value, closing = usage.groups()
        assert bool(opening) == bool(closing) == (not param.required), f"{option}: brackets"
        if param.is_flag:
            assert value is None, f"{option} is a flag: no value"
            continue
        assert value, f"{option} takes a value"
        descriptor = param.type_descriptor
        if descriptor.is_choice:
            choices = [str(getattr(c, "value", c)) for c in descriptor.choices or ()]
            assert value.split("|") == choices, option


def test_the_exit_code_table_names_every_command_and_usage_errors() -> None:
    table = section("### Exit codes")
    rows = [line for line in table.splitlines() if line.startswith("| `reconcile")]
    named = {m for row in rows for m in re.findall(r"`reconcile(?: ([a-z][a-z-]*))?", row)}
    assert named == set(real_commands())
    usage = [line for line in table.splitlines() if "usage error" in line]
    assert usage, "a row for usage errors"
    cells = [cell.strip() for cell in usage[0].strip("|").split("|")]
    assert cells[1:] == ["—", cells[2], "—"], "a usage error exits 1, never 0 or 2"
    assert cells[2] != "—"

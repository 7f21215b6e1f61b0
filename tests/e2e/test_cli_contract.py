"""What every command promises, run as a user runs it: usage errors exit 1 (never 2, our
"changes pending"), help shows boolean flags as flags, `--log-level` exists everywhere and is
honoured, an unexpected exception is one line (never a traceback), validate's JSON counts
prices like its text summary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer

from billing_reconciler.cli import app
from tests.e2e.cli import reconcile


def commands() -> dict[str, typer.core.TyperGroup | typer.core.TyperCommand]:
    """`reconcile` itself ("") and each subcommand, from the real command tree."""
    root = typer.main.get_command(app)
    assert isinstance(root, typer.core.TyperGroup)
    return {"": root, **root.commands}  # type: ignore[dict-item]


def options(name: str) -> list[typer.core.TyperOption]:
    params = commands()[name].params
    return [p for p in params if isinstance(p, typer.core.TyperOption)]


def argv(name: str, *args: str) -> list[str]:
    return [name, *args] if name else list(args)


USAGE_ERRORS = [
    ("--dry-run", "--no-such-flag"),
    ("--dry-run", "--format", "yaml"),
    ("--dry-run", "--wait-lock", "-1"),
    ("--dry-run", "--log-level", "loud"),
    ("validate", "--format", "nope"),
    ("validate", "--log-level", "verbose"),
    ("schema", "--no-such-flag"),
    ("status", "--format", "yaml"),
    ("suspend",),  # --reason is required
    ("resume", "--no-such-flag"),
    ("serve", "--workers", "0"),
    ("emulator", "--port", "not-a-port"),
    ("demo", "--no-such-flag"),
    ("no-such-command",),
]


@pytest.mark.parametrize("args", USAGE_ERRORS, ids=" ".join)
def test_a_usage_error_exits_1_with_clicks_message(args: tuple[str, ...], workdir: Path) -> None:
    done = reconcile(*args, cwd=workdir)
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "Usage: reconcile" in done.stderr
    assert "Error: " in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("name", sorted(commands()), ids=lambda n: n or "reconcile")
def test_help_shows_boolean_flags_as_flags(name: str, tmp_path: Path) -> None:
    done = reconcile(*argv(name, "--help"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "<bool>" not in done.stdout
    assert "--no-" not in done.stdout
    flags = [o for o in options(name) if o.is_flag]
    for flag in flags:
        (long_name,) = flag.opts
        line = re.search(rf"^ +{re.escape(long_name)}(?= {{2,}}|$)", done.stdout, re.MULTILINE)
        assert line, f"{long_name} is not shown as a bare flag:\n{done.stdout}"


@pytest.mark.parametrize("name", sorted(commands()), ids=lambda n: n or "reconcile")
def test_every_command_takes_log_level(name: str) -> None:
    (level,) = [o for o in options(name) if "--log-level" in o.opts]
    assert not level.is_flag


def levels(stderr: str) -> set[str]:
    """The levels of the structured log records (JSON lines: stderr is not a terminal)."""
    return {json.loads(line)["level"] for line in stderr.splitlines() if line.startswith("{")}


def test_log_level_option_and_environment_variable_are_honoured(workdir: Path) -> None:
    apply = ("--emulator", "--auto-approve")
    info = reconcile(*apply, cwd=workdir)
    assert info.returncode == 0, info.stderr
    assert "info" in levels(info.stderr)  # "became leader", "apply finished"

    quiet = reconcile(*apply, "--log-level", "WARNING", cwd=workdir)
    assert quiet.returncode == 0, quiet.stderr
    assert levels(quiet.stderr) <= {"warning", "error"}

    from_env = reconcile(*apply, cwd=workdir, env={"BILLING_LOG_LEVEL": "warning"})
    assert from_env.returncode == 0, from_env.stderr
    assert levels(from_env.stderr) <= {"warning", "error"}

    # Before the subcommand's name it applies to the subcommand (demo logs at info).
    demo = reconcile("--log-level", "warning", "demo", cwd=workdir)
    assert demo.returncode == 0, demo.stderr
    assert levels(demo.stderr) <= {"warning", "error"}
    demo_info = reconcile("demo", cwd=workdir)
    assert "info" in levels(demo_info.stderr)

    debug = reconcile("--dry-run", "--emulator", "--log-level", "debug", cwd=workdir)
    assert debug.returncode == 0, debug.stderr
    assert "debug" in levels(debug.stderr)

    # The option wins over the environment variable.
    option_wins = reconcile(
        "--dry-run",
        "--emulator",
        "--log-level",
        "info",
        cwd=workdir,
        env={"BILLING_LOG_LEVEL": "debug"},
    )
    assert option_wins.returncode == 0, option_wins.stderr
    assert "debug" not in levels(option_wins.stderr)

    bad_env = reconcile("validate", cwd=workdir, env={"BILLING_LOG_LEVEL": "loud"})
    assert bad_env.returncode == 1
    assert "BILLING_LOG_LEVEL" in bad_env.stderr
    assert "Traceback" not in bad_env.stderr


@pytest.mark.parametrize(
    "args",
    [("status",), ("suspend", "--reason", "x"), ("--dry-run", "--emulator")],
    ids=" ".join,
)
def test_an_unusable_store_is_one_line_naming_it_and_a_logged_traceback(
    args: tuple[str, ...], workdir: Path
) -> None:
    """A corrupted SQLite store: a failure with a known cause, so one line saying which
    setting to fix (it was an internal error before the fresh-user test of issue 8); the
    traceback is in the log at debug."""
    corrupt = workdir / "corrupt.db"
    corrupt.write_bytes(b"this is not a SQLite database file\x00" * 200)
    done = reconcile(
        *args,
        "--log-level",
        "debug",
        cwd=workdir,
        env={"BILLING_DATABASE_URL": f"sqlite:///{corrupt}"},
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert re.fullmatch(
        r"error: the store cannot be used \(BILLING_DATABASE_URL\): .*not a database", lines[-1]
    )
    plain = [line for line in lines if not line.startswith("{")]
    assert plain == [lines[-1]], "only the one line is not a structured log record"
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(
        r["event"] == "store error" and "Traceback" in r.get("exception", "") for r in logged
    )
    assert "Traceback" not in done.stdout


def test_validate_json_counts_prices_like_the_text_summary(workdir: Path) -> None:
    text = reconcile("validate", cwd=workdir)
    assert text.returncode == 0, text.stderr
    summary = re.search(r"(\d+) features, (\d+) products, (\d+) prices, (\d+) plans", text.stdout)
    assert summary, text.stdout
    as_json = reconcile("validate", "--format", "json", cwd=workdir)
    assert as_json.returncode == 0, as_json.stderr
    counts = json.loads(as_json.stdout)["counts"]
    named = ("features", "products", "prices", "plans")
    assert {k: counts.get(k) for k in named} == dict(
        zip(named, map(int, summary.groups()), strict=True)
    )


def test_a_saved_plan_that_is_not_utf8_is_a_plain_error(workdir: Path) -> None:
    saved = workdir / "plan.json"
    saved.write_bytes(b'{"format_version": 1, "note": "\xff\xfe"}')
    done = reconcile("--emulator", "--plan", str(saved), "--auto-approve", cwd=workdir)
    assert done.returncode == 1, done.stderr
    assert f"error: cannot read saved plan {saved}" in done.stderr
    assert "internal error" not in done.stderr

"""`reconcile validate` (check desired/) and `reconcile schema` (print or write JSON Schemas).

`validate` exits 0 when desired/ is valid (warnings are printed but do not fail) and 1
otherwise; it never writes anything.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from billing_reconciler.cli.common import EXIT_ERROR, EXIT_OK, LogLevelOption, run_and_exit
from billing_reconciler.desired import Diagnostic, LoadResult, load_desired
from billing_reconciler.desired.schema_export import rendered_schemas, write_schemas
from billing_reconciler.desired.state import DesiredState

JSON_FORMAT_VERSION = 1


class OutputFormat(StrEnum):
    """How `validate` prints its findings."""

    text = "text"
    json = "json"
    github = "github"


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the `reconcile` app."""
    app.command("validate")(validate_command)
    app.command("schema")(schema_command)


def validate_command(
    desired: Annotated[
        Path, typer.Option("--desired", help="Directory holding billing.yaml and plans/.")
    ] = Path("desired"),
    output: Annotated[
        OutputFormat, typer.Option("--format", help="text, json or github (annotations).")
    ] = OutputFormat.text,
    log_level: LogLevelOption = None,
) -> None:
    """Check desired/ (billing.yaml and every plan file): every problem, with its position."""
    run_and_exit(lambda: run_validate(desired, output), log_level=log_level)


def run_validate(desired: Path, output: OutputFormat) -> int:
    result = load_desired(desired)
    renderers = {
        OutputFormat.text: render_text,
        OutputFormat.json: render_json,
        OutputFormat.github: render_github,
    }
    typer.echo(renderers[output](result, desired), nl=False)
    return EXIT_ERROR if result.state is None else EXIT_OK


def schema_command(
    write: Annotated[
        bool, typer.Option("--write", help="Write the schemas into --out instead of printing.")
    ] = False,
    out: Annotated[Path, typer.Option("--out", help="Directory for --write.")] = Path("schemas"),
    log_level: LogLevelOption = None,
) -> None:
    """Print the JSON Schemas of billing.yaml and plan files, or write them (--write)."""
    run_and_exit(lambda: run_schema(write, out), log_level=log_level)


def run_schema(write: bool, out: Path) -> int:
    if write:
        for written in write_schemas(out):
            typer.echo(f"wrote {written}")
        return EXIT_OK
    schemas = {name: json.loads(text) for name, text in rendered_schemas().items()}
    typer.echo(json.dumps(schemas, indent=2))
    return EXIT_OK


def render_text(result: LoadResult, desired: Path) -> str:
    """`path:line:col: error: message` lines, then a one-line summary."""
    lines = [f"{d.path}:{d.line}:{d.column}: {d.severity}: {d.message}" for d in result.diagnostics]
    lines.append(_summary(result, desired))
    return "\n".join(lines) + "\n"


def render_json(result: LoadResult, desired: Path) -> str:
    """A versioned JSON report (stable keys)."""
    state = result.state
    report = {
        "format_version": JSON_FORMAT_VERSION,
        "valid": state is not None,
        "desired": str(desired),
        "revision": state.revision if state else None,
        "counts": _counts(result),
        "diagnostics": [_diagnostic_json(d) for d in result.diagnostics],
    }
    return json.dumps(report, indent=2, sort_keys=True) + "\n"


def render_github(result: LoadResult, desired: Path) -> str:
    """GitHub Actions workflow commands, so problems show inline on the pull request."""
    lines = [
        f"::{d.severity} file={_property(d.path)},line={d.line},col={d.column}::{_data(d.message)}"
        for d in result.diagnostics
    ]
    lines.append(_summary(result, desired))
    return "\n".join(lines) + "\n"


def _summary(result: LoadResult, desired: Path) -> str:
    errors, warnings = len(result.errors), len(result.warnings)
    state = result.state
    if state is None:
        return f"{desired}: invalid: {errors} error(s), {warnings} warning(s)"
    prices = _price_count(state)
    return (
        f"{desired}: valid ({len(state.features)} features, {len(state.products)} products, "
        f"{prices} prices, {len(state.plans)} plans; revision {state.revision}; "
        f"{warnings} warning(s))"
    )


def _price_count(state: DesiredState) -> int:
    # One definition for the text summary and the JSON counts, so they cannot disagree.
    return sum(len(product.prices) for product in state.products)


def _counts(result: LoadResult) -> dict[str, int]:
    counts = {"errors": len(result.errors), "warnings": len(result.warnings)}
    if result.state is not None:
        counts |= {
            "features": len(result.state.features),
            "products": len(result.state.products),
            "prices": _price_count(result.state),
            "plans": len(result.state.plans),
        }
    return counts


def _diagnostic_json(diagnostic: Diagnostic) -> dict[str, object]:
    return {
        "severity": diagnostic.severity,
        "path": diagnostic.path,
        "line": diagnostic.line,
        "column": diagnostic.column,
        "message": diagnostic.message,
    }


def _data(text: str) -> str:
    # GitHub's escaping for a workflow command's message.
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _property(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")

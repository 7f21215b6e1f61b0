"""The `reconcile` command. Each submodule registers its own commands on the one Typer app.

`main()` runs the app outside click's standalone mode so that every exit code is ours:
click's usage-error code (2) would read as "changes pending" (DESIGN §6), so a usage error
exits 1, and an unexpected exception is one line plus a logged traceback, never a Python
traceback on the terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

# Recent Typer versions vendor their own click (typer._click); the standalone `click` (still
# installed for uvicorn) raises different classes, so catch Typer's copy when it has one.
try:
    from typer._click.exceptions import ClickException
except ImportError:  # an older Typer, built on the click package
    from click.exceptions import ClickException  # type: ignore[assignment]

from billing_reconciler.cli import (
    emulator_cmd,
    reconcile_cmd,
    serve_cmd,
    status_cmd,
    validate_cmd,
)
from billing_reconciler.cli.common import EXIT_ERROR, EXIT_OK, internal_error

app = typer.Typer(
    name="reconcile",
    help="Reconcile the billing setup described in desired/ with Stripe.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Click's plain help: Typer's rich help prints boolean flags as `--dry-run <bool>`.
    rich_markup_mode=None,
)

for module in (reconcile_cmd, validate_cmd, emulator_cmd, serve_cmd, status_cmd):
    module.register(app)


def run_cli(args: Sequence[str] | None = None) -> int:
    """Run `reconcile ARGS`; the exit code."""
    command = typer.main.get_command(app)
    try:
        result = command.main(
            args=list(sys.argv[1:] if args is None else args),
            prog_name="reconcile",
            standalone_mode=False,
        )
    except ClickException as error:
        # Usage errors and bad parameters: click's message, our exit code.
        error.show()
        return EXIT_ERROR
    except typer.Abort:
        typer.echo("Aborted!", err=True)
        return EXIT_ERROR
    except Exception as error:
        return internal_error(error)
    # Without standalone mode, `typer.Exit(code)` comes back as the return value.
    return result if isinstance(result, int) else EXIT_OK


def main() -> None:
    """Console-script entry point."""
    sys.exit(run_cli())

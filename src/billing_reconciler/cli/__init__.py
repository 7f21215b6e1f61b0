"""The `reconcile` command. Each submodule registers its own commands on the one Typer app."""

from __future__ import annotations

import typer

from billing_reconciler.cli import (
    emulator_cmd,
    reconcile_cmd,
    serve_cmd,
    status_cmd,
    validate_cmd,
)

app = typer.Typer(
    name="reconcile",
    help="Reconcile the billing setup described in desired/ with Stripe.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (reconcile_cmd, validate_cmd, emulator_cmd, serve_cmd, status_cmd):
    module.register(app)


def main() -> None:
    """Console-script entry point."""
    app()

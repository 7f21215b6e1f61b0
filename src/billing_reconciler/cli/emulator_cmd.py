"""`reconcile emulator`: run the local Stripe emulator in the foreground (DESIGN §9).

The only product module allowed to import `stripe_emulator` (see `.importlinter`).

Without `--state` the account lives in memory only. It never defaults to the file that
`reconcile --emulator` keeps beside the store (`.billing/emulator.json`): two emulators
saving one file would overwrite each other's objects.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from billing_reconciler.cli.common import EXIT_OK, LogLevelOption, run_and_exit


def register(app: typer.Typer) -> None:
    """Attach `reconcile emulator` to the `reconcile` app."""
    app.command(name="emulator")(emulator)


def emulator(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", help="Port to listen on (0 picks a free one).")
    ] = 12111,
    state: Annotated[
        Path | None,
        typer.Option(
            "--state",
            help="JSON file to load the state from and save it to (default: memory only).",
        ),
    ] = None,
    log_level: LogLevelOption = None,
) -> None:
    """Run the local Stripe emulator until Ctrl-C. Point the SDK at it with
    base_addresses={"api": "http://HOST:PORT"} and any sk_test_ key."""
    run_and_exit(lambda: run_emulator(host, port, state), log_level=log_level)


def run_emulator(host: str, port: int, state: Path | None) -> int:
    from stripe_emulator.server import serve

    with contextlib.suppress(KeyboardInterrupt):
        serve(host=host, port=port, state_file=state)
    return EXIT_OK

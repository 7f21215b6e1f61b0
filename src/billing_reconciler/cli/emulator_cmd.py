"""`reconcile emulator`: run the local Stripe emulator in the foreground (DESIGN §9).

The only product module allowed to import `stripe_emulator` (see `.importlinter`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Attach `reconcile emulator` to the `reconcile` app."""
    app.command(name="emulator")(emulator)


def emulator(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0 picks a free one).")] = 12111,
    state: Annotated[
        Path | None,
        typer.Option(help="JSON file to load the state from and save it to (kept across runs)."),
    ] = None,
) -> None:
    """Run the local Stripe emulator until Ctrl-C. Point the SDK at it with
    base_addresses={"api": "http://HOST:PORT"} and any sk_test_ key."""
    from stripe_emulator.server import serve

    with contextlib.suppress(KeyboardInterrupt):
        serve(host=host, port=port, state_file=state)

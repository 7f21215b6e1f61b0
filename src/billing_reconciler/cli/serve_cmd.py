"""Commands of `reconcile` (placeholder: registers nothing yet)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the `reconcile` app."""
    del app

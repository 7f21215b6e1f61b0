"""Running `reconcile` as a user does: a real process, a clean environment, no terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "desired"


def reconcile(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m billing_reconciler ARGS` with no STRIPE_*/BILLING_* from the caller's env."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "BILLING_"))}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "billing_reconciler", *args],
        cwd=cwd,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )

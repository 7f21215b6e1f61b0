"""Diagnostics: one finding (error or warning) at a file position, and how to sort them.

Loading never raises on bad input; every layer returns diagnostics so a user sees every
problem of every file in one run (STYLE §3).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from billing_reconciler.config import redact

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """A problem found while loading desired state, at a 1-based line and column."""

    severity: Severity
    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"

    @property
    def is_error(self) -> bool:
        """True for errors (which make the desired state unusable)."""
        return self.severity == "error"


def make(
    severity: Severity, path: str, *, line: int = 1, column: int = 1, message: str
) -> Diagnostic:
    """Build a diagnostic; the message is always scrubbed of key-shaped secrets."""
    return Diagnostic(severity, path, max(line, 1), max(column, 1), redact(message))


def sort_key(diagnostic: Diagnostic) -> tuple[str, int, int, int, str]:
    """Order by file, line and column; errors before warnings at one spot."""
    rank = 0 if diagnostic.is_error else 1
    return (diagnostic.path, diagnostic.line, diagnostic.column, rank, diagnostic.message)


def display_path(path: Path) -> str:
    """`path` relative to the working directory when it lies below it, else as given."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return os.fspath(path)

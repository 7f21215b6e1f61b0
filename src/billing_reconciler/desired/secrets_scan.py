"""Refuse key-shaped secrets anywhere in desired/: a Stripe key or webhook secret pasted into a
metadata value would otherwise be printed in plans and pull-request comments, and land in
Stripe. Secrets come from the environment or a secrets file (DESIGN §8)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from billing_reconciler.config import redact
from billing_reconciler.desired.diagnostics import Diagnostic
from billing_reconciler.desired.yaml_source import SourceDocument

MESSAGE = (
    "this value looks like a Stripe key or webhook secret; secrets never go in desired/ "
    "(use STRIPE_API_KEY / BILLING_WEBHOOK_SECRETS or their _FILE variants)"
)


def secret_diagnostics(document: SourceDocument) -> list[Diagnostic]:
    """One error per string value of `document` that holds a key-shaped secret."""
    return [document.diagnostic(loc, MESSAGE) for loc in _secret_locations(document.data, ())]


def _secret_locations(value: Any, loc: tuple[str | int, ...]) -> Iterator[tuple[str | int, ...]]:
    if isinstance(value, str):
        if redact(value) != value:
            yield loc
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield from _secret_locations(inner, (*loc, str(key)))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _secret_locations(inner, (*loc, index))

"""Structured logging: JSON lines when not on a terminal, readable key=value on one; secrets
are scrubbed from every value before any renderer sees it."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Final, TextIO, cast

import structlog

from billing_reconciler.config import redact


def _scrub_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if isinstance(value, str):
            event[key] = redact(value)
    return event


LOG_LEVEL_ENV: Final[str] = "BILLING_LOG_LEVEL"
LEVELS: Final[Mapping[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
}


def resolve_level(level_name: str | None, env: Mapping[str, str] | None = None) -> int:
    """`level_name` (an option) wins; else `BILLING_LOG_LEVEL`; else info.

    An unknown name is refused rather than silently defaulted: a typo in `debug` would
    otherwise hide exactly the lines someone asked for.
    """
    environ = os.environ if env is None else env
    allowed = "|".join(LEVELS)
    if level_name is not None:
        source, raw = "log level", level_name
    else:
        source, raw = LOG_LEVEL_ENV, environ.get(LOG_LEVEL_ENV, "")
        if not raw.strip():
            return logging.INFO
    level = LEVELS.get(raw.strip().lower())
    if level is None:
        raise ValueError(f"{source} must be one of {allowed}, got {raw!r}")
    return level


class _CurrentStderr:
    """Whatever `sys.stderr` is when a line is written, not when logging was configured: a
    test runner or an embedding program that swaps stderr must not leave us writing to a
    closed stream."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _traceback_hidden(stream: TextIO, _exc_info: Any) -> None:
    # A person at a terminal gets one line, never a Python traceback; they ask for it.
    stream.write("\n  (traceback hidden; run with --log-level debug to see it)")


def configure_logging(*, json: bool | None = None, level_name: str | None = None) -> None:
    """Log to stderr (stdout carries plans). `json=None`: JSON unless stderr is a terminal.

    `level_name`: debug, info or warning (any case); None reads `BILLING_LOG_LEVEL`, else
    info. Raises ValueError naming the allowed values for anything else.
    """
    level = resolve_level(level_name)
    as_json = not sys.stderr.isatty() if json is None else json
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(
            colors=False,
            exception_formatter=(
                structlog.dev.plain_traceback if level <= logging.DEBUG else _traceback_hidden
            ),
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # Tracebacks as text in JSON lines too (the console renderer formats its own).
            *([structlog.processors.format_exc_info] if as_json else []),
            _scrub_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=False,
    )

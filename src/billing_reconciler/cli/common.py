"""What every command shares: exit codes, the one-line error, `--log-level`, and the
command runner that turns known errors into exit 1.

Exit codes (DESIGN §6): 0 ok, 1 any error (usage errors included, see `cli.main`), 2 only
for `reconcile --dry-run` with pending changes.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Annotated

import structlog
import typer
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from billing_reconciler.apply import ApplyError
from billing_reconciler.config import ConfigError, redact
from billing_reconciler.controller import ReconcileError
from billing_reconciler.log_setup import configure_logging
from billing_reconciler.stripe_gateway import StripeGatewayError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES_PENDING = 2

log = structlog.get_logger("billing_reconciler.cli")


class CliError(Exception):
    """An error to print as one line and exit 1."""


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"


# A Choice: anything else is a usage error (exit 1) before the command runs.
LogLevelOption = Annotated[
    LogLevel | None,
    typer.Option(
        "--log-level",
        case_sensitive=False,
        help="Log threshold (default: BILLING_LOG_LEVEL, else info).",
    ),
]


class _GroupLevel:
    """`reconcile --log-level debug status`: the level given before the subcommand's name
    (parsed by the group callback), used when the subcommand is given none of its own."""

    level: LogLevel | None = None


def remember_group_log_level(level: LogLevel | None) -> None:
    _GroupLevel.level = level


def setup_logging(level: LogLevel | None) -> None:
    """Configure structlog; an invalid BILLING_LOG_LEVEL is a CliError, not a traceback."""
    chosen = level if level is not None else _GroupLevel.level
    try:
        configure_logging(level_name=None if chosen is None else chosen.value)
    except ValueError as error:
        raise CliError(str(error)) from error


def exit_with(code_or_error: int | Exception) -> None:
    if isinstance(code_or_error, Exception):
        typer.echo(f"error: {redact(str(code_or_error))}", err=True)
        raise typer.Exit(EXIT_ERROR)
    raise typer.Exit(code_or_error)


KNOWN_ERRORS = (
    CliError,
    ConfigError,
    ReconcileError,
    ApplyError,
    StripeGatewayError,
)


def run_and_exit(command: Callable[[], int], *, log_level: LogLevel | None = None) -> None:
    """Configure logging, run a command body; exit with its code, or print a known error and
    exit 1. Anything else reaches `cli.main`, which reports it as an internal error."""
    try:
        setup_logging(log_level)
        code = command()
    except KNOWN_ERRORS as error:
        exit_with(error)
    except SQLAlchemyError as error:
        log.debug("store error", exc_info=True)
        if is_connection_problem(error):
            # A store that cannot be opened (no such database, refused port, not a database
            # file, a URL of an unsupported dialect) is the URL's to fix: say so in one line.
            exit_with(CliError(f"the store cannot be used (BILLING_DATABASE_URL): {_first(error)}"))
        # A statement the store refused, once connected: not the URL's fault.
        exit_with(CliError(f"a store query failed: {_first(error)}"))
    except OSError as error:
        log.debug("operating system error", exc_info=True)
        where = f": {error.filename}" if error.filename else ""
        exit_with(CliError(f"{error.strerror or _first(error)}{where}"))
    else:
        exit_with(code)


def is_connection_problem(error: SQLAlchemyError) -> bool:
    """True when the database could not be reached or opened (a bad URL, a refused or failed
    connection), false for a statement that failed on a working connection."""
    if isinstance(error, ArgumentError | NoSuchModuleError):
        return True
    if isinstance(error, DBAPIError):
        # SQLAlchemy names the statement of a failed query; a failed connect has none.
        return error.statement is None or error.connection_invalidated
    return False


def _first(error: BaseException) -> str:
    lines = redact(str(error)).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def internal_error(error: BaseException) -> int:
    """Log the traceback, print one line, exit 1: a user never sees a Python traceback."""
    if not structlog.is_configured():
        # The failure came before a command configured logging: never let structlog's
        # default print the traceback to stdout, where plans go.
        configure_logging(level_name="info")
    log.exception("internal error", error_type=type(error).__name__)
    lines = redact(str(error)).strip().splitlines()
    message = lines[0] if lines else "(no message)"
    typer.echo(f"internal error: {type(error).__name__}: {message}; details in the log", err=True)
    return EXIT_ERROR

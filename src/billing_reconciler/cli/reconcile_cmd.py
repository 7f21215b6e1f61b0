"""`reconcile` itself (plan, or plan and apply) and `reconcile demo`.

Exit codes (DESIGN §6): with `--dry-run`, 0 no changes, 2 changes pending, 1 any error; when
applying, 0 converged, 1 any error. Nothing else ever exits 2. Plans go to stdout, diagnostics
and logs to stderr, so `reconcile --dry-run --format json > plan.json` stays clean.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import structlog
import typer

# Typer vendors its own click (see cli/__init__.py); its classes are the ones it raises/reads.
try:
    from typer._click.core import ParameterSource
    from typer._click.exceptions import UsageError
except ImportError:  # an older Typer, built on the click package
    from click.core import ParameterSource  # type: ignore[assignment]
    from click.exceptions import UsageError  # type: ignore[assignment]
from sqlalchemy.exc import SQLAlchemyError

from billing_reconciler.apply import StepOutcome
from billing_reconciler.cli.common import (
    EXIT_CHANGES_PENDING,
    EXIT_ERROR,
    EXIT_OK,
    KNOWN_ERRORS,
    CliError,
    LogLevelOption,
    exit_with,
    remember_group_log_level,
    run_and_exit,
)
from billing_reconciler.cli.writer import (
    StillWriter,
    mention_suspension,
    refuse_if_suspended,
    writer_lock,
)
from billing_reconciler.config import Environment, key_mode, load_environment, redact
from billing_reconciler.controller import (
    Controller,
    Planned,
    PlanOptions,
    Registration,
    repeats,
)
from billing_reconciler.desired import load_desired
from billing_reconciler.desired.state import DesiredState
from billing_reconciler.planning.plan import Plan, Reason
from billing_reconciler.planning.render import render_text, summary_line
from billing_reconciler.planning.sections import (
    Section,
    render_sections_markdown,
    render_sections_text,
    sections_from_json,
    sections_to_json,
)
from billing_reconciler.planning.serialize import PlanFormatError
from billing_reconciler.registry import DOMAINS
from billing_reconciler.store import Store
from billing_reconciler.stripe_gateway import StripeGateway

# Re-exported: the other command modules import them from here.
__all__ = [
    "EXIT_CHANGES_PENDING",
    "EXIT_ERROR",
    "EXIT_OK",
    "KNOWN_ERRORS",
    "CliError",
    "exit_with",
    "run_and_exit",
]

EMULATOR_KEY = "sk_test_emulator"

log = structlog.get_logger("billing_reconciler.cli")


class Format(StrEnum):
    TEXT = "text"
    JSON = "json"
    MARKDOWN = "markdown"


@dataclass(frozen=True, slots=True)
class Connection:
    api_key: str
    api_base: str | None
    database_url: str


def render(sections: Sequence[Section], fmt: Format) -> str:
    """One section per registered domain (one domain renders exactly as its plan alone)."""
    match fmt:
        case Format.TEXT:
            return render_sections_text(sections)
        case Format.JSON:
            return sections_to_json(sections)
        case Format.MARKDOWN:
            return render_sections_markdown(sections)


def _sections(planned: Sequence[tuple[Controller, Planned]]) -> list[Section]:
    return [
        Section(
            controller.domain.name, p.plan, fleet=bool(getattr(controller.domain, "fleet", False))
        )
        for controller, p in planned
    ]


def load_valid_desired(directory: Path) -> DesiredState:
    """Load desired/, print every diagnostic; refuse (exit 1) when any is an error."""
    result = load_desired(directory)
    for diagnostic in result.diagnostics:
        typer.echo(f"{diagnostic.severity}: {diagnostic}", err=True)
    if result.state is None:
        errors = sum(1 for d in result.diagnostics if d.severity == "error")
        raise CliError(f"{errors} error(s) in {directory}; nothing was observed or applied")
    return result.state


def git_revision(directory: Path) -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if done.returncode == 0:
            return done.stdout.strip()
    return None


def emulator_state_file(directory: Path) -> Path:
    """Where `--emulator` keeps the emulator's objects: beside the default SQLite store, so
    `reconcile --emulator` followed by `reconcile --emulator --dry-run` sees one account."""
    state_dir = directory.resolve().parent / ".billing"
    state_dir.mkdir(parents=True, exist_ok=True)
    return state_dir / "emulator.json"


@contextlib.contextmanager
def connection(*, directory: Path, use_emulator: bool) -> Iterator[Connection]:
    """Where to talk to: the embedded emulator, or the Stripe named by the environment."""
    env: Environment = load_environment(desired_dir=directory)
    if use_emulator:
        from stripe_emulator.server import EmbeddedEmulator

        with EmbeddedEmulator(state_file=emulator_state_file(directory)) as emulator:
            yield Connection(EMULATOR_KEY, emulator.url, env.database_url)
        return
    if env.stripe_api_key is None:
        raise CliError(
            "STRIPE_API_KEY (or STRIPE_API_KEY_FILE) is not set; "
            "use --emulator to run against the embedded Stripe emulator"
        )
    yield Connection(env.stripe_api_key.reveal(), env.api_base, env.database_url)


@dataclass(frozen=True, slots=True)
class RunRequest:
    directory: Path
    dry_run: bool
    fmt: Format
    out: Path | None
    saved_plan: Path | None
    adopt: bool
    auto_approve: bool
    confirm_live: bool
    allow_mass_archive: bool
    use_emulator: bool
    wait_lock_seconds: float = 0.0
    ignore_suspension: bool = False
    allow_mass_change: bool = False


def run(request: RunRequest, registrations: Sequence[Registration] = DOMAINS) -> int:
    """The whole `reconcile` command, every registered domain in apply order; the exit code."""
    state = load_valid_desired(request.directory)
    with connection(directory=request.directory, use_emulator=request.use_emulator) as conn:
        if key_mode(conn.api_key) == "live" and not request.dry_run and not request.confirm_live:
            raise CliError("refusing to apply with a live Stripe key without --confirm-live")
        store = Store.open(conn.database_url)
        try:
            gateway = StripeGateway(
                api_key=conn.api_key,
                api_base=conn.api_base,
                rate_limit_per_second=state.config.reconcile.rate_limit_per_second,
            )
            revision = git_revision(request.directory)
            controllers = [
                Controller(
                    registration=registration,
                    state=state,
                    gateway=gateway,
                    store=store,
                    git_revision=revision,
                )
                for registration in registrations
            ]
            with _as_writer(store, state, request) as still_writer:
                return _plan_and_maybe_apply(controllers, request, still_writer)
        finally:
            store.close()


@contextlib.contextmanager
def _as_writer(store: Store, state: DesiredState, request: RunRequest) -> Iterator[StillWriter]:
    """An apply runs as the one writer (see cli/writer.py); a dry run writes nothing to
    Stripe, so it takes no lock and is not stopped by a suspension."""
    if request.dry_run:
        mention_suspension(store)
        yield lambda: True
        return
    refuse_if_suspended(store, ignore=request.ignore_suspension)
    installation = state.config.reconcile.installation_id
    with writer_lock(store, installation, wait_seconds=request.wait_lock_seconds) as still:
        yield still


def _plan_and_maybe_apply(
    controllers: Sequence[Controller], request: RunRequest, still_writer: StillWriter
) -> int:
    planned = _plan_all(controllers, request)
    plans = [p.plan for _, p in planned]
    typer.echo(render(_sections(planned), request.fmt), nl=False)
    if request.out is not None:
        request.out.write_text(sections_to_json(_sections(planned)), encoding="utf-8")
    if request.dry_run:
        for controller, p in planned:
            _record_dry_run(controller, p.plan)
        if any(plan.refused for plan in plans):
            return EXIT_ERROR
        return EXIT_CHANGES_PENDING if any(plan.has_changes for plan in plans) else EXIT_OK
    if any(plan.refused for plan in plans):
        raise CliError("the plan was refused; nothing was applied")
    if not any(plan.has_work for plan in plans):
        # Nothing to apply: the desired settings are in force as they are.
        for controller, _ in planned:
            controller.record_settings_in_force()
        adoptable = sum(len(plan.adoptable) for plan in plans)
        return EXIT_OK if not adoptable else _adoption_pending(adoptable)
    _confirm(request.auto_approve)
    return _apply_all(planned, still_writer)


def _plan_all(
    controllers: Sequence[Controller], request: RunRequest
) -> list[tuple[Controller, Planned]]:
    if request.saved_plan is not None:
        saved = _read_plan(request.saved_plan, sole_domain=controllers[0].domain.name)
        unknown = sorted(set(saved) - {c.domain.name for c in controllers})
        if unknown:
            raise CliError(f"the saved plan has sections for unknown domains: {unknown}")
        return [(c, c.check_saved_plan(_saved_section(saved, c))) for c in controllers]
    options = PlanOptions(
        adopt_all=request.adopt,
        allow_mass_archive=request.allow_mass_archive,
        allow_mass_change=request.allow_mass_change,
    )
    return [(controller, controller.plan(options)) for controller in controllers]


def _saved_section(saved: dict[str, Plan], controller: Controller) -> Plan:
    plan = saved.get(controller.domain.name)
    if plan is None:
        raise CliError(
            f"the saved plan has no section for the {controller.domain.name} domain; re-plan"
        )
    return plan


def _record_dry_run(controller: Controller, plan: Plan) -> None:
    """Audit the dry run; a read-only store (a PR check with a read-only database user) only
    loses the audit row, never the plan or its exit code."""
    try:
        controller.record_dry_run(plan)
    except SQLAlchemyError as error:
        typer.echo(
            f"warning: the dry run was not recorded in the store ({type(error).__name__}: "
            f"{redact(str(error)).splitlines()[0]})",
            err=True,
        )


def _adoption_pending(adoptable: int) -> int:
    typer.echo(f"error: {adoptable} object(s) await adoption; re-run with --adopt", err=True)
    return EXIT_ERROR


def _read_plan(path: Path, *, sole_domain: str) -> dict[str, Plan]:
    try:
        return sections_from_json(path.read_text(encoding="utf-8"), sole_domain=sole_domain)
    except (OSError, UnicodeDecodeError, PlanFormatError) as error:
        raise CliError(f"cannot read saved plan {path}: {error}") from error


def _confirm(auto_approve: bool) -> None:
    if auto_approve:
        return
    if not sys.stdin.isatty():
        raise CliError("not a terminal: pass --auto-approve to apply without a prompt")
    answer = typer.prompt("Apply this plan? Only 'yes' is accepted", default="no")
    if answer.strip() != "yes":
        raise CliError("apply cancelled")


def _apply_all(planned: Sequence[tuple[Controller, Planned]], still_writer: StillWriter) -> int:
    """Apply each domain's plan in apply order; the first that fails stops the rest."""
    with_work = [(c, p) for c, p in planned if p.plan.has_work]
    for controller, plan in with_work:
        prefix = f"{controller.domain.name}: " if len(with_work) > 1 else ""
        code = _apply(controller, plan, still_writer, prefix=prefix)
        if code != EXIT_OK:
            return code
    return EXIT_OK


def _apply(
    controller: Controller, planned: Planned, still_writer: StillWriter, *, prefix: str = ""
) -> int:
    def report(outcome: StepOutcome) -> None:
        # Printed as counted: each step of the plan a `done:` line (`Apply complete (N
        # steps)`), each store record a lost store needed a `restored:` line (`, R store
        # records restored`); a domain's bookkeeping (its events cursor, the subscriptions'
        # mirror) is neither shown in the plan nor counted, so it is not printed either.
        step = outcome.step
        replay = " (replayed)" if outcome.replayed else ""
        target = f" {outcome.stripe_id}" if outcome.stripe_id else ""
        if step.reason is Reason.STORE_LOST:
            typer.echo(f"  restored: {step.key}{target}  ({step.kind}){replay}", err=True)
        elif step.reason is not Reason.BOOKKEEPING:
            typer.echo(f"  done: {step.action.value} {step.key}{target}{replay}", err=True)
        # Raising here stops the apply after this step: a writer that lost its lock must
        # not write beside the one that took it.
        if not still_writer():
            raise CliError(f"lost the writer lock after {step.key}; the apply stopped there")

    run_id, outcomes, residual = controller.apply(planned, on_step=report)
    log.info("apply finished", run_id=run_id, steps=len(outcomes))
    # Restores run after the steps; only the store records a lost store needed are named.
    restores = outcomes[len(planned.plan.steps) :]
    restored = sum(1 for outcome in restores if outcome.step.reason is Reason.STORE_LOST)
    also = f", {restored} store records restored" if restored else ""
    steps = len(outcomes) - len(restores)
    if not residual.converged:
        if repeats(outcomes, residual):
            typer.echo("error: apply did not converge; the re-plan still has changes:", err=True)
        else:
            # Everything applied took; what the re-plan found arrived while it ran. It was not
            # in the plan that was approved, so it is not applied unasked: run again to see it.
            typer.echo(
                f"error: {prefix}apply complete ({steps} steps{also}), but changes arrived "
                "while it ran (not in the approved plan, so not applied); run `reconcile` "
                "again. The re-plan:",
                err=True,
            )
        typer.echo(render_text(residual), err=True, nl=False)
        return EXIT_ERROR
    typer.echo(f"{prefix}Apply complete ({steps} steps{also}). Re-plan: {summary_line(residual)}")
    return EXIT_OK


def _refuse_options_of_the_plain_command(ctx: typer.Context) -> None:
    """`reconcile --desired X validate` would validate ./desired: an option of the plain
    command given before a subcommand is a usage error (exit 1), never silently dropped.
    `--log-level` is the one option meant for either place."""
    given = [
        param
        for param in ctx.command.params
        if param.name != "log_level"
        and ctx.get_parameter_source(param.name or "") is not ParameterSource.DEFAULT
    ]
    if given:
        names = ", ".join(param.opts[0] for param in given)
        raise UsageError(
            f"{names} belongs to the plain `reconcile` command; with `{ctx.invoked_subcommand}`, "
            "give its own options after its name",
            ctx=ctx,
        )


def register(app: typer.Typer) -> None:
    """`reconcile` runs when no subcommand is given; `reconcile demo` shows the whole loop."""

    @app.callback(invoke_without_command=True)
    def reconcile(
        ctx: typer.Context,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Plan only; exit 2 if changes are pending.")
        ] = False,
        desired: Annotated[
            Path, typer.Option("--desired", help="The desired-state directory.")
        ] = Path("desired"),
        fmt: Annotated[Format, typer.Option("--format", help="Plan output format.")] = Format.TEXT,
        out: Annotated[
            Path | None, typer.Option("--out", help="Also save the plan as JSON.")
        ] = None,
        plan: Annotated[Path | None, typer.Option("--plan", help="Apply this saved plan.")] = None,
        adopt: Annotated[
            bool, typer.Option("--adopt", help="Adopt unmanaged look-alikes.")
        ] = False,
        auto_approve: Annotated[
            bool, typer.Option("--auto-approve", help="Apply without a prompt.")
        ] = False,
        confirm_live: Annotated[
            bool, typer.Option("--confirm-live", help="Allow applying with a live key.")
        ] = False,
        allow_mass_archive: Annotated[
            bool, typer.Option("--allow-mass-archive", help="Allow archiving beyond the guard.")
        ] = False,
        allow_mass_change: Annotated[
            bool,
            typer.Option(
                "--allow-mass-change",
                help="Allow cancelling, downgrading or repricing live objects beyond the guard.",
            ),
        ] = False,
        emulator: Annotated[
            bool, typer.Option("--emulator", help="Use the embedded Stripe emulator.")
        ] = False,
        wait_lock: Annotated[
            float,
            typer.Option(
                "--wait-lock",
                min=0,
                metavar="SECONDS",
                help="When another writer holds the lock, wait up to SECONDS for it.",
            ),
        ] = 0.0,
        ignore_suspension: Annotated[
            bool,
            typer.Option("--ignore-suspension", help="Apply even while applying is suspended."),
        ] = False,
        log_level: LogLevelOption = None,
    ) -> None:
        # Runs before every subcommand too: reset what an earlier in-process run remembered.
        remember_group_log_level(log_level)
        if ctx.invoked_subcommand is not None:
            _refuse_options_of_the_plain_command(ctx)
            return
        request = RunRequest(
            directory=desired,
            dry_run=dry_run,
            fmt=fmt,
            out=out,
            saved_plan=plan,
            adopt=adopt,
            auto_approve=auto_approve,
            confirm_live=confirm_live,
            allow_mass_archive=allow_mass_archive,
            use_emulator=emulator,
            wait_lock_seconds=wait_lock,
            ignore_suspension=ignore_suspension,
            allow_mass_change=allow_mass_change,
        )
        run_and_exit(lambda: run(request), log_level=log_level)

    @app.command("demo")
    def demo(
        desired: Annotated[
            Path, typer.Option("--desired", help="The desired-state directory.")
        ] = Path("desired"),
        state_dir: Annotated[
            Path | None,
            typer.Option(
                "--state-dir",
                help="Keep the emulator and SQLite state here (default: a fresh temp dir).",
            ),
        ] = None,
        log_level: LogLevelOption = None,
    ) -> None:
        """Reconcile desired/ against the embedded emulator and SQLite: apply, then a no-op run."""
        run_and_exit(lambda: run_demo(desired, state_dir), log_level=log_level)


def run_demo(directory: Path, state_dir: Path | None) -> int:
    with contextlib.ExitStack() as stack:
        base = state_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="br-demo-"))
        )
        base.mkdir(parents=True, exist_ok=True)
        state = load_valid_desired(directory)
        from stripe_emulator.server import EmbeddedEmulator

        emulator = stack.enter_context(EmbeddedEmulator(state_file=base / "emulator.json"))
        store = Store.open(f"sqlite:///{base / 'state.db'}")
        stack.callback(store.close)
        gateway = StripeGateway(api_key=EMULATOR_KEY, api_base=emulator.url)
        controllers = [
            Controller(
                registration=registration,
                state=state,
                gateway=gateway,
                store=store,
                git_revision=git_revision(directory),
            )
            for registration in DOMAINS
        ]
        typer.echo(f"== Run 1: reconcile {directory} against the Stripe emulator at {emulator.url}")
        # A --state-dir may be shared: its store gets one writer like any other.
        installation = state.config.reconcile.installation_id
        still_writer = stack.enter_context(writer_lock(store, installation, wait_seconds=0))
        planned = [(controller, controller.plan()) for controller in controllers]
        typer.echo(render_sections_text(_sections(planned)), nl=False)
        if any(p.plan.refused for _, p in planned):
            return EXIT_ERROR
        code = _apply_all(planned, still_writer)
        if code != EXIT_OK:
            return code
        typer.echo("\n== Run 2: the same desired state again (expect no changes)")
        second = [(controller, controller.plan()) for controller in controllers]
        typer.echo(render_sections_text(_sections(second)), nl=False)
        return EXIT_OK if not any(p.plan.has_changes for _, p in second) else EXIT_ERROR

"""`reconcile status`, `reconcile suspend --reason`, `reconcile resume`.

None of them creates a store: with no store at BILLING_DATABASE_URL (or beside `--desired`),
no such SQLite file or a database without our schema, each exits 1 naming where it looked
and writes nothing; nor does a `--desired` directory that does not exist. Only the commands
that apply (`reconcile`, `serve`, `demo`) create and migrate a store.

`status` reads the store only (no Stripe key needed): every registered domain with its last
run, its result, drift and orphans it saw, its pending journal steps (begun, never
finished: a crash) and the facts it states from the store (`Registration.facts`: the usage
outbox's depth, ...); who holds the leader lease; whether applying is suspended; whether
desired/ is valid now (what `serve` would find on its next run); and the ledger check (DESIGN
§17: each account's entries sum to its balance, each transaction is two entries summing to
zero), with the accounts by state and the total of balances. A ledger problem makes it exit 1
(`EXIT_LEDGER_UNSOUND`), so a cron or a probe running it notices.

`suspend` pauses applying for every replica sharing the store; plans are still computed,
recorded and reported (a running serve reads it before each run's apply). `resume` lifts it
and leaves a notice in the inbox (`runtime.control`): the leader of a running serve then
reconciles every domain within about a second, applying what was planned meanwhile.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from billing_reconciler.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    CliError,
    LogLevelOption,
    run_and_exit,
)
from billing_reconciler.config import load_environment
from billing_reconciler.desired import load_desired
from billing_reconciler.registry import DOMAINS
from billing_reconciler.runtime.control import store_resumed_notice
from billing_reconciler.runtime.leader import lease_name
from billing_reconciler.store import (
    AccountRepository,
    ControllerStateRepository,
    JournalRecord,
    JournalRepository,
    LeaseRepository,
    LedgerRepository,
    RunMode,
    RunRecord,
    RunRepository,
    Store,
    default_actor,
)
from billing_reconciler.store.database import StoreNotFoundError

# The registered domains, in apply order; others appear once they have recorded a run.
SERVED_DOMAINS = tuple(registration.name for registration in DOMAINS)
DEFAULT_INSTALLATION = "default"
# The ledger check found a problem (the report was still printed in full).
EXIT_LEDGER_UNSOUND = EXIT_ERROR


DesiredDir = Annotated[Path, typer.Option("--desired", help="The desired-state directory.")]


class StatusFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class DesiredReport:
    valid: bool
    installation_id: str
    revision: str | None
    errors: tuple[str, ...]


def _desired_report(directory: Path) -> DesiredReport:
    loaded = load_desired(directory)
    if loaded.state is not None:
        state = loaded.state
        return DesiredReport(True, state.config.reconcile.installation_id, state.revision, ())
    return DesiredReport(
        False,
        _installation_of_broken(directory),
        None,
        tuple(str(d) for d in loaded.errors),
    )


def _installation_of_broken(directory: Path) -> str:
    """The installation id of a desired/ that does not validate, as best we can tell: the
    lease to show is named after it."""
    try:
        raw = yaml.safe_load((directory / "billing.yaml").read_text(encoding="utf-8"))
        value = raw["reconcile"]["installation_id"]
    except Exception:
        return DEFAULT_INSTALLATION
    return str(value).lower() if isinstance(value, str) and value else DEFAULT_INSTALLATION


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _run_json(run: RunRecord | None) -> dict[str, Any] | None:
    if run is None:
        return None
    summary = dict(run.summary)
    return {
        "run_id": run.run_id,
        "mode": run.mode.value,
        "result": run.result.value,
        "actor": run.actor,
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "desired_revision": run.desired_revision,
        "drift": summary.get("drift"),
        "orphans": summary.get("orphans"),
        "summary": summary,
        "error": run.error,
    }


def _step_json(step: JournalRecord, domain: str | None) -> dict[str, Any]:
    return {
        "run_id": step.run_id,
        "domain": domain,
        "step": step.step_index + 1,
        "action": step.action,
        "object_key": step.object_key,
        "started_at": _iso(step.started_at),
    }


def collect_status(store: Store, desired: DesiredReport) -> dict[str, Any]:
    """The whole report as JSON-ready data (the text form is rendered from it)."""
    now = datetime.now(UTC)
    with store.session() as session:
        runs = RunRepository(session)
        recent = runs.recent(200)
        journal = JournalRepository(session)
        by_domain = journal.pending_by_domain(desired.installation_id)
        domains = list(SERVED_DOMAINS)
        domains += sorted(({r.domain for r in recent} | set(by_domain)) - set(domains))
        latest = {name: _run_json(runs.latest(name)) for name in domains}
        applies = {
            name: _run_json(
                next((r for r in recent if r.domain == name and r.mode is RunMode.APPLY), None)
            )
            for name in domains
        }
        domain_of = {step.id: name for name, steps in by_domain.items() for step in steps}
        # Oldest first, each with the domain of its run.
        pending = [
            _step_json(step, domain_of.get(step.id))
            for step in journal.pending(desired.installation_id)
        ]
        ledger = LedgerRepository(session)
        problems = ledger.verify()
        accounts = AccountRepository(session).count_by_state()
        total_balance = ledger.total_balance()
        lease = LeaseRepository(session).current(lease_name(desired.installation_id))
        suspension = ControllerStateRepository(session).suspension()
    facts = _domain_facts(store)
    return {
        "format_version": 1,
        "installation_id": desired.installation_id,
        "desired": {
            "valid": desired.valid,
            "revision": desired.revision,
            "errors": list(desired.errors),
        },
        "leader": None
        if lease is None
        else {
            "holder": lease.holder,
            "since": _iso(lease.acquired_at),
            "renewed_at": _iso(lease.renewed_at),
            "live": lease.is_live(now),
        },
        "suspended": None
        if suspension is None
        else {
            "reason": suspension.reason,
            "by": suspension.actor,
            "since": _iso(suspension.since),
        },
        "pending_journal_steps": pending,
        "domains": {
            name: {
                "last_run": latest[name],
                "last_apply": applies[name],
                "pending_journal_steps": [s for s in pending if s["domain"] == name],
                **({"facts": facts[name]} if name in facts else {}),
            }
            for name in domains
        },
        "ledger": {
            "ok": not problems,
            "problems": problems,
            "accounts": accounts,
            "total_balance": total_balance,
        },
    }


def _domain_facts(store: Store) -> dict[str, dict[str, float]]:
    """The facts of each registered domain that states some (`Registration.facts`)."""
    return {
        registration.name: {fact.name: fact.value for fact in registration.facts(store)}
        for registration in DOMAINS
        if registration.facts is not None
    }


def render_status_text(report: dict[str, Any]) -> str:
    lines = [f"Installation: {report['installation_id']}"]
    desired = report["desired"]
    if desired["valid"]:
        lines.append(f"Desired state: valid (revision {desired['revision']})")
    else:
        lines.append(f"Desired state: INVALID ({len(desired['errors'])} error(s))")
        lines += [f"  {error}" for error in desired["errors"][:10]]
    leader = report["leader"]
    if leader is None:
        lines.append("Leader: none recorded")
    else:
        state = "live" if leader["live"] else "expired (holder gone?)"
        lines.append(f"Leader: {leader['holder']} since {leader['since']} ({state})")
    suspended = report["suspended"]
    if suspended is None:
        lines.append("Applying: enabled")
    else:
        lines.append(
            f"Applying: SUSPENDED by {suspended['by']} since {suspended['since']}: "
            f"{suspended['reason']}"
        )
    ledger = report["ledger"]
    accounts = ", ".join(f"{count} {state}" for state, count in sorted(ledger["accounts"].items()))
    verdict = "OK" if ledger["ok"] else f"{len(ledger['problems'])} PROBLEM(S)"
    lines.append(
        f"Ledger: {verdict}"
        f" (accounts: {accounts or 'none'}; total of balances {ledger['total_balance']})"
    )
    lines += [f"  {problem}" for problem in ledger["problems"][:20]]
    if len(ledger["problems"]) > 20:
        lines.append(f"  ... and {len(ledger['problems']) - 20} more (see --format json)")
    pending = report["pending_journal_steps"]
    lines.append(f"Pending journal steps: {len(pending)}")
    lines += [
        f"  {step['domain'] or '?'}: run {step['run_id']} step {step['step']}: "
        f"{step['action']} {step['object_key']}"
        for step in pending[:20]
    ]
    lines.append("")
    lines.append(
        f"{'DOMAIN':<14}{'LAST RUN':<22}{'MODE':<9}{'RESULT':<17}{'DRIFT':<7}{'ORPHANS':<9}PENDING"
    )
    for name, domain in report["domains"].items():
        run = domain["last_run"]
        waiting = len(domain["pending_journal_steps"])
        if run is None:
            lines.append(f"{name:<14}never" + (f" ({waiting} pending step(s))" if waiting else ""))
            lines += _fact_lines(domain)
            continue
        lines.append(
            f"{name:<14}{run['started_at'] or '':<22}{run['mode']:<9}{run['result']:<17}"
            f"{_count(run['drift']):<7}{_count(run['orphans']):<9}{waiting}"
        )
        if run["error"]:
            lines.append(f"{'':<14}error: {run['error']}")
        lines += _fact_lines(domain)
        applied = domain["last_apply"]
        if applied is not None and applied["run_id"] != run["run_id"]:
            lines.append(
                f"{'':<14}last apply {applied['started_at']}: {applied['result']}"
                + (f" ({applied['error']})" if applied["error"] else "")
            )
    return "\n".join(lines) + "\n"


def _fact_lines(domain: dict[str, Any]) -> list[str]:
    return [
        f"{'':<14}{name.replace('_', ' ')}: {value:g}"
        for name, value in domain.get("facts", {}).items()
    ]


def _count(value: object) -> str:
    return "-" if value is None else str(value)


def _open_store(directory: Path) -> Store:
    """The existing store of `directory`'s installation; never creates one."""
    if not directory.is_dir():
        raise CliError(f"no desired-state directory at {directory} (--desired DIR)")
    try:
        return Store.open_existing(load_environment(desired_dir=directory).database_url)
    except StoreNotFoundError as error:
        raise CliError(
            f"{error}: run `reconcile` (apply) or `reconcile serve` first, "
            "or set BILLING_DATABASE_URL"
        ) from error


def run_status(directory: Path, fmt: StatusFormat) -> int:
    store = _open_store(directory)
    try:
        report = collect_status(store, _desired_report(directory))
    finally:
        store.close()
    if fmt is StatusFormat.JSON:
        typer.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        typer.echo(render_status_text(report), nl=False)
    return EXIT_OK if report["ledger"]["ok"] else EXIT_LEDGER_UNSOUND


def register(app: typer.Typer) -> None:
    """Attach `status`, `suspend` and `resume`."""

    @app.command("status")
    def status(
        desired: DesiredDir = Path("desired"),
        fmt: Annotated[
            StatusFormat, typer.Option("--format", help="Output format.")
        ] = StatusFormat.TEXT,
        log_level: LogLevelOption = None,
    ) -> None:
        """Per domain the last run, drift, orphans, pending steps; leader; suspension; ledger
        check (exit 1 on a ledger problem)."""
        run_and_exit(lambda: run_status(desired, fmt), log_level=log_level)

    @app.command("suspend")
    def suspend(
        reason: Annotated[str, typer.Option("--reason", help="Why (shown by status).")],
        desired: DesiredDir = Path("desired"),
        log_level: LogLevelOption = None,
    ) -> None:
        """Pause applying (every replica); plans are still computed and reported."""
        run_and_exit(lambda: run_suspend(desired, reason), log_level=log_level)

    @app.command("resume")
    def resume(desired: DesiredDir = Path("desired"), log_level: LogLevelOption = None) -> None:
        """Lift a suspension: a running serve reconciles every domain at once."""
        run_and_exit(lambda: run_resume(desired), log_level=log_level)


def run_suspend(directory: Path, reason: str) -> int:
    if not reason.strip():
        raise CliError("--reason must say why applying is suspended")
    store = _open_store(directory)
    try:
        with store.session() as session:
            ControllerStateRepository(session).suspend(reason.strip(), default_actor())
    finally:
        store.close()
    typer.echo("Applying is suspended; plans are still computed. `reconcile resume` lifts it.")
    return EXIT_OK


def run_resume(directory: Path) -> int:
    store = _open_store(directory)
    try:
        with store.session() as session:
            lifted = ControllerStateRepository(session).resume()
            if lifted:
                # A running serve hears it through the inbox its leader watches, in the
                # same transaction: it applies within about a second, not at its next refresh.
                store_resumed_notice(session, actor=default_actor())
    finally:
        store.close()
    typer.echo("Applying resumed." if lifted else "Applying was not suspended.")
    return EXIT_OK

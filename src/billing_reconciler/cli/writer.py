"""One writer for every writer (DESIGN §11): a CLI apply takes the lock `serve` leads with.

`reconcile` (apply, `--plan` included) and `reconcile demo` hold the installation's writer
lock (`runtime.leader.leader_lock_for`: the PostgreSQL advisory lock, or the SQLite flock)
from before planning-for-apply until the apply ends, and record a lease like `serve` does,
so `serve`, `status` and another CLI apply can name who writes. A held lock is refused at
once, naming the holder, unless `--wait-lock` allows polling for a while. A suspension
(`reconcile suspend`) refuses an apply unless `--ignore-suspension` is given. A dry run
takes no lock and is never refused by a suspension.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import typer

from billing_reconciler.cli.common import CliError
from billing_reconciler.runtime.leader import (
    Leadership,
    default_holder,
    leader_lock_for,
    lease_name,
)
from billing_reconciler.store import (
    ControllerStateRepository,
    LeaseRepository,
    Store,
    Suspension,
    default_actor,
)

# How often a `--wait-lock` waiter asks again; the lock never queues waiters itself.
POLL_SECONDS = 0.5

StillWriter = Callable[[], bool]


def iso(moment: datetime) -> str:
    if moment.tzinfo is None:  # SQLite hands back naive UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def cli_holder() -> str:
    """How the lease names a CLI apply; ends like serve's (`user@host pid N`)."""
    return f"reconcile apply by {default_holder(default_actor())}"


def _suspension(store: Store) -> Suspension | None:
    with store.session() as session:
        return ControllerStateRepository(session).suspension()


def _describe(suspension: Suspension) -> str:
    return (
        f"applying is suspended by {suspension.actor} since {iso(suspension.since)}: "
        f"{suspension.reason}"
    )


def refuse_if_suspended(store: Store, *, ignore: bool) -> None:
    """A suspension stops every writer; `--ignore-suspension` overrides it, out loud."""
    suspension = _suspension(store)
    if suspension is None:
        return
    if not ignore:
        raise CliError(
            f"{_describe(suspension)}; nothing was applied "
            "(`reconcile resume` lifts it; --ignore-suspension overrides it for this run)"
        )
    typer.echo(f"warning: {_describe(suspension)}; ignoring it (--ignore-suspension)", err=True)


def mention_suspension(store: Store) -> None:
    """For a dry run: plans are still computed while suspended, but say so."""
    suspension = _suspension(store)
    if suspension is not None:
        typer.echo(f"note: {_describe(suspension)} (a dry run plans anyway)", err=True)


def describe_holder(store: Store, installation_id: str) -> str:
    """Who holds the lock, from the lease table (bookkeeping: the lock itself decides)."""
    with store.session() as session:
        lease = LeaseRepository(session).current(lease_name(installation_id))
    if lease is None:
        return "a process that recorded no lease"
    expires = lease.expires_at if lease.expires_at.tzinfo else lease.expires_at.replace(tzinfo=UTC)
    stale = "" if expires > datetime.now(UTC) else f" (its lease expired {iso(expires)})"
    return f"{lease.holder} since {iso(lease.acquired_at)}{stale}"


def _acquire(leadership: Leadership, store: Store, installation_id: str, wait: float) -> None:
    deadline = time.monotonic() + wait
    announced = False
    while not leadership.step():
        holder = describe_holder(store, installation_id)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            waited = f"waited {wait:g} s; " if wait > 0 else ""
            raise CliError(
                f"another writer holds the {leadership.lock.description}: {holder}; "
                f"nothing was applied ({waited}--wait-lock SECONDS waits for it)"
            )
        if not announced:
            typer.echo(f"waiting up to {wait:g} s for the writer lock held by {holder}", err=True)
            announced = True
        time.sleep(min(POLL_SECONDS, remaining))


@contextlib.contextmanager
def writer_lock(
    store: Store, installation_id: str, *, wait_seconds: float
) -> Iterator[StillWriter]:
    """Hold the writer lock for the block; yields a check to call before each write."""
    leadership = Leadership(
        leader_lock_for(store, installation_id),
        store=store,
        installation_id=installation_id,
        holder=cli_holder(),
        once=True,
    )
    try:
        _acquire(leadership, store, installation_id, wait_seconds)
        # The background round renews the lease, so status calls a long apply live.
        leadership.start()
        yield leadership.check
    finally:
        leadership.stop()

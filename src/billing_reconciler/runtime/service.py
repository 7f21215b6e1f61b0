"""`reconcile serve`: one process that serves HTTP and keeps every domain converged.

`Runtime` wires the pieces: the store, the Stripe gateway (its requests counted by
`Metrics`), the domains, the work queue, the refresh schedule, the leader election, the inbox
pump and the FastAPI app, which uvicorn serves on the main thread.

Webhooks reach the queue through the shared inbox, never directly: the receiver (any replica)
stores the event and nudges the pump; the leader's pump claims unprocessed events, routes
each to a reconcile request (`events.route_event`), enqueues it, and marks the event
processed once that reconcile has run. A follower stores events and leaves them for the
leader, so an event delivered to a follower still leads to a write; a leader that dies with
events claimed leaves them to the next leader (claims expire), and the next leader starts
with a whole-domain reconcile of every domain anyway. The inbox also carries the controller's
own notices from other processes (`runtime.control`): after `reconcile resume` the leader's
pump queues a whole-domain reconcile of every domain, so a resume applies within about a
second instead of at the next refresh. A suspension needs no notice: every run reads it
before it applies.

Shutdown (SIGTERM or SIGINT): writing stops at once (`may_write()` turns false, so an apply
stops after the step in flight, which the applier journals in its own transaction), no new
work is taken, the HTTP server drains, the queue's running item ends, the lock and its lease
are released, and the process exits 0, all within the grace period (default 30 s). A
worker still busy after the grace period makes the exit code 1: the journal then shows that
step as `pending`, as after a crash, and the next run replays it under the same key.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import structlog
import uvicorn
from fastapi import FastAPI

from billing_reconciler.api import ApiContext, load_api_tokens
from billing_reconciler.api.pending import DEFAULT_WAIT_SECONDS, ReconcileTicket, RunFailure
from billing_reconciler.config import Secret
from billing_reconciler.controller import Registration
from billing_reconciler.desired.state import DesiredState
from billing_reconciler.registry import DOMAINS
from billing_reconciler.runtime.app import create_app
from billing_reconciler.runtime.control import RESUMED, is_notice
from billing_reconciler.runtime.desired_source import DesiredSource
from billing_reconciler.runtime.domains import INTERRUPTED, Domain, DomainRunner, DomainRunResult
from billing_reconciler.runtime.events import ReconcileRequest, route_event
from billing_reconciler.runtime.health import Readiness, ReconcileHealth
from billing_reconciler.runtime.leader import Leadership, leader_lock_for
from billing_reconciler.runtime.metrics import Metrics
from billing_reconciler.runtime.queue import (
    Debounce,
    FollowUp,
    OnDone,
    Outcome,
    PermanentError,
    UnexpectedError,
    WorkQueue,
    classify,
)
from billing_reconciler.runtime.scheduler import RefreshScheduler, ScheduledDomain
from billing_reconciler.store import InboxRepository, RunMode, Store
from billing_reconciler.stripe_gateway import StripeGateway, StripeGatewayError

_log = structlog.get_logger(__name__)

LEADER_REASON = "leadership acquired"
RESUMED_REASON = "applying resumed"
# `/readyz` calls a domain's failure "retrying" for this many refresh intervals, then
# "failing" (enough for the queue's backoff to retry a few times through a Stripe hiccup);
# either way the replica stays ready (see `health`).
DEFAULT_FAILING_INTERVALS = 3
# ... and this interval for a domain whose schedule is disabled.
FALLBACK_INTERVAL_SECONDS = 300
WEBHOOK_DEBOUNCE = Debounce(quiet=0.25, max_wait=5.0)


@dataclass(frozen=True, slots=True)
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 2
    grace_seconds: float = 30.0
    leader_retry_seconds: float = 2.0
    inbox_poll_seconds: float = 1.0
    failing_intervals: int = DEFAULT_FAILING_INTERVALS
    # uvicorn's share of the grace period for open HTTP connections to finish.
    http_drain_seconds: float = 3.0
    # Webhook-triggered runs wait for a burst to settle (bounded: see `queue.Debounce`).
    webhook_debounce: Debounce = WEBHOOK_DEBOUNCE
    # How long an API write that changes Stripe waits for its targeted reconcile before it
    # answers 202 (DESIGN §19: "up to a few seconds").
    api_wait_seconds: float = DEFAULT_WAIT_SECONDS


@dataclass(frozen=True, slots=True)
class StripeAccess:
    api_key: str
    api_base: str | None
    webhook_secrets: tuple[Secret, ...]


class InboxPump:
    """Moves stored webhook events into the work queue (leader only; see the module doc).

    The inbox also carries the controller's own notices (`runtime.control`): `RESUMED`
    calls `on_resumed` with the notice's id (the runtime queues every domain) and is marked
    processed at once; the queued runs need no inbox row to be retried or taken over.
    """

    def __init__(
        self,
        *,
        store: Store,
        enqueue: Callable[[ReconcileRequest, OnDone], object],
        handles: Callable[[str], bool],
        poll_seconds: float,
        gather_seconds: float = 0.05,
        batch: int = 500,
        on_resumed: Callable[[str], object] | None = None,
    ) -> None:
        self._store = store
        self._on_resumed = on_resumed
        self._gather_seconds = gather_seconds
        self._enqueue = enqueue
        self._handles = handles
        self._poll_seconds = poll_seconds
        self._batch = batch
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._active = False
        self._settled_lock = threading.Lock()
        self._settled: list[tuple[str, Outcome]] = []
        self._thread: threading.Thread | None = None

    def set_active(self, active: bool) -> None:
        self._active = active
        self._wake.set()

    def wake(self) -> None:
        """Look at the inbox now (safe from the event loop: it never blocks)."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="inbox-pump", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._wake.wait(self._poll_seconds):
                # Webhooks come in bursts: gather a few before claiming, rather than paying
                # a claim transaction per event (the queue debounces the runs anyway).
                self._stop.wait(self._gather_seconds)
            self._wake.clear()
            try:
                self.flush()
                if self._active and not self._stop.is_set():
                    self.drain()
            except Exception as error:
                _log.warning("inbox pump round failed", error=type(error).__name__)

    def drain(self) -> int:
        """Claim and enqueue every unprocessed event; returns how many were claimed."""
        claimed_total = 0
        while self._active and not self._stop.is_set():
            with self._store.session() as session:
                events = InboxRepository(session).claim_unprocessed(self._batch)
            if not events:
                break
            claimed_total += len(events)
            ignored: list[str] = []
            for event in events:
                if is_notice(event.type):
                    # Ours, not Stripe's (`runtime.control`): acted upon once queued.
                    if event.type == RESUMED and self._on_resumed is not None:
                        self._on_resumed(event.event_id)
                    ignored.append(event.event_id)
                    continue
                request = route_event(event.payload)
                if request is None or not self._handles(request.domain):
                    if request is not None:
                        _log.info(
                            "event for a domain not built yet: dropped",
                            event_id=event.event_id,
                            domain=request.domain,
                        )
                    ignored.append(event.event_id)
                    continue
                self._enqueue(request, self._settler(event.event_id))
            self._mark(ignored, Outcome.DONE)
        return claimed_total

    def _settler(self, event_id: str) -> OnDone:
        def settle(outcome: Outcome) -> None:
            with self._settled_lock:
                self._settled.append((event_id, outcome))
            self._wake.set()

        return settle

    def flush(self) -> None:
        """Record in the inbox how the reconciles of claimed events ended."""
        with self._settled_lock:
            settled, self._settled = self._settled, []
        for outcome in (Outcome.DONE, Outcome.FAILED, Outcome.DROPPED):
            self._mark([event_id for event_id, o in settled if o is outcome], outcome)

    def _mark(self, event_ids: list[str], outcome: Outcome) -> None:
        if not event_ids:
            return
        with self._store.session() as session:
            inbox = InboxRepository(session)
            for event_id in event_ids:
                if outcome is Outcome.DROPPED:
                    # Released for the next leader (or this one after a restart).
                    inbox.mark_failed(event_id, "not reconciled here: the replica stopped")
                else:
                    inbox.mark_processed(event_id)


def run_outcome(result: DomainRunResult) -> Outcome | FollowUp | None:
    """The queue outcome of a finished run: `NOT_APPLIED` when it planned work and wrote none
    of it (suspended, a follower, stopping) or stopped part way, so whoever waits on it hears
    that Stripe has not seen the change yet; `FollowUp` when it applied and its re-plan found
    new input (run next, at once); else None (done)."""
    unwritten = result.mode is RunMode.DRY_RUN and result.steps > 0
    if unwritten or result.result == INTERRUPTED:
        return Outcome.NOT_APPLIED
    if result.follow_up is not None:
        return FollowUp(result.follow_up)
    return None


def api_request(
    kind: str,
    ids: frozenset[str],
    reason: str,
    *,
    registrations: Mapping[str, Registration],
    put: Callable[..., bool],
    writing: Callable[[], bool],
    stopping: Callable[[], bool],
) -> ReconcileTicket:
    """The API names what it touched by kind and ids (`customer`, org ids): every domain
    whose request keys include `<kind>/<id>` reconciles those keys (DESIGN §14: one
    customer across the fleet domains), without the runtime spelling a domain name.

    The answer is the ticket the API waits on: finished when every queued request's run
    has (the queue's `on_done`, also for a request coalesced into another), told of each
    failed attempt (`on_error`). A replica that does not write (a follower, or one shutting
    down) still queues the runs (they plan, as every follower run does) but defers the ticket
    at once: its writes reach Stripe through the leader's next refresh of those domains.
    """
    ticket = ReconcileTicket()
    keys = frozenset(f"{kind}/{identity}" for identity in ids)
    if not writing():
        ticket.defer("stopping" if stopping() else "not_leader")
    names = [
        name
        for name, registration in registrations.items()
        if keys and all(registration.domain.scope_of(key) == key for key in keys)
    ]
    if ticket.sealed:
        for name in names:
            put(ReconcileRequest(name, keys, reason))
    else:
        slots = [ticket.expect() for _ in names]
        _queue_in_order(names, slots, keys, reason, put)
    ticket.seal()
    ticket.seal()
    _log.info(
        "reconcile requested by the api",
        request_id=ticket.request_id,
        keys=sorted(keys),
        reason=reason,
    )
    return ticket


def _queue_in_order(
    names: list[str],
    slots: list[tuple[Callable[[str], None], Callable[[RunFailure], None]]],
    keys: frozenset[str],
    reason: str,
    put: Callable[..., bool],
) -> None:
    """Queue the first domain's run; each one's end queues the next, in apply order.

    A later domain reads what an earlier one wrote (the subscriptions domain subscribes the
    customer the customers domain has just created), so the runs of one request follow each
    other as a one-shot `reconcile` runs the domains; run side by side, the later one would
    plan before the customer exists and leave the subscription to the next refresh.
    """
    if not names:
        return
    (on_done, on_failure), rest = slots[0], slots[1:]

    def then_next(outcome: str) -> None:
        on_done(outcome)
        _queue_in_order(names[1:], rest, keys, reason, put)

    put(ReconcileRequest(names[0], keys, reason), on_done=then_next, on_error=_telling(on_failure))


def _telling(on_failure: Callable[[RunFailure], None]) -> Callable[[BaseException], None]:
    def on_error(error: BaseException) -> None:
        on_failure(run_failure(error))

    return on_error


def run_failure(error: BaseException) -> RunFailure:
    """What a waiting API caller may be told about a failed attempt: Stripe's message and
    fields, our own refusals' messages, and only the class of anything else (its text may
    quote a connection URL)."""
    policy = classify(error)
    retrying = not isinstance(policy, PermanentError)
    stripe = _stripe_error(error)
    if stripe is not None:
        return RunFailure(
            str(stripe),
            retrying,
            stripe_code=stripe.code,
            stripe_param=stripe.param,
            http_status=stripe.http_status,
        )
    if isinstance(policy, UnexpectedError):
        return RunFailure(f"unexpected {type(error).__name__}", retrying)
    return RunFailure(str(policy)[:500], retrying)


def _stripe_error(error: BaseException) -> StripeGatewayError | None:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StripeGatewayError):
            return current
        current = current.__cause__ or current.__context__
    return None


class Runtime:
    """Build with what `serve` resolved, then `serve()` (blocks; returns the exit code)."""

    def __init__(
        self,
        *,
        directory: Path,
        state: DesiredState,
        stripe: StripeAccess,
        database_url: str,
        actor: str,
        settings: ServeSettings = ServeSettings(),
        git_revision: Callable[[], str | None] = lambda: None,
        clock: Callable[[], float] = time.time,
        registrations: Sequence[Registration] = DOMAINS,
    ) -> None:
        self._registrations = tuple(registrations)
        self._by_name = {registration.name: registration for registration in self._registrations}
        self._directory = directory
        self._initial_state = state
        self._stripe = stripe
        self._database_url = database_url
        self._actor = actor
        self.settings = settings
        self._git_revision = git_revision
        self._clock = clock
        self._stopping = False
        self._stop_requested_at: float | None = None
        self._started = False
        self._health = ReconcileHealth(clock)

    # --- building -------------------------------------------------------------------------

    def start(self) -> None:
        """Open the store and start every background part (not the HTTP server)."""
        state = self._initial_state
        self.store = Store.open(self._database_url)
        self.metrics = Metrics(clock=self._clock)
        for registration in self._registrations:
            if registration.facts is not None:  # read at each scrape, not after a pass
                self.metrics.watch_facts(functools.partial(registration.facts, self.store))
        gateway = StripeGateway(
            api_key=self._stripe.api_key,
            api_base=self._stripe.api_base,
            rate_limit_per_second=state.config.reconcile.rate_limit_per_second,
            on_request=self.metrics.observe_stripe_request,
        )
        self.gateway = gateway
        self.desired = DesiredSource(directory=self._directory, initial=state, clock=self._clock)
        self.domains: dict[str, Domain] = {
            registration.name: DomainRunner(
                registration=registration,
                source=self.desired,
                store=self.store,
                gateway=gateway,
                actor=self._actor,
                git_revision=self._git_revision,
                clock=self._clock,
            )
            for registration in self._registrations
        }
        self.queue = WorkQueue(
            self._handle, workers=self.settings.workers, on_depth=self.metrics.set_queue_depth
        )
        self.inbox = InboxPump(
            store=self.store,
            enqueue=lambda request, on_done: self.queue.put(
                request, on_done=on_done, debounce=self.settings.webhook_debounce
            ),
            handles=self.domains.__contains__,
            poll_seconds=self.settings.inbox_poll_seconds,
            on_resumed=self._on_resumed,
        )
        self.leadership = Leadership(
            leader_lock_for(self.store, self.desired.installation_id),
            store=self.store,
            installation_id=self.desired.installation_id,
            holder=self._actor,
            retry_seconds=self.settings.leader_retry_seconds,
            on_change=self._on_leadership,
        )
        self.scheduler = RefreshScheduler(
            [ScheduledDomain(d.name, d.refresh_seconds) for d in self.domains.values()],
            enqueue=self.queue.put,
        )
        self.metrics.set_leader(False)
        self.queue.start()
        # One election round before the first runs, so a replica that can lead writes at once.
        self.leadership.step()
        self.leadership.start()
        self.inbox.start()
        self.scheduler.start()
        self._started = True
        _log.info(
            "controller started",
            installation=self.desired.installation_id,
            lock=self.leadership.lock.description,
            leader=self.leadership.is_leader,
            domains={d.name: d.refresh_seconds for d in self.domains.values()},
        )

    def app(self) -> FastAPI:
        return create_app(
            store=self.store,
            webhook_secrets=self._stripe.webhook_secrets,
            enqueue=self._on_webhook,
            readiness=self.readiness,
            metrics=self.metrics,
            api=self._api_context(),
        )

    def _api_context(self) -> ApiContext:
        # Host API calls record facts, then queue the targeted reconcile of that customer.
        return ApiContext(
            store=self.store,
            tokens=load_api_tokens(),
            config=lambda: self.desired.current.config,
            installation_id=lambda: self.desired.installation_id,
            live_mode=self._stripe.api_key.startswith(("sk_live_", "rk_live_")),
            request_reconcile=self._api_request,
            reconcile_wait_seconds=self.settings.api_wait_seconds,
            gateway=self.gateway,
            declared_plan=lambda org: next(
                (c.plan for c in self.desired.current.customers if c.org_id == org), None
            ),
        )

    def _api_request(self, kind: str, ids: frozenset[str], reason: str) -> ReconcileTicket:
        return api_request(
            kind,
            ids,
            reason,
            registrations=self._by_name,
            put=self.queue.put,
            writing=lambda: self.leadership.is_leader and not self._stopping,
            stopping=lambda: self._stopping,
        )

    # --- behaviour ------------------------------------------------------------------------

    def may_write(self) -> bool:
        """Asked before applying and after every step: leader, and not shutting down."""
        return not self._stopping and self.leadership.check()

    def _on_webhook(self, request: ReconcileRequest) -> None:
        # Runs on the server's event loop: only a nudge. The pump re-routes the stored event.
        del request
        self.inbox.wake()

    def _on_leadership(self, leader: bool) -> None:
        self.metrics.set_leader(leader)
        self.inbox.set_active(leader)
        if leader and self._started and not self._stopping:
            # Whatever the previous leader left half done, or events it never got to.
            for name in self.domains:
                self.queue.put(ReconcileRequest(name, None, LEADER_REASON))

    def _on_resumed(self, notice_id: str) -> None:
        # `reconcile resume` in another process: apply now what the runs while suspended
        # planned, rather than at each domain's next refresh.
        _log.info("applying resumed: reconciling every domain", notice_id=notice_id)
        for name in self.domains:
            self.queue.put(ReconcileRequest(name, None, f"{RESUMED_REASON} ({notice_id})"))

    def _handle(self, request: ReconcileRequest) -> Outcome | FollowUp | None:
        domain = self.domains.get(request.domain)
        if domain is None:
            _log.info("no such domain yet: request dropped", domain=request.domain)
            return None
        started = time.monotonic()
        try:
            result = domain.reconcile(request, may_write=self.may_write)
        except Exception as error:
            self.metrics.reconcile_finished(domain.name, "failed", time.monotonic() - started)
            self._health.failed(domain.name, request.scope, str(error))
            raise
        self._note_result(domain.name, request.scope, result, time.monotonic() - started)
        return run_outcome(result)

    def _note_result(
        self, name: str, scope: frozenset[str] | None, result: DomainRunResult, seconds: float
    ) -> None:
        self.metrics.reconcile_finished(name, result.result, seconds)
        if result.whole_domain:
            self.metrics.set_drift(name, result.drift)
        if result.result != INTERRUPTED:
            self._health.succeeded(name, scope)

    def readiness(self) -> Readiness:
        """Ready: store reachable and desired/ valid. Each domain's reconcile is reported
        (`ok`, `retrying ...`, `failing ...`) but never makes the replica unready."""
        checks = {"store": "ok" if self.store.ping() else "unreachable"}
        status = self.desired.status
        checks["desired"] = (
            "ok"
            if status.valid
            else f"invalid ({len(status.errors)} error(s); enforcing the last valid revision "
            f"{status.enforced_revision}): {status.errors[0] if status.errors else ''}"
        )
        ready = all(verdict == "ok" for verdict in checks.values())
        for name, domain in self.domains.items():
            interval = domain.refresh_seconds or FALLBACK_INTERVAL_SECONDS
            checks[f"reconcile:{name}"] = self._health.verdict(
                name, grace_seconds=self.settings.failing_intervals * interval
            )
        return Readiness(ready=ready, checks=checks)

    # --- running --------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop writing now (signal-safe: only sets flags); `stop()` does the rest."""
        if not self._stopping:
            self._stopping = True
            self._stop_requested_at = time.monotonic()

    def stop(self) -> bool:
        """Stop every part within the grace period; True when nothing was cut off."""
        self.request_stop()
        _log.info("shutting down", grace_seconds=self.settings.grace_seconds)
        assert self._stop_requested_at is not None
        deadline = self._stop_requested_at + self.settings.grace_seconds
        self.scheduler.stop()
        self.inbox.stop()
        clean = self.queue.stop(timeout=max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(Exception):
            self.inbox.flush()
        self.leadership.stop()
        self.store.close()
        if clean:
            _log.info("stopped cleanly")
        else:
            _log.error("grace period exceeded: a reconcile was still running")
        return clean

    def serve(self, sock: socket.socket | None = None) -> int:
        """Start, serve until SIGTERM/SIGINT, stop; the exit code.

        `sock` is the listening socket (default: bound here to the settings' host and port).
        """
        sock = sock or bind(self.settings.host, self.settings.port)
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            self.start()
            config = uvicorn.Config(
                self.app(),
                log_config=None,
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=int(
                    min(self.settings.http_drain_seconds, self.settings.grace_seconds)
                ),
            )
            server = _Server(config, on_exit=self.request_stop)
            host, port = sock.getsockname()[:2]
            if not self._stopping:  # a signal may have come while starting
                _log.info("serving", url=f"http://{host}:{port}", leader=self.leadership.is_leader)
                server.run(sockets=[sock])
            return 0 if self.stop() else 1
        finally:
            sock.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # uvicorn restores this handler after it drains and re-raises the signal it caught.
        del frame
        self.request_stop()


class _Server(uvicorn.Server):
    """uvicorn that tells the runtime to stop writing the moment a signal arrives, rather than
    after the HTTP side has drained."""

    def __init__(self, config: uvicorn.Config, *, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """The listening socket, bound before anything starts so a busy port fails fast.
    `reuse_port` (SO_REUSEPORT, Linux and BSD): several processes, each with its own socket,
    listen on one port and the kernel spreads the connections over them (replicas of
    `serve` on one host, one per core)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio turns Nagle off only on sockets created that way, and
    # TCP_NODELAY on the listener is inherited by accepted connections. Without it every
    # webhook answer waits ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(512)
    sock.setblocking(False)
    return sock

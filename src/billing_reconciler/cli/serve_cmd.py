"""`reconcile serve`: the long-running controller (HTTP, schedule, webhooks, leader lock).

Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 1 for an error (invalid desired/ at
start, missing key, busy port, database unreachable) or a shutdown that overran its grace
period. `desired/` must be valid at start: there is no last valid state to fall back on yet.
After that, an invalid desired/ is reported and the last valid state stays enforced.

With `--emulator`, serve talks to the embedded Stripe emulator and registers a webhook
endpoint there pointing at itself, so edits made through the emulator's API come back as
signed webhooks, as they would from Stripe.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import httpx
import structlog
import typer
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from billing_reconciler.cli.common import LogLevelOption
from billing_reconciler.cli.reconcile_cmd import (
    EMULATOR_KEY,
    CliError,
    emulator_state_file,
    git_revision,
    load_valid_desired,
    run_and_exit,
)
from billing_reconciler.config import Secret, key_mode, load_environment
from billing_reconciler.runtime.service import Runtime, ServeSettings, StripeAccess, bind
from billing_reconciler.runtime.webhooks import WEBHOOK_PATH
from billing_reconciler.store import default_actor

log = structlog.get_logger("billing_reconciler.cli")


@dataclass(frozen=True, slots=True)
class ServeRequest:
    directory: Path
    host: str
    port: int
    use_emulator: bool
    confirm_live: bool
    workers: int
    grace_seconds: float
    reuse_port: bool = False


def run_serve(request: ServeRequest) -> int:
    if request.reuse_port and request.use_emulator:
        # Tester T3-7: each process would start its own embedded emulator (its own Stripe
        # account and webhook secret), so replicas would not share one Stripe.
        raise CliError(
            "--reuse-port cannot be combined with --emulator: each serve would run its own "
            "embedded emulator; run one `reconcile emulator --port N` and point every serve at "
            "it with STRIPE_API_BASE=http://127.0.0.1:N (and a STRIPE_API_KEY of sk_test_...)"
        )
    state = load_valid_desired(request.directory)
    env = load_environment(desired_dir=request.directory)
    try:
        sock = bind(request.host, request.port, reuse_port=request.reuse_port)
    except OSError as error:
        raise CliError(f"cannot listen on {request.host}:{request.port}: {error}") from error
    with contextlib.ExitStack() as stack:
        stack.callback(sock.close)
        if request.use_emulator:
            access = stack.enter_context(_emulator_access(request.directory, sock))
        else:
            if env.stripe_api_key is None:
                raise CliError(
                    "STRIPE_API_KEY (or STRIPE_API_KEY_FILE) is not set; "
                    "use --emulator to run against the embedded Stripe emulator"
                )
            access = StripeAccess(env.stripe_api_key.reveal(), env.api_base, env.webhook_secrets)
        if key_mode(access.api_key) == "live" and not request.confirm_live:
            raise CliError(
                "refusing to serve (and apply) with a live Stripe key without --confirm-live"
            )
        runtime = Runtime(
            directory=request.directory,
            state=state,
            stripe=access,
            database_url=env.database_url,
            actor=f"{default_actor()} pid {os.getpid()}",
            settings=ServeSettings(
                host=request.host,
                port=request.port,
                workers=request.workers,
                grace_seconds=request.grace_seconds,
            ),
            git_revision=lambda: git_revision(request.directory),
        )
        try:
            return runtime.serve(sock)
        except SQLAlchemyError as error:
            cause = error.orig if isinstance(error, DBAPIError) else error
            first_line = next(iter(str(cause).strip().splitlines()), "")
            raise CliError(
                f"the store at {env.database_url_redacted} failed: "
                f"{type(cause).__name__}: {first_line}"
            ) from error


@contextlib.contextmanager
def _emulator_access(directory: Path, sock: socket.socket) -> Iterator[StripeAccess]:
    from stripe_emulator.server import EmbeddedEmulator

    host, port = sock.getsockname()[:2]
    with EmbeddedEmulator(state_file=emulator_state_file(directory)) as emulator:
        secret = _register_webhook_endpoint(emulator.url, f"http://{host}:{port}{WEBHOOK_PATH}")
        typer.echo(f"Stripe emulator at {emulator.url} (webhooks to this server)", err=True)
        yield StripeAccess(EMULATOR_KEY, emulator.url, (Secret(secret),))


def _register_webhook_endpoint(api_base: str, url: str) -> str:
    """A fresh endpoint for `url` (older ones for it removed); its signing secret."""
    auth = {"Authorization": f"Bearer {EMULATOR_KEY}"}
    with httpx.Client(base_url=api_base, headers=auth, timeout=10) as client:
        listed = client.get("/v1/webhook_endpoints", params={"limit": 100}).json()
        for endpoint in listed.get("data", []):
            if endpoint.get("url") == url:
                client.delete(f"/v1/webhook_endpoints/{endpoint['id']}")
        created = client.post("/v1/webhook_endpoints", data={"url": url, "enabled_events[0]": "*"})
        created.raise_for_status()
        secret: str = created.json()["secret"]
    return secret


def register(app: typer.Typer) -> None:
    """Attach `reconcile serve`."""

    @app.command("serve")
    def serve(
        desired: Annotated[
            Path, typer.Option("--desired", help="The desired-state directory.")
        ] = Path("desired"),
        host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
        emulator: Annotated[
            bool, typer.Option("--emulator", help="Use the embedded Stripe emulator.")
        ] = False,
        confirm_live: Annotated[
            bool, typer.Option("--confirm-live", help="Allow applying with a live key.")
        ] = False,
        workers: Annotated[
            int, typer.Option("--workers", min=1, help="Reconciles that may run at once.")
        ] = 2,
        grace_seconds: Annotated[
            float,
            typer.Option("--grace-seconds", min=1, help="Shutdown grace period (SIGTERM)."),
        ] = 30.0,
        reuse_port: Annotated[
            bool,
            typer.Option(
                "--reuse-port",
                help="Share the port with other serve processes on this host (SO_REUSEPORT).",
            ),
        ] = False,
        log_level: LogLevelOption = None,
    ) -> None:
        """Serve webhooks, probes and metrics, and keep Stripe converged (leader only)."""
        request = ServeRequest(
            directory=desired,
            host=host,
            port=port,
            use_emulator=emulator,
            confirm_live=confirm_live,
            workers=workers,
            grace_seconds=grace_seconds,
            reuse_port=reuse_port,
        )
        run_and_exit(lambda: run_serve(request), log_level=log_level)

"""Running the emulator: `EmbeddedEmulator` (in-process, free port) and `serve` (foreground).

uvicorn runs in a background thread on a socket we bind ourselves, so port 0 works and `.url`
is known before the first request.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from types import TracebackType

import uvicorn

from stripe_emulator.app import EmulatorApp
from stripe_emulator.control import EmulatorControl
from stripe_emulator.core import Emulator

_START_TIMEOUT_SECONDS = 5.0


class _QuietDrops(logging.Filter):
    """A `drop_after_commit` fault aborts the connection on purpose; don't log it as a bug."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing response" not in record.getMessage()


def _config(app: EmulatorApp, *, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        # Keep-alive as the SDK's requests session expects; one loop, no reload.
        timeout_keep_alive=30,
    )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Headers and body go out in two writes; without NODELAY, Nagle + delayed ACK add 40 ms.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


class EmbeddedEmulator:
    """The emulator on a loopback port in a background thread; a context manager."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, state_file: Path | None = None
    ) -> None:
        self.emulator = Emulator(state_file=state_file)
        self.app = EmulatorApp(self.emulator)
        self._socket = _bind(host, port)
        bound_port = self._socket.getsockname()[1]
        self.url = f"http://{host}:{bound_port}"
        self._server = uvicorn.Server(_config(self.app, log_level="warning"))
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name="stripe-emulator",
            daemon=True,
        )
        logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
        self._thread.start()
        self._wait_started()
        self.control = EmulatorControl(self.url)

    def _wait_started(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the Stripe emulator did not start")
            time.sleep(0.005)

    def stop(self) -> None:
        """Stop serving, stop webhook delivery, save state; idempotent."""
        if not self._thread.is_alive():
            return
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self.control.close()
        self.emulator.close()
        self._socket.close()

    def __enter__(self) -> EmbeddedEmulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def serve(*, host: str = "127.0.0.1", port: int = 12111, state_file: Path | None = None) -> None:
    """Run in the foreground until interrupted (Ctrl-C), then save the state."""
    emulator = Emulator(state_file=state_file)
    logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
    # Build the app (the router resolves every endpoint's SDK parameter types: seconds on a
    # loaded machine) before announcing the address, so "listening on" means ready.
    server = uvicorn.Server(_config(EmulatorApp(emulator), log_level="info"))
    sock = _bind(host, port)
    print(f"Stripe emulator listening on http://{host}:{sock.getsockname()[1]}", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        emulator.close()
        sock.close()

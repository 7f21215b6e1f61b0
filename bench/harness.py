"""What the fleet benchmarks (`accounts.py`, `subscriptions.py`) share: the emulator in its own
process, the emulator's request counts, peak memory, cProfile lines, the machine's description,
and the events-cursor refresh measurement (not a benchmark itself).

The emulator runs in a child process (`EmulatorProcess`), so the reconciler's CPU time, peak
memory and GIL are measured alone. A benchmark seeds it through one in-process `handler`
(called in the child as `handler(server, *args)` for each `EmulatorProcess.call(*args)`), so
100,000 objects go straight into the emulator's state instead of over HTTP.
"""

from __future__ import annotations

import cProfile
import io
import multiprocessing
import os
import platform
import pstats
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

from billing_reconciler.controller import Controller, Planned
from billing_reconciler.planning.plan import Plan
from stripe_emulator.control import EmulatorControl

#: Seeds the emulator in its process: `handler(server, *args)`; its answer is sent back.
Handler = Callable[..., Any]


def _serve(conn: Connection, handler: Handler) -> None:
    """The emulator's process: serves HTTP, and runs `handler` in-process on request."""
    from stripe_emulator.server import EmbeddedEmulator

    with EmbeddedEmulator() as server:
        conn.send(server.url)
        while True:
            command = conn.recv()
            if command[0] == "stop":
                return
            started = time.perf_counter()
            answer = handler(server, *command[1:])
            conn.send((answer, time.perf_counter() - started))


class EmulatorProcess:
    """The emulator in a spawned child process; `handler` must be a module-level function."""

    def __init__(self, handler: Handler) -> None:
        self._parent, child = multiprocessing.Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(child, handler)
        )
        self._process.start()
        self.url: str = self._parent.recv()
        self.control = EmulatorControl(self.url, timeout=300)

    def call(self, *args: Any) -> tuple[Any, float]:
        """`handler(server, *args)` in the emulator's process: its answer and seconds."""
        self._parent.send(("call", *args))
        answer, seconds = self._parent.recv()
        return answer, float(seconds)

    def cpu_seconds(self) -> float:
        """The emulator process's CPU time so far (user + system, from /proc)."""
        fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.control.close()
        self._parent.send(("stop",))
        self._process.join(timeout=30)


@contextmanager
def emulator_process(handler: Handler) -> Iterator[EmulatorProcess]:
    process = EmulatorProcess(handler)
    try:
        yield process
    finally:
        process.stop()


class Requests:
    """Requests the emulator served since `start()`, from its counters; `template` names a
    path's endpoint (`/v1/customers/{id}`), by default the path itself."""

    def __init__(
        self, control: EmulatorControl, template: Callable[[str], str] | None = None
    ) -> None:
        self.control = control
        self._template = template or (lambda path: path)

    def start(self) -> None:
        self.control.clear_requests()

    def counts(self) -> dict[str, Any]:
        counters = self.control.counters()
        endpoints: Counter[str] = Counter()
        for endpoint, count in counters["by_endpoint"].items():
            method, _, path = endpoint.partition(" ")
            if path.startswith("/v1/"):
                endpoints[f"{method} {self._template(path)}"] += count
        by_status = counters["by_status"]
        return {
            "total": sum(endpoints.values()),
            "by_endpoint": dict(endpoints),
            "by_status": by_status,
            "failed": sum(n for s, n in by_status.items() if int(s) >= 400 and s != "429"),
            "rate_limited": by_status.get("429", 0),
        }


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def profile(
    call: Callable[[], object],
    top: int = 25,
    sort: Literal["cumulative", "tottime"] = "cumulative",
) -> list[str]:
    """cProfile's `top` lines of `call`, by `sort`."""
    profiler = cProfile.Profile()
    profiler.runcall(call)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats(sort).print_stats(top)
    lines = [line.rstrip() for line in out.getvalue().splitlines() if line.strip()]
    return lines[-top:]


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_start": load_average(),
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def record_cursor_and_refresh(
    controller: Controller,
    bookkeeping: Plan,
    desired_fields: Mapping[str, Mapping[str, Any]],
    requests: Requests,
    *,
    restores_allowed: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Apply `bookkeeping` (a plan whose only restore records the events cursor; its apply's
    convergence re-plan is already an incremental one), then plan an events-cursor refresh
    with no changes: what the apply did, and the refresh's calls (target: at most 2), steps,
    wall and CPU (observe and plan)."""
    requests.start()
    started = time.perf_counter()
    planned = Planned(plan=bookkeeping, desired_fields=desired_fields)
    _, outcomes, residual = controller.apply(planned)
    recorded = {
        "restores": [r.kind for r in bookkeeping.restores],
        "outcomes": len(outcomes),
        "wall_s_incl_convergence_replan": round(time.perf_counter() - started, 2),
        "convergence_replan_calls": requests.counts(),
        "converged": residual.converged,
    }
    requests.start()
    started, cpu_started = time.perf_counter(), time.process_time()
    refresh = controller.plan().plan
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    calls = requests.counts()
    refreshed = {
        "wall_s": round(wall, 2),
        "cpu_s_observe_and_plan": round(cpu, 2),
        "calls": calls,
        "steps": len(refresh.steps),
        "restores": len(refresh.restores),
        "limit": 2,
        "pass": calls["total"] <= 2
        and not refresh.steps
        and (restores_allowed or not refresh.restores),
    }
    print(f"# refresh: {calls['total']} calls, {wall:.2f} s", file=sys.stderr)
    return recorded, refreshed

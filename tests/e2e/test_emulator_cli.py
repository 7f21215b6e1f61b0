"""`reconcile emulator` keeps no state unless told, never shares `--emulator`'s state file,
and the example that README.md and docs/emulator.md both give works as written."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from billing_reconciler.cli.reconcile_cmd import emulator_state_file
from tests.e2e.cli import REPO, reconcile
from tests.e2e.test_serve import free_port

EXAMPLE_START = "reconcile emulator --port 12111"


def sh_blocks(markdown: Path) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", markdown.read_text(encoding="utf-8"), re.DOTALL)


def the_example(markdown: Path) -> list[str]:
    """The two-line example: start the emulator, then plan against it."""
    (block,) = [b for b in sh_blocks(markdown) if EXAMPLE_START in b]
    lines = [line for line in block.splitlines() if line.strip()]
    start = next(n for n, line in enumerate(lines) if line.startswith(EXAMPLE_START))
    return lines[start : start + 2]


def start_emulator(args: list[str], cwd: Path) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    argv = [a.replace("12111", str(port)) for a in args]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "BILLING_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "billing_reconciler", *argv],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert "listening on" in line, line
    return process, port


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)


def test_readme_and_docs_give_the_same_example() -> None:
    readme = the_example(REPO / "README.md")
    docs = the_example(REPO / "docs" / "emulator.md")
    assert readme == docs


def test_the_example_works_and_keeps_a_state_file_of_its_own(workdir: Path) -> None:
    start, plan = the_example(REPO / "README.md")
    start_args = shlex.split(start, comments=True)[1:]
    state = Path(start_args[start_args.index("--state") + 1])
    # Never the embedded emulator's file of `reconcile --emulator` run from the same place.
    assert (workdir / state).resolve() != emulator_state_file(workdir / "desired")

    process, port = start_emulator(start_args, workdir)
    try:
        words = shlex.split(plan.replace("12111", str(port)))
        env = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
        command = [w for w in words if w not in {f"{k}={v}" for k, v in env.items()}]
        assert command[0] == "reconcile"
        planned = reconcile(*command[1:], cwd=workdir, env=env)
        assert planned.returncode == 2, planned.stderr
        assert "to create" in planned.stdout
    finally:
        stop(process)
    assert (workdir / state).is_file(), "the emulator saved its state on exit"
    assert not emulator_state_file(workdir / "desired").exists()


def test_without_state_the_emulator_writes_no_file(tmp_path: Path) -> None:
    process, _ = start_emulator(["emulator", "--port", "12111"], tmp_path)
    time.sleep(0.2)
    stop(process)
    assert process.returncode == 0
    assert list(tmp_path.rglob("*")) == []


def test_a_restart_from_the_state_file_keeps_every_index_and_clock_walk(tmp_path: Path) -> None:
    """A fresh process restores the state before the resource modules declare their indexes:
    lists filtered by an indexed field, and a schedule waiting on a test clock, still work."""
    from tests.fixtures.emulator import make_client

    day = 86400
    args = ["emulator", "--port", "12111", "--state", str(tmp_path / "state.json")]
    process, port = start_emulator(args, tmp_path)
    try:
        client = make_client(f"http://127.0.0.1:{port}")
        t0 = 1_900_000_000 - 1_900_000_000 % day
        clock = client.v1.test_helpers.test_clocks.create({"frozen_time": t0})
        customer = client.v1.customers.create({"test_clock": clock.id})
        card = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
        client.v1.customers.update(
            customer.id, {"invoice_settings": {"default_payment_method": card.id}}
        )
        product = client.v1.products.create({"name": "Kept"})
        monthly = {"product": product.id, "currency": "usd", "recurring": {"interval": "month"}}
        price = client.v1.prices.create({**monthly, "unit_amount": 1000})
        other = client.v1.prices.create({**monthly, "unit_amount": 3000})
        subscription = client.v1.subscriptions.create(
            {"customer": customer.id, "items": [{"price": price.id}]}
        )
        month = {"interval": "month", "interval_count": 1}
        phases: list[dict[str, object]] = [{"items": [{"price": other.id}], "duration": month}]
        waiting = client.v1.subscription_schedules.create(
            {"customer": customer.id, "start_date": t0 + 5 * day, "phases": phases}  # type: ignore[typeddict-item]
        )
        session = client.v1.checkout.sessions.create(
            {
                "mode": "subscription",
                "customer": customer.id,
                "line_items": [{"price": price.id, "quantity": 1}],
                "success_url": "https://example.test/ok",
            }
        )
    finally:
        stop(process)

    process, port = start_emulator(args, tmp_path)
    try:
        client = make_client(f"http://127.0.0.1:{port}")
        by_customer = {"customer": customer.id}
        assert [s.id for s in client.v1.subscriptions.list(by_customer).data] == [subscription.id]
        assert len(client.v1.invoices.list(by_customer).data) == 1
        assert [s.id for s in client.v1.checkout.sessions.list(by_customer).data] == [session.id]
        listed = client.v1.subscription_schedules.list(by_customer).data
        assert [s.id for s in listed] == [waiting.id]
        scheduled = client.v1.subscription_schedules.list({"scheduled": True}).data
        assert [s.id for s in scheduled] == [waiting.id]
        later = client.v1.subscription_schedules.create(
            {"customer": customer.id, "start_date": t0 + 7 * day, "phases": phases}  # type: ignore[typeddict-item]
        )
        client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": t0 + 8 * day})
        for schedule_id in (waiting.id, later.id):
            started = client.v1.subscription_schedules.retrieve(schedule_id)
            assert started.status == "active", schedule_id
        subscriptions = client.v1.subscriptions.list(by_customer).data
        assert len(subscriptions) == 3
        with_schedule = [s for s in subscriptions if s.schedule]
        assert {s.status for s in with_schedule} == {"active"}
    finally:
        stop(process)


def test_an_acknowledged_write_survives_kill_9(tmp_path: Path) -> None:
    """With `--state`, a write is answered only once it is on disk: no shutdown save needed."""
    from tests.fixtures.emulator import make_client

    args = ["emulator", "--port", "12111", "--state", str(tmp_path / "state.json")]
    process, port = start_emulator(args, tmp_path)
    try:
        client = make_client(f"http://127.0.0.1:{port}")
        products = [client.v1.products.create({"name": f"Kept {n}"}).id for n in range(3)]
    finally:
        process.kill()
        process.communicate(timeout=60)
    process, port = start_emulator(args, tmp_path)
    try:
        client = make_client(f"http://127.0.0.1:{port}")
        for product in products:
            assert client.v1.products.retrieve(product).active
    finally:
        stop(process)


def test_a_corrupt_state_file_is_one_line_naming_it(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text('{"next_seq": 3, "collections": {"product": [[1, {"id": "prod_', "utf-8")
    command = ["emulator", "--port", "0", "--state", str(state)]
    started = subprocess.run(
        [sys.executable, "-m", "billing_reconciler", *command],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert started.returncode == 1
    lines = started.stderr.strip().splitlines()
    assert len(lines) == 1, started.stderr
    assert "not a valid emulator state file" in lines[0]
    assert str(state) in lines[0]
    assert "Traceback" not in started.stdout + started.stderr

"""The customers domain in `reconcile serve`: the host API and Stripe's webhooks each make
`serve` reconcile one customer at once (real process, real HTTP, real PostgreSQL, the
emulator delivering signed webhooks). The customer refresh interval is set to an hour, so
what happens within these seconds happened because of the API call or the webhook."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from billing_reconciler.store import AccountRepository, JournalState, RunMode, Store
from tests.e2e.test_serve import (  # noqa: F401
    START_TIMEOUT,
    Serve,
    applied_run,
    eventually,
    free_port,
    journal,
    launch,
    lease_pid,
    marker,
    quiet,
    runs,
    sdk,
    workdir,
)
from tests.fixtures.emulator import TEST_API_KEY, EmulatorHandle

pytestmark = pytest.mark.timeout(120)
TOKEN = "app-token-for-tests"


@pytest.fixture
def serve(
    workdir: Path,  # noqa: F811
    emulator: EmulatorHandle,
    postgres_database_url: str,
) -> Iterator[str]:
    billing = workdir / "desired" / "billing.yaml"
    billing.write_text(billing.read_text().replace("customer: 1m", "customer: 1h"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    endpoint = sdk(emulator).v1.webhook_endpoints.create(
        {"url": f"{url}/v1beta1/webhooks/stripe", "enabled_events": ["*"]}
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "BILLING_"))}
    env.update(
        STRIPE_API_KEY=TEST_API_KEY,
        STRIPE_API_BASE=emulator.url,
        BILLING_WEBHOOK_SECRETS=str(endpoint.secret),
        BILLING_DATABASE_URL=postgres_database_url,
        BILLING_API_TOKENS=TOKEN,
    )
    log = (workdir / "serve.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "billing_reconciler",
            "serve",
            "--desired",
            str(workdir / "desired"),
            "--port",
            str(port),
        ],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def healthy() -> bool:
        assert process.poll() is None, (workdir / "serve.log").read_text()[-4000:]
        try:
            return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        eventually(healthy, timeout=START_TIMEOUT, what="serve to answer /healthz")
        yield url
    finally:
        process.kill()
        process.wait(timeout=10)
        log.close()


def _customer_of(emulator: EmulatorHandle, org_id: str) -> object | None:
    for customer in sdk(emulator).v1.customers.list({"limit": 100}).auto_paging_iter():
        metadata = customer.metadata.to_dict() if customer.metadata else {}
        if metadata.get("org_id") == org_id:
            return customer
    return None


@pytest.mark.postgres
def test_an_org_put_through_the_api_is_a_stripe_customer_within_a_second_and_edits_flow_back(
    serve: str, emulator: EmulatorHandle, postgres_database_url: str
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    waiting = Store.open(postgres_database_url)
    try:
        eventually(lambda: applied_run(waiting), timeout=START_TIMEOUT, what="the first apply")
        eventually(lambda: quiet(waiting, seconds=0.5), timeout=15, what="the start runs to end")
    finally:
        waiting.close()
    started = time.monotonic()
    answer = httpx.put(
        f"{serve}/v1beta1/organizations/globex",
        json={"title": "Globex Inc", "owner_email": "owner@globex.test"},
        headers=headers,
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    customer = eventually(
        lambda: _customer_of(emulator, "globex"), timeout=5, what="the Stripe customer"
    )
    elapsed = time.monotonic() - started
    print(f"Stripe customer {elapsed:.2f} s after PUT /organizations/globex")
    # The PUT's own targeted reconcile made it, not a refresh (an hour away): about a second
    # on a quiet machine (printed; the benchmark's business), well under 5 s on a loaded CI
    # machine, where 1.67 s was seen.
    assert elapsed < 5.0
    assert customer.name == "Globex Inc"
    assert customer.email == "owner@globex.test"
    assert customer.metadata["br_key"] == "customer/globex"  # type: ignore[attr-defined]

    # A portal-like edit in Stripe: its customer.updated webhook reconciles that customer.
    store = Store.open(postgres_database_url)
    try:
        sdk(emulator).v1.customers.update(customer.id, {"email": "portal@globex.test"})  # type: ignore[attr-defined]

        def pulled() -> bool | None:
            with store.session() as session:
                account = AccountRepository(session).active_for_org("globex")
            return (account is not None and account.email == "portal@globex.test") or None

        eventually(pulled, timeout=10, what="the Stripe edit to be pulled into the store")
        with store.session() as session:
            account = AccountRepository(session).active_for_org("globex")
        assert account is not None
        assert account.stripe_customer_id == customer.id
        assert account.currency == "usd"
    finally:
        store.close()
    again = httpx.put(
        f"{serve}/v1beta1/organizations/globex", json={"title": "Globex Inc"}, headers=headers
    )
    assert again.status_code == 200
    time.sleep(0.5)
    listed = [
        c
        for c in sdk(emulator).v1.customers.list({"limit": 100}).auto_paging_iter()
        if c.metadata and c.metadata.to_dict().get("org_id") == "globex"
    ]
    assert len(listed) == 1


@pytest.mark.postgres
def test_two_replicas_one_writer_for_the_customers_domain(
    launch: Callable[..., Serve],  # noqa: F811
    postgres_database_url: str,
    pg_store: Store,
    emulator: EmulatorHandle,
    workdir: Path,  # noqa: F811
) -> None:
    """Two `serve` processes on one PostgreSQL store, organizations PUT through both APIs:
    only the leader creates customers, each org gets exactly one. An API write on the
    follower is stored (and answered 202 at once), but only the leader's refresh (here every
    2 s) carries it to Stripe."""
    billing = workdir / "desired" / "billing.yaml"
    billing.write_text(billing.read_text().replace("customer: 1m", "customer: 2s"))
    env = {"BILLING_API_TOKENS": TOKEN}
    first = launch(postgres_database_url, "first", env)
    second = launch(postgres_database_url, "second", env)
    by_pid = {first.process.pid: first, second.process.pid: second}
    first.wait_healthy()
    second.wait_healthy()
    leader = by_pid[eventually(lambda: lease_pid(pg_store), timeout=START_TIMEOUT, what="a lease")]
    follower = second if leader is first else first
    eventually(lambda: applied_run(pg_store), timeout=START_TIMEOUT, what="the first apply")

    orgs = [f"org{n:02d}" for n in range(20)]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for n, org in enumerate(orgs):
        replica = (leader, follower)[n % 2]
        answer = httpx.put(
            f"{replica.url}/v1beta1/organizations/{org}",
            json={"title": f"Org {org}"},
            headers=headers,
            timeout=10,
        )
        if replica is leader:
            # The leader waited for the reconcile that created the customer (DESIGN §19).
            assert answer.status_code == 201, answer.text
        else:
            # A follower does not write: recorded, and answered at once.
            assert answer.status_code == 202, answer.text
            assert answer.json()["reason"] == "not_leader"
            assert answer.headers["Location"] == f"/v1beta1/organizations/{org}/billing"

    wanted = {f"customer/{org}" for org in (*orgs, "acme")}  # acme: desired/customers

    def all_created() -> bool:
        keys = {marker(c, "br_key") for c in sdk(emulator).v1.customers.list({"limit": 100})}
        return wanted <= keys

    eventually(all_created, timeout=60, what=f"every customer\n{leader.logs()}")
    eventually(lambda: quiet(pg_store, seconds=1.0), timeout=30, what="the runs to end")

    customers = list(sdk(emulator).v1.customers.list({"limit": 100}).auto_paging_iter())
    keys = collections.Counter(marker(c, "br_key") for c in customers)
    assert set(keys) == wanted
    assert [k for k, n in keys.items() if n > 1] == []
    creates = [
        r
        for r in emulator.control.requests(method="POST")
        if r.path == "/v1/customers" and r.status == 200 and not r.replayed
    ]
    assert len(creates) == len(wanted)
    # One writer: every apply run is the leader's; the follower only planned.
    applies = [r for r in runs(pg_store) if r.mode is RunMode.APPLY]
    assert applies
    assert all(r.actor.endswith(leader.actor_pid) for r in applies), [r.actor for r in applies]
    assert not any(
        r.actor.endswith(follower.actor_pid) and r.mode is not RunMode.DRY_RUN
        for r in runs(pg_store)
    )
    done = collections.Counter(
        r.object_key
        for r in journal(pg_store)
        if r.state is JournalState.DONE
        and r.action == "create"
        and r.object_key.startswith(("customer/", "billing_account/"))
    )
    assert set(done) == wanted | {"billing_account/acme"}
    assert [key for key, count in done.items() if count > 1] == []
    with pg_store.session() as session:
        accounts = AccountRepository(session)
        linked = {accounts.active_for_org(org).stripe_customer_id for org in orgs}  # type: ignore[union-attr]
    assert linked == {c.id for c in customers if marker(c, "br_key") != "customer/acme"}


def _wait_first_runs(postgres_database_url: str) -> None:
    waiting = Store.open(postgres_database_url)
    try:
        eventually(lambda: applied_run(waiting), timeout=START_TIMEOUT, what="the first apply")
        eventually(lambda: quiet(waiting, seconds=0.5), timeout=15, what="the start runs to end")
    finally:
        waiting.close()


@pytest.mark.postgres
def test_writes_that_change_stripe_answer_after_stripe_and_a_deleted_customer_stays_disabled(
    serve: str, emulator: EmulatorHandle, postgres_database_url: str
) -> None:
    """DESIGN §19: PUT of an org (auto-creating an online account) and register answer once
    the Stripe customer exists, so the caller reads it without polling. §15: a customer
    deleted in Stripe disables its account, and enabling that account is refused (409)."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    org = f"{serve}/v1beta1/organizations/initech"
    _wait_first_runs(postgres_database_url)

    started = time.monotonic()
    put = httpx.put(org, json={"title": "Initech"}, headers=headers, timeout=10)
    put_seconds = time.monotonic() - started
    assert put.status_code == 201, put.text
    first = httpx.get(f"{org}/billing", headers=headers, timeout=10).json()
    assert first["stripe_customer_id"] is not None, first  # no polling: the PUT waited
    assert _customer_of(emulator, "initech").id == first["stripe_customer_id"]  # type: ignore[union-attr]

    # An offline account, then register: the answer carries its new Stripe customer.
    assert httpx.post(f"{org}/billing/disable", headers=headers, timeout=10).is_success
    offline = httpx.post(f"{org}/billing", json={"offline": True}, headers=headers, timeout=10)
    assert offline.status_code == 201, offline.text
    assert offline.json()["stripe_customer_id"] is None
    started = time.monotonic()
    registered = httpx.post(f"{org}/billing/register", headers=headers, timeout=10)
    register_seconds = time.monotonic() - started
    assert registered.status_code == 200, registered.text
    account = registered.json()
    assert account["id"] == offline.json()["id"]
    assert account["offline"] is False
    assert account["stripe_customer_id"] not in (None, first["stripe_customer_id"])
    print(f"PUT org answered in {put_seconds:.2f} s, register in {register_seconds:.2f} s")

    # The customer deleted in Stripe: its webhook disables the account; enable is refused.
    sdk(emulator).v1.customers.delete(account["stripe_customer_id"])

    def disabled() -> bool | None:
        answer = httpx.get(f"{org}/billing", headers=headers, timeout=10).json()
        return answer["state"] == "disabled" or None

    eventually(disabled, timeout=15, what="the account disabled after its customer's deletion")
    enable = httpx.post(f"{org}/billing/enable", headers=headers, timeout=10)
    assert enable.status_code == 409, enable.text
    error = enable.json()["error"]
    assert error["code"] == "failed_precondition"
    assert error["details"] == {
        "org_id": "initech",
        "account_id": account["id"],
        "stripe_customer_id": account["stripe_customer_id"],
    }
    assert "POST /v1beta1/organizations/initech/billing" in error["message"]
    time.sleep(1.0)  # nothing flips it back
    assert httpx.get(f"{org}/billing", headers=headers, timeout=10).json()["state"] == "disabled"

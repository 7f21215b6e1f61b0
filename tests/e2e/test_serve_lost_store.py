"""A lost store under `reconcile serve` (issue 11, DESIGN §16; README: Stripe is the
inventory): an org on a paid per-seat plan with members and a plan change pending at the
period end (our subscription schedule), then the process stops and its store is gone (the
SQLite file deleted; the PostgreSQL database dropped and made again, empty). A new `serve` on
the empty store, the host re-sending the org's PUT and its members' PUTs: the customer, the
subscription and the schedule are adopted, never made a second time, the seats are right, and
the API's subscription answers the pending change. Real processes, real HTTP, the emulator
delivering signed webhooks, the org's customer on a test clock."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import stripe

from billing_reconciler.store import Store
from tests.e2e.test_serve import (  # noqa: F401
    START_TIMEOUT,
    Serve,
    applied_run,
    eventually,
    launch,
    marker,
    quiet,
    sdk,
    workdir,
)
from tests.fixtures.emulator import EmulatorHandle
from tests.fixtures.postgres import ADMIN_URL

pytestmark = pytest.mark.timeout(180)
APP_TOKEN = "app-token-for-tests"
ADMIN_TOKEN = "admin-token-for-tests"
APP = {"Authorization": f"Bearer {APP_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SEAT_PRICE = "price/team_seat/monthly"
ORG = "globex"
MEMBERS = ("user-1", "user-2", "user-3")


def _price_key(item: Any) -> str | None:
    metadata = item.price.metadata.to_dict() if item.price.metadata else {}
    key = metadata.get("br_key")
    return key if isinstance(key, str) else None


def _live(client: stripe.StripeClient, customer: str) -> list[Any]:
    listed = client.v1.subscriptions.list({"customer": customer, "status": "all", "limit": 100})
    return [s for s in listed.data if s.status not in ("canceled", "incomplete_expired")]


def _seats(client: stripe.StripeClient, customer: str) -> int | None:
    """The seat item's quantity of the customer's one live subscription (None unless one)."""
    live = _live(client, customer)
    items = [i for s in live for i in s["items"].data if _price_key(i) == SEAT_PRICE]
    if len(live) != 1 or len(items) != 1:
        return None
    quantity: int = items[0].quantity
    return quantity


def _schedules(client: stripe.StripeClient, customer: str) -> list[Any]:
    """The customer's schedules still holding their subscription (not released or canceled)."""
    listed = client.v1.subscription_schedules.list({"customer": customer, "limit": 100})
    return [s for s in listed.data if s.status in ("not_started", "active")]


def _org_customers(client: stripe.StripeClient) -> list[Any]:
    """Every Stripe customer (not deleted) carrying the org's marker."""
    return [
        c
        for c in client.v1.customers.list({"limit": 100}).auto_paging_iter()
        if not c.to_dict().get("deleted") and marker(c, "org_id") == ORG
    ]


def _settle(database_url: str) -> None:
    """No run running, none started in the last 2.5 s: webhook runs start ~0.5 s late, and a
    run that did not converge is retried after a backoff of 1 s."""
    store = Store.open(database_url)
    try:
        eventually(lambda: quiet(store, seconds=2.5), timeout=60, what="the runs to end")
    finally:
        store.close()


def _started(launch: Callable[..., Serve], database_url: str, name: str) -> Serve:  # noqa: F811
    """`serve` on the store, once its catalog applied and its start runs ended."""
    serve = launch(
        database_url,
        name=name,
        extra_env={"BILLING_API_TOKENS": APP_TOKEN, "BILLING_ADMIN_TOKENS": ADMIN_TOKEN},
    )
    serve.wait_healthy()
    store = Store.open(database_url)
    try:
        eventually(lambda: applied_run(store), timeout=START_TIMEOUT, what="the first apply")
        eventually(lambda: quiet(store, seconds=0.5), timeout=15, what="the start runs to end")
    finally:
        store.close()
    return serve


def _put_org_and_members(serve: Serve, clock: str) -> httpx.Response:
    """What the host sends for the org: its PUT (on its test clock), then each member's PUT."""
    url = f"{serve.url}/v1beta1/organizations/{ORG}"
    put = httpx.put(
        url,
        json={"title": "Globex", "owner_email": f"owner@{ORG}.test"},
        headers={**APP, "X-Stripe-Test-Clock": clock},
        timeout=15,
    )
    for member in MEMBERS:
        answer = httpx.put(
            f"{url}/members/{member}",
            json={"email": f"{member}@{ORG}.test"},
            headers=APP,
            timeout=15,
        )
        assert answer.status_code in (200, 201), answer.text
    return put


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, workdir: Path) -> Iterator[str]:  # noqa: F811
    """The store's URL; every refresh interval an hour (nothing below is the schedule's)."""
    billing = workdir / "desired" / "billing.yaml"
    text = billing.read_text()
    for domain in ("customer", "subscription", "checkout", "invoice"):
        text, replaced = re.subn(rf"^    {domain}: \d+m$", f"    {domain}: 1h", text, flags=re.M)
        assert replaced == 1, domain
    billing.write_text(text)
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_database_url")
        yield url
    else:
        (workdir / ".billing").mkdir()
        yield f"sqlite:///{workdir}/.billing/state.db"


def _lose(database_url: str, workdir: Path) -> None:  # noqa: F811
    """The store is gone: the SQLite file (and its journal files) deleted, or the PostgreSQL
    database dropped and created again, empty, under the same name."""
    if database_url.startswith("sqlite"):
        for path in (workdir / ".billing").glob("state.db*"):
            path.unlink()
        assert not (workdir / ".billing" / "state.db").exists()
        return
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')


def test_serve_adopts_the_subscription_seats_and_pending_change_after_a_lost_store(
    launch: Callable[..., Serve],  # noqa: F811
    workdir: Path,  # noqa: F811
    database_url: str,
    emulator: EmulatorHandle,
) -> None:
    client = sdk(emulator)
    first = _started(launch, database_url, "serve")
    url = f"{first.url}/v1beta1/organizations/{ORG}"

    # The org on a test clock, a card, team_monthly (admin subscribe), three members.
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": int(time.time())}).id
    opened = _put_org_and_members(first, clock)
    assert opened.status_code == 201, opened.text
    customer = httpx.get(f"{url}/billing", headers=APP, timeout=10).json()["stripe_customer_id"]
    assert customer is not None
    card = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer})
    client.v1.customers.update(customer, {"invoice_settings": {"default_payment_method": card.id}})
    _settle(database_url)
    subscribed = httpx.post(
        f"{url}/billing/subscriptions",
        json={"plan": "team_monthly", "skip_trial": True},
        headers=ADMIN,
        timeout=15,
    )
    assert subscribed.status_code in (201, 202), subscribed.text
    eventually(lambda: _seats(client, customer) == 3, timeout=10, what="team_monthly, 3 seats")
    [team] = _live(client, customer)
    intent = team.metadata["br_intent"]

    def mirrored() -> dict[str, Any] | None:
        body: dict[str, Any] = httpx.get(
            f"{url}/billing/subscriptions/{intent}", headers=APP, timeout=10
        ).json()
        return body if body.get("stripe_subscription_id") == team.id else None

    eventually(mirrored, timeout=10, what="the team subscription mirrored")
    _settle(database_url)

    # The plan change at the period end: our schedule, two phases.
    changed = httpx.post(
        f"{url}/billing/subscriptions/{intent}/change",
        json={"plan": "team_yearly"},
        headers=APP,
        timeout=15,
    )
    assert changed.status_code in (200, 202), changed.text
    eventually(lambda: _schedules(client, customer), timeout=10, what="the schedule")
    [schedule] = _schedules(client, customer)
    assert [p.metadata["plan"] for p in schedule.phases] == ["team_monthly", "team_yearly"]
    period_end = schedule.phases[0].end_date
    _settle(database_url)

    # The process stops; its store is lost. The old endpoint goes with the old process.
    first.stop()
    client.v1.webhook_endpoints.delete(first.endpoint_id)
    _lose(database_url, workdir)

    second = _started(launch, database_url, "serve-after-loss")
    url = f"{second.url}/v1beta1/organizations/{ORG}"
    again = _put_org_and_members(second, clock)
    assert again.status_code == 201, again.text  # new to this store
    _settle(database_url)

    account = httpx.get(f"{url}/billing", headers=APP, timeout=10).json()
    assert account["stripe_customer_id"] == customer, account
    assert [c.id for c in _org_customers(client)] == [customer]  # no second customer
    assert [s.id for s in _live(client, customer)] == [team.id]  # no second subscription
    assert _seats(client, customer) == 3
    [kept] = _schedules(client, customer)
    assert kept.id == schedule.id
    assert [p.metadata["plan"] for p in kept.phases] == ["team_monthly", "team_yearly"]
    assert kept.phases[0].end_date == period_end
    # The yearly phase bills the members' seats. (The current phase's items are not checked:
    # the subscription's own items are what Stripe bills until the period end.)
    yearly = {
        marker(client.v1.prices.retrieve(i.price), "br_key"): i.quantity
        for i in kept.phases[1]["items"]
    }
    assert yearly == {"price/team_base/yearly": 1, "price/team_seat/yearly": 3}, yearly

    got = httpx.get(f"{url}/billing/subscriptions/{intent}", headers=APP, timeout=10)
    assert got.status_code == 200, got.text
    body = got.json()
    assert (body["plan"], body["stripe_subscription_id"]) == ("team_monthly", team.id), body
    assert body["seats"] == 3, body
    assert body["pending_change"] is not None, body
    assert body["pending_change"]["plan"] == "team_yearly", body
    listed = httpx.get(f"{url}/billing/subscriptions", headers=APP, timeout=10).json()
    assert [s["stripe_subscription_id"] for s in listed["data"]] == [team.id], listed

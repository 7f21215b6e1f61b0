"""The webhook receiver, health and metrics over HTTP, on SQLite and PostgreSQL.

Two rings: the FastAPI `TestClient` (a fixed, injected clock; both store backends), and a real
uvicorn server on a loopback port receiving real signed deliveries from the Stripe emulator.
Every case checks the status *and* the inbox: a rejected delivery stores nothing.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
import structlog
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from billing_reconciler.config import Secret
from billing_reconciler.runtime.app import create_app
from billing_reconciler.runtime.events import ReconcileRequest
from billing_reconciler.runtime.health import Readiness
from billing_reconciler.runtime.metrics import Metrics
from billing_reconciler.runtime.webhooks import WEBHOOK_PATH
from billing_reconciler.store import InboxRepository, Store
from billing_reconciler.stripe_gateway import sign_webhook_payload
from tests.fixtures.emulator import EmulatorHandle, make_client

from .live_server import LiveServer

NOW = 1_800_000_000
NEW = Secret("whsec_NewSecretForTheTests0001")
OLD = Secret("whsec_OldSecretForTheTests0002")
OURS = {"managed_by": "billing-reconciler", "br_key": "product/team"}


# --------------------------------------------------------------------------------------------
# Fixtures: stores (SQLite file; PostgreSQL too where it says `store`), enqueue, live server
# --------------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/.billing/state.db"
    url: str = request.getfixturevalue("postgres_database_url")
    return url


def _opened(url: str) -> Iterator[Store]:
    store = Store.open(url)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """A real store, once on a SQLite file and once on PostgreSQL."""
    yield from _opened(database_url)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    yield from _opened(f"sqlite:///{tmp_path}/.billing/state.db")


def inbox_count(store: Store) -> int:
    with store.session() as session:
        return InboxRepository(session).count()


class Enqueued:
    """The `enqueue` callback: records every request (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: list[ReconcileRequest] = []

    def __call__(self, request: ReconcileRequest) -> None:
        with self._lock:
            self.requests.append(request)


@pytest.fixture
def enqueued() -> Enqueued:
    return Enqueued()


@pytest.fixture
def live_server() -> Iterator[LiveServer]:
    server = LiveServer()
    try:
        yield server
    finally:
        server.stop()


def event_body(
    event_id: str = "evt_1",
    event_type: str = "product.updated",
    obj: dict[str, Any] | None = None,
) -> str:
    data = obj if obj is not None else {"id": "prod_1", "object": "product", "metadata": OURS}
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": event_type,
            "api_version": "2026-10-28.endive",
            "livemode": False,
            "created": NOW,
            "data": {"object": data},
        }
    )


def signed(body: str, secret: Secret = NEW, timestamp: int = NOW) -> dict[str, str]:
    header = sign_webhook_payload(payload=body, secret=secret, timestamp=timestamp)
    return {"Stripe-Signature": header, "Content-Type": "application/json"}


def build_app(
    store: Store,
    enqueue: Callable[[ReconcileRequest], None],
    *,
    secrets: tuple[Secret, ...] = (NEW, OLD),
    metrics: Metrics | None = None,
    clock: Callable[[], float] = lambda: float(NOW),
    max_body_bytes: int = 262144,
    readiness: Callable[[], Readiness] = lambda: Readiness(ready=True, checks={"store": "ok"}),
) -> FastAPI:
    return create_app(
        store=store,
        webhook_secrets=secrets,
        enqueue=enqueue,
        readiness=readiness,
        metrics=metrics or Metrics(),
        clock=clock,
        max_body_bytes=max_body_bytes,
    )


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def client(store: Store, enqueued: Enqueued, metrics: Metrics) -> Iterator[TestClient]:
    with TestClient(build_app(store, enqueued, metrics=metrics)) as test_client:
        yield test_client


def webhook_count(metrics: Metrics, outcome: str) -> float | None:
    return metrics.registry.get_sample_value(
        "billing_reconciler_webhooks_total", {"outcome": outcome}
    )


def rejection_count(metrics: Metrics, reason: str) -> float | None:
    return metrics.registry.get_sample_value(
        "billing_reconciler_webhook_rejections_total", {"reason": reason}
    )


# --------------------------------------------------------------------------------------------
# TestClient, SQLite and PostgreSQL
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("secret", [NEW, OLD], ids=["new-secret", "old-secret"])
def test_a_signed_event_is_stored_then_enqueued(
    client: TestClient, store: Store, enqueued: Enqueued, secret: Secret
) -> None:
    body = event_body()
    response = client.post(WEBHOOK_PATH, content=body, headers=signed(body, secret))
    assert response.status_code == 200
    assert response.json() == {"received": True, "duplicate": False}
    with store.session() as session:
        row = InboxRepository(session).get("evt_1")
    assert row is not None
    assert (row.type, row.object_id, row.livemode, row.api_version) == (
        "product.updated",
        "prod_1",
        False,
        "2026-10-28.endive",
    )
    assert row.payload == json.loads(body)
    assert row.received_at.timestamp() == NOW
    assert row.processed_at is None
    assert enqueued.requests == [
        ReconcileRequest("catalog", frozenset({"product/team"}), "webhook product.updated evt_1")
    ]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing_signature"),
        ({"Stripe-Signature": ""}, "missing_signature"),
        ({"Stripe-Signature": "garbage"}, "bad_signature"),
        (signed(event_body(), Secret("whsec_SomebodyElsesSecret0003")), "bad_signature"),
        (signed(event_body(event_id="evt_other")), "bad_signature"),  # another body's signature
        (signed(event_body(), timestamp=NOW - 301), "stale"),
        (signed(event_body(), timestamp=NOW + 301), "stale"),  # from the future
    ],
    ids=["missing", "empty", "garbage", "unknown-secret", "wrong-body", "stale", "future"],
)
def test_unverified_deliveries_are_rejected_and_nothing_is_stored(
    client: TestClient,
    store: Store,
    enqueued: Enqueued,
    metrics: Metrics,
    headers: dict[str, str],
    reason: str,
) -> None:
    response = client.post(WEBHOOK_PATH, content=event_body(), headers=headers)
    assert response.status_code == 400
    assert set(response.json()) == {"error"}
    assert inbox_count(store) == 0
    assert enqueued.requests == []
    assert rejection_count(metrics, reason) == 1


def test_the_window_edges_are_accepted(client: TestClient, store: Store) -> None:
    for n, timestamp in enumerate([NOW - 300, NOW + 300]):
        body = event_body(event_id=f"evt_{n}")
        assert client.post(WEBHOOK_PATH, content=body, headers=signed(body, timestamp=timestamp))
    assert inbox_count(store) == 2


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[1, 2]",
        json.dumps({"type": "product.updated"}),
        json.dumps({"id": "evt_1"}),
        json.dumps({"id": "", "type": "product.updated"}),
        json.dumps({"id": 7, "type": "product.updated"}),
        json.dumps({"id": "e" * 256, "type": "product.updated"}),
    ],
    ids=["not-json", "array", "no-id", "no-type", "empty-id", "numeric-id", "long-id"],
)
def test_signed_but_malformed_payloads_are_rejected(
    client: TestClient, store: Store, metrics: Metrics, body: str
) -> None:
    response = client.post(WEBHOOK_PATH, content=body, headers=signed(body))
    assert response.status_code == 400
    assert inbox_count(store) == 0
    assert rejection_count(metrics, "bad_payload") == 1


def test_a_non_utf8_body_is_rejected(client: TestClient, store: Store) -> None:
    response = client.post(
        WEBHOOK_PATH, content=b"\xff\xfe", headers={"Stripe-Signature": f"t={NOW},v1=00"}
    )
    assert response.status_code == 400
    assert inbox_count(store) == 0


def test_a_duplicate_is_acknowledged_stored_once_and_enqueued_once(
    client: TestClient, store: Store, enqueued: Enqueued, metrics: Metrics
) -> None:
    body = event_body()
    first = client.post(WEBHOOK_PATH, content=body, headers=signed(body, NEW))
    # Stripe re-signs a retry; a second endpoint signs with its own secret: same event id.
    again = client.post(WEBHOOK_PATH, content=body, headers=signed(body, OLD, NOW + 5))
    assert first.json() == {"received": True, "duplicate": False}
    assert again.status_code == 200
    assert again.json() == {"received": True, "duplicate": True}
    assert inbox_count(store) == 1
    assert len(enqueued.requests) == 1
    assert (webhook_count(metrics, "received"), webhook_count(metrics, "duplicate")) == (1, 1)


def test_events_that_route_nowhere_are_stored_and_not_enqueued(
    client: TestClient, store: Store, enqueued: Enqueued
) -> None:
    bodies = [
        event_body("evt_a", "charge.succeeded", {"id": "ch_1"}),
        event_body("evt_b", "product.updated", {"id": "prod_2", "metadata": {}}),  # not ours
    ]
    for body in bodies:
        assert client.post(WEBHOOK_PATH, content=body, headers=signed(body)).status_code == 200
    assert inbox_count(store) == 2
    assert enqueued.requests == []


def test_an_oversized_body_gets_413(store: Store, enqueued: Enqueued, metrics: Metrics) -> None:
    app = build_app(store, enqueued, metrics=metrics, max_body_bytes=1024)
    body = event_body(obj={"id": "prod_1", "description": "x" * 2000})
    with TestClient(app) as client:
        declared = client.post(WEBHOOK_PATH, content=body, headers=signed(body))
        chunked = client.post(  # no Content-Length: the limit applies while reading
            WEBHOOK_PATH,
            content=iter([body[:800].encode(), body[800:].encode()]),
            headers=signed(body),
        )
        small = event_body()
        fits = client.post(WEBHOOK_PATH, content=small, headers=signed(small))
    assert (declared.status_code, chunked.status_code, fits.status_code) == (413, 413, 200)
    assert inbox_count(store) == 1
    assert rejection_count(metrics, "too_large") == 2


def test_the_default_limit_is_256_kib(client: TestClient, store: Store) -> None:
    body = event_body(obj={"id": "prod_1", "description": "x" * (256 * 1024)})
    assert client.post(WEBHOOK_PATH, content=body, headers=signed(body)).status_code == 413
    assert inbox_count(store) == 0


def test_a_store_failure_answers_503_so_stripe_retries(
    store: Store, enqueued: Enqueued, metrics: Metrics
) -> None:
    with store.session() as session:
        session.execute(text("DROP TABLE webhook_inbox"))
    body = event_body()
    with TestClient(build_app(store, enqueued, metrics=metrics)) as client:
        response = client.post(WEBHOOK_PATH, content=body, headers=signed(body))
    assert response.status_code == 503
    assert enqueued.requests == []
    assert webhook_count(metrics, "failed") == 1


def test_without_secrets_every_delivery_gets_503(store: Store, enqueued: Enqueued) -> None:
    body = event_body()
    with TestClient(build_app(store, enqueued, secrets=())) as client:
        response = client.post(WEBHOOK_PATH, content=body, headers=signed(body))
    assert response.status_code == 503
    assert inbox_count(store) == 0


def test_an_enqueue_failure_still_acknowledges_the_stored_event(store: Store) -> None:
    def broken(request: ReconcileRequest) -> None:
        raise RuntimeError("queue closed")

    body = event_body()
    with TestClient(build_app(store, broken)) as client:
        assert client.post(WEBHOOK_PATH, content=body, headers=signed(body)).status_code == 200
    assert inbox_count(store) == 1


def test_secrets_never_reach_responses_or_logs(client: TestClient) -> None:
    body = event_body()
    with structlog.testing.capture_logs() as logs:
        responses = [
            client.post(WEBHOOK_PATH, content=body, headers=signed(body, NEW)),
            client.post(WEBHOOK_PATH, content=body, headers=signed(body, NEW)),
            client.post(WEBHOOK_PATH, content=body, headers=signed(body, Secret("whsec_X1234"))),
            client.post(WEBHOOK_PATH, content=body, headers=signed(body, timestamp=1)),
            client.post(WEBHOOK_PATH, content=body),
        ]
    seen = " ".join(r.text for r in responses) + repr(logs)
    assert "whsec_" not in seen
    assert NEW.reveal()[6:] not in seen
    assert OLD.reveal()[6:] not in seen
    assert {entry["event"] for entry in logs} == {
        "webhook received",
        "webhook duplicate",
        "webhook rejected",
    }


def test_health_and_readiness(store: Store, enqueued: Enqueued) -> None:
    state = {"ready": True}

    def readiness() -> Readiness:
        checks = {"store": "ok" if store.ping() else "unreachable", "desired": "ok"}
        if not state["ready"]:
            checks["last_reconcile"] = "failing for 4 intervals"
        return Readiness(ready=state["ready"], checks=checks)

    with TestClient(build_app(store, enqueued, readiness=readiness)) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"ready": True, "checks": {"store": "ok", "desired": "ok"}}
        state["ready"] = False
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["checks"]["last_reconcile"] == "failing for 4 intervals"
        assert client.get("/healthz").status_code == 200


def test_a_failing_readiness_probe_means_not_ready(store: Store, enqueued: Enqueued) -> None:
    def readiness() -> Readiness:
        raise ConnectionError("postgresql://user:hunter2@db/billing is down")

    with TestClient(build_app(store, enqueued, readiness=readiness)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert "hunter2" not in response.text


def test_readiness_checks_are_served_without_secrets(store: Store, enqueued: Enqueued) -> None:
    def readiness() -> Readiness:
        return Readiness(
            ready=False,
            checks={
                "store": "unreachable: postgresql://billing:hunter2@db:5432/billing",
                "reconcile:catalog": "failing: Invalid API Key provided: sk_test_abcdefgh12345678",
            },
        )

    with TestClient(build_app(store, enqueued, readiness=readiness)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert "hunter2" not in response.text
    assert "abcdefgh1234" not in response.text
    assert "postgresql://billing:***@db:5432/billing" in response.text


def test_metrics_expose_the_webhook_counters(client: TestClient) -> None:
    body = event_body()
    client.post(WEBHOOK_PATH, content=body, headers=signed(body))
    client.post(WEBHOOK_PATH, content=body, headers=signed(body))
    client.post(WEBHOOK_PATH, content=body)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = set(response.text.splitlines())
    assert 'billing_reconciler_webhooks_total{outcome="received"} 1.0' in lines
    assert 'billing_reconciler_webhooks_total{outcome="duplicate"} 1.0' in lines
    assert 'billing_reconciler_webhooks_total{outcome="rejected"} 1.0' in lines
    assert 'billing_reconciler_webhook_rejections_total{reason="missing_signature"} 1.0' in lines
    openmetrics = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")


# --------------------------------------------------------------------------------------------
# A real server receiving real signed deliveries from the emulator
# --------------------------------------------------------------------------------------------


class Captured:
    """An ASGI wrapper that keeps each delivery's raw body and signature, for replays."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.deliveries: list[tuple[bytes, str | None]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != WEBHOOK_PATH:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []

        async def recording() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
            return message

        await self.app(scope, recording, send)
        signature = dict(scope["headers"]).get(b"stripe-signature")
        self.deliveries.append((b"".join(chunks), signature and signature.decode()))


def sdk(emulator: EmulatorHandle) -> stripe.StripeClient:
    return make_client(emulator.url)


def register_endpoint(client: stripe.StripeClient, url: str) -> Secret:
    endpoint = client.v1.webhook_endpoints.create(
        {
            "url": url + WEBHOOK_PATH,
            # Stripe accepts `*` or exact types here, no other wildcards.
            "enabled_events": ["product.created", "product.updated", "product.deleted"],
        }
    )
    assert endpoint.secret is not None
    return Secret(endpoint.secret)


def statuses(emulator: EmulatorHandle) -> list[int | None]:
    emulator.control.wait_webhooks_idle(timeout=30)
    return [d["status"] for d in emulator.control.webhook_deliveries()]


def serve(
    live_server: LiveServer,
    store: Store,
    enqueued: Enqueued,
    secrets: tuple[Secret, ...],
    metrics: Metrics | None = None,
    **options: Any,
) -> Captured:
    app = Captured(
        build_app(store, enqueued, secrets=secrets, metrics=metrics, clock=time.time, **options)
    )
    live_server.start(app)
    return app


@pytest.mark.parametrize("position", ["new", "old"])
def test_emulator_deliveries_verify_with_the_new_or_the_old_secret(
    emulator: EmulatorHandle,
    live_server: LiveServer,
    store: Store,
    enqueued: Enqueued,
    position: str,
) -> None:
    client = sdk(emulator)
    endpoint_secret = register_endpoint(client, live_server.url)
    other = Secret("whsec_TheOtherSecretInRotation04")
    # Newest first: rotating *to* the endpoint's secret, or still accepting it as the old one.
    secrets = (endpoint_secret, other) if position == "new" else (other, endpoint_secret)
    serve(live_server, store, enqueued, secrets)
    product = client.v1.products.create({"name": "Team", "metadata": OURS})
    assert statuses(emulator) == [200]
    with store.session() as session:
        row = InboxRepository(session).get(_only_event_id(emulator))
    assert row is not None
    assert (row.type, row.object_id) == ("product.created", product.id)
    assert [r.scope for r in enqueued.requests] == [frozenset({"product/team"})]


def _only_event_id(emulator: EmulatorHandle) -> str:
    (event_id,) = {d["event_id"] for d in emulator.control.webhook_deliveries()}
    return str(event_id)


def test_emulator_deliveries_with_an_unknown_secret_are_refused_every_time(
    emulator: EmulatorHandle, live_server: LiveServer, sqlite_store: Store, enqueued: Enqueued
) -> None:
    client = sdk(emulator)
    register_endpoint(client, live_server.url)
    serve(live_server, sqlite_store, enqueued, (NEW, OLD))
    client.v1.products.create({"name": "Team", "metadata": OURS})
    assert set(statuses(emulator)) == {400}  # the first attempt and every retry
    assert inbox_count(sqlite_store) == 0
    assert enqueued.requests == []


@pytest.mark.parametrize("shift", [-3600, 3600], ids=["stale", "future"])
def test_emulator_deliveries_outside_the_tolerance_are_refused(
    emulator: EmulatorHandle,
    live_server: LiveServer,
    sqlite_store: Store,
    enqueued: Enqueued,
    shift: int,
) -> None:
    client = sdk(emulator)
    secret = register_endpoint(client, live_server.url)
    metrics = Metrics()
    serve(live_server, sqlite_store, enqueued, (secret,), metrics)
    # The emulator signs with its own clock (docs/emulator.md): move it an hour away.
    emulator.control.set_time(time.time() + shift)
    client.v1.products.create({"name": "Team", "metadata": OURS})
    assert set(statuses(emulator)) == {400}
    assert inbox_count(sqlite_store) == 0
    assert (rejection_count(metrics, "stale") or 0) >= 1


def test_replays_missing_header_other_body_and_duplicate_on_a_real_server(
    emulator: EmulatorHandle, live_server: LiveServer, sqlite_store: Store, enqueued: Enqueued
) -> None:
    client = sdk(emulator)
    secret = register_endpoint(client, live_server.url)
    captured = serve(live_server, sqlite_store, enqueued, (secret,))
    client.v1.products.create({"name": "Team", "metadata": OURS})
    assert statuses(emulator) == [200]
    ((body, signature),) = captured.deliveries
    assert signature is not None
    url = live_server.url + WEBHOOK_PATH
    other_body = body.replace(b'"Team"', b'"Evil"')
    assert other_body != body
    with httpx.Client() as http:
        missing = http.post(url, content=body)
        wrong_body = http.post(url, content=other_body, headers={"Stripe-Signature": signature})
        replay = http.post(url, content=body, headers={"Stripe-Signature": signature})
    assert (missing.status_code, wrong_body.status_code) == (400, 400)
    assert (replay.status_code, replay.json()) == (200, {"received": True, "duplicate": True})
    assert inbox_count(sqlite_store) == 1
    assert len(enqueued.requests) == 1


def test_two_endpoints_deliver_one_event_twice_and_it_is_processed_once(
    emulator: EmulatorHandle, live_server: LiveServer, store: Store, enqueued: Enqueued
) -> None:
    client = sdk(emulator)
    first, second = (
        register_endpoint(client, live_server.url),
        register_endpoint(client, live_server.url),
    )
    metrics = Metrics()
    serve(live_server, store, enqueued, (second, first), metrics)
    client.v1.products.create({"name": "Team", "metadata": OURS})
    assert statuses(emulator) == [200, 200]
    assert inbox_count(store) == 1
    assert len(enqueued.requests) == 1
    assert (webhook_count(metrics, "received"), webhook_count(metrics, "duplicate")) == (1, 1)


def test_an_oversized_emulator_delivery_gets_413(
    emulator: EmulatorHandle, live_server: LiveServer, sqlite_store: Store, enqueued: Enqueued
) -> None:
    client = sdk(emulator)
    secret = register_endpoint(client, live_server.url)
    serve(live_server, sqlite_store, enqueued, (secret,), max_body_bytes=4096)
    client.v1.products.create({"name": "Team", "metadata": OURS, "description": "x" * 5000})
    assert set(statuses(emulator)) == {413}
    assert inbox_count(sqlite_store) == 0
    huge = b"{" + b" " * (300 * 1024) + b"}"
    response = httpx.post(
        live_server.url + WEBHOOK_PATH, content=huge, headers={"Stripe-Signature": f"t={NOW}"}
    )
    assert response.status_code == 413


def test_a_burst_of_1000_events_for_one_object_stores_1000_rows(
    emulator: EmulatorHandle, live_server: LiveServer, sqlite_store: Store, enqueued: Enqueued
) -> None:
    client = sdk(emulator)
    secret = register_endpoint(client, live_server.url)
    metrics = Metrics()
    serve(live_server, sqlite_store, enqueued, (secret,), metrics)
    product = client.v1.products.create({"name": "Team", "metadata": OURS})
    for n in range(999):
        client.v1.products.update(product.id, {"description": f"edit {n}"})
    delivered = statuses(emulator)
    assert len(delivered) == 1000
    assert set(delivered) == {200}
    with sqlite_store.session() as session:
        inbox = InboxRepository(session)
        assert inbox.count() == 1000
        assert inbox.count(unprocessed_only=True) == 1000
    assert len({d["event_id"] for d in emulator.control.webhook_deliveries()}) == 1000
    # One hint per event; coalescing a burst into a handful of reconciles is the queue's job.
    assert len(enqueued.requests) == 1000
    assert {r.scope for r in enqueued.requests} == {frozenset({"product/team"})}
    assert webhook_count(metrics, "received") == 1000
    scraped = httpx.get(live_server.url + "/metrics").text
    assert 'billing_reconciler_webhooks_total{outcome="received"} 1000.0' in scraped

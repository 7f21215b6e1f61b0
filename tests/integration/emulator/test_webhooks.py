"""Webhook endpoints and signed deliveries, verified with the SDK's own `construct_event`."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import stripe

from tests.fixtures.emulator import EmulatorHandle


@dataclass
class Receiver:
    """A local HTTP endpoint that records deliveries and fails the first `failures` ones."""

    failures: int = 0
    received: list[tuple[bytes, str]] = field(default_factory=list)
    attempts: int = 0
    url: str = ""
    done: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.attempts += 1
            if state.attempts <= state.failures:
                self.send_response(500)
            else:
                state.received.append((body, self.headers["Stripe-Signature"]))
                state.done.set()
                self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def test_signed_delivery_verifies_with_the_sdk(
    stripe_client: stripe.StripeClient, emulator: EmulatorHandle, receiver: Receiver
) -> None:
    endpoint = stripe_client.v1.webhook_endpoints.create(
        {"url": receiver.url, "enabled_events": ["product.created"]}
    )
    assert endpoint.secret is not None
    assert endpoint.secret.startswith("whsec_")
    assert "secret" not in stripe_client.v1.webhook_endpoints.retrieve(endpoint.id)
    product = stripe_client.v1.products.create({"name": "Hooked"})
    stripe_client.v1.customers.create({})  # not subscribed: no delivery
    assert receiver.done.wait(5)
    emulator.control.wait_webhooks_idle()
    assert len(receiver.received) == 1
    payload, header = receiver.received[0]
    event = stripe.Webhook.construct_event(payload.decode(), header, endpoint.secret)
    assert event.type == "product.created"
    assert event.data.object["id"] == product.id
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload.decode(), header, "whsec_wrong")


def test_failed_deliveries_are_retried(
    stripe_client: stripe.StripeClient, emulator: EmulatorHandle, receiver: Receiver
) -> None:
    receiver.failures = 2
    endpoint = stripe_client.v1.webhook_endpoints.create(
        {"url": receiver.url, "enabled_events": ["*"]}
    )
    stripe_client.v1.products.create({"name": "Retry"})
    assert receiver.done.wait(5)
    emulator.control.wait_webhooks_idle()
    attempts = [(d["attempt"], d["status"]) for d in emulator.control.webhook_deliveries()]
    assert attempts == [(1, 500), (2, 500), (3, 200)]
    payload, header = receiver.received[0]
    assert endpoint.secret is not None
    assert stripe.Webhook.construct_event(payload.decode(), header, endpoint.secret).type == (
        "product.created"
    )


def test_unreachable_endpoint_gives_up_after_the_retries(
    stripe_client: stripe.StripeClient, emulator: EmulatorHandle
) -> None:
    stripe_client.v1.webhook_endpoints.create(
        {"url": "http://127.0.0.1:9/nowhere", "enabled_events": ["*"]}
    )
    stripe_client.v1.products.create({"name": "Lost"})
    emulator.control.wait_webhooks_idle()
    deliveries = emulator.control.webhook_deliveries()
    assert [d["attempt"] for d in deliveries] == [1, 2, 3, 4]
    assert all(d["error"] for d in deliveries)


def test_disabled_endpoint_gets_nothing(
    stripe_client: stripe.StripeClient, emulator: EmulatorHandle, receiver: Receiver
) -> None:
    endpoint = stripe_client.v1.webhook_endpoints.create(
        {"url": receiver.url, "enabled_events": ["*"]}
    )
    stripe_client.v1.webhook_endpoints.update(endpoint.id, {"disabled": True})
    stripe_client.v1.products.create({"name": "Quiet"})
    emulator.control.wait_webhooks_idle()
    assert emulator.control.webhook_deliveries() == []


def test_invalid_event_type_is_refused(stripe_client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        stripe_client.v1.webhook_endpoints.create(
            {"url": "https://example.com/h", "enabled_events": ["not an event"]}  # type: ignore[list-item]
        )
    assert raised.value.param == "enabled_events[0]"

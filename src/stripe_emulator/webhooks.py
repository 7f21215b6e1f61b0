"""Signed webhook delivery with retries, on a background thread.

Each delivery is signed as Stripe signs: `Stripe-Signature: t=<ts>,v1=<hex hmac-sha256 of
"<ts>.<payload>" keyed by the whole `whsec_...` secret>`, so `stripe.Webhook.construct_event`
verifies it. Non-2xx answers and connection errors are retried after `retry_delays` seconds
(small by default so tests don't wait; Stripe itself retries for three days). Delivery runs
off the request path: the API call that caused an event never waits for its webhooks.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httpx

from stripe_emulator.clock import Clock

DEFAULT_RETRY_DELAYS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.8)
_LOG_LIMIT = 10_000


def sign(payload: str, secret: str, timestamp: int) -> str:
    """The `Stripe-Signature` header value for `payload`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


@dataclass(order=True, slots=True)
class _Delivery:
    due: float
    order: int
    event_id: str = field(compare=False)
    endpoint_id: str = field(compare=False)
    url: str = field(compare=False)
    secret: str = field(compare=False)
    payload: str = field(compare=False)
    attempt: int = field(compare=False, default=1)


class WebhookDispatcher:
    """A queue of pending deliveries drained by one daemon thread."""

    def __init__(self, clock: Clock, *, retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS):
        self.clock = clock
        self.retry_delays = retry_delays
        self.timeout_seconds = 5.0
        self._heap: list[_Delivery] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._in_flight = 0
        self._log: deque[dict[str, Any]] = deque(maxlen=_LOG_LIMIT)
        self._thread = threading.Thread(target=self._run, name="emulator-webhooks", daemon=True)
        self._thread.start()

    def enqueue(
        self, *, event_id: str, endpoint_id: str, url: str, secret: str, payload: str
    ) -> None:
        """Schedule the first attempt of one event to one endpoint."""
        delivery = _Delivery(
            time.monotonic(), next(self._counter), event_id, endpoint_id, url, secret, payload
        )
        with self._cond:
            heapq.heappush(self._heap, delivery)
            self._cond.notify()

    def deliveries(self) -> list[dict[str, Any]]:
        """Every attempt so far (event, endpoint, attempt, status or error, time)."""
        with self._cond:
            return list(self._log)

    def idle(self) -> bool:
        """True when nothing is queued or being sent."""
        with self._cond:
            return not self._heap and self._in_flight == 0

    def clear(self) -> None:
        """Drop pending deliveries and the attempt log."""
        with self._cond:
            self._heap.clear()
            self._log.clear()

    def stop(self) -> None:
        """Stop the thread (pending deliveries are dropped)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        # Without TCP_NODELAY each small POST waits ~40 ms on Nagle + delayed ACK, which turns a
        # burst of deliveries into minutes; Stripe's own senders do not stall like that.
        transport = httpx.HTTPTransport(
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        )
        with httpx.Client(timeout=self.timeout_seconds, transport=transport) as client:
            while (delivery := self._next_due()) is not None:
                try:
                    self._attempt(client, delivery)
                finally:
                    with self._cond:
                        self._in_flight -= 1

    def _next_due(self) -> _Delivery | None:
        with self._cond:
            while not self._stopping:
                if self._heap:
                    wait = self._heap[0].due - time.monotonic()
                    if wait <= 0:
                        self._in_flight += 1
                        return heapq.heappop(self._heap)
                    self._cond.wait(wait)
                else:
                    self._cond.wait()
            return None

    def _attempt(self, client: httpx.Client, delivery: _Delivery) -> None:
        status, error = self._post(client, delivery)
        ok = status is not None and 200 <= status < 300
        with self._cond:
            self._log.append(
                {
                    "event_id": delivery.event_id,
                    "endpoint_id": delivery.endpoint_id,
                    "url": delivery.url,
                    "attempt": delivery.attempt,
                    "status": status,
                    "error": error,
                    "succeeded": ok,
                    "timestamp": self.clock.now_float(),
                }
            )
            if not ok and delivery.attempt <= len(self.retry_delays):
                delivery.due = time.monotonic() + self.retry_delays[delivery.attempt - 1]
                delivery.attempt += 1
                delivery.order = next(self._counter)
                heapq.heappush(self._heap, delivery)

    def _post(self, client: httpx.Client, delivery: _Delivery) -> tuple[int | None, str | None]:
        # Re-signed on every attempt with the current time, as Stripe does.
        header = sign(delivery.payload, delivery.secret, self.clock.now())
        try:
            response = client.post(
                delivery.url,
                content=delivery.payload.encode(),
                headers={
                    "Content-Type": "application/json; charset=utf-8",
                    "Stripe-Signature": header,
                    "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                },
            )
        except httpx.HTTPError as error:
            return None, f"{type(error).__name__}: {error}"
        return response.status_code, None

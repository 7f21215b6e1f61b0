"""The emulator's state and the per-request context handlers receive.

`Emulator` owns everything that survives between requests (objects, clock, idempotency keys,
webhook dispatcher, operator controls). `RequestContext` is what one API request sees: the
store, the clock, and `emit()` to record an event the way Stripe does for each mutation.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stripe_emulator.clock import Clock
from stripe_emulator.idempotency import IdempotencyStore
from stripe_emulator.ids import new_id
from stripe_emulator.operations import FaultPlan, RateLimiter, RequestLog, Settings
from stripe_emulator.persistence import StateFile, StateFileError
from stripe_emulator.render import strip_private
from stripe_emulator.state import Store, StripeObject
from stripe_emulator.webhooks import DEFAULT_RETRY_DELAYS, WebhookDispatcher

API_VERSION = "2026-10-28.endive"

# Called with (context, old frozen time, new frozen time) when a test clock advances; later
# resources (subscriptions, invoices) register here to run renewals and trial ends.
ClockAdvanceHook = Callable[["RequestContext", StripeObject, int], None]


class Emulator:
    """All state of one emulated Stripe account (test mode)."""

    def __init__(self, *, state_file: Path | None = None) -> None:
        self.lock = threading.RLock()
        self.store = Store()
        self.clock = Clock()
        self.idempotency = IdempotencyStore()
        self.webhooks = WebhookDispatcher(self.clock)
        self.request_log = RequestLog()
        self.rate_limiter = RateLimiter()
        self.faults = FaultPlan()
        self.settings = Settings()
        self.clock_hooks: list[ClockAdvanceHook] = []
        self.state_file = StateFile(state_file, self.snapshot_text) if state_file else None
        if self.state_file is not None:
            saved = self.state_file.load()
            if saved is not None:
                try:
                    self.restore(saved)
                except (KeyError, TypeError, ValueError, AttributeError) as error:
                    problem = f"{type(error).__name__}: {error}"
                    raise StateFileError(self.state_file.path, problem) from None

    def reset(self) -> None:
        """Back to an empty account with default controls."""
        with self.lock:
            self.store.clear()
            self.idempotency.clear()
            self.webhooks.clear()
            self.webhooks.retry_delays = DEFAULT_RETRY_DELAYS
            self.request_log.clear()
            self.faults.clear()
            self.rate_limiter.configure(None)
            self.settings = Settings()
            self.clock.reset()
        self.changed()

    def changed(self) -> None:
        """Note a mutation (schedules a save when persisting)."""
        if self.state_file is not None:
            self.state_file.mark_dirty()

    def snapshot(self) -> dict[str, Any]:
        """Everything persisted: objects and the clock offset."""
        with self.lock:
            data = self.store.snapshot()
            data["clock_offset"] = self.clock.offset
            # Serialize under the lock: the snapshot shares the live objects.
            loaded: dict[str, Any] = json.loads(json.dumps(data))
            return loaded

    def snapshot_text(self) -> str:
        """`snapshot()` as compact JSON, serialized once under the lock (the state file)."""
        with self.lock:
            data = self.store.snapshot()
            data["clock_offset"] = self.clock.offset
            return json.dumps(data, separators=(",", ":"))

    def restore(self, data: dict[str, Any]) -> None:
        """Load a `snapshot()`."""
        with self.lock:
            self.store.restore(data)
            self.clock.advance(float(data.get("clock_offset", 0.0)))

    def close(self) -> None:
        """Stop background work and save the state one last time."""
        self.webhooks.stop()
        if self.state_file is not None:
            self.state_file.close()


@dataclass(slots=True)
class RequestContext:
    """One API request as handlers see it."""

    emulator: Emulator
    request_id: str
    idempotency_key: str | None
    path: str
    events: list[StripeObject] = field(default_factory=list)

    @property
    def store(self) -> Store:
        """The object store."""
        return self.emulator.store

    def now(self) -> int:
        """Emulator time, whole seconds."""
        return self.emulator.clock.now()

    def emit(
        self,
        event_type: str,
        obj: StripeObject,
        *,
        previous_attributes: dict[str, Any] | None = None,
    ) -> StripeObject:
        """Record the event Stripe emits for a mutation and queue its webhooks."""
        data: dict[str, Any] = {"object": public_copy(obj)}
        if previous_attributes is not None:
            data["previous_attributes"] = public_copy(previous_attributes)
        endpoints = _matching_endpoints(self.store, event_type)
        event: StripeObject = {
            "id": new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": self.now(),
            "data": data,
            "livemode": False,
            "pending_webhooks": len(endpoints),
            "request": {"id": self.request_id, "idempotency_key": self.idempotency_key},
            "type": event_type,
        }
        self.store.insert("event", event)
        payload = json.dumps(event, indent=2)
        for endpoint in endpoints:
            self.emulator.webhooks.enqueue(
                event_id=event["id"],
                endpoint_id=endpoint["id"],
                url=endpoint["url"],
                secret=endpoint["_secret"],
                payload=payload,
            )
        self.events.append(event)
        return event


def public_copy(obj: StripeObject) -> StripeObject:
    """A deep copy without the emulator's private `_` keys at any depth (`metadata` objects
    kept as given: `render.strip_private`)."""
    copied: StripeObject = copy.deepcopy(strip_private(obj))
    return copied


def _matching_endpoints(store: Store, event_type: str) -> list[StripeObject]:
    endpoints = store.collection("webhook_endpoint").objects.values()
    return [
        e
        for e in endpoints
        if e["status"] == "enabled"
        and ("*" in e["enabled_events"] or event_type in e["enabled_events"])
    ]

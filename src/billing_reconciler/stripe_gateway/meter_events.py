"""Meter events (`POST /v1/billing/meter_events`): the only caller of the SDK's
`client.v1.billing.meter_events`.

Each event goes out paced by the gateway's rate budget and retried like any call, under the
caller's idempotency key. Stripe enforces an event's `identifier` unique for (at least) 24
hours and refuses a second event with it: `400 invalid_request_error`, "An event already
exists with identifier ...", not retryable. For a sender whose identifiers are derived from
what it sends (a usage id, an aggregate's window) that answer is proof the event was
recorded by an earlier attempt whose answer was lost: `send_meter_event` reports it as
`duplicate`, not as an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from billing_reconciler.stripe_gateway.client import StripeGateway
from billing_reconciler.stripe_gateway.errors import (
    IdempotencyKeyReusedError,
    PermanentStripeError,
)

if TYPE_CHECKING:
    from stripe.params.billing import MeterEventCreateParams

ENDPOINT = "/v1/billing/meter_events"
#: The start of Stripe's answer to an identifier it already holds.
DUPLICATE_MESSAGE = "An event already exists with identifier"

__all__ = ["DUPLICATE_MESSAGE", "MeterEventSent", "is_duplicate", "send_meter_event"]


@dataclass(frozen=True, slots=True)
class MeterEventSent:
    """Stripe holds the event: just recorded, replayed for our key, or a duplicate of it."""

    identifier: str
    request_id: str | None
    replayed: bool
    duplicate: bool


def is_duplicate(error: PermanentStripeError) -> bool:
    """Stripe's refusal of an identifier it already holds (within its 24 h window)."""
    return (
        not isinstance(error, IdempotencyKeyReusedError)
        and error.http_status == 400
        and DUPLICATE_MESSAGE.lower() in error.message.lower()
    )


def send_meter_event(
    gateway: StripeGateway,
    *,
    event_name: str,
    identifier: str,
    timestamp: int,
    payload: Mapping[str, str],
    idempotency_key: str,
) -> MeterEventSent:
    """Send one meter event. Raises `TransientStripeError` (outcome unknown: send it again
    with the same key) or `PermanentStripeError` (Stripe refused it: e.g. a timestamp older
    than 35 days)."""
    if not idempotency_key:
        raise ValueError("every mutating Stripe call needs an idempotency key")
    params = {
        "event_name": event_name,
        "identifier": identifier,
        "timestamp": timestamp,
        "payload": dict(payload),
    }
    events = gateway.sdk.v1.billing.meter_events
    try:
        event = gateway.request(
            method="POST",
            endpoint=ENDPOINT,
            send=lambda: events.create(
                cast("MeterEventCreateParams", params), {"idempotency_key": idempotency_key}
            ),
        )
    except PermanentStripeError as error:
        if is_duplicate(error):
            return MeterEventSent(identifier, error.request_id, replayed=False, duplicate=True)
        raise
    response = event.last_response
    headers = response.headers if response is not None else {}
    replayed = next((v for k, v in headers.items() if k.lower() == "idempotent-replayed"), "")
    return MeterEventSent(
        identifier=identifier,
        request_id=response.request_id if response is not None else None,
        replayed=replayed.strip().lower() == "true",
        duplicate=False,
    )

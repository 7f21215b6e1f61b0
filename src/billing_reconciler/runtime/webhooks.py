"""The Stripe webhook receiver: verify, record durably, then hint the work queue.

`POST /v1beta1/webhooks/stripe` (DESIGN §11, STYLE 11):

1. read the raw body, at most `max_body_bytes` (else 413, nothing read further);
2. verify `Stripe-Signature` against every configured secret (rotation) and the timestamp
   against the tolerance, both sides (400 otherwise, nothing stored);
3. parse the event: a JSON object with string `id` and `type` (400 otherwise);
4. store it in the inbox, unique by event id, and commit; only then answer 200. A duplicate
   id answers 200 `{"duplicate": true}` and goes no further, so it is never processed twice;
5. enqueue the targeted reconcile `route_event` names, if any.

A store failure answers 503, which Stripe retries (for days), so an event is never both
acknowledged and lost. The payload is a hint: it is stored for audit and deduplication, and
the reconcile it triggers re-reads Stripe.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import structlog
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from billing_reconciler.config import Secret
from billing_reconciler.runtime.events import ReconcileRequest, route_event
from billing_reconciler.runtime.metrics import Metrics, RejectReason
from billing_reconciler.store import InboxRepository, Store
from billing_reconciler.stripe_gateway import (
    SIGNATURE_HEADER,
    WebhookSignatureError,
    verify_webhook_signature,
)

WEBHOOK_PATH: Final = "/v1beta1/webhooks/stripe"
DEFAULT_MAX_BODY_BYTES: Final = 256 * 1024

# Column widths of the inbox (store.tables): longer values cannot be stored as sent.
_MAX_ID_LENGTH: Final = 255
_MAX_API_VERSION_LENGTH: Final = 64

Enqueue = Callable[[ReconcileRequest], None]

_log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: Mapping[str, Any]
    request: ReconcileRequest | None = None


class _Rejected(Exception):
    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason: RejectReason = reason


@dataclass(frozen=True, slots=True)
class _Event:
    event_id: str
    event_type: str
    object_id: str | None
    livemode: bool
    api_version: str | None
    payload: Mapping[str, Any]


class WebhookReceiver:
    """Everything after the body is read; synchronous (it runs in the thread pool)."""

    def __init__(
        self,
        *,
        store: Store,
        secrets: Sequence[Secret],
        metrics: Metrics,
        tolerance_seconds: int,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._secrets = tuple(secrets)
        self._metrics = metrics
        self._tolerance = tolerance_seconds
        self._clock = clock

    def accept(self, body: bytes, signature: str | None) -> _Answer:
        """Verify, parse and store one delivery; the answer says what to send back."""
        if not self._secrets:
            # Answering 5xx keeps Stripe retrying until an operator configures a secret;
            # a 4xx would make us drop events we could verify once configured.
            _log.error("webhook refused: no webhook secrets configured")
            self._metrics.webhook("failed")
            return _Answer(503, {"error": "webhook secrets are not configured"})
        try:
            event = self._verified_event(body, signature)
        except _Rejected as rejected:
            _log.warning("webhook rejected", reason=rejected.reason, detail=str(rejected))
            self._metrics.webhook("rejected", rejected.reason)
            return _Answer(400, {"error": str(rejected)})
        try:
            stored = self._store_event(event)
        except Exception as error:
            # Only the class name: driver errors may quote a connection URL.
            _log.error("webhook not stored", event_id=event.event_id, error=type(error).__name__)
            self._metrics.webhook("failed")
            return _Answer(503, {"error": "the event could not be stored; retry later"})
        if not stored:
            _log.info("webhook duplicate", event_id=event.event_id, type=event.event_type)
            self._metrics.webhook("duplicate")
            return _Answer(200, {"received": True, "duplicate": True})
        request = route_event(event.payload)
        _log.info(
            "webhook received",
            event_id=event.event_id,
            type=event.event_type,
            domain=None if request is None else request.domain,
        )
        self._metrics.webhook("received")
        return _Answer(200, {"received": True, "duplicate": False}, request)

    def _verified_event(self, body: bytes, signature: str | None) -> _Event:
        if not signature:
            raise _Rejected("missing_signature", f"missing {SIGNATURE_HEADER} header")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise _Rejected("bad_payload", "the body is not UTF-8") from None
        try:
            verify_webhook_signature(
                payload=text,
                header=signature,
                secrets=self._secrets,
                tolerance_seconds=self._tolerance,
                now=self._clock(),
            )
        except WebhookSignatureError as error:
            reason: RejectReason = "stale" if error.reason == "stale" else "bad_signature"
            raise _Rejected(reason, str(error)) from None
        return _parse_event(text)

    def _store_event(self, event: _Event) -> bool:
        received_at = datetime.fromtimestamp(self._clock(), UTC)
        # Leaving the block commits (or raises): the caller answers 200 only after that.
        with self._store.session() as session:
            return InboxRepository(session).store_event(
                event_id=event.event_id,
                event_type=event.event_type,
                object_id=event.object_id,
                livemode=event.livemode,
                api_version=event.api_version,
                payload=event.payload,
                received_at=received_at,
            )


def _parse_event(text: str) -> _Event:
    try:
        payload = json.loads(text)
    except ValueError:
        raise _Rejected("bad_payload", "the body is not JSON") from None
    if not isinstance(payload, dict):
        raise _Rejected("bad_payload", "the body is not a JSON object")
    event_id, event_type = payload.get("id"), payload.get("type")
    for name, value in (("id", event_id), ("type", event_type)):
        if not isinstance(value, str) or not value:
            raise _Rejected("bad_payload", f"the event has no {name}")
        if len(value) > _MAX_ID_LENGTH:
            raise _Rejected("bad_payload", f"the event {name} is too long")
    assert isinstance(event_id, str)
    assert isinstance(event_type, str)
    api_version = payload.get("api_version")
    return _Event(
        event_id=event_id,
        event_type=event_type,
        object_id=_object_id(payload),
        livemode=payload.get("livemode") is True,
        api_version=(
            api_version
            if isinstance(api_version, str) and len(api_version) <= _MAX_API_VERSION_LENGTH
            else None
        ),
        payload=payload,
    )


def _object_id(payload: Mapping[str, Any]) -> str | None:
    data = payload.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    object_id = obj.get("id") if isinstance(obj, Mapping) else None
    if isinstance(object_id, str) and 0 < len(object_id) <= _MAX_ID_LENGTH:
        return object_id
    return None


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The raw body, or None as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _enqueue(enqueue: Enqueue, request: ReconcileRequest) -> None:
    try:
        enqueue(request)
    except Exception as error:
        # The event is stored and acknowledged either way; the next scheduled reconcile
        # covers what this hint would have triggered earlier.
        _log.error("enqueue failed", domain=request.domain, error=type(error).__name__)


def webhook_router(
    *,
    receiver: WebhookReceiver,
    enqueue: Enqueue,
    metrics: Metrics,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> APIRouter:
    """`POST /v1beta1/webhooks/stripe`.

    `enqueue` is called on the server's event loop after the event is committed, once per
    new event that routes; it must not block (hand the request to a queue and return).
    """
    router = APIRouter()

    @router.post(WEBHOOK_PATH)
    async def stripe_webhook(request: Request) -> JSONResponse:
        body = await _read_body(request, max_body_bytes)
        if body is None:
            _log.warning("webhook rejected", reason="too_large", limit=max_body_bytes)
            metrics.webhook("rejected", "too_large")
            return JSONResponse(
                {"error": f"the body exceeds {max_body_bytes} bytes"}, status_code=413
            )
        answer = await run_in_threadpool(
            receiver.accept, body, request.headers.get(SIGNATURE_HEADER)
        )
        if answer.request is not None:
            _enqueue(enqueue, answer.request)
        return JSONResponse(dict(answer.body), status_code=answer.status)

    return router

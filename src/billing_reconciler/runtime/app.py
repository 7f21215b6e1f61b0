"""The HTTP side of `reconcile serve`: one FastAPI app with webhooks, probes and metrics.

`create_app` only wires; the runtime core owns the store, the queue behind `enqueue`, and the
`readiness` callable, so the same app serves a leader and its followers alike (followers
store webhooks in the shared inbox too).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import structlog
from fastapi import FastAPI

from billing_reconciler.api import ApiContext, api_router, install_error_handlers
from billing_reconciler.config import Secret
from billing_reconciler.runtime.events import ReconcileRequest
from billing_reconciler.runtime.health import Readiness, health_router
from billing_reconciler.runtime.metrics import Metrics, metrics_router
from billing_reconciler.runtime.webhooks import (
    DEFAULT_MAX_BODY_BYTES,
    WEBHOOK_PATH,
    WebhookReceiver,
    webhook_router,
)
from billing_reconciler.store import Store
from billing_reconciler.stripe_gateway import DEFAULT_TOLERANCE_SECONDS

_log = structlog.get_logger(__name__)


def create_app(
    *,
    store: Store,
    webhook_secrets: Sequence[Secret],
    enqueue: Callable[[ReconcileRequest], None],
    readiness: Callable[[], Readiness],
    metrics: Metrics,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    clock: Callable[[], float] = time.time,
    api: ApiContext | None = None,
) -> FastAPI:
    """The app: `POST /v1beta1/webhooks/stripe`, `GET /healthz`, `/readyz`, `/metrics`.

    `webhook_secrets` are tried in order (newest first by convention; any match verifies).
    `clock` (unix seconds) decides signature tolerance and the inbox's `received_at`.
    With `api`, the host API (DESIGN §19, `billing_reconciler.api`) is served too.
    """
    if not webhook_secrets:
        _log.warning("no webhook secrets configured: webhook deliveries will get 503")
    app = FastAPI(
        title="billing-reconciler",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    receiver = WebhookReceiver(
        store=store,
        secrets=webhook_secrets,
        metrics=metrics,
        tolerance_seconds=tolerance_seconds,
        clock=clock,
    )
    app.include_router(
        webhook_router(
            receiver=receiver, enqueue=enqueue, metrics=metrics, max_body_bytes=max_body_bytes
        )
    )
    app.include_router(health_router(readiness))
    app.include_router(metrics_router(metrics))
    if api is not None:
        install_error_handlers(app)
        app.include_router(api_router(api))
    _log.info(
        "http app ready",
        webhook_path=WEBHOOK_PATH,
        webhook_secrets=len(webhook_secrets),
        tolerance_seconds=tolerance_seconds,
        max_body_bytes=max_body_bytes,
    )
    return app

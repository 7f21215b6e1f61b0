"""`runtime.app.create_app` serves the host API beside the probes, which need no token."""

from __future__ import annotations

from fastapi.testclient import TestClient

from billing_reconciler.api import ApiContext, ApiTokens
from billing_reconciler.config import Secret
from billing_reconciler.runtime.app import create_app
from billing_reconciler.runtime.health import Readiness
from billing_reconciler.runtime.metrics import Metrics
from billing_reconciler.store import Store
from tests.integration.api.conftest import APP, APP_TOKEN, V1


def test_create_app_serves_the_api_and_the_probes_stay_open(store: Store) -> None:
    requests: list[tuple[str, frozenset[str], str]] = []
    app = create_app(
        store=store,
        webhook_secrets=[Secret("whsec_test")],
        enqueue=lambda request: None,
        readiness=lambda: Readiness(ready=True),
        metrics=Metrics(),
        api=ApiContext(
            store=store,
            tokens=ApiTokens(app=(Secret(APP_TOKEN),)),
            request_reconcile=lambda d, s, r: requests.append((d, s, r)),
        ),
    )
    client = TestClient(app)
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.post(f"{V1}/webhooks/stripe", content=b"{}").status_code == 400
    assert client.put(f"{V1}/organizations/acme", json={"title": "A"}).status_code == 401
    assert client.put(f"{V1}/organizations/acme", json={"title": "A"}, headers=APP).is_success
    assert requests == [("customer", frozenset({"acme"}), "organization upserted")]
    missing = client.get("/nowhere")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"

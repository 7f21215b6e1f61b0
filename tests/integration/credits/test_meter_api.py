"""From the host API to Stripe: usages naming a meter, recorded through
`POST .../billing/usages`, are sent by the credits domain as meter events with the usage id
as identifier and the usage's meter timestamp (issue 12 item 2)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from fastapi import FastAPI
from fastapi.testclient import TestClient

from billing_reconciler.api import ApiContext, ApiTokens, api_router, install_error_handlers
from billing_reconciler.config import Secret
from billing_reconciler.desired import load_desired
from billing_reconciler.store import OrganizationRepository
from tests.integration.credits.conftest import COUNT, SUM, MeterWorld

APP_TOKEN = "app-token-0123456789"
ADMIN_TOKEN = "admin-token-0123456789"
ORG = "/v1beta1/organizations/acme"


def test_usages_recorded_through_the_api_become_meter_events(meters: MeterWorld) -> None:
    meters.open(["acme"])
    with meters.store.session() as session:
        OrganizationRepository(session).upsert("acme", title="Acme")
    state = load_desired(meters.directory).state
    assert state is not None
    requested: list[tuple[str, frozenset[str], str]] = []
    context = ApiContext(
        store=meters.store,
        tokens=ApiTokens(app=(Secret(APP_TOKEN),), admin=(Secret(ADMIN_TOKEN),)),
        config=lambda: state.config,
        installation_id=lambda: "test",
        request_reconcile=lambda d, s, r: requested.append((d, s, r)),
    )
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(api_router(context))
    client = TestClient(app)
    granted = client.post(
        "/v1beta1/admin/organizations/acme/billing/credits",
        json={"id": "grant-1", "amount": 1000},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert granted.status_code in (200, 201), granted.text
    at = int(time.time()) - 90
    stamp = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
    response = client.post(
        f"{ORG}/billing/usages",
        json={
            "usages": [
                {"id": "req-1", "amount": 3, "meter": {"event_name": SUM, "value": 7}},
                {"id": "req-2", "amount": 2, "meter": {"event_name": SUM, "timestamp": stamp}},
                {"id": "login-1", "amount": 1, "meter": {"event_name": COUNT}},
                {"id": "plain-1", "amount": 1},
            ]
        },
        headers={"Authorization": f"Bearer {APP_TOKEN}"},
    )
    assert response.status_code == 201, response.text
    assert ("customer", frozenset({"acme"})) in {(d, s) for d, s, _ in requested}
    meters.send()
    events = {e["identifier"]: e for e in meters.events()}
    assert set(events) == {"req-1", "req-2", "login-1"}
    customer = meters.customer("acme")
    assert events["req-1"]["payload"] == {"customer": customer, "requests": "7"}
    assert events["req-2"]["payload"] == {"customer": customer, "requests": "2"}  # the amount
    assert events["req-2"]["timestamp"] == at
    assert events["login-1"]["payload"] == {"stripe_customer_id": customer, "value": "1"}
    assert meters.depth() == (0, 0)

"""The host API of a `World` (conftest): a TestClient of the app on the world's store and
billing.yaml, with an app and an admin token, recording the reconciles it asks for (the test
runs them: `world.reconcile(...)`)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from billing_reconciler.api import ApiContext, ApiTokens, api_router, install_error_handlers
from billing_reconciler.config import Secret
from billing_reconciler.desired import load_desired

from .conftest import World

APP_TOKEN = "app-token-0123456789"
ADMIN_TOKEN = "admin-token-0123456789"
APP = {"Authorization": f"Bearer {APP_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
V1 = "/v1beta1"


class Host:
    """See the module docstring. `installation_id` is the world's (`test`)."""

    def __init__(self, world: World) -> None:
        result = load_desired(world.directory)
        assert result.state is not None, [str(d) for d in result.diagnostics]
        config = result.state.config
        self.reconciles: list[frozenset[str]] = []

        def request(domain: str, scope: frozenset[str], reason: str) -> None:
            del domain, reason
            self.reconciles.append(scope)

        context = ApiContext(
            store=world.store,
            tokens=ApiTokens(app=(Secret(APP_TOKEN),), admin=(Secret(ADMIN_TOKEN),)),
            config=lambda: config,
            installation_id=lambda: "test",
            request_reconcile=request,
        )
        app = FastAPI()
        install_error_handlers(app)
        app.include_router(api_router(context))
        self.client = TestClient(app, raise_server_exceptions=True)

    def close(self) -> None:
        self.client.close()

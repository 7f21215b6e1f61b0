"""The host API on a real store: every test runs on a SQLite file and on PostgreSQL.

`api` is a FastAPI TestClient of an app serving only the API, with an app token, an admin
token, a settable billing.yaml (`api.configure(...)`) and a record of the reconciles it asked
for. `dump(store)` is every row of every table, to assert a refused request wrote nothing;
`refused(...)` sends a request and asserts it was refused that way and wrote nothing; `acme`
is an org with an online usd account (its id).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from billing_reconciler.api import ApiContext, ApiTokens, api_router, install_error_handlers
from billing_reconciler.config import BillingConfig, Secret
from billing_reconciler.store import Store
from billing_reconciler.store.tables import Base
from tests.fixtures.stores import store_database_url

APP_TOKEN = "app-token-0123456789"
OLD_APP_TOKEN = "app-token-old-98765"
ADMIN_TOKEN = "admin-token-0123456789"
APP = {"Authorization": f"Bearer {APP_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
V1 = "/v1beta1"
ORG = f"{V1}/organizations/acme"
GRANT = f"{V1}/admin/organizations/acme/billing/credits"
DETAILS = f"{V1}/admin/organizations/acme/billing/details"


@dataclass
class Settings:
    config: BillingConfig = field(default_factory=BillingConfig)
    live_mode: bool = False
    reconciles: list[tuple[str, frozenset[str], str]] = field(default_factory=list)
    ticket: Callable[[], object] | None = None
    """What `request_reconcile` answers (default None: nothing to wait for)."""

    def request_reconcile(self, domain: str, scope: frozenset[str], reason: str) -> object:
        self.reconciles.append((domain, scope, reason))
        return None if self.ticket is None else self.ticket()

    def configure(self, **customer: Any) -> None:
        self.config = BillingConfig.model_validate({"billing": {"customer": customer}})


class Api(TestClient):
    settings: Settings
    store: Store


TOKENS = ApiTokens(app=(Secret(APP_TOKEN), Secret(OLD_APP_TOKEN)), admin=(Secret(ADMIN_TOKEN),))


def api_context(store: Store, settings: Settings) -> ApiContext:
    return ApiContext(
        store=store,
        tokens=TOKENS,
        config=lambda: settings.config,
        installation_id=lambda: "default",
        live_mode=settings.live_mode,
        request_reconcile=settings.request_reconcile,
    )


def _app(context: ApiContext) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(api_router(context))
    return app


def build_app(store: Store, settings: Settings) -> FastAPI:
    """A new app of the API on `store` (building its routes takes a tenth of a second)."""
    return _app(api_context(store, settings))


class CurrentContext:
    """Stands for the `ApiContext` of the test running now in the one app of the `api`
    fixture a session builds: its routes read the context per request (`context.store`, ...),
    and build-time reads are of the tokens only, the same `TOKENS` in every test. So each test
    still gets an API on its own store and settings, without building every route again."""

    def __init__(self) -> None:
        self.tokens = TOKENS
        self.current: ApiContext | None = None

    def __getattr__(self, name: str) -> Any:
        if self.current is None:
            raise RuntimeError(f"no test's API context to read {name!r} from")
        return getattr(self.current, name)


@pytest.fixture(scope="session")
def _shared_api_app() -> tuple[FastAPI, CurrentContext]:
    current = CurrentContext()
    return _app(cast(ApiContext, current)), current


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    # A test with the `store` fixture gets a copy of a migrated template (what `Store.open`
    # makes of an empty database: tests/fixtures/stores.py), opened at once; a test of the URL
    # alone gets an empty database (no file) to open itself.
    migrated = "store" in request.fixturenames
    return store_database_url(request, tmp_path / ".billing" / "state.db", migrated=migrated)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = Store.open(database_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def settings() -> Settings:
    return Settings()


@pytest.fixture
def api(
    store: Store, settings: Settings, _shared_api_app: tuple[FastAPI, CurrentContext]
) -> Iterator[Api]:
    app, context = _shared_api_app
    context.current = api_context(store, settings)
    client = Api(app, raise_server_exceptions=True)
    client.settings = settings
    client.store = store
    try:
        yield client
    finally:
        client.close()
        context.current = None


def dump(store: Store) -> dict[str, list[str]]:
    """Every row of every table (as text, sorted): equal dumps mean nothing was written."""
    rows: dict[str, list[str]] = {}
    with store.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            rows[table.name] = sorted(repr(tuple(r)) for r in connection.execute(select(table)))
    return rows


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    error: dict[str, Any] = body["error"]
    return error


@pytest.fixture
def acme(api: Api) -> str:
    """The org `acme` with an explicitly created usd account; the account's id."""
    assert api.put(ORG, json={"title": "Acme"}, headers=APP).status_code == 201
    created = api.post(f"{ORG}/billing", json={"currency": "usd"}, headers=APP)
    assert created.status_code == 201, created.text
    account_id: str = created.json()["id"]
    return account_id


def refused(
    api: Api,
    method: str,
    path: str,
    *,
    status: int,
    code: str,
    field: str | None = None,
    headers: dict[str, str] = APP,
    **request: Any,
) -> dict[str, Any]:
    """Send the request; assert the status, the code, the field named, no traceback, and
    that the store is exactly as before. The error object."""
    before = dump(api.store)
    response = api.request(method, path, headers=headers, **request)
    assert response.status_code == status, response.text
    error = error_of(response)
    assert error["code"] == code, error
    if field is not None:
        assert error["details"]["field"] == field, error
    assert "Traceback" not in response.text
    assert dump(api.store) == before
    return error

"""Every store test runs twice: on a SQLite file and on a fresh PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from billing_reconciler.store import RunMode, RunRepository, Store
from tests.fixtures.stores import store_database_url


class FakeClock:
    """An injectable clock that only moves when told to."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


# Their `store` is migrated from empty by `Store.open`, as in production.
MIGRATED_PER_TEST = ("test_migrations.py",)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    # A test with the `store` fixture gets a copy of a migrated template (what `Store.open`
    # makes of an empty database: tests/fixtures/stores.py), opened at once; a test of the URL
    # alone, and every test of MIGRATED_PER_TEST, gets an empty database (no file).
    migrated = "store" in request.fixturenames and request.path.name not in MIGRATED_PER_TEST
    return store_database_url(request, tmp_path / ".billing" / "state.db", migrated=migrated)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = Store.open(database_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC))


@pytest.fixture
def run_id(store: Store) -> str:
    """A started run, for journal rows to refer to."""
    with store.session() as session:
        return RunRepository(session).start(domain="catalog", mode=RunMode.APPLY, actor="t@h")

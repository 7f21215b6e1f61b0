"""Every store test runs twice: on a SQLite file and on a fresh PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from billing_reconciler.store import RunMode, RunRepository, Store


class FakeClock:
    """An injectable clock that only moves when told to."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/.billing/state.db"
    url: str = request.getfixturevalue("postgres_database_url")
    return url


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

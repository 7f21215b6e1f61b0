"""Migrations: empty -> head, idempotent re-open, and exactly the tables the models declare."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from billing_reconciler.store import (
    ControllerStateRepository,
    Store,
    current_revision,
    head_revision,
    normalize_url,
)
from billing_reconciler.store.database import alembic_config
from billing_reconciler.store.tables import Base


def test_open_migrates_an_empty_database_to_head(database_url: str) -> None:
    url = normalize_url(database_url)
    if url.get_backend_name() == "sqlite":
        Path(str(url.database)).parent.mkdir(parents=True)
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            assert current_revision(connection) is None
    finally:
        engine.dispose()

    with Store.open(database_url) as store, store.engine.connect() as connection:
        assert current_revision(connection) == head_revision()
        tables = set(inspect(connection).get_table_names())
    assert tables == set(Base.metadata.tables) | {"alembic_version"}


def test_migrations_produce_exactly_the_declared_schema(store: Store) -> None:
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_reopening_is_idempotent_and_keeps_rows(database_url: str) -> None:
    with Store.open(database_url) as store, store.session() as session:
        session.execute(
            text("INSERT INTO controller_state (key, value, updated_at) VALUES ('k', '{}', :t)"),
            {"t": "2025-01-01 00:00:00"},
        )
    identities = set()
    for _ in range(2):
        with Store.open(database_url) as store, store.session() as session:
            keys = session.execute(text("SELECT key FROM controller_state ORDER BY key")).all()
            # Our row, and the store's identity (migration 0003), made once and kept.
            assert [row[0] for row in keys] == ["k", "store_id"]
            identities.add(ControllerStateRepository(session).store_id())
            versions = session.execute(text("SELECT version_num FROM alembic_version")).all()
            assert [row[0] for row in versions] == [head_revision()]
    assert len(identities) == 1
    assert "" not in identities


def test_sqlite_creates_its_directory_and_runs_in_wal_with_foreign_keys(tmp_path: Path) -> None:
    path = tmp_path / "deep" / ".billing" / "state.db"
    with Store.open(f"sqlite:///{path}") as store, store.engine.connect() as connection:
        assert path.exists()
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
        assert store.ping()


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgres://u@h:5432/db", "postgresql+psycopg"),
        ("postgresql://u@h:5432/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h:5432/db", "postgresql+psycopg"),
        ("sqlite:///x/state.db", "sqlite"),
    ],
)
def test_urls_are_normalized_to_psycopg(given: str, driver: str) -> None:
    assert normalize_url(given).drivername == driver


def test_unsupported_backends_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        normalize_url("mysql://u@h/db")


def test_replicas_opening_at_once_migrate_once(database_url: str) -> None:
    barrier = threading.Barrier(3)

    def open_and_close(_: int) -> str | None:
        barrier.wait(timeout=10)
        with Store.open(database_url) as store, store.engine.connect() as connection:
            return current_revision(connection)

    with ThreadPoolExecutor(max_workers=3) as pool:
        assert list(pool.map(open_and_close, range(3))) == [head_revision()] * 3


def test_0005_downgrades_to_0004_and_upgrades_again(database_url: str) -> None:
    """0005 (subscriptions) removes exactly its tables on downgrade, keeps 0004's rows, and
    upgrading again restores the declared schema."""
    subscription_tables = {"subscription_intents", "subscriptions", "subscription_plan_history"}
    later_tables = subscription_tables | CREDIT_TABLES | CHECKOUT_TABLES
    with Store.open(database_url) as store:
        with store.session() as session:
            session.execute(
                text(
                    "INSERT INTO organizations (org_id, title, metadata, created_at, updated_at)"
                    " VALUES ('org-1', 'Acme', '{}', '2025-01-01 00:00:00', '2025-01-01 00:00:00')"
                )
            )
        with store.engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0004")
        with store.engine.connect() as connection:
            assert current_revision(connection) == "0004"
            tables = set(inspect(connection).get_table_names())
            assert tables == set(Base.metadata.tables) - later_tables | {"alembic_version"}
            orgs = connection.execute(text("SELECT org_id FROM organizations")).all()
            assert [row[0] for row in orgs] == ["org-1"]
    with Store.open(database_url) as store, store.engine.connect() as connection:
        assert current_revision(connection) == head_revision()
        assert subscription_tables <= set(inspect(connection).get_table_names())
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


CREDIT_TABLES = {"meter_outbox", "meter_aggregates", "overdraft_windows"}
CHECKOUT_TABLES = {"checkouts", "purchases", "invoices", "payment_failures"}


def test_0006_downgrades_to_0005_and_upgrades_again(database_url: str) -> None:
    """0006 (credits) removes exactly its tables and the `reverts` column on downgrade, keeps
    the ledger's rows, and upgrading again restores the declared schema."""
    with Store.open(database_url) as store:
        with store.session() as session:
            session.execute(
                text(
                    "INSERT INTO organizations (org_id, title, metadata, created_at, updated_at)"
                    " VALUES ('org-1', 'Acme', '{}', '2025-01-01 00:00:00', '2025-01-01 00:00:00')"
                )
            )
        with store.engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0005")
        with store.engine.connect() as connection:
            assert current_revision(connection) == "0005"
            tables = set(inspect(connection).get_table_names())
            assert tables == set(Base.metadata.tables) - CREDIT_TABLES - CHECKOUT_TABLES | {
                "alembic_version"
            }
            columns = {c["name"] for c in inspect(connection).get_columns("ledger_transactions")}
            assert "reverts" not in columns
            assert "content_hash" in columns
            orgs = connection.execute(text("SELECT org_id FROM organizations")).all()
            assert [row[0] for row in orgs] == ["org-1"]
    with Store.open(database_url) as store, store.engine.connect() as connection:
        assert current_revision(connection) == head_revision()
        assert set(inspect(connection).get_table_names()) >= CREDIT_TABLES
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_0007_downgrades_to_0006_and_upgrades_again(database_url: str) -> None:
    """0007 (checkouts, purchases, invoices, failed payments) removes exactly its tables on
    downgrade, keeps the earlier rows, and upgrading again restores the declared schema."""
    with Store.open(database_url) as store:
        with store.session() as session:
            session.execute(
                text(
                    "INSERT INTO organizations (org_id, title, metadata, created_at, updated_at)"
                    " VALUES ('org-1', 'Acme', '{}', '2025-01-01 00:00:00', '2025-01-01 00:00:00')"
                )
            )
        with store.engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0006")
        with store.engine.connect() as connection:
            assert current_revision(connection) == "0006"
            tables = set(inspect(connection).get_table_names())
            assert tables == set(Base.metadata.tables) - CHECKOUT_TABLES | {"alembic_version"}
            orgs = connection.execute(text("SELECT org_id FROM organizations")).all()
            assert [row[0] for row in orgs] == ["org-1"]
    with Store.open(database_url) as store, store.engine.connect() as connection:
        assert current_revision(connection) == head_revision()
        assert set(inspect(connection).get_table_names()) >= CHECKOUT_TABLES
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []

"""`Store.open_existing`: the store of the read-only and control commands, never created."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from billing_reconciler.store import ControllerStateRepository, Store, head_revision
from billing_reconciler.store.database import StoreNotFoundError


def test_a_missing_sqlite_file_or_directory_is_not_created(tmp_path: Path) -> None:
    for missing in (tmp_path / "state.db", tmp_path / "no" / "dir" / "state.db"):
        with pytest.raises(StoreNotFoundError) as raised:
            Store.open_existing(f"sqlite:///{missing}")
        assert str(raised.value) == f"no store at {missing}"
        assert raised.value.location == str(missing)
    with pytest.raises(StoreNotFoundError, match="no store at sqlite://"):
        Store.open_existing("sqlite://")
    assert list(tmp_path.iterdir()) == []


def test_a_sqlite_file_without_our_schema_is_left_untouched(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(StoreNotFoundError):
        Store.open_existing(f"sqlite:///{empty}")
    assert list(tmp_path.iterdir()) == [empty]
    assert empty.stat().st_size == 0


def test_an_existing_store_opens(database_url: str) -> None:
    Store.open(database_url).close()
    with Store.open_existing(database_url) as store:
        with store.session() as session:
            ControllerStateRepository(session).suspend("incident", "oncall")
        with store.engine.connect() as connection:
            revision = connection.execute(text("SELECT version_num FROM alembic_version"))
            assert revision.scalar_one() == head_revision()


@pytest.mark.postgres
def test_a_postgresql_database_without_our_schema_is_not_migrated(
    postgres_database_url: str,
) -> None:
    # Trust auth ignores the password; the error never names it.
    with_password = make_url(postgres_database_url).set(password="s3cret-pw")
    with pytest.raises(StoreNotFoundError) as raised:
        Store.open_existing(with_password.render_as_string(hide_password=False))
    assert raised.value.location == with_password.render_as_string(hide_password=True)
    assert "s3cret-pw" not in str(raised.value)
    engine = create_engine(postgres_database_url)
    try:
        with engine.connect() as connection:
            tables = connection.execute(
                text(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                )
            ).all()
    finally:
        engine.dispose()
    assert tables == []

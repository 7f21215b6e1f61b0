"""Opening the store: engine setup per backend, migrations to head, one transaction per session.

`Store.open` creates the store when it is missing (a SQLite file and its directory, or the
schema in an empty PostgreSQL database); the commands that apply use it. `Store.open_existing`
never creates one: a SQLite file that does not exist, or a database without our schema (no
Alembic version), is a `StoreNotFoundError` and nothing is written; the read-only and control
commands (`status`, `suspend`, `resume`) use it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Self

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from billing_reconciler.store.types import canonical_json

DEFAULT_SQLITE_PATH = Path(".billing") / "state.db"

# How long SQLite waits for another writer before giving up with "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 10_000

# Serializes concurrent `Store.open` migrations on one PostgreSQL database (several replicas
# starting together); an arbitrary constant, "BRMIGRAT" in ASCII.
MIGRATION_LOCK_ID = 0x42524D4947524154


# Execution option naming how SQLite transactions begin (DEFERRED or IMMEDIATE).
SQLITE_BEGIN_OPTION = "sqlite_begin"


class AutocommitConnections:
    """The idle autocommit connections (psycopg's own, async) of each event loop, for
    `Store.statement()`: at most `size` at once per loop (a request beyond waits for one),
    at most `size` kept idle. A connection whose statement failed in a way that may have left
    it unusable (anything but a refusal of the statement, e.g. a unique violation) is closed,
    not kept. Per loop, because an asyncio connection belongs to the loop that opened it
    (`serve` has one loop for its life; a test client has one per client, or per request);
    the idle connections of a loop that has ended are closed at the next use, and all of them
    by `close()`."""

    def __init__(self, url: URL, size: int = 16) -> None:
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._size = size
        self._loops: dict[
            asyncio.AbstractEventLoop,
            tuple[asyncio.Semaphore, list[psycopg.AsyncConnection[Any]]],
        ] = {}

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        loop = asyncio.get_running_loop()
        found = self._loops.get(loop)
        if found is None:
            self._forget_ended_loops()
            found = self._loops[loop] = (asyncio.Semaphore(self._size), [])
        slots, idle = found
        async with slots:
            connection = idle.pop() if idle else None
            if connection is None or connection.closed:
                connection = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, options="-c timezone=UTC"
                )
            reusable = False
            try:
                yield connection
                reusable = True
            except psycopg.errors.IntegrityError:
                reusable = True  # the statement was refused; the connection is fine
                raise
            finally:
                ok = connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                if reusable and ok and not connection.closed and len(idle) < self._size:
                    idle.append(connection)
                else:
                    await connection.close()

    def _forget_ended_loops(self) -> None:
        for loop in [loop for loop in list(self._loops) if loop.is_closed()]:
            _, idle = self._loops.pop(loop)
            _finish(idle)

    def close(self) -> None:
        """Close every idle connection (from any thread: libpq's own close, no loop needed)."""
        loops, self._loops = self._loops, {}
        for _, idle in loops.values():
            _finish(idle)


def _finish(connections: list[psycopg.AsyncConnection[Any]]) -> None:
    for connection in connections:
        connection.pgconn.finish()
    connections.clear()


class StoreNotFoundError(Exception):
    """There is no store at the URL: no such SQLite file, or a database without our schema."""

    def __init__(self, location: str) -> None:
        super().__init__(f"no store at {location}")
        self.location = location


def default_sqlite_url(base_dir: Path) -> str:
    """The default store: `<base_dir>/.billing/state.db`."""
    return f"sqlite:///{(base_dir / DEFAULT_SQLITE_PATH).resolve()}"


def normalize_url(url: str) -> URL:
    """Parse a database URL; `postgres://` and `postgresql://` mean psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported database backend {parsed.get_backend_name()!r}")
    return parsed


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _sqlite_has_schema(path: Path) -> bool | None:
    """Whether the SQLite file holds our schema (an Alembic version table), read without
    writing to it; None when a read-only look cannot tell (the engine then reports why)."""
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        found = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
        ).fetchone()
    except sqlite3.Error:
        return None
    finally:
        connection.close()
    return found is not None


def _create_engine(url: URL) -> Engine:
    if url.get_backend_name() == "postgresql":
        return create_engine(
            url,
            json_serializer=canonical_json,
            pool_pre_ping=True,
            connect_args={"options": "-c timezone=UTC"},
        )
    path = _sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, json_serializer=canonical_json)
    _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite defers BEGIN until the first write and never begins for reads, which breaks
    # read-then-write transactions between processes. We take over transaction control.
    # `Store.session()` begins IMMEDIATE: the write lock is taken up front (waiting up to the
    # busy timeout), so a transaction never fails half-way because another writer got in
    # between (in WAL a reader that later writes gets SQLITE_BUSY without waiting). Plain
    # connections (migrations aside, probes) begin DEFERRED and never wait for writers.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            _enable_wal(cursor)
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def _enable_wal(cursor: Any) -> None:
    """Switch the file to WAL (persistent, so usually already done).

    Changing the journal mode needs an exclusive lock and ignores busy_timeout: when several
    processes open a new database at once, all but one get "database is locked" at once.
    Retry for as long as the busy timeout would have waited.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _migrations_dir() -> str:
    return str(resources.files("billing_reconciler.store") / "migrations")


def alembic_config(connection: Connection | None = None, *, url: str | None = None) -> Config:
    """An Alembic config for the packaged migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", _migrations_dir())
    if url is not None:
        config.set_main_option("sqlalchemy.url", normalize_url(url).render_as_string(False))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration shipped with this version of the code."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the store ships at least one migration"
    return head


def current_revision(connection: Connection) -> str | None:
    """The migration a database is at; None for an empty database."""
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade_to_head(engine: Engine) -> None:
    immediate = engine.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
    with immediate.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        if current_revision(connection) != head_revision():
            command.upgrade(alembic_config(connection), "head")


class Store:
    """The local store: owns the engine; hands out one transaction per `session()`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._statements: AutocommitConnections | None = None
        writer = engine.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        self._sessions = sessionmaker(writer, expire_on_commit=False, autoflush=True)

    @classmethod
    def open(cls, url: str) -> Self:
        """Connect to `url` (SQLite file or PostgreSQL) and migrate the schema to head."""
        engine = _create_engine(normalize_url(url))
        try:
            _upgrade_to_head(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @classmethod
    def open_existing(cls, url: str) -> Self:
        """Connect to the store at `url` and migrate it to head, only if it exists: a SQLite
        file that does not exist (nor its directory) is never created, an empty database never
        migrated; either is a `StoreNotFoundError` naming the location (password hidden)."""
        parsed = normalize_url(url)
        location = parsed.render_as_string(hide_password=True)
        if parsed.get_backend_name() == "sqlite":
            path = _sqlite_file(parsed)
            if path is None or not path.is_file():
                # An in-memory database is always a new, empty one.
                raise StoreNotFoundError(location if path is None else str(path))
            location = str(path)
            if _sqlite_has_schema(path) is False:
                # Said before the engine's first connection switches the file to WAL.
                raise StoreNotFoundError(location)
        engine = _create_engine(parsed)
        try:
            with engine.connect() as connection:
                revision = current_revision(connection)
            if revision is None:
                raise StoreNotFoundError(location)
            _upgrade_to_head(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def backend(self) -> str:
        """`sqlite` or `postgresql`."""
        return self._engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._sessions.begin() as session:
            yield session

    @asynccontextmanager
    async def statement(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """PostgreSQL: an autocommit connection of the running event loop, for a hot path whose
        whole write is one statement (its own transaction: no BEGIN or COMMIT round trip),
        run on the loop itself, not on a worker thread. `AutocommitConnections` keeps them."""
        if self._statements is None:
            if self.backend != "postgresql":
                raise RuntimeError("Store.statement() is PostgreSQL's")
            self._statements = AutocommitConnections(self._engine.url)
        async with self._statements.connection() as connection:
            yield connection

    def ping(self) -> bool:
        """True when the database answers (for readiness probes)."""
        try:
            with self._engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    def close(self) -> None:
        if self._statements is not None:
            self._statements.close()
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

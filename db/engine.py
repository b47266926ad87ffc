"""The engine and its sessions, configured the same way for SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from db.publish import Publisher, collect_changes

SQLITE_BUSY_TIMEOUT_MS = 30_000
WRITE_OPTION = "paystream_write"


def normalize_database_url(url: str) -> str:
    """Pick the async driver for plain `sqlite://` and `postgresql://` URLs."""
    parsed = make_url(url)
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    return url


def _configure_sqlite(engine: AsyncEngine) -> None:
    # WAL lets readers run beside the one writer; the busy timeout makes a second writer
    # wait instead of failing with "database is locked".
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    # A write transaction takes the write lock at BEGIN. A deferred transaction that reads
    # first and writes later cannot wait for the lock on upgrade, so SQLite would fail it
    # with "database is locked" no matter the busy timeout.
    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(WRITE_OPTION):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")


class Database:
    """The engine, read and write sessions, and the publisher that runs after each commit."""

    def __init__(self, url: str, publisher: Publisher | None = None) -> None:
        self.url = normalize_database_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        options: dict[str, Any] = {}
        if not self.is_sqlite:
            # No pre-ping: on asyncpg it costs three round trips per checkout. A connection
            # that died with its server fails one transaction and is then replaced.
            options.update(pool_size=10, max_overflow=20, pool_recycle=1800)
        self.engine = create_async_engine(self.url, **options)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.publisher = publisher
        # Entries every write session starts with in `session.info`, so that domain code
        # reaches process-wide helpers (the hook outbox) through the session it is given.
        self.session_info: dict[str, Any] = {}
        # SQLite has one writer at a time. Queueing this process's writers here, instead of
        # in SQLite's busy handler (which sleeps and polls), keeps waits short and fair;
        # other processes on the same file still wait through the busy timeout.
        self._sqlite_writer = asyncio.Lock() if self.is_sqlite else None

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """Open a session for reads; nothing it changes is committed."""
        async with self.sessions() as session:
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """Run a write transaction: commit on success, roll back on error, then publish.

        Every row inserted or changed is published once, after the commit succeeded.
        """
        async with self._writer_turn(), self.engine.connect() as connection:
            connection = await connection.execution_options(**{WRITE_OPTION: True})
            async with AsyncSession(bind=connection, expire_on_commit=False) as session:
                session.info.update(self.session_info)
                collect_changes(session)
                async with session.begin():
                    yield session
                changes = session.info.pop("changes", {})
        if self.publisher is not None and changes:
            await self.publisher.publish(changes.values())

    @asynccontextmanager
    async def _writer_turn(self) -> AsyncIterator[None]:
        if self._sqlite_writer is None:
            yield
            return
        async with self._sqlite_writer:
            yield

    async def dispose(self) -> None:
        await self.engine.dispose()

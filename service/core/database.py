"""The async SQLAlchemy engine and session factory (PostgreSQL in production, SQLite embedded)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from service.core.settings import Settings

T = TypeVar("T")

# A write that a caller adds to a service's transaction: called with the service's result right
# before its commit, so the two are stored together or not at all (the answer kept with an
# Idempotency-Key, for one).
BeforeCommit = Callable[[AsyncSession, T], Awaitable[None]]


def create_engine(settings: Settings) -> AsyncEngine:
    """Build the engine for the configured database, tuned for its dialect."""
    url = settings.resolved_database_url
    if settings.is_sqlite:
        db_path = url.split("///", 1)[-1]
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=True,
        pool_recycle=1800,
    )


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    # WAL lets readers run beside the single writer; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def pool_in_use(engine: AsyncEngine) -> int:
    """Connections currently checked out (0 for pools that do not count)."""
    checkedout = getattr(engine.pool, "checkedout", None)
    return int(checkedout()) if callable(checkedout) else 0


async def session_scope(
    factory: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One session per unit of work; rolled back if the work fails."""
    async with factory() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise

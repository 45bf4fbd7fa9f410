"""Alembic migrations and the function that applies them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from service.core.database import create_engine
from service.core.settings import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


class DatabaseUnreachable(RuntimeError):
    """The database did not accept a connection before the deadline."""


def wait_for_database(settings: Settings, timeout: float, interval: float = 1.0) -> None:
    """Return once the database accepts a connection, retrying for `timeout` seconds: a
    migration Job may start before its database (both are created together on Kubernetes)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            asyncio.run(_select_one(settings))
            return
        except (OSError, DBAPIError) as exc:
            if time.monotonic() + interval > deadline:
                raise DatabaseUnreachable(f"{exc.__class__.__name__}: {exc}") from exc
            time.sleep(interval)


async def _select_one(settings: Settings) -> None:
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (blocking: call it in a thread from async code)."""
    url = settings.resolved_database_url
    if settings.is_sqlite:
        Path(url.split("///", 1)[-1]).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)


async def upgrade_async(settings: Settings, revision: str = "head") -> None:
    await asyncio.to_thread(upgrade, settings, revision)

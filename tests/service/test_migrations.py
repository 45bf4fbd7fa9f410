"""The Alembic migrations build exactly the schema the models declare, on both databases."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from service.core.database import create_engine
from service.core.settings import Settings
from service.migrations import upgrade_async
from service.models import Base


async def test_migrations_at_head_match_the_models(settings: Settings) -> None:
    await upgrade_async(settings)
    engine = create_engine(settings)

    def differences(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    try:
        async with engine.connect() as connection:
            diff = await connection.run_sync(differences)
    finally:
        await engine.dispose()
    assert diff == [], f"models and migrations differ: {diff}"

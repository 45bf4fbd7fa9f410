"""The Alembic migrations build exactly the schema the models declare, on both databases, and
`storefront migrate` waits for a database that is not up yet."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from service.core.database import create_engine
from service.core.settings import Settings
from service.migrations import DatabaseUnreachable, upgrade_async, wait_for_database
from service.models import Base
from tests.components.ports import free_port
from tests.components.process import clean_environment


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


def test_migrate_waits_for_the_database_and_says_when_it_never_came() -> None:
    """A migration Job can start before its database: `storefront migrate` retries, then ends
    with one line naming the database, not a traceback."""
    port = free_port()  # nothing listens there
    env = {**clean_environment(), "STOREFRONT_ENVIRONMENT": "test",
           "STOREFRONT_DATABASE_URL": f"postgresql://shop:pw@127.0.0.1:{port}/shop"}  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "migrate", "--wait", "2"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert time.monotonic() - started >= 2
    assert f"no database at 127.0.0.1:{port}/shop after 2 s" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.postgres
def test_migrate_goes_ahead_once_the_database_answers(postgres_url: str) -> None:
    settings = Settings(environment="test", database_url=postgres_url)
    wait_for_database(settings, timeout=30)
    with pytest.raises(DatabaseUnreachable):
        wait_for_database(
            Settings(environment="test",
                     database_url=f"postgresql://shop:pw@127.0.0.1:{free_port()}/shop"),
            timeout=1, interval=0.2,
        )  # fmt: skip

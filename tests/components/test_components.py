"""Smoke tests proving each real-component fixture starts and answers."""

from __future__ import annotations

import asyncpg
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from tests.components.ports import free_port
from tests.components.postgres import PostgresDatabase, PostgresServer
from tests.components.prometheus import PrometheusServer


@pytest.mark.redis
async def test_redis_set_get(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        await client.set("storefront:smoke", "ok")
        assert await client.get("storefront:smoke") == b"ok"
    finally:
        await client.aclose()


@pytest.mark.redis
def test_redis_url_starts_empty(redis_url: str) -> None:
    import redis as redis_sync

    with redis_sync.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0


@pytest.mark.postgres
async def test_postgres_fresh_database(
    postgres_database: PostgresDatabase, postgres_url: str
) -> None:
    assert postgres_url.startswith("postgresql+asyncpg://")
    assert postgres_url.endswith(f"/{postgres_database.name}")
    conn = await asyncpg.connect(postgres_database.dsn)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval("SELECT current_database()") == postgres_database.name
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname='public'") == 0
    finally:
        await conn.close()


@pytest.mark.postgres
def test_postgres_server_runs_as_non_root(postgres_server: PostgresServer) -> None:
    out = postgres_server.psql("SELECT current_setting('fsync'), version()")
    assert out.startswith("off|PostgreSQL ")


@pytest.mark.prometheus
@pytest.mark.slow
def test_prometheus_scrapes_itself_and_given_targets(prometheus_server: PrometheusServer) -> None:
    prometheus_server.wait_for_targets_up(job="prometheus")
    up = prometheus_server.wait_for_query('up{job="prometheus"}')
    assert up[0]["value"][1] == "1"

    # An exporter of our own, then point the session Prometheus at it.
    registry = CollectorRegistry()
    Gauge("storefront_smoke_value", "smoke test gauge", registry=registry).set(42)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        prometheus_server.set_targets([f"127.0.0.1:{port}"])
        prometheus_server.wait_for_targets_up(job="storefront", count=1)
        result = prometheus_server.wait_for_query("storefront_smoke_value")
        assert result[0]["value"][1] == "42"
        assert result[0]["metric"]["job"] == "storefront"
    finally:
        prometheus_server.set_targets([])
        server.shutdown()
        thread.join(timeout=5)

"""Fixtures for the worker suite: settings on a real Redis, an in-process worker on a StubBroker,
and real ``storefront worker`` / ``storefront scheduler`` subprocesses."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker

from service.core.settings import Settings
from tests.components.process import REPO_ROOT, ManagedProcess, clean_environment
from worker.broker import build_broker
from worker.settings import WorkerSettings

JWT_SECRET = "test-secret-that-is-long-enough-for-hs256!"


def base_env(redis_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment of a worker or scheduler subprocess for a test."""
    env = clean_environment()
    env.update(
        {
            "STOREFRONT_ENVIRONMENT": "test",
            "STOREFRONT_JWT_SECRET": JWT_SECRET,
            "STOREFRONT_REDIS_URL": redis_url,
            "STOREFRONT_DATA_DIR": str(data_dir),
            "STOREFRONT_LOG_FORMAT": "json",
            "STOREFRONT_WORKER_METRICS_PORT": "0",
            "STOREFRONT_WORKER_SCHEDULER_METRICS_PORT": "0",
            "STOREFRONT_WORKER_MIN_BACKOFF_MS": "100",
            "STOREFRONT_WORKER_MAX_BACKOFF_MS": "400",
            "STOREFRONT_WORKER_HEARTBEAT_TIMEOUT_MS": "2000",
            "STOREFRONT_WORKER_HEARTBEAT_INTERVAL_MS": "500",
            "STOREFRONT_WORKER_SHUTDOWN_TIMEOUT_SECONDS": "10",
        }
    )
    env.update(extra)
    return env


def wait_for(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


async def wait_for_async(
    predicate: Callable[[], Awaitable[Any]], seconds: float, interval: float = 0.1, what: str = ""
) -> Any:
    """:func:`wait_for` for a coroutine predicate, sleeping without blocking the event loop."""
    deadline = time.monotonic() + seconds
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what or predicate}")
        await asyncio.sleep(interval)


def start_storefront(
    command: str, log_path: Path, env: dict[str, str], *args: str, ready: str = ""
) -> ManagedProcess:
    """Start ``storefront <command>`` and wait for its ``ready`` log line."""
    process = ManagedProcess(
        f"storefront {command}",
        [sys.executable, "-m", "service.cli", command, *args],
        log_path,
        env=env,
        cwd=REPO_ROOT,
    ).start()
    if ready:
        process.wait_ready(lambda: ready in log_path.read_text(errors="replace"), timeout=60)
    return process


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: a SQLite file, then a real PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'storefront.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        environment="test",
        data_dir=tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'storefront.db'}",
        redis_url=redis_url,
        jwt_secret=JWT_SECRET,
        log_format="json",
    )


@pytest.fixture
def worker_settings() -> WorkerSettings:
    return WorkerSettings(min_backoff_ms=10, max_backoff_ms=40, metrics_port=0, max_redeliveries=1)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[sync_redis.Redis]:
    client = sync_redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def stub_worker(
    settings: Settings,
    worker_settings: WorkerSettings,
    redis_url: str,
    redis_client: sync_redis.Redis,
) -> Iterator[tuple[StubBroker, Worker]]:
    """Every actor on a StubBroker, run by an in-process Dramatiq worker (2 threads)."""
    broker = StubBroker(middleware=[])
    broker.client = redis_client  # type: ignore[attr-defined]
    build_broker(settings, worker_settings, redis_url, broker=broker)
    broker.emit_after("process_boot")
    worker = Worker(broker, worker_threads=2, worker_timeout=50)
    worker.start()
    try:
        yield broker, worker
    finally:
        worker.stop()
        broker.close()

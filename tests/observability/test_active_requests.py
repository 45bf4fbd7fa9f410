"""The in-progress gauge counts requests while they run, by method, and none once they end."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI
from prometheus_client import generate_latest

from service.observability.metrics import REGISTRY
from service.observability.middleware import RequestTelemetryMiddleware


def _active(method: str) -> float | None:
    for line in generate_latest(REGISTRY).decode().splitlines():
        if line.startswith(f'http_server_active_requests{{method="{method}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_requests_in_progress_are_counted_until_they_end() -> None:
    inside: list[None] = []
    all_inside = asyncio.Event()
    release = asyncio.Event()
    app = FastAPI()

    @app.delete("/slow")
    async def slow() -> dict[str, bool]:
        inside.append(None)
        if len(inside) == 3:
            all_inside.set()
        await release.wait()
        return {"done": True}

    app.add_middleware(RequestTelemetryMiddleware)
    before = _active("DELETE") or 0.0
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        calls = [asyncio.create_task(client.delete("/slow")) for _ in range(3)]
        await all_inside.wait()
        assert _active("DELETE") == before + 3
        release.set()
        assert [r.status_code for r in await asyncio.gather(*calls)] == [200, 200, 200]
    assert _active("DELETE") == before

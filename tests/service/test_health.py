"""Liveness and readiness, including a dependency outage."""

from __future__ import annotations

import httpx

from service.core.settings import Settings
from tests.service.conftest import asgi_client, free_port, running_app


async def test_livez(client: httpx.AsyncClient) -> None:
    response = await client.get("/livez")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_readyz_when_dependencies_answer(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "ok"}


async def test_readyz_is_503_when_redis_is_down(settings: Settings) -> None:
    dead_redis = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    async with running_app(dead_redis) as app, asgi_client(app) as client:
        response = await client.get("/readyz")
        product = await client.get("/api/v1/products")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "SERVICE_UNAVAILABLE"
    assert error["details"]["database"] == "ok"
    assert error["details"]["redis"].startswith("unavailable")
    assert product.status_code == 200  # reads that do not need Redis keep working

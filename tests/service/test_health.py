"""Liveness and readiness, including a dependency outage."""

from __future__ import annotations

import httpx

from service.core.settings import Settings
from tests.service.conftest import ADMIN_PASSWORD, asgi_client, free_port, login, running_app


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


async def test_database_outage_is_503_not_500(settings: Settings) -> None:
    dead_database = settings.model_copy(
        update={
            "database_url": f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/shop",
            "admin_email": None,
            "admin_password": None,
        }
    )
    async with running_app(dead_database, migrate=False) as app, asgi_client(app) as client:
        listing = await client.get("/api/v1/products")
        ready = await client.get("/readyz")
    assert listing.status_code == 503, listing.text
    error = listing.json()["error"]
    assert error["code"] == "SERVICE_UNAVAILABLE"
    assert error["request_id"] == listing.headers["x-request-id"]
    assert listing.headers["retry-after"] == "5"
    assert "127.0.0.1" not in listing.text  # the cause is logged, not shown
    assert ready.status_code == 503
    assert ready.json()["error"]["details"]["database"].startswith("unavailable")


async def test_redis_outage_on_a_write_that_needs_it_is_503(settings: Settings) -> None:
    dead_redis = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    async with running_app(dead_redis) as app, asgi_client(app) as client:
        admin = await login(client, settings.admin_email or "", ADMIN_PASSWORD)
        response = await client.post(
            "/api/v1/reports",
            json={"start_date": "2026-01-01", "end_date": "2026-02-01"},
            headers=admin,
        )
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"

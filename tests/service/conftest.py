"""Fixtures for the service suite: an app on SQLite or a real PostgreSQL, on a real Redis.

Every test that takes ``client`` runs twice, once per database backend; each run gets a fresh
database and an emptied Redis, migrations applied by Alembic and the lifespan run for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from service.core.settings import Settings
from service.main import create_app
from service.migrations import upgrade_async

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin-password-123"
JWT_SECRET = "test-secret-that-is-long-enough-for-hs256!"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'storefront.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        environment="test",
        data_dir=tmp_path,
        database_url=database_url,
        redis_url=redis_url,
        jwt_secret=JWT_SECRET,
        admin_email=ADMIN_EMAIL,
        admin_password=ADMIN_PASSWORD,
        log_format="json",
        max_body_bytes=256 * 1024,
        # Process-wide and for the process's lifetime: left to the test that covers it.
        gc_freeze=False,
        gc_young_threshold=0,
    )


@contextlib.asynccontextmanager
async def running_app(settings: Settings, migrate: bool = True) -> AsyncIterator[FastAPI]:
    """Migrate, build the app and run its lifespan."""
    if migrate:
        await upgrade_async(settings)
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30):
        yield app


def asgi_client(app: FastAPI) -> httpx.AsyncClient:
    # raise_app_exceptions=False: a crash must reach the client as our 500, as it would in prod.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://storefront.test")


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with running_app(settings) as application:
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as http:
        yield http


async def login(client: httpx.AsyncClient, email: str, password: str) -> dict[str, str]:
    response = await client.post(
        "/api/v1/auth/token", data={"username": email, "password": password}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture
async def admin_headers(client: httpx.AsyncClient) -> dict[str, str]:
    return await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)


@dataclass
class Account:
    id: int
    email: str
    password: str
    headers: dict[str, str]


UserFactory = Callable[..., Awaitable[Account]]


@pytest.fixture
def make_user(client: httpx.AsyncClient) -> UserFactory:
    counter = 0

    async def factory(name: str = "Shopper") -> Account:
        nonlocal counter
        counter += 1
        email = f"{name.lower()}{counter}@example.com"
        password = "correct-horse-battery"
        response = await client.post(
            "/api/v1/users", json={"email": email, "name": name, "password": password}
        )
        assert response.status_code == 201, response.text
        return Account(response.json()["id"], email, password, await login(client, email, password))

    return factory


ProductFactory = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def make_product(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> ProductFactory:
    counter = 0

    async def factory(price: float = 10.0, stock: int = 10, name: str = "Widget") -> dict[str, Any]:
        nonlocal counter
        counter += 1
        response = await client.post(
            "/api/v1/products",
            json={"name": name, "price": price, "sku": f"SKU-{counter}", "stock": stock},
            headers=admin_headers,
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    return factory


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """Serve ``app`` with a real uvicorn on a free loopback port (for streaming responses,
    which ASGITransport buffers); yields the base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)

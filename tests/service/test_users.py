"""Accounts and auth: sign-up, tokens, the layered auth dependencies, the welcome e-mail."""

from __future__ import annotations

import asyncio
from email import message_from_bytes
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from fastapi import FastAPI
from sqlalchemy import select

from service.api.deps import get_current_user
from service.models import Role, User
from tests.service.conftest import ADMIN_EMAIL, UserFactory, asgi_client, free_port, running_app


async def test_sign_up_returns_the_user_without_its_password(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/users", json={"email": "Ann@Example.com", "name": "Ann", "password": "s3cret-pass"}
    )
    assert response.status_code == 201
    body = response.json()
    assert body == {"id": body["id"], "email": "ann@example.com", "name": "Ann", "role": "user"}
    assert "password" not in response.text and "s3cret" not in response.text


async def test_password_is_stored_as_an_argon2_hash(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await client.post(
        "/api/v1/users", json={"email": "bob@example.com", "name": "Bob", "password": "s3cret-pass"}
    )
    async with app.state.resources.sessions() as session:
        user = await session.scalar(select(User).where(User.email == "bob@example.com"))
    assert user is not None and user.password_hash.startswith("$argon2id$")
    assert "s3cret-pass" not in user.password_hash


async def test_duplicate_email_is_a_conflict(client: httpx.AsyncClient) -> None:
    payload = {"email": "dup@example.com", "name": "Dup", "password": "password-1"}
    assert (await client.post("/api/v1/users", json=payload)).status_code == 201
    payload["email"] = "DUP@example.com"
    response = await client.post("/api/v1/users", json=payload)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "CONFLICT"


async def test_token_then_me(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    user = await make_user("Cleo")
    response = await client.get("/api/v1/users/me", headers=user.headers)
    assert response.status_code == 200
    assert response.json()["email"] == user.email


async def test_token_response_shape(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    user = await make_user()
    response = await client.post(
        "/api/v1/auth/token", data={"username": user.email, "password": user.password}
    )
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] > 0 and body["access_token"]


@pytest.mark.parametrize("password", ["wrong-password", "x\x00y"])
async def test_wrong_password_is_unauthorized(
    client: httpx.AsyncClient, make_user: UserFactory, password: str
) -> None:
    user = await make_user()
    response = await client.post(
        "/api/v1/auth/token", data={"username": user.email, "password": password}
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHORIZED"
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Basic abc"}]
)
async def test_me_requires_a_valid_bearer_token(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get("/api/v1/users/me", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "UNAUTHORIZED"


async def test_user_reads_itself_but_not_others(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    alice, bob = await make_user("Alice"), await make_user("Bob")
    assert (await client.get(f"/api/v1/users/{alice.id}", headers=alice.headers)).status_code == 200
    response = await client.get(f"/api/v1/users/{bob.id}", headers=alice.headers)
    assert response.status_code == 404


async def test_admin_reads_any_user(
    client: httpx.AsyncClient, make_user: UserFactory, admin_headers: dict[str, str]
) -> None:
    bob = await make_user("Bob")
    response = await client.get(f"/api/v1/users/{bob.id}", headers=admin_headers)
    assert response.status_code == 200 and response.json()["email"] == bob.email


async def test_admin_account_exists_at_start_up(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    me = (await client.get("/api/v1/users/me", headers=admin_headers)).json()
    assert me["email"] == ADMIN_EMAIL and me["role"] == "admin"


async def test_current_user_dependency_can_be_overridden(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    stand_in = User(id=4242, email="override@example.com", name="Override", role=Role.ADMIN)
    app.dependency_overrides[get_current_user] = lambda: stand_in
    try:
        me = await client.get("/api/v1/users/me")
        dashboard = await client.get("/api/v1/admin/dashboard")
    finally:
        app.dependency_overrides.clear()
    assert me.status_code == 200 and me.json()["id"] == 4242
    assert dashboard.status_code == 200  # the admin check builds on the overridden user


async def test_admin_dashboard_counts(
    client: httpx.AsyncClient,
    make_user: UserFactory,
    make_product: Any,
    admin_headers: dict[str, str],
) -> None:
    user = await make_user()
    product = await make_product(price=12.5, stock=5)
    await client.post(
        "/api/v1/orders",
        json={"items": [{"product_id": product["id"], "qty": 2}]},
        headers=user.headers,
    )
    forbidden = await client.get("/api/v1/admin/dashboard", headers=user.headers)
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "FORBIDDEN"
    body = (await client.get("/api/v1/admin/dashboard", headers=admin_headers)).json()
    assert body == {"users": 2, "products": 1, "orders": 1, "revenue": 25.0}


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.received = asyncio.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        self.received.set()
        return "250 OK"


async def test_welcome_email_is_sent_through_smtp(settings: Any) -> None:
    inbox = _Inbox()
    port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        with_smtp = settings.model_copy(update={"smtp_url": f"smtp://127.0.0.1:{port}"})
        async with running_app(with_smtp) as app, asgi_client(app) as client:
            response = await client.post(
                "/api/v1/users",
                json={"email": "mail@example.com", "name": "Mia", "password": "password-1"},
            )
            assert response.status_code == 201
            await asyncio.wait_for(inbox.received.wait(), timeout=10)
    finally:
        smtp.stop()
    message = message_from_bytes(inbox.messages[0])
    assert message["To"] == "mail@example.com"
    assert "Welcome" in message["Subject"]


async def test_sign_up_cannot_choose_its_role_or_id(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/users",
        json={
            "email": "eve@example.com",
            "name": "Eve",
            "password": "s3cret-pass",
            "role": "admin",
            "id": 1,
            "hashed_password": "x",
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["role"] == "user" and body["id"] != 1
    login = await client.post(
        "/api/v1/auth/token", data={"username": "eve@example.com", "password": "s3cret-pass"}
    )
    assert login.status_code == 200, login.text

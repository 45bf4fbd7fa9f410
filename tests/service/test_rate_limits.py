"""Rate limits, tried as an attacker would: failed logins, sign-ups and the expensive routes are
answered 429 in the error format, with Retry-After and RateLimit fields, counted in Redis so that
every replica sees the same count, and spoofed X-Forwarded-For changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI
from PIL import Image

from service.core.resources import Resources
from service.core.settings import Settings
from service.observability import log_output, metrics
from service.services import users
from tests.components.redis import RedisServer, start_redis_server
from tests.components.storefront import ADMIN_EMAIL as PROCESS_ADMIN
from tests.components.storefront import start_storefront
from tests.service.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    ProductFactory,
    free_port,
    login,
    running_app,
)
from tests.service.test_errors import assert_error

pytestmark = pytest.mark.redis

TOKEN = "/api/v1/auth/token"
EXPORT = "/api/v1/reports/orders.csv"
LOGGER = "storefront.ratelimit"
REPORT = {"start_date": "2026-01-01", "end_date": "2026-02-01"}
REPLICAS_DB = 5


def client_at(app: FastAPI, address: str = "127.0.0.1") -> httpx.AsyncClient:
    """A client of ``app`` whose connections come from ``address``."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(address, 40123))
    return httpx.AsyncClient(transport=transport, base_url="http://storefront.test")


@contextlib.asynccontextmanager
async def app_with(settings: Settings, **overrides: Any) -> AsyncIterator[FastAPI]:
    async with running_app(settings.model_copy(update=overrides)) as app:
        yield app


async def wrong_login(client: httpx.AsyncClient, email: str = ADMIN_EMAIL) -> httpx.Response:
    return await client.post(TOKEN, data={"username": email, "password": "not-the-password"})


def refused(response: httpx.Response) -> dict[str, object]:
    """The 429 in the project's error format, with its headers; returns the error."""
    error = assert_error(response, 429, "TOO_MANY_REQUESTS")
    retry_after = int(response.headers["retry-after"])
    assert retry_after >= 1
    assert response.headers["ratelimit-reset"] == str(retry_after)
    assert response.headers["ratelimit-remaining"] == "0"
    limit = int(response.headers["ratelimit-limit"])
    window = int(response.headers["ratelimit-policy"].removeprefix(f"{limit};w="))
    assert retry_after <= window
    return error


def rate_limited_count(route: str, limit: str) -> float:
    labels = {"route": route, "limit": limit}
    return metrics.REGISTRY.get_sample_value("storefront_rate_limited_total", labels) or 0.0


def degraded_count(limit: str, fallback: str) -> float:
    labels = {"limit": limit, "fallback": fallback}
    return metrics.REGISTRY.get_sample_value("storefront_rate_limit_degraded_total", labels) or 0.0


def logged_events(capsys: pytest.CaptureFixture[str], logger: str) -> list[str]:
    """The events ``logger`` wrote to stdout since the last call, in order."""
    log_output.flush()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    return [r["event"] for r in map(orjson.loads, lines) if r.get("logger") == logger]


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (30, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_a_burst_of_failed_logins_is_refused_well_before_thirty(
    client: httpx.AsyncClient,
) -> None:
    before = rate_limited_count(TOKEN, "login_account")
    statuses = []
    for _ in range(30):
        response = await wrong_login(client)
        statuses.append(response.status_code)
        if response.status_code == 429:
            last = response
    # The default: 10 failed sign-ins per account in 5 minutes.
    assert statuses == [401] * 10 + [429] * 20
    error = refused(last)
    assert "account" in str(error["message"])
    assert last.headers["ratelimit-limit"] == "10"
    assert last.headers["ratelimit-policy"] == "10;w=300"
    assert rate_limited_count(TOKEN, "login_account") == before + 20
    # The right password does not get through a locked account either, until the window ends.
    locked = await client.post(TOKEN, data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    refused(locked)
    # The limit is on the account (its e-mail however spelled), not on the address.
    spelled = await wrong_login(client, f"  {ADMIN_EMAIL.upper()} ")
    assert spelled.status_code == 429
    assert (await wrong_login(client, "someone-else@example.com")).status_code == 401


async def test_a_successful_login_resets_the_accounts_count(settings: Settings) -> None:
    async with (
        app_with(settings, rate_limit_login_account="3/minute") as app,
        client_at(app) as client,
    ):
        for _ in range(2):
            assert (await wrong_login(client)).status_code == 401
        await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        assert [(await wrong_login(client)).status_code for _ in range(4)] == [401] * 3 + [429]


async def test_failed_logins_are_limited_per_address_across_accounts(settings: Settings) -> None:
    async with (
        app_with(settings, rate_limit_login_address="3/minute") as app,
        client_at(app, "198.51.100.7") as attacker,
        client_at(app, "192.0.2.1") as other,
    ):
        for n in range(3):
            assert (await wrong_login(attacker, f"victim{n}@example.com")).status_code == 401
        error = refused(await wrong_login(attacker, "victim9@example.com"))
        assert "address" in str(error["message"])
        # The right password from that address waits too; other addresses are not affected.
        refused(await attacker.post(TOKEN, data={"username": ADMIN_EMAIL,
                                                 "password": ADMIN_PASSWORD}))  # fmt: skip
        assert (await wrong_login(other, "victim9@example.com")).status_code == 401
        await login(other, ADMIN_EMAIL, ADMIN_PASSWORD)


async def test_successful_logins_do_not_count_against_the_address(settings: Settings) -> None:
    async with (
        app_with(settings, rate_limit_login_address="2/minute") as app,
        client_at(app) as client,
    ):
        for _ in range(5):
            await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        assert (await wrong_login(client)).status_code == 401


async def test_sign_ups_are_limited_per_address(settings: Settings) -> None:
    async with (
        app_with(settings, rate_limit_signup="2/hour") as app,
        client_at(app, "198.51.100.7") as bot,
        client_at(app, "192.0.2.1") as person,
    ):

        async def sign_up(client: httpx.AsyncClient, n: int) -> httpx.Response:
            account = {"email": f"bot{n}@example.com", "name": "Bot", "password": "pw-123456"}
            return await client.post("/api/v1/users", json=account)

        assert [(await sign_up(bot, n)).status_code for n in range(2)] == [201, 201]
        error = refused(await sign_up(bot, 2))
        assert "sign-ups" in str(error["message"])
        assert (await sign_up(person, 3)).status_code == 201
    assert rate_limited_count("/api/v1/users", "signup") >= 1


async def _second_admin(app: FastAPI, client: httpx.AsyncClient) -> dict[str, str]:
    resources: Resources = app.state.resources
    async with resources.sessions() as session:
        await users.ensure_admin(session, resources.passwords, "admin2@example.com", "pw-admin-2")
    return await login(client, "admin2@example.com", "pw-admin-2")


async def test_report_requests_are_limited_per_user(settings: Settings) -> None:
    before = rate_limited_count("/api/v1/reports", "reports")
    async with app_with(settings, rate_limit_reports="2/minute") as app, client_at(app) as client:
        admin = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        for _ in range(2):
            response = await client.post("/api/v1/reports", json=REPORT, headers=admin)
            assert response.status_code == 202
        refused(await client.post("/api/v1/reports", json=REPORT, headers=admin))
        other_admin = await _second_admin(app, client)
        response = await client.post("/api/v1/reports", json=REPORT, headers=other_admin)
        assert response.status_code == 202
    assert rate_limited_count("/api/v1/reports", "reports") == before + 1


async def test_orders_csv_exports_are_limited_per_user(settings: Settings) -> None:
    async with app_with(settings, rate_limit_exports="1/minute") as app, client_at(app) as client:
        admin = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        path = "/api/v1/reports/orders.csv"
        assert (await client.get(path, params=REPORT, headers=admin)).status_code == 200
        refused(await client.get(path, params=REPORT, headers=admin))
        # Without a valid token the answer is 401, as before: the limit counts signed-in users.
        assert (await client.get(path, params=REPORT)).status_code == 401
    assert rate_limited_count("/api/v1/reports/orders.csv", "exports") >= 1


async def test_image_uploads_are_limited_per_user(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.services import products

    resized: list[int] = []
    original = products.resize_image

    def counting_resize(*args: Any) -> Any:
        resized.append(1)
        return original(*args)

    monkeypatch.setattr(products, "resize_image", counting_resize)
    async with (
        app_with(settings, rate_limit_image_uploads="1/minute") as app,
        client_at(app) as client,
    ):
        admin = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        created = await client.post(
            "/api/v1/products",
            json={"name": "Lamp", "price": 20, "sku": "LAMP-1", "stock": 3},
            headers=admin,
        )
        path = f"/api/v1/products/{created.json()['id']}/image"
        upload = {"file": ("lamp.png", png(), "image/png")}
        assert (await client.post(path, files=upload, headers=admin)).status_code == 200
        refused(await client.post(path, files=upload, headers=admin))
    assert resized == [1]  # the refused upload was never resized
    assert rate_limited_count("/api/v1/products/{product_id}/image", "image_uploads") >= 1


async def test_forwarded_for_from_an_untrusted_peer_changes_nothing(settings: Settings) -> None:
    async with (
        app_with(settings, rate_limit_login_address="3/minute") as app,
        client_at(app, "198.51.100.7") as attacker,
    ):
        statuses = []
        for n in range(6):
            response = await attacker.post(
                TOKEN,
                data={"username": f"v{n}@example.com", "password": "guess"},
                headers={"X-Forwarded-For": f"203.0.113.{n}", "X-Real-IP": f"192.0.2.{n}"},
            )
            statuses.append(response.status_code)
    assert statuses == [401] * 3 + [429] * 3


async def test_behind_a_trusted_proxy_the_client_cannot_spoof_its_address(
    settings: Settings,
) -> None:
    proxies = (ipaddress.ip_network("10.0.0.0/8"),)
    async with (
        app_with(settings, rate_limit_login_address="3/minute", trusted_proxies=proxies) as app,
        client_at(app, "10.1.2.3") as proxy,
    ):

        async def through_proxy(forwarded_for: str, n: int) -> int:
            response = await proxy.post(
                TOKEN,
                data={"username": f"v{n}@example.com", "password": "guess"},
                headers={"X-Forwarded-For": forwarded_for},
            )
            return response.status_code

        # The client sends made-up entries; the proxy appends the address it really saw.
        spoofed = [await through_proxy(f"192.0.2.{n}, 198.51.100.7", n) for n in range(5)]
        assert spoofed == [401] * 3 + [429] * 2
        # Another client behind the same proxy has its own count.
        assert await through_proxy("198.51.100.8", 9) == 401
        # A chain of trusted proxies is seen through to the same client.
        assert await through_proxy("198.51.100.7, 10.9.9.9", 10) == 429


async def test_routes_without_a_limit_never_touch_the_counters(
    client: httpx.AsyncClient, settings: Settings, make_product: ProductFactory
) -> None:
    product = await make_product()
    for _ in range(20):
        assert (await client.get(f"/api/v1/products/{product['id']}")).status_code == 200
        assert (await client.get("/api/v1/products")).status_code == 200
    redis = aioredis.Redis.from_url(settings.redis_url or "")
    try:
        # The only counter is the address's, from the login of the admin that made the product;
        # and a successful login gave its hit back.
        keys = [key.decode() async for key in redis.scan_iter("storefront:ratelimit:*")]
        assert all("/login_" in key for key in keys), keys
    finally:
        await redis.aclose()


async def test_the_openapi_document_shows_429_on_the_limited_routes_only(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    with_429 = {
        f"{method.upper()} {path}"
        for path, operations in paths.items()
        for method, operation in operations.items()
        if "429" in operation["responses"]
    }
    assert with_429 == {
        "POST /api/v1/auth/token",
        "POST /api/v1/users",
        "POST /api/v1/reports",
        "GET /api/v1/reports/orders.csv",
        "POST /api/v1/products/{product_id}/image",
    }
    documented = paths["/api/v1/auth/token"]["post"]["responses"]["429"]
    assert documented["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")
    assert {"Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset",
            "RateLimit-Policy"} == set(documented["headers"])  # fmt: skip


async def test_the_global_limit_guards_every_api_route_when_set(settings: Settings) -> None:
    async with (
        app_with(settings, rate_limit_global="3/minute") as app,
        client_at(app) as client,
        client_at(app, "192.0.2.1") as other,
    ):
        assert [(await client.get("/api/v1/products")).status_code for _ in range(3)] == [200] * 3
        refused(await client.get("/api/v1/products/1"))
        refused(await client.get("/api/v2/products"))
        assert (await client.get("/livez")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
        assert (await other.get("/api/v1/products")).status_code == 200
        spec = (await client.get("/openapi.json")).json()
    assert "429" in spec["paths"]["/api/v1/products/{product_id}"]["get"]["responses"]
    assert rate_limited_count("/api/v1/products/{product_id}", "global") >= 1


async def test_a_limit_set_off_is_not_applied(settings: Settings) -> None:
    async with app_with(settings, rate_limit_login_account=None) as app, client_at(app) as client:
        assert {(await wrong_login(client)).status_code for _ in range(12)} == {401}


async def test_a_login_with_no_hashing_slot_is_not_counted(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.core.passwords import PasswordHashing, PasswordHashingBusyError

    async def busy(self: PasswordHashing, *args: str) -> bool:
        raise PasswordHashingBusyError(headers={"Retry-After": "1"})

    async with (
        app_with(settings, rate_limit_login_account="2/minute") as app,
        client_at(app) as client,
    ):
        with monkeypatch.context() as patched:
            patched.setattr(PasswordHashing, "verify", busy)
            assert {(await wrong_login(client)).status_code for _ in range(4)} == {503}
        assert [(await wrong_login(client)).status_code for _ in range(3)] == [401, 401, 429]


async def test_concurrent_failed_logins_cannot_pass_the_limit(settings: Settings) -> None:
    async with (
        app_with(settings, rate_limit_login_account="3/minute") as app,
        client_at(app) as client,
    ):
        statuses = await asyncio.gather(*(wrong_login(client) for _ in range(12)))
    codes = sorted(response.status_code for response in statuses)
    assert codes == [401] * 3 + [429] * 9


async def test_when_redis_stops_logins_are_limited_in_memory_and_the_rest_let_through(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = start_redis_server(tmp_path)
    try:
        async with (
            app_with(
                settings,
                redis_url=server.url,
                rate_limit_login_account="3/minute",
                rate_limit_exports="1/minute",
                rate_limit_retry_seconds=0.2,
            ) as app,
            client_at(app) as client,
        ):
            admin = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)

            async def export() -> int:
                response = await client.get(EXPORT, params=REPORT, headers=admin)
                return response.status_code

            assert [await export(), await export()] == [200, 429]
            in_memory = degraded_count("login_account", "memory")
            let_through = degraded_count("exports", "open")

            logged_events(capsys, LOGGER)
            await asyncio.to_thread(server.process.stop)
            # The shop keeps selling: limits that fail open let every request through...
            assert [await export() for _ in range(3)] == [200] * 3
            # ...while failed logins are still counted, in this process.
            statuses = [(await wrong_login(client)).status_code for _ in range(4)]
            assert statuses == [401] * 3 + [429]
            refused(await wrong_login(client))
            assert degraded_count("exports", "open") == let_through + 3
            assert degraded_count("login_account", "memory") >= in_memory + 5
            # One line for the outage, not one per request.
            assert logged_events(capsys, LOGGER) == ["rate_limit_redis_unavailable"]

            # Redis comes back (empty: it keeps nothing on disk), and is used again once the
            # retry delay has passed.
            server = await asyncio.to_thread(start_redis_server, tmp_path, server.port)
            await asyncio.sleep(0.3)
            assert [await export(), await export()] == [200, 429]
            assert logged_events(capsys, LOGGER) == ["rate_limit_redis_recovered"]
    finally:
        server.process.stop()


async def test_with_redis_unreachable_from_the_start_requests_are_still_answered(
    settings: Settings,
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with (
        app_with(settings, redis_url=dead, rate_limit_login_account="2/minute") as app,
        client_at(app) as client,
    ):
        await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        account = {"email": "new@example.com", "name": "New", "password": "pw-123456"}
        assert (await client.post("/api/v1/users", json=account)).status_code == 201
        statuses = [(await wrong_login(client)).status_code for _ in range(3)]
    assert statuses == [401, 401, 429]


@pytest.mark.slow
async def test_two_replicas_on_one_redis_share_the_failed_login_count(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Two real `storefront api` processes, alternating: the account is locked for both after
    the tenth failure, whichever replica saw which attempt."""
    with redis_server.client(REPLICAS_DB) as redis_client:
        redis_client.flushdb()
    url = redis_server.url_for(REPLICAS_DB)
    replicas = await asyncio.gather(
        *(asyncio.to_thread(start_storefront, tmp_path / name, url) for name in ("a", "b"))
    )
    try:
        async with (
            httpx.AsyncClient(base_url=replicas[0].url, timeout=30) as a,
            httpx.AsyncClient(base_url=replicas[1].url, timeout=30) as b,
        ):
            answers = [
                await wrong_login(replica, PROCESS_ADMIN) for _ in range(7) for replica in (a, b)
            ]
    finally:
        await asyncio.gather(*(asyncio.to_thread(replica.stop) for replica in replicas))
    assert [r.status_code for r in answers] == [401] * 10 + [429] * 4
    for response in answers[10:]:
        refused(response)
        assert response.headers["ratelimit-limit"] == "10"
    # Both replicas answered 429 from the one shared count.
    assert {r.url.port for r in answers[10:]} == {httpx.URL(p.url).port for p in replicas}

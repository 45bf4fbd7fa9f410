"""Live events: an order created on one replica reaches SSE subscribers of another."""

from __future__ import annotations

import asyncio
import json

import httpx

from service.core.settings import Settings
from tests.service.conftest import asgi_client, login, running_app, served


async def _first_event(response: httpx.Response) -> dict[str, object]:
    event_type, data = None, None
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            event_type = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data = json.loads(line.split(":", 1)[1])
        elif line == "" and data is not None:
            assert event_type == data["type"]
            return dict(data)
    raise AssertionError("stream ended without an event")


async def test_order_created_reaches_subscribers_of_another_replica(settings: Settings) -> None:
    async with (
        running_app(settings) as replica_a,
        running_app(settings) as replica_b,
        served(replica_b) as url_b,
        httpx.AsyncClient(base_url=url_b, timeout=10) as sse,
        sse.stream("GET", "/api/v1/events/orders") as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["cache-control"] == "no-cache"
        assert stream.headers["x-accel-buffering"] == "no"
        waiter = asyncio.create_task(_first_event(stream))
        for _ in range(100):  # the subscription is live once the hub counts it
            if replica_b.state.resources.events.subscriber_count("orders"):
                break
            await asyncio.sleep(0.05)

        async with asgi_client(replica_a) as api:
            admin = await login(api, settings.admin_email or "", "admin-password-123")
            product = (
                await api.post(
                    "/api/v1/products",
                    json={"name": "Kite", "price": 15, "sku": "KITE-1", "stock": 3},
                    headers=admin,
                )
            ).json()
            order = (
                await api.post(
                    "/api/v1/orders",
                    json={"items": [{"product_id": product["id"], "qty": 2}]},
                    headers=admin,
                )
            ).json()
        event = await asyncio.wait_for(waiter, timeout=10)
    assert event["type"] == "order.created"
    assert event["order_id"] == order["id"] and event["total"] == 30.0


async def test_disconnect_frees_the_subscription(settings: Settings) -> None:
    async with running_app(settings) as app, served(app) as url:
        hub = app.state.resources.events
        async with (
            httpx.AsyncClient(base_url=url, timeout=10) as sse,
            sse.stream("GET", "/api/v1/events/orders") as stream,
        ):
            async for line in stream.aiter_lines():
                if line.startswith(":"):
                    break  # the "subscribed" comment: we are in
            assert hub.subscriber_count("orders") == 1
        for _ in range(100):
            if hub.subscriber_count("orders") == 0:
                break
            await asyncio.sleep(0.05)
        assert hub.subscriber_count("orders") == 0


async def test_shutdown_ends_open_streams_cleanly(settings: Settings) -> None:
    lines: list[str] = []
    async with running_app(settings) as app, served(app) as url:
        client = httpx.AsyncClient(base_url=url, timeout=10)
        stream_cm = client.stream("GET", "/api/v1/events/orders")
        stream = await stream_cm.__aenter__()

        async def read_all() -> None:
            async for line in stream.aiter_lines():
                lines.append(line)

        reader = asyncio.create_task(read_all())
        while not app.state.resources.events.subscriber_count("orders"):
            await asyncio.sleep(0.02)
        await app.state.resources.events.close()
        await asyncio.wait_for(reader, timeout=10)  # the stream ended instead of hanging
        await stream_cm.__aexit__(None, None, None)
        await client.aclose()
    assert any(line.startswith(":") for line in lines)


async def test_bad_topic_is_a_validation_error(settings: Settings) -> None:
    async with running_app(settings) as app, asgi_client(app) as client:
        response = await client.get("/api/v1/events/Bad%20Topic")
    assert response.status_code == 422

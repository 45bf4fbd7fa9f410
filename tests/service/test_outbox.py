"""The job outbox: jobs owed by orders and image uploads are never lost to a Redis outage.

Real Redis and a real database (SQLite and PostgreSQL); the outage is a Redis URL nobody
listens on.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import redis.asyncio as aioredis
from dramatiq import Message
from fastapi import FastAPI
from PIL import Image
from sqlalchemy import select, text

from service.core.database import create_engine, create_session_factory
from service.core.settings import Settings
from service.models import OutboxMessage
from service.services import jobs, outbox
from tests.service.conftest import (
    ADMIN_PASSWORD,
    ProductFactory,
    UserFactory,
    asgi_client,
    free_port,
    login,
    running_app,
)


async def _owed(app: FastAPI) -> list[OutboxMessage]:
    async with app.state.resources.sessions() as session:
        return list((await session.scalars(select(OutboxMessage))).all())


async def _queued(redis_url: str, queue: str = "default") -> list[Message[Any]]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        raw = await client.hvals(f"dramatiq:{queue}.msgs")  # type: ignore[misc]
        ids = await client.lrange(f"dramatiq:{queue}", 0, -1)  # type: ignore[misc]
    finally:
        await client.aclose()
    assert len(ids) == len(raw)
    return [Message.decode(data) for data in raw]


@contextlib.asynccontextmanager
async def _outage(
    settings: Settings,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, dict[str, str], dict[str, Any]]]:
    """The app on a Redis URL nobody listens on, with an admin's headers and one product."""
    dead_redis = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    async with running_app(dead_redis) as app, asgi_client(app) as api:
        admin = await login(api, settings.admin_email or "", ADMIN_PASSWORD)
        product = await api.post(
            "/api/v1/products",
            json={"name": "Stove", "price": 45, "sku": "STOVE-1", "stock": 3},
            headers=admin,
        )
        assert product.status_code == 201, product.text
        yield app, api, admin, product.json()


async def test_an_order_enqueues_its_confirmation_and_owes_nothing(
    app: FastAPI,
    client: httpx.AsyncClient,
    settings: Settings,
    make_user: UserFactory,
    make_product: ProductFactory,
) -> None:
    user, product = await make_user(), await make_product(stock=5)
    response = await client.post(
        "/api/v1/orders",
        json={"items": [{"product_id": product["id"], "qty": 1}]},
        headers={**user.headers, "X-Request-ID": "order-happy-path"},
    )
    assert response.status_code == 201, response.text
    # The row goes once the job is queued, in the next batch of deletes.
    await app.state.resources.sent_rows.flush()
    assert await _owed(app) == []
    [message] = await _queued(settings.redis_url or "")
    assert message.actor_name == "send_order_confirmation"
    assert message.kwargs == {"order_id": response.json()["id"]}
    assert message.options["request_id"] == "order-happy-path"


async def test_a_confirmation_owed_during_an_outage_is_relayed_once_redis_is_back(
    settings: Settings,
) -> None:
    async with _outage(settings) as (app, api, admin, product):
        created = await api.post(
            "/api/v1/orders",
            json={"items": [{"product_id": product["id"], "qty": 1}]},
            headers={**admin, "X-Request-ID": "order-in-outage"},
        )
        # The order is stored whatever Redis does: its side effects must not decide that.
        assert created.status_code == 201, created.text
        order_id = created.json()["id"]
        listed = (await api.get("/api/v1/orders", headers=admin)).json()
        assert [order["id"] for order in listed["items"]] == [order_id]

        [owed] = await _owed(app)
        assert (owed.actor, owed.kwargs) == ("send_order_confirmation", {"order_id": order_id})
        assert owed.options["request_id"] == "order-in-outage"
        assert "traceparent" in owed.options

        sessions = app.state.resources.sessions
        # Still down: the relay raises and keeps the row.
        down = aioredis.Redis.from_url(app.state.resources.redis_url)
        try:
            await outbox.relay_owed(down, sessions)
        except aioredis.RedisError:
            pass
        else:
            raise AssertionError("the relay claimed success with Redis down")
        finally:
            await down.aclose()
        assert len(await _owed(app)) == 1

        # Back: the same row is enqueued once, with the request's ID, and deleted.
        live = aioredis.Redis.from_url(settings.redis_url or "")
        try:
            assert await outbox.relay_owed(live, sessions, older_than=timedelta(0)) == 1
            assert await outbox.relay_owed(live, sessions) == 0
        finally:
            await live.aclose()
        assert await _owed(app) == []

    [message] = await _queued(settings.redis_url or "")
    assert message.actor_name == "send_order_confirmation"
    assert message.kwargs == {"order_id": order_id}
    assert message.options["request_id"] == "order-in-outage"
    assert message.options["traceparent"] == owed.options["traceparent"]


async def test_the_relay_leaves_young_rows_to_their_request(app: FastAPI) -> None:
    async with app.state.resources.sessions() as session:
        outbox.owe(session, "send_order_confirmation", {"order_id": 12345})
        await session.commit()
    live = app.state.resources.redis
    assert await outbox.relay_owed(live, app.state.resources.sessions, timedelta(minutes=1)) == 0
    assert len(await _owed(app)) == 1
    assert await outbox.relay_owed(live, app.state.resources.sessions) == 1
    assert await _owed(app) == []


async def test_no_row_of_a_queued_job_outlives_a_clean_stop(settings: Settings) -> None:
    async with running_app(settings) as app:
        resources = app.state.resources
        async with resources.sessions() as session:
            entries = [
                outbox.owe(session, "send_order_confirmation", {"order_id": n}) for n in (1, 2, 3)
            ]
            await session.commit()
            for entry in entries:
                assert await outbox.enqueue_owed(resources.redis, session, entry) is not None
        # The lifespan ends at once: the rows not deleted yet are deleted as it closes, so no
        # replica sends these jobs a second time.
    engine = create_engine(settings)
    try:
        async with create_session_factory(engine)() as session:
            assert (await session.scalars(select(OutboxMessage))).all() == []
    finally:
        await engine.dispose()
    queued = await _queued(settings.redis_url or "")
    assert sorted(message.kwargs["order_id"] for message in queued) == [1, 2, 3]


async def test_a_failed_row_delete_keeps_the_queued_job_and_the_row_for_the_relay(
    app: FastAPI, settings: Settings
) -> None:
    resources = app.state.resources
    async with resources.sessions() as session:
        entry = outbox.owe(session, "send_order_confirmation", {"order_id": 777})
        await session.commit()
        # The database refuses the delete (a real error, not a stub): the job is on the queue
        # and the request must not fail over its bookkeeping.
        await session.execute(text("ALTER TABLE job_outbox RENAME TO job_outbox_away"))
        await session.commit()
        try:
            assert await outbox.enqueue_owed(resources.redis, session, entry) is not None
            await resources.sent_rows.flush()  # the delete is tried while the table is away
            # The caller's session is untouched: its objects still read without a reload.
            assert entry.kwargs == {"order_id": 777}
        finally:
            await session.execute(text("ALTER TABLE job_outbox_away RENAME TO job_outbox"))
            await session.commit()
    [message] = await _queued(settings.redis_url or "")
    assert message.kwargs == {"order_id": 777}
    assert len(await _owed(app)) == 1  # the relay will send it again; the actor skips the copy


async def test_an_image_uploaded_during_an_outage_gets_its_thumbnails_job_under_the_same_id(
    settings: Settings,
) -> None:
    async with _outage(settings) as (app, api, admin, product):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 32), (10, 200, 30)).save(buffer, format="PNG")
        uploaded = await api.post(
            f"/api/v1/products/{product['id']}/image",
            files={"file": ("lamp.png", buffer.getvalue(), "image/png")},
            headers=admin,
        )
        # The image is stored, so the answer says so, with the job ID the thumbnails will have.
        assert uploaded.status_code == 200, uploaded.text
        job_id = uploaded.json()["job_id"]
        [owed] = await _owed(app)
        assert (owed.message_id, owed.actor, owed.track) == (job_id, "process_product_image", True)

        live = aioredis.Redis.from_url(settings.redis_url or "")
        try:
            assert await outbox.relay_owed(live, app.state.resources.sessions) == 1
            status = await jobs.get_job(live, job_id)
        finally:
            await live.aclose()
    assert status is not None and status.status == "queued"
    [message] = await _queued(settings.redis_url or "", queue="images")
    assert (message.message_id, message.kwargs) == (job_id, {"product_id": product["id"]})

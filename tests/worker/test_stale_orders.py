"""Stale pending orders: cancelled after the TTL with their stock given back, fresh and paid
orders untouched, a second run a no-op; on SQLite and PostgreSQL, and as the scheduled job."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import orjson
import pytest
import redis as sync_redis
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import select, update

from service.core.database import create_engine, create_session_factory
from service.core.passwords import PasswordHashing
from service.core.redis import create_redis
from service.core.settings import Settings
from service.migrations import upgrade_async
from service.models import Order, OrderStatus, Product
from service.models.base import utcnow
from service.schemas.order import OrderCreate, OrderItemIn
from service.schemas.user import UserCreate
from service.services import events, jobs, orders, products, users

pytestmark = pytest.mark.redis

TTL = timedelta(minutes=60)
STOCK = 10


@dataclass(frozen=True)
class Shop:
    """The seeded orders by what the clean-up must do with them, and the two products."""

    lamp: int
    desk: int
    stale: tuple[int, ...]  # pending for longer than the TTL: to cancel
    fresh: tuple[int, ...]  # pending, younger than the TTL: to keep
    paid: int  # older than the TTL but paid: to keep


@dataclass(frozen=True)
class State:
    statuses: dict[int, OrderStatus]
    stock: dict[int, int]
    cancelled_at: dict[int, object]


async def seed(settings: Settings, redis_url: str) -> Shop:
    """Orders placed through the service (so stock is really reserved), then aged in place."""
    engine = create_engine(settings)
    redis = create_redis(redis_url)
    try:
        async with create_session_factory(engine)() as session:
            user = await users.create_user(
                session,
                PasswordHashing(
                    settings.password_hash_concurrency, settings.password_hash_wait_seconds
                ),
                UserCreate(email="ann@example.com", name="Ann", password="correct-horse-battery"),
            )
            lamp = Product(name="Lamp", sku="LAMP-1", price=12, stock=STOCK)
            desk = Product(name="Desk", sku="DESK-1", price=99, stock=STOCK)
            session.add_all([lamp, desk])
            await session.commit()

            async def place(*lines: tuple[int, int], age: timedelta) -> int:
                order, _ = await orders.create_order(
                    session,
                    redis,
                    user.id,
                    OrderCreate(items=[OrderItemIn(product_id=p, qty=q) for p, q in lines]),
                )
                await session.execute(
                    update(Order).where(Order.id == order.id).values(created_at=utcnow() - age)
                )
                await session.commit()
                return order.id

            stale_two = await place((lamp.id, 2), (desk.id, 1), age=TTL + timedelta(minutes=1))
            stale_day = await place((lamp.id, 3), age=timedelta(days=1))
            almost = await place((lamp.id, 1), age=TTL - timedelta(minutes=5))
            new = await place((desk.id, 2), age=timedelta(0))
            paid = await place((desk.id, 4), age=timedelta(days=2))
            await session.execute(
                update(Order).where(Order.id == paid).values(status=OrderStatus.PAID)
            )
            await session.commit()
            return Shop(lamp.id, desk.id, (stale_two, stale_day), (almost, new), paid)
    finally:
        await redis.aclose()
        await engine.dispose()


async def state(settings: Settings) -> State:
    engine = create_engine(settings)
    try:
        async with create_session_factory(engine)() as session:
            rows = (await session.execute(select(Order.id, Order.status, Order.updated_at))).all()
            stock = (await session.execute(select(Product.id, Product.stock))).all()
            return State(
                statuses={order_id: status for order_id, status, _ in rows},
                stock={product_id: qty for product_id, qty in stock},
                cancelled_at={
                    order_id: updated
                    for order_id, status, updated in rows
                    if status == OrderStatus.CANCELLED
                },
            )
    finally:
        await engine.dispose()


def assert_cleaned_up(shop: Shop, after: State) -> None:
    assert after.statuses == {
        **dict.fromkeys(shop.stale, OrderStatus.CANCELLED),
        **dict.fromkeys(shop.fresh, OrderStatus.PENDING),
        shop.paid: OrderStatus.PAID,
    }
    # The stale orders' 2+3 lamps and 1 desk are back; the fresh and paid ones stay reserved.
    assert after.stock == {shop.lamp: STOCK - 1, shop.desk: STOCK - 2 - 4}
    assert set(after.cancelled_at) == set(shop.stale)
    assert all(when is not None for when in after.cancelled_at.values())


async def test_stale_pending_orders_are_cancelled_once_on_each_database(
    database_url: str, redis_url: str, settings: Settings
) -> None:
    settings = settings.model_copy(update={"database_url": database_url})
    await upgrade_async(settings)
    shop = await seed(settings, redis_url)
    before = await state(settings)
    assert before.stock == {shop.lamp: STOCK - 2 - 3 - 1, shop.desk: STOCK - 1 - 2 - 4}

    engine = create_engine(settings)
    try:
        sessions = create_session_factory(engine)
        async with sessions() as session:
            assert await orders.cancel_stale_pending(session, TTL) == 2
        after = await state(settings)
        assert_cleaned_up(shop, after)
        async with sessions() as session:
            assert await orders.cancel_stale_pending(session, TTL) == 0
        assert await state(settings) == after  # nothing more: no stock given back twice
    finally:
        await engine.dispose()


def run_job(broker: StubBroker, worker: Worker, client: sync_redis.Redis) -> object:
    message = broker.get_actor("cancel_stale_orders").send()
    broker.join("default", fail_fast=True)
    worker.join()
    status = jobs.decode_status(
        message.message_id, client.hgetall(jobs.job_key(message.message_id))
    )
    assert status is not None and status.status == "succeeded", status
    return status.result


def test_the_scheduled_job_cancels_stale_orders_and_a_rerun_changes_nothing(
    settings: Settings,
    redis_url: str,
    stub_worker: tuple[StubBroker, Worker],
    redis_client: sync_redis.Redis,
) -> None:
    broker, worker = stub_worker
    assert settings.pending_order_ttl_minutes == TTL.total_seconds() / 60
    asyncio.run(upgrade_async(settings))
    shop = asyncio.run(seed(settings, redis_url))

    assert run_job(broker, worker, redis_client) == {"cancelled": 2}
    after = asyncio.run(state(settings))
    assert_cleaned_up(shop, after)

    assert run_job(broker, worker, redis_client) == {"cancelled": 0}
    assert asyncio.run(state(settings)) == after
    assert broker.dead_letters == []


async def test_cancelling_drops_cached_stock_and_announces_it(
    redis_url: str, settings: Settings
) -> None:
    await upgrade_async(settings)
    shop = await seed(settings, redis_url)
    redis = create_redis(redis_url)
    engine = create_engine(settings)
    try:
        sessions = create_session_factory(engine)
        for product_id in (shop.lamp, shop.desk):
            await products.get_product_cached(sessions, redis, product_id, ttl_seconds=300)
        pubsub = redis.pubsub()
        await pubsub.subscribe(events.channel_for("orders"))
        await pubsub.get_message(timeout=1)  # the subscription confirmation
        async with sessions() as session:
            assert await orders.cancel_stale_pending(session, TTL, redis) == 2
        assert await redis.exists(products.cache_key(shop.lamp), products.cache_key(shop.desk)) == 0
        announced = []
        while message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=2):
            announced.append(orjson.loads(message["data"]))
        await pubsub.aclose()
    finally:
        await redis.aclose()
        await engine.dispose()
    assert sorted(e["order_id"] for e in announced) == sorted(shop.stale)
    assert {e["type"] for e in announced} == {"order.cancelled"}

"""Orders: atomic stock reservation, pricing at order time, and the order.created event."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import NamedTuple

import redis.asyncio as aioredis
import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.database import BeforeCommit
from service.core.errors import ConflictError, NotFoundError
from service.models import Order, OrderItem, OrderStatus, Product
from service.models.base import utcnow
from service.observability import metrics
from service.schemas.order import OrderCreate
from service.services import events, outbox, pricing, products

log = structlog.get_logger("storefront.orders")


class PlacedOrder(NamedTuple):
    order: Order
    # Fixed in the order's transaction, so it can be followed before the job reaches the queue.
    confirmation_job_id: str


async def create_order(
    session: AsyncSession,
    redis: aioredis.Redis,
    user_id: int,
    data: OrderCreate,
    *,
    before_commit: BeforeCommit[PlacedOrder] | None = None,
) -> PlacedOrder:
    """Reserve stock and record the order in one transaction (with ``before_commit``'s write,
    if given), then announce it."""
    wanted = Counter[int]()
    for line in data.items:
        wanted[line.product_id] += line.qty
    # A fixed lock order keeps two concurrent orders for the same products from deadlocking.
    product_ids = sorted(wanted)
    known = set(await session.scalars(select(Product.id).where(Product.id.in_(product_ids))))
    missing = [pid for pid in product_ids if pid not in known]
    if missing:
        raise NotFoundError(f"Product {missing[0]} not found")

    unit_prices: dict[int, Decimal] = {}
    for product_id in product_ids:
        qty = wanted[product_id]
        price = await session.scalar(
            update(Product)
            .where(Product.id == product_id, Product.stock >= qty)
            .values(stock=Product.stock - qty)
            .returning(Product.price)
        )
        if price is None:
            await session.rollback()
            raise ConflictError(f"Not enough stock for product {product_id}")
        unit_prices[product_id] = price

    lines = [(unit_prices[pid], wanted[pid]) for pid in product_ids]
    order = Order(
        user_id=user_id,
        status=OrderStatus.PENDING,
        discount_pct=data.discount_pct,
        total=pricing.discounted_total(pricing.subtotal(lines), data.discount_pct),
        items=[
            OrderItem(product_id=pid, qty=wanted[pid], unit_price=unit_prices[pid])
            for pid in product_ids
        ],
    )
    session.add(order)
    await session.flush()  # the order's ID, for the job it owes
    # Tracked: the client is given this job's ID, which then answers "queued" at once.
    confirmation = outbox.owe(
        session, "send_order_confirmation", {"order_id": order.id}, track=True
    )
    placed = PlacedOrder(order, confirmation.message_id)
    if before_commit is not None:
        await before_commit(session, placed)
    await session.commit()

    metrics.ORDERS_CREATED.inc()
    metrics.ORDER_REVENUE.inc(float(order.total))
    await _announce(redis, order, product_ids)
    await outbox.enqueue_owed(redis, session, confirmation)
    log.info("order_created", order_id=order.id, total=str(order.total))
    return placed


async def _announce(redis: aioredis.Redis, order: Order, product_ids: list[int]) -> None:
    """Side effects after the commit. The order is stored whatever happens here, so a Redis
    outage is logged rather than turned into an error that would invite a duplicate order."""
    try:
        # One round trip for all of them rather than one each (measured on order creation):
        # the deletes and the publish are independent, and the order stands whichever fails.
        async with redis.pipeline(transaction=False) as pipe:
            for product_id in product_ids:  # stock changed: cached products are stale
                pipe.delete(products.cache_key(product_id))
            events.publish_in(
                pipe,
                "orders",
                {
                    "type": "order.created",
                    "order_id": order.id,
                    "user_id": order.user_id,
                    "total": float(order.total),
                    "items": len(product_ids),
                    "created_at": order.created_at.isoformat(),
                },
            )
            await pipe.execute()
    except aioredis.RedisError as exc:
        log.error("order_side_effects_failed", order_id=order.id, error=str(exc))


async def get_own_order(session: AsyncSession, user_id: int, order_id: int) -> Order:
    """The user's own order; another user's order is "not found", so ids cannot be probed."""
    order = await session.scalar(
        select(Order).where(Order.id == order_id, Order.user_id == user_id)
    )
    if order is None:
        raise NotFoundError(f"Order {order_id} not found")
    return order


async def list_own_orders(
    session: AsyncSession, user_id: int, offset: int, limit: int
) -> tuple[list[Order], int]:
    total = await session.scalar(
        select(func.count()).select_from(Order).where(Order.user_id == user_id)
    )
    rows = await session.scalars(
        select(Order)
        .where(Order.user_id == user_id)
        .order_by(Order.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return list(rows), total or 0


REPORT_COLUMNS = ("order_id", "created_at", "user_id", "status", "items", "discount_pct", "total")


def day_bounds(start: date, end: date) -> tuple[datetime, datetime]:
    return datetime.combine(start, time(), UTC), datetime.combine(end, time(), UTC)


async def stream_order_rows(
    session: AsyncSession, start: date, end: date, batch_size: int = 500
) -> AsyncIterator[tuple[object, ...]]:
    """Orders created in [start, end), read from a server-side cursor in batches."""
    lower, upper = day_bounds(start, end)
    item_count = (
        select(func.count(OrderItem.id)).where(OrderItem.order_id == Order.id).scalar_subquery()
    )
    query = (
        select(
            Order.id,
            Order.created_at,
            Order.user_id,
            Order.status,
            item_count,
            Order.discount_pct,
            Order.total,
        )
        .where(Order.created_at >= lower, Order.created_at < upper)
        .order_by(Order.created_at, Order.id)
        .execution_options(yield_per=batch_size)
    )
    result = await session.stream(query)
    async for row in result:
        yield tuple(row)


async def cancel_stale_pending(
    session: AsyncSession, older_than: timedelta, redis: aioredis.Redis | None = None
) -> int:
    """Cancel pending orders older than ``older_than`` and give their stock back.

    With ``redis``, the restocked products' cached copies are dropped and ``order.cancelled``
    is announced, as order creation does.
    """
    cutoff = utcnow() - older_than
    stale = list(
        await session.scalars(
            select(Order)
            .where(Order.status == OrderStatus.PENDING, Order.created_at < cutoff)
            .with_for_update(skip_locked=True)
        )
    )
    restocked: set[int] = set()
    for order in stale:
        for item in order.items:
            await session.execute(
                update(Product)
                .where(Product.id == item.product_id)
                .values(stock=Product.stock + item.qty)
            )
            restocked.add(item.product_id)
        order.status = OrderStatus.CANCELLED
        order.updated_at = utcnow()
    await session.commit()
    if redis is not None and stale:
        try:
            for product_id in sorted(restocked):
                await products.invalidate(redis, product_id)
            for order in stale:
                await events.publish(
                    redis,
                    "orders",
                    {"type": "order.cancelled", "order_id": order.id, "user_id": order.user_id},
                )
        except aioredis.RedisError as exc:
            log.error("order_cancel_side_effects_failed", error=str(exc))
    return len(stale)

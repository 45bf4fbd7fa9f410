"""``send_order_confirmation``: the order confirmation mail, retried, sent once per order."""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import select

from service.core.mail import send_mail
from service.models import Order, User
from worker.errors import PermanentJobError
from worker.runtime import resources

log = structlog.get_logger("storefront.worker.mail")


def render_confirmation(
    order_id: int, name: str, total: str, lines: list[tuple[int, int, str]]
) -> tuple[str, str]:
    """Subject and body of the confirmation for an order (pure)."""
    subject = f"Your Storefront order #{order_id}"
    items = "\n".join(f"  - product {pid} x {qty} at {price}" for pid, qty, price in lines)
    body = f"Hello {name},\n\nthank you for your order #{order_id}.\n\n{items}\n\nTotal: {total}\n"
    return subject, body


async def send_order_confirmation(order_id: int) -> dict[str, Any]:
    res = await resources()
    async with res.sessions() as session:
        row = (
            await session.execute(
                select(Order, User).join(User, User.id == Order.user_id).where(Order.id == order_id)
            )
        ).first()
        if row is None:
            raise PermanentJobError(f"order {order_id} does not exist")
        order, user = row.tuple()
        lines = [(item.product_id, item.qty, str(item.unit_price)) for item in order.items]
        subject, body = render_confirmation(order.id, user.name, str(order.total), lines)
        to = user.email
    sent = await send_mail(res.settings, to, subject, body)
    return {"order_id": order_id, "sent": sent}

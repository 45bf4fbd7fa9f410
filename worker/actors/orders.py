"""``cancel_stale_orders``: give back the stock of pending orders nobody paid in time."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from service.services import orders
from worker.runtime import resources


async def cancel_stale_orders() -> dict[str, Any]:
    res = await resources()
    async with res.sessions() as session:
        cancelled = await orders.cancel_stale_pending(
            session, timedelta(minutes=res.settings.pending_order_ttl_minutes), res.redis
        )
    return {"cancelled": cancelled}

"""Sales reports as the API requests them: queued at once, or owed in a transaction that also
stores the request's answer."""

from __future__ import annotations

from datetime import date

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.database import BeforeCommit
from service.services import jobs, outbox


async def request_sales_report(
    session: AsyncSession,
    redis: aioredis.Redis,
    start: date,
    end: date,
    *,
    before_commit: BeforeCommit[str] | None = None,
) -> str:
    """Queue a sales report for [start, end) and return its job ID (also the report's ID).

    With ``before_commit`` the job is owed through the outbox instead, in one transaction with
    the hook's write, so the two stand or fall together (and a Redis outage delays the job
    rather than failing the request). Without it, the job goes straight to the queue.
    """
    if before_commit is None:
        return await jobs.enqueue_sales_report(redis, start, end)
    owed = outbox.owe(
        session, "generate_sales_report", jobs.sales_report_kwargs(start, end), track=True
    )
    await before_commit(session, owed.message_id)
    await session.commit()
    await outbox.enqueue_owed(redis, session, owed)
    return owed.message_id

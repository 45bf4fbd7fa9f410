"""The job outbox: a job owed to the queue is first a row in the database, written in the same
transaction as the data it is about, and deleted once Redis holds the message.

So a Redis outage at the wrong moment delays a job instead of losing it: the request that wrote
the row enqueues it right after its commit, and when that fails, :class:`OutboxRelay` (a task in
every API process) enqueues what is left once Redis answers again. A job may then be enqueued
twice (a crash between enqueue and delete, two replicas); the actors are idempotent by business
key, and on PostgreSQL the relay locks the rows it takes (``SKIP LOCKED``).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
import structlog
from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.models import OutboxMessage
from service.services import jobs

log = structlog.get_logger("storefront.outbox")

RELAY_BATCH = 100


def owe(
    session: AsyncSession, actor_name: str, kwargs: dict[str, Any], *, track: bool = False
) -> OutboxMessage:
    """Add the job to the session's transaction, carrying the current request ID and trace.
    Its job ID (``message_id``) is fixed now, whenever the message reaches the queue."""
    options = jobs.propagation_options(actor_name, jobs.ACTOR_QUEUES[actor_name])
    entry = OutboxMessage(
        message_id=str(uuid.uuid4()),
        actor=actor_name,
        kwargs=kwargs,
        options=options,
        track=track,
    )
    session.add(entry)
    return entry


async def enqueue_owed(
    redis: aioredis.Redis, session: AsyncSession, entry: OutboxMessage
) -> str | None:
    """Right after the commit: enqueue the job and delete its row. Returns the job ID, or None
    when Redis is unreachable (the row stays for the relay)."""
    try:
        job_id = await _enqueue(redis, entry)
    except aioredis.RedisError as exc:
        log.warning("job_owed", actor=entry.actor, outbox_id=entry.id, error=str(exc))
        return None
    try:
        # Its own short transaction: a failure here must not roll back (and so expire) the
        # caller's session, whose objects are still to be serialized.
        async with AsyncSession(session.bind) as own:
            await own.execute(delete(OutboxMessage).where(OutboxMessage.id == entry.id))
            await own.commit()
    except SQLAlchemyError as exc:
        # The data is committed and its job queued: failing the request now would invite the
        # client to send it again. The relay sends the row once more; the actor skips the copy.
        log.warning("outbox_row_kept", outbox_id=entry.id, error=str(exc))
    return job_id


async def relay_owed(
    redis: aioredis.Redis,
    sessions: async_sessionmaker[AsyncSession],
    older_than: timedelta = timedelta(0),
) -> int:
    """Enqueue and delete owed jobs older than ``older_than``, a batch at a time, oldest first;
    returns how many went. Raises ``RedisError`` when Redis is still unreachable."""
    relayed = 0
    while True:
        async with sessions() as session:
            cutoff = datetime.now(UTC) - older_than
            entries = (
                await session.scalars(
                    select(OutboxMessage)
                    .where(OutboxMessage.created_at <= cutoff)
                    .order_by(OutboxMessage.id)
                    .limit(RELAY_BATCH)
                    .with_for_update(skip_locked=True)  # PostgreSQL; SQLite has one writer
                )
            ).all()
            for entry in entries:
                await _enqueue(redis, entry)
                await session.delete(entry)
            await session.commit()
        relayed += len(entries)
        if len(entries) < RELAY_BATCH:
            return relayed


async def _enqueue(redis: aioredis.Redis, entry: OutboxMessage) -> str:
    return await jobs.enqueue(
        redis,
        entry.actor,
        dict(entry.kwargs),
        message_id=entry.message_id,
        options=dict(entry.options),
        track=entry.track,
    )


class OutboxRelay:
    """Every ``interval`` seconds, relay owed jobs that their request could not enqueue.

    Only rows older than ``grace`` are taken, so the relay does not race a request that is about
    to enqueue its own job.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        sessions: async_sessionmaker[AsyncSession],
        interval: float,
        grace: timedelta = timedelta(seconds=5),
    ) -> None:
        self._redis = redis
        self._sessions = sessions
        self._interval = interval
        self._grace = grace
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="storefront-outbox-relay")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                relayed = await relay_owed(self._redis, self._sessions, self._grace)
            except aioredis.RedisError as exc:
                log.warning("outbox_relay_waiting", error=str(exc))
            except Exception:
                log.exception("outbox_relay_failed")
            else:
                if relayed:
                    log.info("outbox_relayed", jobs=relayed)

"""The job outbox: a job owed to the queue is first a row in the database, written in the same
transaction as the data it is about, and deleted once Redis holds the message.

So a Redis outage at the wrong moment delays a job instead of losing it: the request that wrote
the row enqueues it right after its commit, and when that fails, :class:`OutboxRelay` (a task in
every API process) enqueues what is left once Redis answers again. A job may then be enqueued
twice (a crash between enqueue and delete, two replicas); the actors are idempotent by business
key, and on PostgreSQL the relay locks the rows it takes (``SKIP LOCKED``).

In the API, the rows of jobs that reached the queue are deleted by :class:`SentRows`, many in
one statement off the request's path, rather than by a transaction of their own per request
(four database round trips each, measured as the largest cost of placing an order). A row is
still deleted only once its message is in Redis; one left by a killed process is relayed again,
the duplicate the actors already skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
import weakref
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
import structlog
from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.models import OutboxMessage
from service.services import jobs

log = structlog.get_logger("storefront.outbox")

RELAY_BATCH = 100
# Rows deleted by one statement at most (a bound parameter each; PostgreSQL takes 32,767).
SWEEP_BATCH = 1000


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
    sweeper = _sweepers.get(session.bind) if isinstance(session.bind, AsyncEngine) else None
    if sweeper is not None and sweeper.take(entry.id):
        return job_id
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


# The engine's running SentRows, if any: enqueue_owed hands it the rows to delete. Weak, so an
# engine disposed without its lifespan (a test's) is not kept alive by the registry.
_sweepers: weakref.WeakKeyDictionary[AsyncEngine, SentRows] = weakref.WeakKeyDictionary()


class SentRows:
    """Deletes the outbox rows of jobs that reached the queue, all that are waiting in one
    statement, in a task of its own.

    While one delete runs, the rows of the jobs queued meanwhile gather for the next, so the
    batches grow with the load and a quiet process deletes each row at once. A failed delete
    keeps its rows for the relay, as a failed delete in the request did; so does a killed
    process. Registered for its engine by :meth:`start`; :meth:`close` deletes what is left.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine) -> None:
        self._sessions = sessions
        self._engine = engine
        self._pending: list[int] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # One delete at a time: a flush returns only once the rows taken before it are gone.
        self._deleting = asyncio.Lock()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="storefront-outbox-sent-rows")
        _sweepers[self._engine] = self

    def take(self, outbox_id: int) -> bool:
        """Queue the row's delete; False once closing (the caller then deletes it itself)."""
        if self._closing:
            return False
        self._pending.append(outbox_id)
        self._wake.set()
        return True

    async def flush(self) -> None:
        """Delete every row queued so far (shutdown, tests)."""
        async with self._deleting:
            while self._pending:
                await self._delete_pending()

    async def close(self) -> None:
        """Stop taking rows and delete the ones taken. The task is let finish its delete
        rather than cancelled: a delete cut short would leave its rows to be sent again."""
        self._closing = True
        if _sweepers.get(self._engine) is self:
            del _sweepers[self._engine]
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.flush()

    async def _run(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("outbox_sweep_failed")

    async def _delete_pending(self) -> None:
        ids, self._pending = self._pending[:SWEEP_BATCH], self._pending[SWEEP_BATCH:]
        try:
            async with self._sessions() as session:
                await session.execute(
                    delete(OutboxMessage).where(OutboxMessage.id.in_(ids)),
                    # No objects of this fresh session to bring up to date.
                    execution_options={"synchronize_session": False},
                )
                await session.commit()
        except SQLAlchemyError as exc:
            # Their jobs are queued: the relay sends them once more; the actors skip the copy.
            log.warning("outbox_rows_kept", rows=len(ids), error=str(exc))


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

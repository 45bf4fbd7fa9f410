"""Domain events over Redis pub/sub, fanned out to this process's SSE subscribers.

Each API replica holds one pub/sub connection (pattern ``storefront:events:*``) and hands every
message to the local subscribers of its topic, so a client on any replica sees every event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import orjson
import redis.asyncio as aioredis
import structlog

from service.observability import metrics

log = structlog.get_logger("storefront.events")

CHANNEL_PREFIX = "storefront:events:"
_CLOSED = object()


def channel_for(topic: str) -> str:
    return CHANNEL_PREFIX + topic


async def publish(redis: aioredis.Redis, topic: str, event: dict[str, Any]) -> None:
    """Publish a domain event to every replica's subscribers of ``topic``."""
    await redis.publish(channel_for(topic), orjson.dumps(event))


def publish_in(pipe: aioredis.client.Pipeline, topic: str, event: dict[str, Any]) -> None:
    """:func:`publish`, queued on ``pipe`` to go with the pipeline's other commands."""
    pipe.publish(channel_for(topic), orjson.dumps(event))


class EventHub:
    """Listens once on Redis and fans events out to in-process subscriber queues."""

    def __init__(self, redis: aioredis.Redis, queue_size: int = 256) -> None:
        self._redis = redis
        self._queue_size = queue_size
        self._subscribers: dict[str, set[asyncio.Queue[object]]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._closed = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="storefront-event-hub")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout=5)

    async def close(self) -> None:
        """End every open stream cleanly, then stop listening."""
        self._closed = True
        for queues in self._subscribers.values():
            for queue in queues:
                _offer(queue, _CLOSED)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    @contextlib.asynccontextmanager
    async def subscribe(self, topic: str) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """Yield an iterator of the topic's events; the subscription ends with the block."""
        queue: asyncio.Queue[object] = asyncio.Queue(self._queue_size)
        self._subscribers[topic].add(queue)
        metrics.SSE_SUBSCRIBERS.labels("events").inc()
        try:
            yield self._drain(queue)
        finally:
            self._subscribers[topic].discard(queue)
            if not self._subscribers[topic]:
                del self._subscribers[topic]
            metrics.SSE_SUBSCRIBERS.labels("events").dec()

    def subscriber_count(self, topic: str) -> int:
        return len(self._subscribers.get(topic, ()))

    async def _drain(self, queue: asyncio.Queue[object]) -> AsyncIterator[dict[str, Any]]:
        while not self._closed:
            item = await queue.get()
            if item is _CLOSED:
                return
            yield item  # type: ignore[misc]

    async def _listen(self) -> None:
        backoff = 0.5
        while not self._closed:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(CHANNEL_PREFIX + "*")
                self._ready.set()
                backoff = 0.5
                async for message in pubsub.listen():
                    if message.get("type") != "pmessage":
                        continue
                    topic = message["channel"].decode().removeprefix(CHANNEL_PREFIX)
                    event = orjson.loads(message["data"])
                    for queue in tuple(self._subscribers.get(topic, ())):
                        _offer(queue, event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis outage: keep the API up and reconnect.
                log.warning("event_hub_reconnect", error=str(exc), backoff_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()


def _offer(queue: asyncio.Queue[object], item: object) -> None:
    """Deliver without blocking the hub; a subscriber that cannot keep up loses its oldest."""
    if queue.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    queue.put_nowait(item)

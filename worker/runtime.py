"""The worker process's long-lived resources and the bridge that runs async actors on them.

Dramatiq runs actors on worker threads; ours are coroutines executed on the one event-loop
thread of the process (Dramatiq's AsyncIO middleware), where the database engine and the asyncio
Redis client live. The bridge copies the worker thread's context variables into the coroutine,
so the job's trace span, request ID and current message follow it onto the loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import redis.asyncio as aioredis
import structlog
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import CurrentMessage
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.core.database import create_engine, create_session_factory
from service.core.redis import create_redis
from service.core.settings import Settings
from service.services import jobs
from worker.settings import WorkerSettings

log = structlog.get_logger("storefront.worker")

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class WorkerResources:
    settings: Settings
    worker_settings: WorkerSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: aioredis.Redis


class Runtime:
    """Creates the resources on first use, on the loop that uses them; closes them at shutdown."""

    def __init__(self, settings: Settings, worker_settings: WorkerSettings, redis_url: str) -> None:
        self.settings = settings
        self.worker_settings = worker_settings
        self.redis_url = redis_url
        self._resources: WorkerResources | None = None
        self._lock: asyncio.Lock | None = None

    async def resources(self) -> WorkerResources:
        if self._resources is None:
            self._lock = self._lock or asyncio.Lock()
            async with self._lock:
                if self._resources is None:
                    engine = create_engine(self.settings)
                    self._resources = WorkerResources(
                        settings=self.settings,
                        worker_settings=self.worker_settings,
                        engine=engine,
                        sessions=create_session_factory(engine),
                        redis=create_redis(self.redis_url),
                    )
        return self._resources

    async def aclose(self) -> None:
        if self._resources is not None:
            resources, self._resources = self._resources, None
            await resources.redis.aclose()
            await resources.engine.dispose()


_runtime: Runtime | None = None


def set_runtime(runtime: Runtime | None) -> None:
    global _runtime
    _runtime = runtime


def get_runtime() -> Runtime:
    if _runtime is None:
        raise RuntimeError("the worker runtime is not set up (see worker.broker.build_broker)")
    return _runtime


async def resources() -> WorkerResources:
    """The process's resources, for actor code."""
    return await get_runtime().resources()


def current_job_id() -> str | None:
    message = CurrentMessage.get_current_message()
    return message.message_id if message is not None else None


async def report_progress(progress: int) -> None:
    """Record the running job's progress (0..100) and tell its followers."""
    job_id = current_job_id()
    if job_id is None:
        return
    res = await resources()
    await jobs.update_job(
        res.redis, job_id, ttl_seconds=res.worker_settings.job_status_ttl_seconds, progress=progress
    )


async def _in_context(context: contextvars.Context, awaitable: Awaitable[R]) -> R:
    for variable, value in context.items():
        variable.set(value)
    return await awaitable


_results = threading.local()


def pop_result() -> object:
    """The value the actor that just ran on this thread returned (for its job status)."""
    result = getattr(_results, "value", None)
    _results.value = None
    return result


def run_on_loop(fn: Callable[P, Awaitable[object]]) -> Callable[P, None]:
    """Wrap a coroutine function as a synchronous actor body run on the process's event loop.

    The coroutine's return value is kept for the job status rather than returned: Dramatiq
    would only discard it (with a warning) without a result backend.
    """

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        _results.value = None
        loop_thread = get_event_loop_thread()
        if loop_thread is None:
            raise RuntimeError("no event loop thread: the AsyncIO middleware is missing")
        context = contextvars.copy_context()
        # run_coroutine also turns a time-limit interrupt into cancellation of the coroutine.
        _results.value = loop_thread.run_coroutine(_in_context(context, fn(*args, **kwargs)))

    run.__wrapped_async__ = fn  # type: ignore[attr-defined]
    return run

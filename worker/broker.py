"""The worker's Dramatiq broker: Redis with Storefront's middleware and actors declared on it."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.broker import Broker
from dramatiq.middleware import AsyncIO, CurrentMessage, Retries, TimeLimit
from opentelemetry import trace

from service.core.settings import Settings
from service.services.jobs import NAMESPACE
from worker.actors import declare_actors
from worker.middleware import (
    Heartbeat,
    JobContext,
    JobLedger,
    JobMetrics,
    MaintainedRedisBroker,
    RuntimeResources,
)
from worker.runtime import Runtime, set_runtime
from worker.settings import WorkerSettings


def storefront_middleware(
    broker: Broker,
    settings: WorkerSettings,
    runtime: Runtime,
    tracer_provider: trace.TracerProvider | None = None,
) -> list[dramatiq.Middleware]:
    """The middleware stack, in the order explained in :mod:`worker.middleware`."""

    def client() -> Any:
        return broker.client  # type: ignore[attr-defined]

    def close_runtime() -> None:
        loop_thread = get_event_loop_thread()
        if loop_thread is not None:
            loop_thread.run_coroutine(runtime.aclose())

    return [
        Heartbeat(settings.heartbeat_interval_ms / 1000),
        JobContext(tracer_provider),
        JobMetrics(),
        JobLedger(
            client,
            max_redeliveries=settings.max_redeliveries,
            delivery_ttl_seconds=settings.dead_message_ttl_ms // 1000,
            done_ttl_seconds=settings.done_ttl_seconds,
            status_ttl_seconds=settings.job_status_ttl_seconds,
        ),
        CurrentMessage(),
        TimeLimit(),
        Retries(
            max_retries=settings.max_retries,
            min_backoff=settings.min_backoff_ms,
            max_backoff=settings.max_backoff_ms,
        ),
        AsyncIO(),
        RuntimeResources(close_runtime),
    ]


def build_broker(
    settings: Settings,
    worker_settings: WorkerSettings,
    redis_url: str,
    *,
    broker: Broker | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> Broker:
    """A broker with the middleware and every actor, set as Dramatiq's global broker.

    ``broker`` lets tests pass a StubBroker carrying a ``client`` attribute; by default it is a
    Redis broker on ``redis_url`` (a ``unix://`` URL of the embedded Redis works too).
    """
    runtime = Runtime(settings, worker_settings, redis_url)
    set_runtime(runtime)
    if broker is None:
        broker = MaintainedRedisBroker(
            url=redis_url,
            namespace=NAMESPACE,
            middleware=[],
            heartbeat_timeout=worker_settings.heartbeat_timeout_ms,
            maintenance_chance=worker_settings.maintenance_per_million,
            dead_message_ttl=worker_settings.dead_message_ttl_ms,
        )
    for middleware in storefront_middleware(broker, worker_settings, runtime, tracer_provider):
        broker.add_middleware(middleware)
    declare_actors(broker, worker_settings)
    dramatiq.set_broker(broker)
    return broker

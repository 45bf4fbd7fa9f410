"""Every actor the worker runs, with its queue, retries, time limit and idempotency key."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.broker import Broker

from service.services.jobs import ACTOR_QUEUES
from worker.actors.idempotency import purge_idempotency_keys
from worker.actors.images import process_product_image
from worker.actors.mail import send_order_confirmation
from worker.actors.orders import cancel_stale_orders
from worker.actors.probe import probe
from worker.actors.reports import generate_sales_report
from worker.errors import retry_when
from worker.runtime import run_on_loop
from worker.settings import WorkerSettings

MINUTE_MS = 60_000


@dataclass(frozen=True)
class ActorSpec:
    fn: Callable[..., Awaitable[Any]]
    max_retries: int | None = None  # None: the worker-wide STOREFRONT_WORKER_MAX_RETRIES
    time_limit_ms: int = 5 * MINUTE_MS
    idempotency_key: Callable[[dict[str, Any]], str] | None = None
    priority: int = 0

    @property
    def name(self) -> str:
        return self.fn.__name__


ACTORS: tuple[ActorSpec, ...] = (
    ActorSpec(
        send_order_confirmation,
        max_retries=8,
        time_limit_ms=MINUTE_MS,
        # One mail per order, whichever message carries it.
        idempotency_key=lambda kwargs: str(kwargs["order_id"]),
    ),
    ActorSpec(process_product_image, max_retries=3, time_limit_ms=2 * MINUTE_MS),
    ActorSpec(generate_sales_report, max_retries=3, time_limit_ms=30 * MINUTE_MS, priority=10),
    ActorSpec(cancel_stale_orders, max_retries=2, time_limit_ms=5 * MINUTE_MS),
    ActorSpec(purge_idempotency_keys, max_retries=2, time_limit_ms=5 * MINUTE_MS),
    ActorSpec(probe, max_retries=3, time_limit_ms=MINUTE_MS),
)


def declare_actors(broker: Broker, settings: WorkerSettings) -> dict[str, dramatiq.Actor[Any, Any]]:
    """Declare every actor on ``broker`` (any broker: Redis in production, Stub in tests)."""
    declared = {}
    for spec in ACTORS:
        max_retries = settings.max_retries if spec.max_retries is None else spec.max_retries
        options: dict[str, Any] = {
            "max_retries": max_retries,
            "retry_when": retry_when(max_retries),
            "min_backoff": settings.min_backoff_ms,
            "max_backoff": settings.max_backoff_ms,
            "time_limit": spec.time_limit_ms,
        }
        if spec.idempotency_key is not None:
            options["idempotency_key"] = spec.idempotency_key
        declared[spec.name] = dramatiq.Actor(
            run_on_loop(spec.fn),
            broker=broker,
            actor_name=spec.name,
            queue_name=ACTOR_QUEUES[spec.name],
            priority=spec.priority,
            options=options,
        )
    return declared

"""One benchmark worker process (``python -m bench.worker_main bare|storefront``).

``bare``: a plain Dramatiq ``RedisBroker`` (default middleware, plus Dramatiq's ``AsyncIO`` for its
async actor) with a no-op actor, an async ``probe`` twin doing the same Redis commands as
Storefront's and a sync twin. ``storefront``: Storefront's own broker, middleware and actors
(``worker.broker.build_broker``) plus the same no-op actor and the same sync twin. Both add the
recorder middleware, which reports pick-up and enqueue-to-done latency and completion times to
Redis in batches.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import dramatiq
import redis
from dramatiq import Worker
from dramatiq.broker import Broker
from dramatiq.middleware import Middleware

BENCH_ACTORS = frozenset({"bench_noop", "probe", "probe_sync"})
QUEUE = "default"
SENT_AT = "bench_sent_at"
FLUSH_SECONDS = 0.1


def done_key(actor: str) -> str:
    return f"bench:done:{actor}"


def latency_key(actor: str) -> str:
    return f"bench:latency:{actor}"


def done_latency_key(actor: str) -> str:
    return f"bench:done-latency:{actor}"


def window_key(actor: str, edge: str) -> str:
    return f"bench:{edge}:{actor}"


class Recorder(Middleware):
    """Record, per benchmark actor: enqueue-to-start latency, enqueue-to-done latency, first
    start and last finish.

    Kept in memory and flushed by a thread every 100 ms, so measuring adds no Redis round trip
    to the job itself. Added last, so "start" is when the actor body is about to run, after
    every other middleware's preparation; its :class:`Finish` is added first, so "done" is
    after every middleware's after-hook (the job's status written, its span ended).
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = {}
        self.done_latencies: dict[str, list[float]] = {}
        self.done: dict[str, int] = {}
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._flush_forever, daemon=True)
        self.thread.start()

    def before_process_message(self, broker: Broker, message: Any) -> None:
        actor = message.actor_name
        if actor not in BENCH_ACTORS:
            return
        now = time.time()
        sent_at = message.options.get(SENT_AT)
        with self.lock:
            if actor not in self.first:
                self.first[actor] = now
            if sent_at is not None:
                self.latencies.setdefault(actor, []).append(now - float(sent_at))

    def finish(self, message: Any) -> None:
        actor = message.actor_name
        if actor not in BENCH_ACTORS:
            return
        now = time.time()
        sent_at = message.options.get(SENT_AT)
        with self.lock:
            self.done[actor] = self.done.get(actor, 0) + 1
            self.last[actor] = now
            if sent_at is not None:
                self.done_latencies.setdefault(actor, []).append(now - float(sent_at))

    def _flush_forever(self) -> None:
        while not self.stopped.wait(FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        with self.lock:
            latencies, self.latencies = self.latencies, {}
            done_latencies, self.done_latencies = self.done_latencies, {}
            done, self.done = self.done, {}
            # First and last are kept, not reset: each flush rewrites the process's window.
            first, last = dict(self.first), dict(self.last)
        if not (latencies or done):
            return
        pipe = self.client.pipeline(transaction=True)
        for actor, values in latencies.items():
            pipe.rpush(latency_key(actor), *values)
        for actor, values in done_latencies.items():
            pipe.rpush(done_latency_key(actor), *values)
        for actor, value in first.items():
            pipe.zadd(window_key(actor, "first"), {str(os.getpid()): value})
        for actor, value in last.items():
            pipe.zadd(window_key(actor, "last"), {str(os.getpid()): value})
        for actor, count in done.items():  # last: a reader seeing the count sees the rest
            pipe.incrby(done_key(actor), count)
        pipe.execute()

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self.stopped.set()
        self.flush()


class Finish(Middleware):
    """The recorder's end of a job, added first so that its after-hooks run last."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def after_process_message(
        self, broker: Broker, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        self.recorder.finish(message)

    def after_skip_message(self, broker: Broker, message: Any) -> None:
        self.recorder.finish(message)


def noop() -> None:
    """The no-op job: measures what the worker stack costs around a job that does nothing."""


def sync_probe(redis_url: str) -> Callable[..., None]:
    """A synchronous twin of Storefront's ``probe``: the same three commands, on a plain client."""
    from worker.actors.probe import _RECORD, DONE_PREFIX, EFFECTS_KEY, RUNS_KEY, TTL_SECONDS

    client = redis.Redis.from_url(redis_url)
    record = client.register_script(_RECORD)

    def probe_sync(key: str, work_ms: int = 0, fail_times: int = 0) -> None:
        client.hincrby(RUNS_KEY, key, 1)
        client.expire(RUNS_KEY, TTL_SECONDS)
        record(keys=[DONE_PREFIX + key, EFFECTS_KEY], args=[key, TTL_SECONDS])

    return probe_sync


def async_probe(redis_url: str) -> Callable[..., Awaitable[None]]:
    """An async twin of Storefront's ``probe`` for bare Dramatiq's own async actors: the same
    three commands on a plain asyncio client, made on the event loop that uses it."""
    import redis.asyncio as aioredis

    from worker.actors.probe import _RECORD, DONE_PREFIX, EFFECTS_KEY, RUNS_KEY, TTL_SECONDS

    clients: list[aioredis.Redis] = []

    async def probe(key: str, work_ms: int = 0, fail_times: int = 0) -> None:
        if not clients:
            clients.append(aioredis.Redis.from_url(redis_url))
        client = clients[0]
        await client.hincrby(RUNS_KEY, key, 1)
        await client.expire(RUNS_KEY, TTL_SECONDS)
        record = client.register_script(_RECORD)  # EVALSHA, as Storefront's probe
        await record(keys=[DONE_PREFIX + key, EFFECTS_KEY], args=[key, TTL_SECONDS])

    return probe


def bare_broker(redis_url: str) -> Broker:
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.middleware import AsyncIO

    broker = RedisBroker(url=redis_url)
    broker.add_middleware(AsyncIO())
    actors: dict[str, Callable[..., Any]] = {
        "bench_noop": noop,
        "probe": async_probe(redis_url),
        "probe_sync": sync_probe(redis_url),
    }
    for name, fn in actors.items():
        dramatiq.Actor(fn, broker=broker, actor_name=name, queue_name=QUEUE, priority=0, options={})
    return broker


def storefront_broker(redis_url: str) -> Broker:
    from service import __version__
    from service.core.settings import get_settings
    from service.observability.logging import configure_logging
    from service.observability.tracing import setup_tracing, tracing_config
    from worker.broker import build_broker
    from worker.settings import load_worker_settings

    settings = get_settings()
    worker_settings = load_worker_settings()
    configure_logging(settings.log_level, settings.log_format, component="worker")
    env = dict(os.environ)
    env.setdefault("OTEL_SERVICE_NAME", "storefront-worker")
    setup_tracing(tracing_config(env, settings.trace_sample_ratio, __version__))
    broker = build_broker(settings, worker_settings, redis_url)
    # Beside Storefront's own async ``probe``: a no-op and a sync twin, as its actors are declared.
    options = {"max_retries": worker_settings.max_retries, "time_limit": 60_000}
    for name, fn in (("bench_noop", noop), ("probe_sync", sync_probe(redis_url))):
        dramatiq.Actor(
            fn, broker=broker, actor_name=name, queue_name=QUEUE, priority=0, options=options
        )
    return broker


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_main")
    parser.add_argument("stack", choices=("bare", "storefront"))
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    broker = (bare_broker if args.stack == "bare" else storefront_broker)(args.redis_url)
    recorder = Recorder(redis.Redis.from_url(args.redis_url))
    broker.add_middleware(Finish(recorder), before=type(broker.middleware[0]))
    broker.add_middleware(recorder)
    broker.emit_after("process_boot")
    worker = Worker(broker, queues={QUEUE}, worker_threads=args.threads)
    worker.start()
    while not stop.wait(0.2):
        pass
    worker.stop(timeout=10_000)
    broker.close()


if __name__ == "__main__":
    main()

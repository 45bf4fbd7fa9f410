"""The worker's and scheduler's Prometheus registry: job outcomes, durations, retries, dead
letters, queue depth read from Redis at scrape time, and the scheduler's ticks and leadership."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from fnmatch import fnmatchcase

import redis as sync_redis
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = structlog.get_logger("storefront.worker.metrics")

REGISTRY = CollectorRegistry(auto_describe=True)

JOB_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

JOBS = Counter(
    "storefront_jobs_total",
    "Jobs processed, by actor, queue and outcome (succeeded, retried, failed, skipped).",
    ["actor", "queue", "outcome"],
    registry=REGISTRY,
)
JOB_DURATION = Histogram(
    "storefront_job_duration_seconds",
    "Time spent running a job, by actor.",
    ["actor"],
    buckets=JOB_DURATION_BUCKETS,
    registry=REGISTRY,
)
JOB_RETRIES = Counter(
    "storefront_job_retries_total",
    "Jobs scheduled for another attempt.",
    ["actor"],
    registry=REGISTRY,
)
JOBS_DEAD_LETTERED = Counter(
    "storefront_jobs_dead_lettered_total",
    "Messages moved to a dead-letter queue (retries exhausted, permanent error, too many crashes).",
    ["actor"],
    registry=REGISTRY,
)
JOBS_IN_PROGRESS = Gauge(
    "storefront_jobs_in_progress", "Jobs running now, by actor.", ["actor"], registry=REGISTRY
)
SCHEDULER_TICKS = Counter(
    "storefront_scheduler_ticks_total",
    "Schedule ticks by outcome: fired, resent (claimed by a scheduler that died before"
    " enqueueing), or skipped (older than the catch-up window).",
    ["schedule", "outcome"],
    registry=REGISTRY,
)
SCHEDULER_LEADER = Gauge(
    "storefront_scheduler_leader",
    "1 while this scheduler holds the leader lease.",
    registry=REGISTRY,
)


def queue_keys(namespace: str, queue: str) -> dict[str, str]:
    """The Redis keys behind each state of a queue (Dramatiq's Redis layout)."""
    return {
        "queued": f"{namespace}:{queue}",
        "delayed": f"{namespace}:{queue}.DQ.msgs",
        "dead": f"{namespace}:{queue}.XQ",
        "in_flight": f"{namespace}:__acks__.*.{queue}",
    }


def read_queue_depth(
    client: sync_redis.Redis, namespace: str, queues: Iterable[str]
) -> dict[tuple[str, str], int]:
    """Messages per (queue, state): queued, delayed (retries waiting), dead, in_flight.

    Three round trips whatever the number of queues (the counts pipelined, one scan of the
    workers' acks sets, their sizes pipelined): the operator reads this for every instance
    every few seconds, so a round trip per key would be most of its idle work."""
    queues = list(queues)
    counts = client.pipeline(transaction=False)
    for queue in queues:
        keys = queue_keys(namespace, queue)
        counts.llen(keys["queued"])
        counts.hlen(keys["delayed"])
        counts.zcard(keys["dead"])
    counted = counts.execute()
    ack_keys = [
        key.decode() if isinstance(key, bytes) else str(key)
        for key in client.scan_iter(match=f"{namespace}:__acks__.*", count=500)
    ]
    sizes: list[int] = []
    if ack_keys:
        scards = client.pipeline(transaction=False)
        for key in ack_keys:
            scards.scard(key)
        sizes = [int(size) for size in scards.execute()]
    depth: dict[tuple[str, str], int] = {}
    for index, queue in enumerate(queues):
        queued, delayed, dead = counted[3 * index : 3 * index + 3]
        depth[(queue, "queued")] = int(queued)
        depth[(queue, "delayed")] = int(delayed)
        depth[(queue, "dead")] = int(dead)
        # Fetched but unacknowledged: the acks sets of this queue, one per worker process.
        # (Delayed messages a worker holds in memory sit in the acks of the ``.DQ`` queue.)
        pattern = queue_keys(namespace, queue)["in_flight"]
        depth[(queue, "in_flight")] = sum(
            size for key, size in zip(ack_keys, sizes, strict=True) if fnmatchcase(key, pattern)
        )
    return depth


class QueueDepthCollector(Collector):
    """``storefront_queue_depth{queue,state}``, read from Redis at each scrape."""

    def __init__(self, client: sync_redis.Redis, namespace: str, queues: Sequence[str]) -> None:
        self.client = client
        self.namespace = namespace
        self.queues = list(queues)

    def describe(self) -> list[GaugeMetricFamily]:
        return [self._family()]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        try:
            depth = read_queue_depth(self.client, self.namespace, self.queues)
        except sync_redis.RedisError as exc:
            log.warning("queue_depth_unavailable", error=str(exc))
            depth = {}
        for (queue, state), value in sorted(depth.items()):
            family.add_metric([queue, state], value)
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "storefront_queue_depth",
            "Messages per queue and state (queued, delayed, dead, in_flight).",
            labels=["queue", "state"],
        )


def serve_metrics(port: int, addr: str = "0.0.0.0") -> bool:
    """Expose the registry on ``port`` (0 disables); returns whether it is served."""
    if port == 0:
        return False
    start_http_server(port, addr=addr, registry=REGISTRY)
    log.info("metrics_serving", port=port)
    return True

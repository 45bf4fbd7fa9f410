"""queue_depth() against a real Redis filled by Dramatiq's own Redis broker."""

from __future__ import annotations

from collections.abc import Iterator

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker
from storefront_operator.queue import QueueReader, queue_depth

from worker.metrics import read_queue_depth

pytestmark = pytest.mark.redis


@pytest.fixture
def broker(redis_url: str) -> Iterator[RedisBroker]:
    broker = RedisBroker(url=redis_url)
    dramatiq.set_broker(broker)
    yield broker
    broker.close()


def test_counts_queued_delayed_and_in_flight(broker: RedisBroker, redis_url: str) -> None:
    @dramatiq.actor(broker=broker, queue_name="default", actor_name="depth_probe")
    def depth_probe(n: int) -> None:  # pragma: no cover - never run here
        pass

    for n in range(5):
        depth_probe.send(n)
    depth_probe.send_with_options(args=(99,), delay=60_000)
    assert queue_depth(redis_url, ["default"]) == 6

    # A consumer fetching messages moves them from the queue to its acks set: still counted.
    consumer = broker.consume("default", prefetch=2, timeout=1000)
    first = next(consumer)
    assert first is not None
    assert queue_depth(redis_url, ["default"]) == 6

    consumer.ack(first)
    assert queue_depth(redis_url, ["default"]) == 5
    consumer.close()


def test_sums_several_queues(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.rpush("dramatiq:images", "a", "b")
    client.rpush("dramatiq:default", "c")
    assert queue_depth(redis_url, ["default", "images"]) == 3
    assert queue_depth(redis_url, ["emails"]) == 0


def test_in_flight_is_counted_per_queue_across_worker_processes(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.sadd("dramatiq:__acks__.w1.default", "a", "b")
    client.sadd("dramatiq:__acks__.w2.default", "c")
    client.sadd("dramatiq:__acks__.w1.images", "d")
    client.sadd("dramatiq:__acks__.w2.default.DQ", "e")  # the delay queue's, not default's
    depth = read_queue_depth(client, "dramatiq", ["default", "images", "reports"])
    assert depth[("default", "in_flight")] == 3
    assert depth[("images", "in_flight")] == 1
    assert depth[("reports", "in_flight")] == 0


def test_unreachable_redis_raises_quickly() -> None:
    with pytest.raises((redis.RedisError, OSError)):
        queue_depth("redis://127.0.0.1:1/0", ["default"], timeout=0.5)


def test_reader_keeps_one_client_per_redis_and_survives_a_dropped_connection(
    redis_url: str,
) -> None:
    client = redis.Redis.from_url(redis_url)
    client.rpush("dramatiq:default", "a", "b")
    reader = QueueReader(timeout=1.0, max_clients=1)
    try:
        assert reader.depth(redis_url, ["default"]) == 2
        assert reader.depth(redis_url, ["default"]) == 2
        assert len(reader) == 1
        # The server closes idle connections (its `timeout`): the next read reconnects.
        client.client_kill_filter(_type="normal", skipme=True)
        assert reader.depth(redis_url, ["default"]) == 2
        # Past max_clients the least recently read client is closed.
        other = redis_url.rsplit("/", 1)[0] + "/1"
        assert reader.depth(other, ["default"]) == 0
        assert len(reader) == 1
    finally:
        reader.close()
        client.delete("dramatiq:default")
        client.close()

"""Read a Storefront's Dramatiq queue depth (queued + delayed + in-flight) from its Redis.

The key layout is Dramatiq's Redis broker's, read by the same function the worker's
`storefront_queue_depth` metric uses (worker.metrics.read_queue_depth): the queue list
`dramatiq:<queue>`, the delayed messages `dramatiq:<queue>.DQ.msgs`, and one acks set per worker
process, `dramatiq:__acks__.<worker id>.<queue>`, holding fetched but unacknowledged messages.
Dead-lettered messages are not load and are not counted.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import redis

from service.services.jobs import NAMESPACE
from worker.metrics import read_queue_depth

COUNTED_STATES = frozenset({"queued", "delayed", "in_flight"})


def queue_depth(
    url: str,
    queues: Sequence[str],
    namespace: str = NAMESPACE,
    timeout: float = 2.0,
) -> int:
    """Messages waiting or being processed across `queues`; raises redis.RedisError when Redis
    cannot be reached (the caller records why in the status)."""
    with redis.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout
    ) as client:
        return counted(read_queue_depth(client, namespace, queues))


def counted(depth: Mapping[tuple[str, str], int]) -> int:
    return sum(count for (_, state), count in depth.items() if state in COUNTED_STATES)


class QueueReader:
    """Queue depths of many instances, each from its own Redis, read every few seconds: a
    client per URL is kept (at most `max_clients`, the least recently read closed first), so a
    read is a few commands on an open connection instead of a new TCP connection each time."""

    def __init__(
        self, timeout: float = 2.0, max_clients: int = 1024, namespace: str = NAMESPACE
    ) -> None:
        self.timeout = timeout
        self.max_clients = max_clients
        self.namespace = namespace
        self._clients: OrderedDict[str, redis.Redis] = OrderedDict()
        self._lock = threading.Lock()

    def depth(self, url: str, queues: Sequence[str]) -> int:
        """Like :func:`queue_depth`, on the kept client; a connection the server closed while
        idle is retried once on a new one before Redis counts as unreachable."""
        try:
            return counted(read_queue_depth(self._client(url), self.namespace, queues))
        except (redis.ConnectionError, redis.TimeoutError):
            self.forget(url)
            return counted(read_queue_depth(self._client(url), self.namespace, queues))

    def _client(self, url: str) -> redis.Redis:
        with self._lock:
            client = self._clients.get(url)
            if client is not None:
                self._clients.move_to_end(url)
                return client
            client = redis.Redis.from_url(
                url, socket_connect_timeout=self.timeout, socket_timeout=self.timeout
            )
            self._clients[url] = client
            while len(self._clients) > self.max_clients:
                _, oldest = self._clients.popitem(last=False)
                oldest.close()
            return client

    def forget(self, url: str) -> None:
        with self._lock:
            client = self._clients.pop(url, None)
        if client is not None:
            client.close()

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), OrderedDict()
        for client in clients:
            client.close()

    def __len__(self) -> int:
        return len(self._clients)

"""Read a Storefront's Dramatiq queue depth (queued + delayed + in-flight) from its Redis.

The key layout is Dramatiq's Redis broker's, read by the same function the worker's
`storefront_queue_depth` metric uses (worker.metrics.read_queue_depth): the queue list
`dramatiq:<queue>`, the delayed messages `dramatiq:<queue>.DQ.msgs`, and one acks set per worker
process, `dramatiq:__acks__.<worker id>.<queue>`, holding fetched but unacknowledged messages.
Dead-lettered messages are not load and are not counted.
"""

from __future__ import annotations

from collections.abc import Sequence

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
        depth = read_queue_depth(client, namespace, queues)
    return sum(count for (_, state), count in depth.items() if state in COUNTED_STATES)

"""``probe``: a synthetic job that proves the queue end to end (delivery, retries, crashes).

Its one effect, appending ``key`` to ``storefront:probe:effects``, is written atomically with
the business key ``storefront:probe:done:{key}``, so it happens exactly once however often the
message is delivered; ``storefront:probe:runs`` counts every execution.
"""

from __future__ import annotations

import asyncio
from typing import Any

from worker.runtime import resources

RUNS_KEY = "storefront:probe:runs"
EFFECTS_KEY = "storefront:probe:effects"
ATTEMPTS_KEY = "storefront:probe:attempts"
DONE_PREFIX = "storefront:probe:done:"
TTL_SECONDS = 24 * 3600

_RECORD = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  redis.call('rpush', KEYS[2], ARGV[1])
  redis.call('expire', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


class ProbeFailure(Exception):
    """The failure a probe was asked to simulate (transient: it is retried)."""


async def probe(key: str, work_ms: int = 0, fail_times: int = 0) -> dict[str, Any]:
    res = await resources()
    redis = res.redis
    await redis.hincrby(RUNS_KEY, key, 1)
    await redis.expire(RUNS_KEY, TTL_SECONDS)
    if fail_times:
        attempt = await redis.hincrby(ATTEMPTS_KEY, key, 1)
        await redis.expire(ATTEMPTS_KEY, TTL_SECONDS)
        if attempt <= fail_times:
            raise ProbeFailure(f"attempt {attempt} of probe {key} fails on purpose")
    if work_ms:
        await asyncio.sleep(work_ms / 1000)
    record = redis.register_script(_RECORD)  # EVALSHA: the script's text is sent once
    first = await record(keys=[DONE_PREFIX + key, EFFECTS_KEY], args=[key, TTL_SECONDS])
    return {"key": key, "first": bool(first)}

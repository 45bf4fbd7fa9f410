"""Job status updates against a real Redis: what is stored, and what followers receive.

The update is one Lua script that also assembles the published JSON, so these tests hold it to
exactly what ``JobStatus.model_dump(mode="json")`` gives for the stored hash.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from service.services import events, jobs

AWKWARD_RESULT = {"path": "reports/2026/11.csv", "rows": 3, "note": 'quote " and é', "x": [1.5]}


def _next_message(pubsub: redis.client.PubSub) -> dict[str, Any]:
    for _ in range(50):
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is not None:
            return orjson.loads(message["data"])  # type: ignore[no-any-return]
    raise AssertionError("no status was published")


def test_each_update_is_stored_and_published_as_the_model_dumps_it(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    pubsub.subscribe(events.channel_for(jobs.job_topic("job-1")))
    pubsub.get_message(timeout=1)  # the subscription confirmation
    try:
        steps: list[dict[str, Any]] = [
            {"status": "running", "actor": "generate_sales_report"},
            {"progress": 40},
            {"status": "queued", "error": 'retrying: "timeout" / <backend>\n'},
            {"status": "succeeded", "progress": 100, "result": AWKWARD_RESULT},
        ]
        for changes in steps:
            status = jobs.update_job_sync(client, "job-1", 60, **changes)
            assert status is not None
            assert _next_message(pubsub) == status.model_dump(mode="json")
        assert status.result == AWKWARD_RESULT
        # The last attempt's error stays beside the success; stored stripped, as the model reads it.
        assert status.error == 'retrying: "timeout" / <backend>'
        assert 0 < client.ttl(jobs.job_key("job-1")) <= 60
    finally:
        pubsub.close()
        client.close()


def test_an_update_without_a_status_publishes_nothing(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    pubsub.subscribe(events.channel_for(jobs.job_topic("expired")))
    pubsub.get_message(timeout=1)
    try:
        assert jobs.update_job_sync(client, "expired", 60, progress=10) is None
        assert pubsub.get_message(ignore_subscribe_messages=True, timeout=0.3) is None
    finally:
        pubsub.close()
        client.close()


@pytest.mark.parametrize("result", [None, 0, "", [], {"empty": {}}])
def test_the_asyncio_update_publishes_the_same_json(redis_url: str, result: Any) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        client = aioredis.Redis.from_url(redis_url)
        pubsub = client.pubsub()
        await pubsub.subscribe(events.channel_for(jobs.job_topic("job-2")))
        await pubsub.get_message(timeout=1)
        try:
            status = await jobs.update_job(
                client, "job-2", 60, status="succeeded", progress=100, result=result
            )
            assert status is not None
            for _ in range(50):
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                if message is not None:
                    return orjson.loads(message["data"]), status.model_dump(mode="json")
            raise AssertionError("no status was published")
        finally:
            await pubsub.aclose()
            await client.aclose()

    published, dumped = asyncio.run(scenario())
    assert published == dumped


def test_enqueueing_a_known_job_again_keeps_its_status(redis_url: str) -> None:
    async def scenario() -> tuple[Any, Any]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            job_id = await jobs.enqueue(client, "probe", {"key": "again"})
            first = await jobs.get_job(client, job_id)
            await jobs.update_job(client, job_id, status="succeeded", progress=100, result=1)
            # The same job ID enqueued once more (the outbox relaying a row whose first
            # enqueue went through): the message goes again, the finished status stays.
            await jobs.enqueue(client, "probe", {"key": "again"}, message_id=job_id)
            return first, await jobs.get_job(client, job_id)
        finally:
            await client.aclose()

    first, after = asyncio.run(scenario())
    assert first is not None and first.status == "queued"
    assert after is not None
    assert (after.status, after.progress, after.result) == ("succeeded", 100, 1)

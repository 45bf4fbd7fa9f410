"""Scheduler fail-over after a crash: two real schedulers on an every-second cron; the leader is
SIGKILLed (it cannot release its lease), the other leads once the lease expires, no tick fires
twice, and the ticks missed meanwhile are coalesced into the latest one, as :func:`decide` says."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from dramatiq import Message

from tests.worker.conftest import base_env, start_storefront, wait_for
from worker.scheduler import LEASE_KEY

pytestmark = [pytest.mark.redis, pytest.mark.slow]

SECOND = timedelta(seconds=1)
LEASE_TTL_SECONDS = 5
# Kill only right after a renewal, so the lease outlives the kill by seconds: the gap then
# spans at least two ticks, which the new leader must coalesce.
MIN_LEASE_LEFT_MS = 3_000


def records(log_path: Path, event: str) -> list[dict[str, Any]]:
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event:
                out.append(record)
    return out


def queued_ticks(client: sync_redis.Redis) -> list[datetime]:
    """The tick of every job the schedulers put on the queue, in order. A message sent again
    because its leader died before recording the send keeps its message ID and counts once:
    the worker runs one message ID once."""
    messages = {
        message.message_id: message
        for message in map(Message.decode, client.hvals("dramatiq:default.msgs"))
    }
    return sorted(datetime.fromisoformat(m.options["scheduled_for"]) for m in messages.values())


def fired(log_path: Path) -> dict[datetime, dict[str, Any]]:
    return {datetime.fromisoformat(r["tick"]): r for r in records(log_path, "schedule_fired")}


def test_a_sigkilled_leader_is_replaced_once_its_lease_expires(
    redis_url: str, redis_client: sync_redis.Redis, tmp_path: Path
) -> None:
    cron = (
        '[{"name": "every-second", "cron": "* * * * * *", "job": "probe", "args": {"key": "tick"}}]'
    )
    env = base_env(
        redis_url,
        tmp_path,
        STOREFRONT_WORKER_CRON=cron,
        STOREFRONT_WORKER_LEASE_TTL_SECONDS=str(LEASE_TTL_SECONDS),
        STOREFRONT_WORKER_SCHEDULER_POLL_SECONDS="0.1",
    )
    logs = {name: tmp_path / f"{name}.log" for name in ("a", "b")}
    processes = {
        name: start_storefront("scheduler", path, env, ready="scheduler_started")
        for name, path in logs.items()
    }
    try:
        wait_for(lambda: len(queued_ticks(redis_client)) >= 3, 60, what="first ticks")

        def fresh_lease() -> tuple[bytes, int] | None:
            with redis_client.pipeline(transaction=True) as pipe:
                pipe.get(LEASE_KEY)
                pipe.pttl(LEASE_KEY)
                value, left_ms = pipe.execute()
            return (value, left_ms) if value and left_ms >= MIN_LEASE_LEFT_MS else None

        lease_value, _ = wait_for(fresh_lease, 30, interval=0.02, what="a fresh lease")
        fence = int(lease_value.rsplit(b":", 1)[1])
        leader = next(
            name
            for name, path in logs.items()
            if any(r["fence"] == fence for r in records(path, "scheduler_leader"))
        )
        follower = "b" if leader == "a" else "a"
        # The lease as last seen alive; the dead leader can only have extended it since.
        observed_at = time.time()
        left_ms = redis_client.pttl(LEASE_KEY)
        assert redis_client.get(LEASE_KEY) == lease_value
        os.kill(processes[leader].pid, signal.SIGKILL)
        assert processes[leader].popen is not None
        processes[leader].popen.wait(timeout=30)
        killed_at = datetime.now(UTC)

        def took_over() -> list[dict[str, Any]]:
            return [r for r in records(logs[follower], "scheduler_leader") if r["fence"] > fence]

        [takeover] = wait_for(took_over, 60, what="the follower to take the lease")
        assert takeover["fence"] == fence + 1  # nobody else held it in between
        assert redis_client.get(LEASE_KEY).endswith(f":{fence + 1}".encode())
        # Not before the lease it could not renew had run out.
        taken_at = datetime.fromisoformat(takeover["timestamp"]).timestamp()
        assert taken_at >= observed_at + left_ms / 1000 - 0.01

        wait_for(
            lambda: sum(t > killed_at for t in queued_ticks(redis_client)) >= 3,
            60,
            what="ticks from the new leader",
        )
    finally:
        for process in processes.values():
            process.stop()

    ticks = queued_ticks(redis_client)
    assert len(ticks) == len(set(ticks)), "a tick fired twice"
    logged = {**fired(logs["a"]), **fired(logs["b"])}
    assert len(logged) == len(fired(logs["a"])) + len(fired(logs["b"]))
    assert set(logged) <= set(ticks)  # logged only once enqueued
    assert not any(records(path, "schedule_tick_skipped") for path in logs.values())

    # After the hand-over only the new leader fires.
    first_after = min(t for t, r in logged.items() if r["fence"] == fence + 1)
    assert all(logged[t]["fence"] == fence + 1 for t in ticks if t >= first_after)
    last_before = max(t for t in ticks if t < first_after)
    assert last_before <= killed_at

    # The gap: the ticks in between never fired; the first one after it carries their count.
    gap = round((first_after - last_before) / SECOND)
    assert gap >= 2, (last_before, first_after)
    assert logged[first_after]["coalesced"] == gap - 1
    # Elsewhere one tick a second, each coalescing what (rarely, on a busy machine) it skipped.
    for earlier, later in itertools.pairwise(ticks):
        if later in logged:
            assert logged[later]["coalesced"] == round((later - earlier) / SECOND) - 1
    print(
        f"\nfail-over: lease {LEASE_TTL_SECONDS}s with {left_ms} ms left at the kill; "
        f"{gap - 1} ticks coalesced into {first_after.time()}; new leader took over "
        f"{taken_at - killed_at.timestamp():.2f}s after the kill"
    )

"""The scheduler: pure tick decisions, and real scheduler processes sharing one Redis."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis as sync_redis
from dramatiq import Message

from tests.worker.conftest import base_env, start_storefront, wait_for
from worker.scheduler import decide, latest_tick

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def test_the_tick_at_now_is_due() -> None:
    assert latest_tick("0 2 * * *", T0) == T0
    assert decide("0 2 * * *", T0 - timedelta(days=1), T0, HOUR).fire == T0


def test_a_fired_tick_is_not_due_again() -> None:
    decision = decide("0 2 * * *", T0, T0 + timedelta(minutes=5), HOUR)
    assert decision.fire is None and decision.skipped is None


def test_missed_ticks_within_the_window_fire_once_for_the_latest() -> None:
    decision = decide("*/10 * * * *", T0, T0 + timedelta(minutes=35), HOUR)
    assert decision.fire == T0 + timedelta(minutes=30)
    assert decision.coalesced == 2  # 02:10 and 02:20 are folded into 02:30


def test_a_tick_older_than_the_window_is_skipped() -> None:
    decision = decide("0 2 * * *", T0 - timedelta(days=1), T0 + 2 * HOUR, HOUR)
    assert decision.fire is None and decision.skipped == T0


def test_first_start_fires_only_a_recent_tick() -> None:
    assert decide("0 * * * *", None, T0 + timedelta(minutes=3), HOUR).fire == T0
    assert decide("0 2 * * *", None, T0 + 3 * HOUR, HOUR).skipped == T0


def fired_ticks(client: sync_redis.Redis) -> list[str]:
    """The scheduled_for of every message the schedulers put on the queue."""
    raw = client.hvals("dramatiq:default.msgs")
    return [Message.decode(data).options["scheduled_for"] for data in raw]


@pytest.mark.redis
@pytest.mark.slow
def test_two_schedulers_and_a_restart_fire_each_tick_exactly_once(
    redis_url: str, redis_client: sync_redis.Redis, tmp_path: Path
) -> None:
    cron = (
        '[{"name": "every-second", "cron": "* * * * * *", "job": "probe", "args": {"key": "tick"}}]'
    )
    env = base_env(
        redis_url,
        tmp_path,
        STOREFRONT_WORKER_CRON=cron,
        STOREFRONT_WORKER_LEASE_TTL_SECONDS="2",
        STOREFRONT_WORKER_SCHEDULER_POLL_SECONDS="0.1",
    )
    first = start_storefront("scheduler", tmp_path / "a.log", env, ready="scheduler_started")
    second = start_storefront("scheduler", tmp_path / "b.log", env, ready="scheduler_started")
    try:
        wait_for(lambda: len(fired_ticks(redis_client)) >= 3, 20, what="first ticks")
        # Stop the leader gracefully: it releases the lease and the other takes over at once.
        leader, follower = (
            (first, second)
            if "scheduler_leader" in (tmp_path / "a.log").read_text()
            else (second, first)
        )
        leader.stop()
        count = len(fired_ticks(redis_client))
        wait_for(
            lambda: len(fired_ticks(redis_client)) >= count + 3, 20, what="ticks after failover"
        )
        restarted = start_storefront(
            "scheduler", tmp_path / "c.log", env, ready="scheduler_started"
        )
        time.sleep(2.5)
        follower.stop()  # the restarted one takes over
        count = len(fired_ticks(redis_client))
        wait_for(
            lambda: len(fired_ticks(redis_client)) >= count + 3, 20, what="ticks after restart"
        )
        restarted.stop()
    finally:
        for process in (first, second):
            process.stop()
    ticks = sorted(datetime.fromisoformat(t) for t in fired_ticks(redis_client))
    assert len(ticks) == len(set(ticks)), "a tick fired twice"
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(ticks)]
    # A graceful hand-over misses nothing: consecutive seconds from the first tick to the last.
    assert gaps and all(gap == 1.0 for gap in gaps), gaps
    assert len(ticks) >= 9

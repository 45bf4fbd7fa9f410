"""decide_workers(): queue depth → worker count, within bounds, with hysteresis and cooldown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from storefront_operator.scaling import decide_workers
from storefront_operator.spec import WorkerAutoscaling

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = WorkerAutoscaling(
    enabled=True,
    min_replicas=1,
    max_replicas=10,
    target_messages_per_worker=100,
    scale_down_cooldown_seconds=300,
)


def test_scale_up_at_once_to_cover_the_queue() -> None:
    decision = decide_workers(POLICY, current=1, queue_depth=450, now=NOW, last_scale_time=NOW)
    assert (decision.replicas, decision.direction) == (5, "up")


def test_scale_up_capped_at_max() -> None:
    decision = decide_workers(POLICY, current=2, queue_depth=10_000, now=NOW, last_scale_time=None)
    assert (decision.replicas, decision.direction) == (10, "up")


def test_empty_queue_keeps_min_replicas() -> None:
    decision = decide_workers(POLICY, current=1, queue_depth=0, now=NOW, last_scale_time=None)
    assert (decision.replicas, decision.direction) == (1, "none")


def test_scale_down_waits_for_cooldown() -> None:
    recent = NOW - timedelta(seconds=100)
    held = decide_workers(POLICY, current=5, queue_depth=50, now=NOW, last_scale_time=recent)
    assert (held.replicas, held.direction) == (5, "none")
    assert "cooldown" in held.reason
    later = NOW - timedelta(seconds=301)
    down = decide_workers(POLICY, current=5, queue_depth=50, now=NOW, last_scale_time=later)
    assert (down.replicas, down.direction) == (1, "down")


def test_scale_down_without_history_goes_straight_away() -> None:
    decision = decide_workers(POLICY, current=5, queue_depth=150, now=NOW, last_scale_time=None)
    assert (decision.replicas, decision.direction) == (2, "down")


def test_hysteresis_band_ignores_noise() -> None:
    # 4 workers x 100 = 400 capacity: 405 (+1.25%) or 390 (-2.5%) changes nothing.
    assert decide_workers(POLICY, 4, 405, NOW, None).direction == "none"
    assert decide_workers(POLICY, 4, 390, NOW, None).direction == "none"
    assert decide_workers(POLICY, 4, 460, NOW, None).direction == "up"


def test_out_of_bounds_current_is_corrected_even_during_cooldown() -> None:
    decision = decide_workers(POLICY, current=15, queue_depth=10_000, now=NOW, last_scale_time=NOW)
    assert (decision.replicas, decision.direction) == (10, "down")
    zero = decide_workers(POLICY, current=0, queue_depth=0, now=NOW, last_scale_time=NOW)
    assert (zero.replicas, zero.direction) == (1, "up")


def test_scale_to_zero_allowed_when_min_is_zero() -> None:
    policy = POLICY.model_copy(update={"min_replicas": 0})
    decision = decide_workers(policy, current=2, queue_depth=0, now=NOW, last_scale_time=None)
    assert (decision.replicas, decision.direction) == (0, "down")
    back = decide_workers(policy, current=0, queue_depth=1, now=NOW, last_scale_time=NOW)
    assert (back.replicas, back.direction) == (1, "up")

"""Worker autoscaling decision on queue depth: a pure function, tested without Redis or a cluster.

Like the HorizontalPodAutoscaler: desired = ceil(depth / target per worker) within bounds, a
tolerance band around the current count (hysteresis, no flapping on noise), scale-up at once,
scale-down only after a cooldown since the last change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from storefront_operator.spec import WorkerAutoscaling

Direction = Literal["up", "down", "none"]
TOLERANCE = 0.1


@dataclass(frozen=True)
class ScalingDecision:
    replicas: int
    direction: Direction
    reason: str


def decide_workers(
    policy: WorkerAutoscaling,
    current: int,
    queue_depth: int,
    now: datetime,
    last_scale_time: datetime | None,
    tolerance: float = TOLERANCE,
) -> ScalingDecision:
    """The worker count to run for `queue_depth` queued + in-flight messages."""
    low, high = policy.min_replicas, policy.max_replicas
    target = policy.target_messages_per_worker
    if current < low or current > high:
        bounded = min(max(current, low), high)
        direction: Direction = "up" if bounded > current else "down"
        return ScalingDecision(bounded, direction, f"{current} is outside [{low}, {high}]")

    wanted = min(max(math.ceil(queue_depth / target), low), high)
    if wanted == current:
        return ScalingDecision(current, "none", f"{queue_depth} messages fit {current} workers")
    if current > 0:
        load = queue_depth / (current * target)
        # Inside the band the current count is good enough: noise must not flap replicas.
        if wanted < current and load >= 1 - tolerance:
            return ScalingDecision(current, "none", f"load {load:.2f} within tolerance")
        if wanted > current and load <= 1 + tolerance:
            return ScalingDecision(current, "none", f"load {load:.2f} within tolerance")
    if wanted > current:
        return ScalingDecision(
            wanted, "up", f"{queue_depth} messages need {wanted} workers at {target} each"
        )
    if last_scale_time is not None:
        waited = (now - last_scale_time).total_seconds()
        if waited < policy.scale_down_cooldown_seconds:
            return ScalingDecision(
                current,
                "none",
                f"scale-down to {wanted} waits for the cooldown "
                f"({waited:.0f}s of {policy.scale_down_cooldown_seconds}s)",
            )
    return ScalingDecision(
        wanted, "down", f"{queue_depth} messages need only {wanted} workers at {target} each"
    )

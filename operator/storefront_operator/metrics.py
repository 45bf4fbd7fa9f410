"""The operator's own Prometheus metrics, on the process's one registry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from service.observability.metrics import REGISTRY

RECONCILES = Counter(
    "storefront_operator_reconciles_total",
    "Reconciles of Storefront instances, by outcome (success, degraded, error).",
    ["outcome"],
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    "storefront_operator_reconcile_duration_seconds",
    "Time to render, apply and observe one Storefront instance.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
INSTANCES = Gauge(
    "storefront_operator_instances",
    "Storefront instances watched, by phase (Ready, Progressing, Degraded).",
    ["phase"],
    registry=REGISTRY,
)
SCALING_DECISIONS = Counter(
    "storefront_operator_scaling_decisions_total",
    "Worker autoscaling decisions that changed the replica count, by direction (up, down).",
    ["direction"],
    registry=REGISTRY,
)
PHASES = ("Ready", "Progressing", "Degraded")

# Export every series from the start: a rate() over a series that appears late misses its start.
for _outcome in ("success", "degraded", "error"):
    RECONCILES.labels(outcome=_outcome)
for _direction in ("up", "down"):
    SCALING_DECISIONS.labels(direction=_direction)


def set_instance_phases(phases: Mapping[Any, str]) -> None:
    """Publish how many instances are in each phase (every phase, zeros included)."""
    for phase in PHASES:
        INSTANCES.labels(phase=phase).set(sum(1 for p in phases.values() if p == phase))

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
API_REQUESTS = Counter(
    "storefront_operator_api_requests_total",
    "Requests to the Kubernetes API server, by client (operator: reconciles, resyncs and "
    "autoscaling; kopf: watches, its bookkeeping and peering), verb and outcome.",
    ["client", "verb", "outcome"],
    registry=REGISTRY,
)
WATCH_RESTARTS = Counter(
    "storefront_operator_watch_restarts_total",
    "Watch streams re-opened after the first, by resource: the server's timeout every few "
    "minutes, more when connections stall or the API server restarts.",
    ["resource"],
    registry=REGISTRY,
)
CHILD_EVENTS = Counter(
    "storefront_operator_child_events_total",
    "Watch events on the operator's children, by verdict: matches (the operator's own write or "
    "a change it does not own), changed or deleted by someone else, status (a Deployment or Job "
    "the Storefront's status reads), unknown (not from the instance's last reconcile).",
    ["verdict"],
    registry=REGISTRY,
)
RESYNC_CHECKS = Counter(
    "storefront_operator_resync_checks_total",
    "Instances checked by the periodic resync, by result: matched (skipped) or reconciled.",
    ["result"],
    registry=REGISTRY,
)
RECONCILE_BACKLOG = Gauge(
    "storefront_operator_reconcile_backlog",
    "Instances waiting for a reconcile (queued: debounced, due or retried later) or in one "
    "(running).",
    ["state"],
    registry=REGISTRY,
)
AUTOSCALE_DURATION = Histogram(
    "storefront_operator_autoscale_pass_duration_seconds",
    "Time one autoscaling pass takes over every instance (queue depth, status, scaling).",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0),
    registry=REGISTRY,
)
SCALING_DECISIONS = Counter(
    "storefront_operator_scaling_decisions_total",
    "Worker autoscaling decisions that changed the replica count, by direction (up, down).",
    ["direction"],
    registry=REGISTRY,
)
PHASES = ("Ready", "Progressing", "Degraded")
VERDICTS = ("matches", "changed", "deleted", "status", "unknown")

# Export every series from the start: a rate() over a series that appears late misses its start.
for _outcome in ("success", "degraded", "error"):
    RECONCILES.labels(outcome=_outcome)
for _direction in ("up", "down"):
    SCALING_DECISIONS.labels(direction=_direction)
for _verdict in VERDICTS:
    CHILD_EVENTS.labels(verdict=_verdict)
for _result in ("matched", "reconciled"):
    RESYNC_CHECKS.labels(result=_result)
for _state in ("queued", "running"):
    RECONCILE_BACKLOG.labels(state=_state)


def outcome(status: int) -> str:
    """An API response's outcome from its HTTP status (0: the server was not reached)."""
    if status == 0:
        return "unreachable"
    if 200 <= status < 300:
        return "success"
    if status == 404:
        return "not_found"
    if status == 409:
        return "conflict"
    return "client_error" if status < 500 else "server_error"


def count_api_request(client: str, verb: str, status: int) -> None:
    API_REQUESTS.labels(client=client, verb=verb, outcome=outcome(status)).inc()


def set_instance_phases(phases: Mapping[Any, str]) -> None:
    """Publish how many instances are in each phase (every phase, zeros included)."""
    for phase in PHASES:
        INSTANCES.labels(phase=phase).set(sum(1 for p in phases.values() if p == phase))

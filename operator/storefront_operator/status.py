"""Observed children → the Storefront's `status` (conditions per the Kubernetes API conventions):
pure functions, so every condition transition is unit-tested without a cluster."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from storefront_operator.render import child_name, worker_selector

MigrationState = Literal["succeeded", "running", "failed", "missing"]
Phase = Literal["Ready", "Progressing", "Degraded"]


def utc_now() -> datetime:
    return datetime.now(UTC)


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z and whole seconds, as Kubernetes writes times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class Problem:
    """Why an instance is Degraded: a CamelCase reason and a message saying what to do."""

    reason: str
    message: str


@dataclass(frozen=True)
class Observation:
    """What the operator saw of one instance's children during a reconcile."""

    name: str
    namespace: str
    generation: int
    api_desired: int
    worker_desired: int
    api: Mapping[str, Any] | None = None
    worker: Mapping[str, Any] | None = None
    migration: MigrationState = "missing"
    migration_job: str | None = None
    problem: Problem | None = None


def deployment_ready(deployment: Mapping[str, Any] | None) -> int:
    if not deployment:
        return 0
    return int((deployment.get("status") or {}).get("readyReplicas") or 0)


def deployment_rolled_out(deployment: Mapping[str, Any] | None) -> bool:
    """The controller has seen the latest template and every replica runs it."""
    if not deployment:
        return False
    status = deployment.get("status") or {}
    meta = deployment.get("metadata") or {}
    wanted = int((deployment.get("spec") or {}).get("replicas", 1))
    return (
        int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 1)
        and int(status.get("updatedReplicas") or 0) >= wanted
        and int(status.get("availableReplicas") or 0) >= wanted
    )


def condition(
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
    previous: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """A condition; lastTransitionTime moves only when `status` flips."""
    value = "True" if status else "False"
    before = next((c for c in previous if c.get("type") == type_), None)
    since = (
        before["lastTransitionTime"]
        if before and before.get("status") == value and before.get("lastTransitionTime")
        else timestamp(now)
    )
    return {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


def compute_status(
    seen: Observation, previous: Mapping[str, Any] | None, now: datetime
) -> dict[str, Any]:
    """The status fields the operator owns (queue depth and scaling are written elsewhere)."""
    before = list((previous or {}).get("conditions") or [])
    api_ready = deployment_ready(seen.api)
    workers_ready = deployment_ready(seen.worker)
    gen = seen.generation

    problem = seen.problem
    if problem is None and seen.migration == "failed":
        problem = Problem(
            "MigrationFailed",
            f"Job {seen.migration_job} failed: read its logs with "
            f"`kubectl logs -n {seen.namespace} job/{seen.migration_job}`; the API keeps "
            "running the previous image until a migration for the new one succeeds.",
        )

    if problem is not None:
        progressing = condition(
            "Progressing", False, problem.reason, problem.message, gen, now, before
        )
    elif seen.migration == "running":
        progressing = condition(
            "Progressing",
            True,
            "MigrationRunning",
            f"waiting for Job {seen.migration_job} before rolling out API, worker and scheduler",
            gen,
            now,
            before,
        )
    elif not (deployment_rolled_out(seen.api) and deployment_rolled_out(seen.worker)):
        progressing = condition(
            "Progressing",
            True,
            "RollingOut",
            "API or worker pods are being updated",
            gen,
            now,
            before,
        )
    else:
        progressing = condition("Progressing", False, "RolloutComplete", "", gen, now, before)

    if problem is not None:
        ready = condition("Ready", False, problem.reason, problem.message, gen, now, before)
    elif seen.api_desired and api_ready == 0:
        ready = condition(
            "Ready",
            False,
            "ApiUnavailable",
            f"{api_ready}/{seen.api_desired} API replicas ready",
            gen,
            now,
            before,
        )
    elif seen.worker_desired and workers_ready == 0:
        ready = condition(
            "Ready",
            False,
            "WorkersUnavailable",
            f"0/{seen.worker_desired} worker replicas ready",
            gen,
            now,
            before,
        )
    else:
        ready = condition(
            "Ready",
            True,
            "Available",
            f"{api_ready}/{seen.api_desired} API and {workers_ready}/{seen.worker_desired} "
            "worker replicas ready",
            gen,
            now,
            before,
        )

    degraded = (
        condition("Degraded", True, problem.reason, problem.message, gen, now, before)
        if problem is not None
        else condition("Degraded", False, "AsExpected", "", gen, now, before)
    )
    phase: Phase = (
        "Degraded"
        if problem is not None
        else "Ready"
        if ready["status"] == "True"
        else "Progressing"
    )
    return {
        "observedGeneration": gen,
        "phase": phase,
        "conditions": [ready, progressing, degraded],
        "apiReplicas": api_ready,
        "workerReplicas": workers_ready,
        "workerSelector": worker_selector(seen.name),
        "migration": seen.migration_job,
        "endpoints": {
            "api": f"http://{child_name(seen.name, 'api')}.{seen.namespace}.svc:80",
            "metrics": f"http://{child_name(seen.name, 'api')}.{seen.namespace}.svc:8000/metrics",
        },
        "lastReconcileTime": timestamp(now),
    }


def status_changed(previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> bool:
    """Whether writing `current` changes anything but the reconcile time: a reconcile that
    found everything as it was leaves the Storefront untouched (no write, no watch event)."""
    before = previous or {}
    return (
        any(before.get(k) != v for k, v in current.items() if k != "lastReconcileTime")
        or "lastReconcileTime" not in before
    )


def ready_transition(
    previous: Mapping[str, Any] | None, current: Mapping[str, Any]
) -> tuple[str, str, str] | None:
    """(event type, reason, message) when the phase changed, for a Kubernetes Event."""
    old = (previous or {}).get("phase")
    new = current.get("phase")
    if old == new:
        return None
    cond = {c["type"]: c for c in current.get("conditions", [])}
    if new == "Degraded":
        return "Warning", cond["Degraded"]["reason"], cond["Degraded"]["message"]
    if new == "Ready":
        return "Normal", "Ready", cond["Ready"]["message"]
    return "Normal", cond["Progressing"]["reason"], f"phase {old or 'None'} -> {new}"


def migration_state(job: Mapping[str, Any] | None) -> MigrationState:
    """Read a Job's outcome from its status (succeeded count or terminal conditions)."""
    if not job:
        return "missing"
    status = job.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    if conditions.get("Complete") == "True" or int(status.get("succeeded") or 0) > 0:
        return "succeeded"
    if conditions.get("Failed") == "True":
        return "failed"
    return "running"

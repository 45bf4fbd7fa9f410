"""compute_status(): conditions, phase and replica counts from observed children."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from storefront_operator.reconcile import rollout_allowed
from storefront_operator.status import (
    Observation,
    Problem,
    compute_status,
    migration_state,
    ready_transition,
    status_changed,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def deployment(replicas: int, ready: int, generation: int = 1, observed: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "readyReplicas": ready,
            "updatedReplicas": ready,
            "availableReplicas": ready,
        },
    }


def seen(**kwargs: Any) -> Observation:
    base: dict[str, Any] = {
        "name": "demo",
        "namespace": "shop",
        "generation": 3,
        "api_desired": 2,
        "worker_desired": 1,
        "migration": "succeeded",
        "migration_job": "demo-migrate-abc",
    }
    return Observation(**{**base, **kwargs})


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_ready_when_everything_is_available() -> None:
    status = compute_status(seen(api=deployment(2, 2), worker=deployment(1, 1)), None, NOW)
    cond = conditions(status)
    assert status["phase"] == "Ready"
    assert cond["Ready"]["status"] == "True" and cond["Ready"]["reason"] == "Available"
    assert cond["Progressing"]["status"] == "False"
    assert cond["Degraded"]["status"] == "False"
    assert status["observedGeneration"] == 3
    assert all(c["observedGeneration"] == 3 for c in status["conditions"])
    assert (status["apiReplicas"], status["workerReplicas"]) == (2, 1)
    assert status["endpoints"]["api"] == "http://demo-api.shop.svc:80"
    assert status["lastReconcileTime"] == "2026-01-01T12:00:00Z"
    assert status["workerSelector"].startswith("app.kubernetes.io/name=storefront")


def test_progressing_while_pods_start() -> None:
    status = compute_status(seen(api=deployment(2, 0), worker=deployment(1, 0)), None, NOW)
    cond = conditions(status)
    assert status["phase"] == "Progressing"
    assert cond["Ready"]["reason"] == "ApiUnavailable"
    assert cond["Progressing"]["status"] == "True" and cond["Progressing"]["reason"] == "RollingOut"


def test_waiting_for_migration() -> None:
    status = compute_status(seen(migration="running"), None, NOW)
    cond = conditions(status)
    assert cond["Progressing"]["reason"] == "MigrationRunning"
    assert "demo-migrate-abc" in cond["Progressing"]["message"]


def test_failed_migration_is_degraded_with_a_way_out() -> None:
    status = compute_status(seen(migration="failed"), None, NOW)
    cond = conditions(status)
    assert status["phase"] == "Degraded"
    assert cond["Degraded"]["status"] == "True" and cond["Degraded"]["reason"] == "MigrationFailed"
    assert "kubectl logs -n shop job/demo-migrate-abc" in cond["Degraded"]["message"]


def test_problem_is_degraded() -> None:
    problem = Problem("SecretNotFound", "create it")
    cond = conditions(compute_status(seen(problem=problem), None, NOW))
    assert cond["Degraded"]["status"] == "True" and cond["Degraded"]["message"] == "create it"
    assert cond["Ready"]["status"] == "False" and cond["Ready"]["reason"] == "SecretNotFound"


def test_transition_time_moves_only_when_status_flips() -> None:
    first = compute_status(seen(api=deployment(2, 2), worker=deployment(1, 1)), None, NOW)
    later = NOW + timedelta(minutes=5)
    same = compute_status(seen(api=deployment(2, 2), worker=deployment(1, 1)), first, later)
    assert conditions(same)["Ready"]["lastTransitionTime"] == "2026-01-01T12:00:00Z"
    flipped = compute_status(seen(api=deployment(2, 0), worker=deployment(1, 1)), first, later)
    assert conditions(flipped)["Ready"]["lastTransitionTime"] == "2026-01-01T12:05:00Z"


def test_events_on_phase_changes_only() -> None:
    ready = compute_status(seen(api=deployment(2, 2), worker=deployment(1, 1)), None, NOW)
    assert ready_transition(None, ready) == ("Normal", "Ready", ready["conditions"][0]["message"])
    assert ready_transition(ready, ready) is None
    degraded = compute_status(seen(problem=Problem("InvalidSpec", "bad")), ready, NOW)
    assert ready_transition(ready, degraded) == ("Warning", "InvalidSpec", "bad")


def test_migration_state_from_job_status() -> None:
    assert migration_state(None) == "missing"
    assert migration_state({"status": {}}) == "running"
    assert migration_state({"status": {"succeeded": 1}}) == "succeeded"
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    assert migration_state(failed) == "failed"


def test_api_rollout_waits_for_this_images_migration() -> None:
    image = "ghcr.io/storefront/storefront:0.2.0"
    old = {
        "metadata": {"annotations": {"storefront.dev/image": "ghcr.io/storefront/storefront:0.1.0"}}
    }
    same = {"metadata": {"annotations": {"storefront.dev/image": image}}}
    assert rollout_allowed("succeeded", old, image)
    assert not rollout_allowed("running", old, image)
    assert not rollout_allowed("missing", None, image)
    assert rollout_allowed("missing", same, image)  # already runs it: nothing to wait for


def test_a_status_that_only_moves_its_time_is_not_written() -> None:
    before = compute_status(seen(), None, NOW)
    again = compute_status(seen(), before, NOW + timedelta(minutes=5))
    assert not status_changed(before, again)
    assert status_changed(None, again)
    assert status_changed(before, compute_status(seen(generation=4), before, NOW))

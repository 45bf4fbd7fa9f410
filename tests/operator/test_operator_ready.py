"""User story on a cluster that runs pods (controllers, scheduler, a kwok fake node): a new
Storefront runs its migration Job to completion, its API, worker and scheduler pods become Ready,
its status says Ready, and scaling the API in the spec rolls through to Ready pods."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from storefront_operator.render import migration_job_name, selector_labels
from storefront_operator.spec import parse_spec

from tests.components.kube import KubeCluster, wait_for
from tests.operator.conftest import (
    BASIC_SPEC,
    MERGE,
    SF,
    condition,
    create_storefront,
    deployment_path,
    get,
    storefront,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

# Pods go through the scheduler, kwok and several controllers on a loaded machine.
ROLLOUT = 240.0
COMPONENTS = ("api", "worker", "scheduler")


def pods(api: httpx.Client, ns: str, name: str, component: str) -> list[dict[str, Any]]:
    selector = ",".join(f"{k}={v}" for k, v in selector_labels(name, component).items())
    response = api.get(f"/api/v1/namespaces/{ns}/pods", params={"labelSelector": selector})
    response.raise_for_status()
    return list(response.json()["items"])


def ready_pods(api: httpx.Client, ns: str, name: str, component: str) -> list[dict[str, Any]]:
    """Live pods of a component whose Ready condition is True."""
    return [
        pod
        for pod in pods(api, ns, name, component)
        if not pod["metadata"].get("deletionTimestamp")
        and condition(pod, "Ready").get("status") == "True"
    ]


def job_complete(job: dict[str, Any] | None) -> bool:
    return bool(job) and condition(job or {}, "Complete").get("status") == "True"


def settled(body: dict[str, Any], api_replicas: int, worker_replicas: int) -> bool:
    """Status describes the current generation, fully rolled out and Ready."""
    status = body.get("status") or {}
    return (
        status.get("observedGeneration") == body["metadata"]["generation"]
        and status.get("phase") == "Ready"
        and condition(body, "Ready").get("status") == "True"
        and condition(body, "Progressing").get("reason") == "RolloutComplete"
        and status.get("apiReplicas") == api_replicas
        and status.get("workerReplicas") == worker_replicas
    )


def test_storefront_becomes_ready_and_scales_its_api(
    kube_cluster: KubeCluster, api: httpx.Client, operator: dict[str, int], secrets: str
) -> None:
    assert kube_cluster.node_name is not None, "kwok (fake node) is required to run pods"
    ns, name = secrets, "ready"
    spec = {**BASIC_SPEC, "api": {"replicas": 1}, "worker": {"replicas": 1}}
    assert create_storefront(api, ns, name, spec).status_code == 201

    # The migration Job runs a pod on the node and the Job controller records its success.
    job_path = f"/apis/batch/v1/namespaces/{ns}/jobs/{migration_job_name(name, parse_spec(spec))}"
    job = wait_for(
        lambda: (j := get(api, job_path)) and job_complete(j) and j, ROLLOUT, what="Job complete"
    )
    assert job["status"]["succeeded"] == 1
    migrate = pods(api, ns, name, "migrate")
    assert migrate and all(p["spec"]["nodeName"] == kube_cluster.node_name for p in migrate)
    assert any(p["status"]["phase"] == "Succeeded" for p in migrate)

    # Only then do the application Deployments appear, each with one Ready pod on the node.
    for component in COMPONENTS:
        wait_for(
            lambda c=component: len(ready_pods(api, ns, name, c)) == 1,
            ROLLOUT,
            what=f"one Ready {component} pod",
        )
        deployment = get(api, deployment_path(ns, f"{name}-{component}")) or {}
        assert deployment["spec"]["replicas"] == 1, component
        pod = ready_pods(api, ns, name, component)[0]
        assert pod["spec"]["nodeName"] == kube_cluster.node_name, component

    body = wait_for(
        lambda: (sf := storefront(api, ns, name)) and settled(sf, 1, 1) and sf,
        ROLLOUT,
        what="Storefront Ready with 1 API and 1 worker replica",
    )
    assert condition(body, "Degraded")["status"] == "False"
    assert condition(body, "Ready")["message"] == "1/1 API and 1/1 worker replicas ready"

    # Scaling the API in the spec rolls through to two Ready API pods.
    response = api.patch(
        f"{SF.format(ns=ns)}/{name}", json={"spec": {"api": {"replicas": 2}}}, headers=MERGE
    )
    assert response.status_code == 200, response.text
    generation = response.json()["metadata"]["generation"]
    assert generation > body["metadata"]["generation"]

    wait_for(lambda: len(ready_pods(api, ns, name, "api")) == 2, ROLLOUT, what="two Ready API pods")
    body = wait_for(
        lambda: (sf := storefront(api, ns, name)) and settled(sf, 2, 1) and sf,
        ROLLOUT,
        what="Storefront Ready with 2 API replicas",
    )
    assert body["status"]["observedGeneration"] == generation
    assert condition(body, "Ready")["message"] == "2/2 API and 1/1 worker replicas ready"
    assert (get(api, deployment_path(ns, f"{name}-api")) or {})["spec"]["replicas"] == 2
    # Two API replicas may now be disrupted one at a time: the PodDisruptionBudget appears.
    assert get(api, f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/{name}-api")
    # Worker and scheduler were left alone.
    for component in ("worker", "scheduler"):
        assert len(ready_pods(api, ns, name, component)) == 1, component

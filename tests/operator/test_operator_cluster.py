"""User stories of the operator against a real kube-apiserver: the operator runs in-process
(kopf.testing.KopfRunner) and the test talks to the API server over plain REST, as kubectl does.

Without kube-controller-manager nothing runs pods or garbage-collects: the tests assert what the
operator writes (children, owner references, status) and play the Job controller's part when a
migration must succeed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families
from storefront_operator.render import migration_job_name
from storefront_operator.spec import parse_spec

from tests.components.kube import KubeAPIServer, wait_for
from tests.operator.conftest import (
    BASIC_SPEC,
    MERGE,
    SF,
    WAIT,
    condition,
    create_storefront,
    deployment_path,
    get,
    make_secret,
    storefront,
    succeed_job,
)

pytestmark = pytest.mark.cluster
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "storefront.yaml"


# ---------------------------------------------------------------------------------------------
# Stories
# ---------------------------------------------------------------------------------------------
def test_create_renders_every_child_with_owner_references(
    api: httpx.Client, operator: dict[str, int], secrets: str
) -> None:
    ns, name = secrets, "shop"
    assert create_storefront(api, ns, name, BASIC_SPEC).status_code == 201
    job = migration_job_name(name, parse_spec(BASIC_SPEC))

    # Application pods wait for the migration Job; config and Services are there at once.
    wait_for(lambda: get(api, f"/apis/batch/v1/namespaces/{ns}/jobs/{job}"), WAIT, what="Job")
    assert get(api, f"/api/v1/namespaces/{ns}/configmaps/shop-config") is not None
    assert get(api, f"/api/v1/namespaces/{ns}/services/shop-api") is not None
    body = wait_for(
        lambda: (
            (sf := storefront(api, ns, name))
            and condition(sf, "Progressing").get("reason") == "MigrationRunning"
            and sf
        ),
        WAIT,
        what="Progressing=MigrationRunning",
    )
    assert condition(body, "Ready")["status"] == "False"
    for component in ("api", "worker", "scheduler"):
        assert get(api, deployment_path(ns, f"shop-{component}")) is None, component

    succeed_job(api, ns, job)
    api_deployment = wait_for(lambda: get(api, deployment_path(ns, "shop-api")), WAIT, what="API")
    uid = storefront(api, ns, name)["metadata"]["uid"]
    paths = [
        f"/api/v1/namespaces/{ns}/configmaps/shop-config",
        f"/api/v1/namespaces/{ns}/services/shop-api",
        f"/api/v1/namespaces/{ns}/services/shop-worker-metrics",
        deployment_path(ns, "shop-api"),
        deployment_path(ns, "shop-worker"),
        deployment_path(ns, "shop-scheduler"),
        f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/shop-api",
        f"/apis/batch/v1/namespaces/{ns}/jobs/{job}",
        f"/api/v1/namespaces/{ns}/secrets/shop-generated",
    ]
    for path in paths:
        child = wait_for(lambda p=path: get(api, p), WAIT, what=path)
        assert child["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "storefront.dev/v1alpha1",
                "kind": "Storefront",
                "name": name,
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ], path
        assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "storefront-operator"

    container = api_deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["api", "--host", "0.0.0.0", "--port", "8000"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    managers = {m["manager"] for m in api_deployment["metadata"]["managedFields"]}
    assert "storefront-operator" in managers

    body = storefront(api, ns, name)
    status = body["status"]
    assert status["observedGeneration"] == body["metadata"]["generation"]
    assert {c["type"] for c in status["conditions"]} == {"Ready", "Progressing", "Degraded"}
    assert condition(body, "Degraded")["status"] == "False"
    ready_pods = (get(api, deployment_path(ns, "shop-api")) or {}).get("status", {})
    if not ready_pods.get("readyReplicas"):  # no pods run without controllers and a node
        assert condition(body, "Ready")["reason"] == "ApiUnavailable"
    assert status["endpoints"]["api"] == f"http://shop-api.{ns}.svc:80"
    assert status["lastReconcileTime"].endswith("Z")
    assert not body["metadata"].get("finalizers")


def test_update_changes_children(api: httpx.Client, running: tuple[str, str]) -> None:
    ns, name = running
    patch = {
        "spec": {
            "worker": {"replicas": 3},
            "scheduler": {"enabled": False},
            "config": {"STOREFRONT_PRODUCT_CACHE_TTL_SECONDS": "7"},
        }
    }
    response = api.patch(f"{SF.format(ns=ns)}/{name}", json=patch, headers=MERGE)
    assert response.status_code == 200, response.text

    wait_for(
        lambda: get(api, deployment_path(ns, "shop-worker"))["spec"]["replicas"] == 3,
        WAIT,
        what="worker replicas 3",
    )
    wait_for(lambda: get(api, deployment_path(ns, "shop-scheduler")) is None, WAIT, what="pruned")
    config = wait_for(
        lambda: (
            (cm := get(api, f"/api/v1/namespaces/{ns}/configmaps/shop-config"))
            and "STOREFRONT_PRODUCT_CACHE_TTL_SECONDS" in cm["data"]
            and cm
        ),
        WAIT,
        what="config updated",
    )
    assert config["data"]["STOREFRONT_PRODUCT_CACHE_TTL_SECONDS"] == "7"
    generation = storefront(api, ns, name)["metadata"]["generation"]
    wait_for(lambda: storefront(api, ns, name)["status"]["observedGeneration"] == generation, WAIT)


def test_deleted_or_edited_child_is_restored(api: httpx.Client, running: tuple[str, str]) -> None:
    ns, _ = running
    service = f"/api/v1/namespaces/{ns}/services/shop-worker-metrics"
    assert api.delete(service).status_code == 200
    wait_for(lambda: get(api, service), WAIT, what="deleted Service restored")

    worker = deployment_path(ns, "shop-worker")
    edit = {"spec": {"replicas": 9}}
    assert api.patch(worker, json=edit, headers=MERGE).status_code == 200
    wait_for(lambda: get(api, worker)["spec"]["replicas"] == 1, WAIT, what="hand edit undone")


def test_steady_state_makes_no_reconcile_and_no_write(
    api: httpx.Client, operator: dict[str, int], running: tuple[str, str]
) -> None:
    """The operator's own writes (applies, status) come back as watch events: they must not
    call for another reconcile, or the operator would chase its own tail."""
    ns, name = running
    wait_for(
        lambda: (
            (sf := storefront(api, ns, name))["status"].get("observedGeneration")
            == sf["metadata"]["generation"]
            and sf["status"].get("queueError")
        ),
        WAIT,
        what="reconciled, queue depth read",
    )
    # Settled once two readings a few seconds apart agree; a self-triggering loop never does.
    previous: dict[str, float] = {}

    def settled() -> dict[str, float] | None:
        nonlocal previous
        now = operator_counts(operator["metrics"])
        same = now if now == previous else None
        previous = now
        return same

    before = wait_for(lambda: (time.sleep(3), settled())[1], WAIT, what="operator at rest")
    assert before["reconciles"] > 0 and before["applies"] > 0, before  # the metrics are read
    version = storefront(api, ns, name)["metadata"]["resourceVersion"]
    time.sleep(10)
    after = operator_counts(operator["metrics"])
    assert after["reconciles"] == before["reconciles"], (before, after)
    assert after["applies"] == before["applies"], (before, after)
    assert storefront(api, ns, name)["metadata"]["resourceVersion"] == version


def operator_counts(port: int) -> dict[str, float]:
    """Reconciles and applies so far, from the operator's /metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    counts = {"reconciles": 0.0, "applies": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "storefront_operator_reconciles_total":
                counts["reconciles"] += sample.value
            elif (
                sample.name == "storefront_operator_api_requests_total"
                and sample.labels.get("verb") == "apply"
            ):
                counts["applies"] += sample.value
    return counts


def test_schema_rejects_invalid_specs(
    api: httpx.Client, operator: dict[str, int], kube_namespace: str
) -> None:
    bounds = {**BASIC_SPEC, "worker": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}
    response = create_storefront(api, kube_namespace, "bad-bounds", bounds)
    assert response.status_code == 422
    assert "minReplicas must not exceed maxReplicas" in response.text

    both = {**BASIC_SPEC, "database": {"managed": True, "secretRef": {"name": "db"}}}
    response = create_storefront(api, kube_namespace, "bad-db", both)
    assert response.status_code == 422
    assert "set exactly one of secretRef" in response.text

    config = {**BASIC_SPEC, "config": {"DEBUG": "1"}}
    response = create_storefront(api, kube_namespace, "bad-config", config)
    assert response.status_code == 422
    assert "STOREFRONT_*" in response.text


def test_missing_secret_is_degraded_then_recovers(
    api: httpx.Client, operator: dict[str, int], kube_namespace: str
) -> None:
    ns = kube_namespace
    assert create_storefront(api, ns, "orphan", BASIC_SPEC).status_code == 201
    body = wait_for(
        lambda: (
            (sf := storefront(api, ns, "orphan"))
            and condition(sf, "Degraded").get("status") == "True"
            and sf
        ),
        WAIT,
        what="Degraded",
    )
    degraded = condition(body, "Degraded")
    assert degraded["reason"] == "SecretNotFound"
    assert "kubectl create secret generic db" in degraded["message"]
    assert body["status"]["phase"] == "Degraded"
    events = api.get(f"/api/v1/namespaces/{ns}/events").json()["items"]
    assert any(e["reason"] == "SecretNotFound" and e["type"] == "Warning" for e in events)
    assert get(api, f"/api/v1/namespaces/{ns}/configmaps/orphan-config") is None

    make_secret(api, ns, "db", {"url": "postgresql://u:p@db.example/shop"})
    make_secret(api, ns, "cache", {"url": "redis://127.0.0.1:1/0"})
    config = f"/api/v1/namespaces/{ns}/configmaps/orphan-config"
    wait_for(lambda: get(api, config), WAIT, what="recovered")
    wait_for(
        lambda: condition(storefront(api, ns, "orphan"), "Degraded")["status"] == "False", WAIT
    )


def test_kubectl_scale_sets_worker_replicas(
    kube_apiserver: KubeAPIServer, api: httpx.Client, running: tuple[str, str]
) -> None:
    ns, name = running
    scale = f"{SF.format(ns=ns)}/{name}/scale"
    kube_apiserver.kubectl("scale", f"sf/{name}", "--replicas=4", "-n", ns)
    assert storefront(api, ns, name)["spec"]["worker"]["replicas"] == 4
    wait_for(
        lambda: get(api, deployment_path(ns, "shop-worker"))["spec"]["replicas"] == 4,
        WAIT,
        what="worker Deployment scaled",
    )
    got = api.get(scale).json()
    assert got["spec"]["replicas"] == 4
    assert "app.kubernetes.io/component=worker" in got["status"]["selector"]


def test_workers_autoscale_on_queue_depth(
    api: httpx.Client, operator: dict[str, int], kube_namespace: str, redis_url: str
) -> None:
    ns = kube_namespace
    make_secret(api, ns, "db", {"url": "postgresql://u:p@db.example/shop"})
    make_secret(api, ns, "cache", {"url": redis_url})
    with redis.Redis.from_url(redis_url) as client:
        client.rpush("dramatiq:default", *[f"m{i}" for i in range(300)])
        client.sadd("dramatiq:__acks__.worker-1.default", *[f"a{i}" for i in range(50)])
    spec = {
        **BASIC_SPEC,
        "worker": {
            "autoscaling": {
                "enabled": True,
                "minReplicas": 1,
                "maxReplicas": 3,
                "targetMessagesPerWorker": 100,
                "scaleDownCooldownSeconds": 0,
            }
        },
    }
    assert create_storefront(api, ns, "busy", spec).status_code == 201
    job = migration_job_name("busy", parse_spec(spec))
    wait_for(lambda: get(api, f"/apis/batch/v1/namespaces/{ns}/jobs/{job}"), WAIT, what="Job")
    succeed_job(api, ns, job)
    # The scale subresource is written before the status that records why, so wait for both.
    body = wait_for(
        lambda: (
            (sf := storefront(api, ns, "busy"))
            and sf["spec"]["worker"]["replicas"] == 3
            and "queueDepth" in sf.get("status", {})
            and sf
        ),
        WAIT,
        what="scaled up to max",
    )
    assert body["status"]["queueDepth"] == 350
    wait_for(lambda: get(api, deployment_path(ns, "busy-worker"))["spec"]["replicas"] == 3, WAIT)

    with redis.Redis.from_url(redis_url) as client:
        client.delete("dramatiq:default", "dramatiq:__acks__.worker-1.default")
    wait_for(
        lambda: storefront(api, ns, "busy")["spec"]["worker"]["replicas"] == 1,
        WAIT,
        what="scaled down to min",
    )
    events = api.get(f"/api/v1/namespaces/{ns}/events").json()["items"]
    assert any(e["reason"] == "ScaledWorkers" for e in events)


def test_unreachable_redis_is_recorded_not_fatal(
    api: httpx.Client, operator: dict[str, int], kube_namespace: str
) -> None:
    ns = kube_namespace
    spec = {"database": {"managed": True}, "redis": {"managed": True}}
    assert create_storefront(api, ns, "dev", spec).status_code == 201
    body = wait_for(
        lambda: (sf := storefront(api, ns, "dev")) and sf["status"].get("queueError") and sf,
        WAIT,
        what="queue error recorded",
    )
    assert "unreachable" in body["status"]["queueError"]
    assert body["status"].get("queueDepth") is None
    for component in ("postgres", "redis"):
        assert get(api, deployment_path(ns, f"dev-{component}")) is not None
        assert get(api, f"/api/v1/namespaces/{ns}/services/dev-{component}") is not None
    # The operator keeps working: a spec change is still carried out.
    patch = {"spec": {"config": {"STOREFRONT_PRODUCT_CACHE_TTL_SECONDS": "7"}}}
    assert api.patch(f"{SF.format(ns=ns)}/dev", json=patch, headers=MERGE).status_code == 200
    config = f"/api/v1/namespaces/{ns}/configmaps/dev-config"
    wait_for(
        lambda: get(api, config)["data"].get("STOREFRONT_PRODUCT_CACHE_TTL_SECONDS") == "7",
        WAIT,
        what="spec change carried out",
    )


def test_printer_columns(api: httpx.Client, running: tuple[str, str]) -> None:
    ns, name = running
    wait_for(lambda: storefront(api, ns, name)["status"].get("queueError"), WAIT)
    response = api.get(
        SF.format(ns=ns),
        headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
    )
    table = response.json()
    columns = [c["name"] for c in table["columnDefinitions"]]
    assert columns == ["Name", "Ready", "API", "Workers", "Queue", "Age"]

    # Whether pods become ready depends on controllers other tests may have started, so the
    # columns are checked against the status they display, read until both agree.
    def columns_show_status() -> bool:
        status = storefront(api, ns, name)["status"]
        rows = api.get(
            SF.format(ns=ns), headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
        ).json()["rows"]
        cells = next(r for r in rows if r["cells"][0] == name)["cells"]
        return cells[1:4] == [_ready(status), status["apiReplicas"], status["workerReplicas"]]

    wait_for(columns_show_status, WAIT, what="printer columns matching the status")


def test_delete_is_never_blocked(api: httpx.Client, running: tuple[str, str]) -> None:
    """No finalizer: deletion completes at once, even with the operator busy or stopped; the
    garbage collector removes the children (test_operator_gc.py)."""
    ns, name = running
    assert not storefront(api, ns, name)["metadata"].get("finalizers")
    assert api.delete(f"{SF.format(ns=ns)}/{name}").status_code == 200
    wait_for(lambda: api.get(f"{SF.format(ns=ns)}/{name}").status_code == 404, WAIT, what="gone")


def test_kubectl_get_shows_printer_columns(
    kube_apiserver: KubeAPIServer, running: tuple[str, str]
) -> None:
    ns, name = running
    wait_for(lambda: storefront(kube_apiserver.http(), ns, name)["status"].get("queueError"), WAIT)
    result = kube_apiserver.kubectl("get", "sf", "-n", ns)
    header = result.stdout.splitlines()[0]
    assert header.split() == ["NAME", "READY", "API", "WORKERS", "QUEUE", "AGE"]

    def kubectl_shows_status() -> bool:
        status = storefront(kube_apiserver.http(), ns, name)["status"]
        shown = kube_apiserver.kubectl("get", "sf", "-n", ns).stdout.splitlines()[1].split()
        expected = [name, _ready(status), str(status["apiReplicas"]), str(status["workerReplicas"])]
        return shown[:4] == expected

    wait_for(kubectl_shows_status, WAIT, what="kubectl columns matching the status")


def _ready(status: dict[str, Any]) -> str:
    return str(next(c["status"] for c in status["conditions"] if c["type"] == "Ready"))


def test_example_resource_is_accepted(
    api: httpx.Client, operator: dict[str, int], kube_namespace: str
) -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    response = api.post(SF.format(ns=kube_namespace), params={"dryRun": "All"}, json=example)
    assert response.status_code == 201, response.text
    stored = response.json()["spec"]
    assert parse_spec(stored) == parse_spec(example["spec"])


def test_operator_metrics(operator: dict[str, int], running: tuple[str, str]) -> None:
    def scraped() -> str:
        text = httpx.get(f"http://127.0.0.1:{operator['metrics']}/metrics").text
        return text if "storefront_operator_reconciles_total{" in text else ""

    text = wait_for(scraped, WAIT, what="operator metrics")
    series = 'storefront_operator_reconciles_total{outcome="success"} '
    assert any(
        float(line.split()[-1]) >= 1 for line in text.splitlines() if line.startswith(series)
    )
    assert "storefront_operator_reconcile_duration_seconds_bucket" in text
    assert 'storefront_operator_instances{phase="Progressing"}' in text
    assert 'storefront_operator_scaling_decisions_total{direction="up"}' in text


def test_unknown_job_is_degraded_not_crashing(
    api: httpx.Client, operator: dict[str, int], secrets: str
) -> None:
    """The schema cannot know the image's jobs; the operator can, and says what is wrong."""
    ns = secrets
    entry = {"name": "typo", "cron": "0 * * * *", "job": "generate_sales_reprot"}
    spec = {**BASIC_SPEC, "scheduler": {"entries": [entry]}}
    assert create_storefront(api, ns, "typo", spec).status_code == 201
    body = wait_for(
        lambda: (
            (sf := storefront(api, ns, "typo"))
            and condition(sf, "Degraded").get("status") == "True"
            and sf
        ),
        WAIT,
        what="Degraded",
    )
    degraded = condition(body, "Degraded")
    assert degraded["reason"] == "InvalidSpec"
    assert "unknown job 'generate_sales_reprot'" in degraded["message"]
    assert "generate_sales_report" in degraded["message"]

    fixed = {"spec": {"scheduler": {"entries": [{**entry, "job": "generate_sales_report"}]}}}
    assert api.patch(f"{SF.format(ns=ns)}/typo", json=fixed, headers=MERGE).status_code == 200
    wait_for(
        lambda: condition(storefront(api, ns, "typo"), "Degraded")["status"] == "False",
        WAIT,
        what="recovered",
    )

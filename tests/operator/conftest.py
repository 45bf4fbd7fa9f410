"""Fixtures for the operator's cluster tests: the CRD applied as a user would, the operator
running in-process (kopf.testing.KopfRunner) with a 1-second autoscaling loop and a resync too
slow to run during the suite (so every repair seen is driven by events), and REST helpers."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import yaml
from kopf.testing import KopfRunner
from storefront_operator.crd import CRD_FILE
from storefront_operator.render import migration_job_name
from storefront_operator.spec import parse_spec

from tests.components.kube import KubeAPIServer, wait_for
from tests.components.ports import free_port

SF = "/apis/storefront.dev/v1alpha1/namespaces/{ns}/storefronts"
INTERVAL = "1"
# Longer than the suite: drift is repaired by watch events, never by the safety-net resync.
RESYNC = "3600"
MERGE = {"Content-Type": "application/merge-patch+json"}
# Generous: a loaded CI machine is slow; a passing wait returns as soon as its condition holds.
WAIT = 90.0


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def api(kube_apiserver: KubeAPIServer) -> Iterator[httpx.Client]:
    with kube_apiserver.http() as client:
        yield client


@pytest.fixture(scope="session")
def crd_installed(api: httpx.Client) -> None:
    """The user's way: apply the committed CRD file (server-side apply), wait until served."""
    crd = yaml.safe_load(CRD_FILE.read_text())
    response = api.patch(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/storefronts.storefront.dev",
        params={"fieldManager": "kubectl", "force": "true"},
        content=yaml.safe_dump(crd),
        headers={"Content-Type": "application/apply-patch+yaml"},
    )
    assert response.status_code in (200, 201), response.text

    def established() -> bool:
        got = api.get(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/storefronts.storefront.dev"
        ).json()
        conditions = {c["type"]: c["status"] for c in got["status"].get("conditions", [])}
        return conditions.get("Established") == "True"

    wait_for(established, timeout=WAIT, what="CRD established")
    wait_for(lambda: api.get("/apis/storefront.dev/v1alpha1/storefronts").status_code == 200, WAIT)


@pytest.fixture(scope="session")
def operator(kube_apiserver: KubeAPIServer, crd_installed: None) -> Iterator[dict[str, int]]:
    """The operator, in this process, watching the tests' namespaces (test-*)."""
    ports = {"metrics": free_port(), "liveness": free_port()}
    env = {
        "KUBECONFIG": str(kube_apiserver.kubeconfig),
        "STOREFRONT_OPERATOR_RESYNC_INTERVAL": RESYNC,
        "STOREFRONT_OPERATOR_SCALING_INTERVAL": INTERVAL,
        "STOREFRONT_OPERATOR_METRICS_PORT": str(ports["metrics"]),
        "STOREFRONT_OPERATOR_METRICS_HOST": "127.0.0.1",
        "STOREFRONT_OPERATOR_REDIS_TIMEOUT": "0.5",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    args = [
        "run",
        # The tests' own namespaces only: another suite's operator process (the dashboards')
        # serves its namespace alone, and two operators scaling one instance would race.
        "--namespace=test-*",
        "--standalone",
        f"--liveness=http://127.0.0.1:{ports['liveness']}/healthz",
        "-m",
        "storefront_operator.handlers",
    ]
    try:
        with KopfRunner(args, timeout=60) as runner:
            wait_for(
                lambda: httpx.get(f"http://127.0.0.1:{ports['liveness']}/healthz").is_success,
                timeout=60,
                what="operator liveness endpoint",
            )
            yield ports
        assert runner.exception is None, runner.output
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def make_secret(api: httpx.Client, ns: str, name: str, data: dict[str, str]) -> None:
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}
    response = api.post(f"/api/v1/namespaces/{ns}/secrets", json=body)
    assert response.status_code == 201, response.text


def create_storefront(
    api: httpx.Client, ns: str, name: str, spec: dict[str, Any]
) -> httpx.Response:
    body = {
        "apiVersion": "storefront.dev/v1alpha1",
        "kind": "Storefront",
        "metadata": {"name": name},
        "spec": spec,
    }
    return api.post(SF.format(ns=ns), json=body)


def storefront(api: httpx.Client, ns: str, name: str) -> dict[str, Any]:
    response = api.get(f"{SF.format(ns=ns)}/{name}")
    response.raise_for_status()
    return dict(response.json())


def get(api: httpx.Client, path: str) -> dict[str, Any] | None:
    response = api.get(path)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return dict(response.json())


def deployment_path(ns: str, name: str) -> str:
    return f"/apis/apps/v1/namespaces/{ns}/deployments/{name}"


def condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


def succeed_job(api: httpx.Client, ns: str, job: str) -> None:
    """Play the Job controller's part: mark the migration Job as succeeded (works whether or not
    a real Job controller already counts an active pod). A real controller writing the status
    between the read and the patch makes the patch invalid: read again and repeat."""
    path = f"/apis/batch/v1/namespaces/{ns}/jobs/{job}"
    for _ in range(5):
        current = (get(api, path) or {}).get("status") or {}
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = {
            "status": {
                "startTime": current.get("startTime") or now,
                "completionTime": now,
                "active": 0,
                "ready": 0,
                "succeeded": 1,
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now},
                    {"type": "Complete", "status": "True", "lastTransitionTime": now},
                ],
            }
        }
        response = api.patch(f"{path}/status", json=status, headers=MERGE)
        if response.status_code not in (409, 422):
            break
        time.sleep(0.5)
    assert response.status_code == 200, response.text


BASIC_SPEC: dict[str, Any] = {
    "database": {"secretRef": {"name": "db", "key": "url"}},
    "redis": {"secretRef": {"name": "cache", "key": "url"}},
}


@pytest.fixture
def secrets(api: httpx.Client, kube_namespace: str) -> str:
    make_secret(api, kube_namespace, "db", {"url": "postgresql://u:p@db.example:5432/shop"})
    make_secret(api, kube_namespace, "cache", {"url": "redis://127.0.0.1:1/0"})
    return kube_namespace


@pytest.fixture
def running(api: httpx.Client, operator: dict[str, int], secrets: str) -> tuple[str, str]:
    """A Storefront whose migration succeeded and whose API Deployment exists."""
    ns, name = secrets, "shop"
    assert create_storefront(api, ns, name, BASIC_SPEC).status_code == 201
    job = migration_job_name(name, parse_spec(BASIC_SPEC))
    wait_for(
        lambda: get(api, f"/apis/batch/v1/namespaces/{ns}/jobs/{job}"), 30, what="migration Job"
    )
    succeed_job(api, ns, job)
    wait_for(lambda: get(api, deployment_path(ns, "shop-api")), WAIT, what="API Deployment")
    return ns, name

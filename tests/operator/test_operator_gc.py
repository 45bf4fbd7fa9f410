"""With kube-controller-manager running, deleting a Storefront garbage-collects its children
through the owner references the operator sets (no finalizer involved)."""

from __future__ import annotations

import httpx
import pytest
from storefront_operator.render import migration_job_name
from storefront_operator.spec import parse_spec

from tests.components.kube import KubeCluster, wait_for
from tests.operator.conftest import (
    BASIC_SPEC,
    SF,
    WAIT,
    create_storefront,
    get,
    make_secret,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_children_are_garbage_collected(
    kube_cluster: KubeCluster, api: httpx.Client, operator: dict[str, int], kube_namespace: str
) -> None:
    ns = kube_namespace
    make_secret(api, ns, "db", {"url": "postgresql://u:p@db.example/shop"})
    make_secret(api, ns, "cache", {"url": "redis://127.0.0.1:1/0"})
    assert create_storefront(api, ns, "gc", BASIC_SPEC).status_code == 201
    job = f"/apis/batch/v1/namespaces/{ns}/jobs/{migration_job_name('gc', parse_spec(BASIC_SPEC))}"
    children = [
        f"/api/v1/namespaces/{ns}/services/gc-worker-metrics",
        f"/api/v1/namespaces/{ns}/configmaps/gc-config",
        f"/api/v1/namespaces/{ns}/services/gc-api",
        job,
    ]
    for path in children:
        wait_for(lambda p=path: get(api, p), WAIT, what=path)

    assert api.delete(f"{SF.format(ns=ns)}/gc").status_code == 200
    for path in children:
        wait_for(lambda p=path: get(api, p) is None, WAIT, what=f"{path} collected")

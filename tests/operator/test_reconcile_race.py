"""A reconcile against the real kube-apiserver, with the Job controller's part played at the
worst moment: the migration Job succeeds while the reconcile that created it is still running.
The Deployments were held for that migration, so the Job's status change must still call for
the reconcile that releases them (event-driven drift repair has no periodic pass to fall back on
within minutes)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from storefront_operator.drift import verdict
from storefront_operator.kube import Kube
from storefront_operator.reconcile import reconcile_sync
from storefront_operator.render import migration_job_name
from storefront_operator.spec import parse_spec

from tests.components.kube import KubeAPIServer
from tests.operator.conftest import (
    BASIC_SPEC,
    create_storefront,
    deployment_path,
    get,
    make_secret,
    succeed_job,
)

pytestmark = pytest.mark.cluster


class JobFinishesDuringReconcile(Kube):
    """The operator's client, except that the migration Job succeeds right after it is applied
    (as a fast Job controller could make it), before the reconcile reads it back."""

    def __init__(self, api_client: Any, http: httpx.Client) -> None:
        super().__init__(api_client)
        self.http = http

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        applied = super().apply(manifest)
        if manifest["kind"] == "Job":
            meta = applied["metadata"]
            succeed_job(self.http, meta["namespace"], meta["name"])
        return applied


@pytest.fixture
def namespace(api: httpx.Client, crd_installed: None) -> Iterator[str]:
    """A namespace the suite's running operator does not serve (it serves test-* only), so
    the reconciles here are this test's alone."""
    ns = f"race-{secrets.token_hex(4)}"
    assert api.post("/api/v1/namespaces", json={"metadata": {"name": ns}}).status_code == 201
    make_secret(api, ns, "db", {"url": "postgresql://u:p@db.example:5432/shop"})
    make_secret(api, ns, "cache", {"url": "redis://127.0.0.1:1/0"})
    yield ns
    api.delete(f"/api/v1/namespaces/{ns}")


def test_a_migration_finishing_during_the_reconcile_still_releases_the_deployments(
    kube_apiserver: KubeAPIServer, api: httpx.Client, namespace: str
) -> None:
    assert create_storefront(api, namespace, "shop", BASIC_SPEC).status_code == 201
    kube = JobFinishesDuringReconcile(kube_apiserver.api_client(), api)
    try:
        first = reconcile_sync(kube, namespace, "shop", {}, prune_children=False)
    finally:
        kube.close()
    assert first.applied is not None
    # Held: the decision saw a Job that had just been created, not yet succeeded.
    assert get(api, deployment_path(namespace, "shop-api")) is None

    job = get(api, f"/apis/batch/v1/namespaces/{namespace}/jobs/"
                   f"{migration_job_name('shop', parse_spec(BASIC_SPEC))}")  # fmt: skip
    assert job is not None and job["status"].get("succeeded") == 1
    # The watch event of that success, measured against what the reconcile left: a reconcile.
    assert verdict("MODIFIED", job, first.applied) == "status"

    plain = Kube(kube_apiserver.api_client())
    try:
        reconcile_sync(plain, namespace, "shop", {})
    finally:
        plain.close()
    assert get(api, deployment_path(namespace, "shop-api")) is not None

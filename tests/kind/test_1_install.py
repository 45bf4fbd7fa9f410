"""Install: `helm install` brings up the operator and `helm test` passes; the example Storefront
becomes Ready with real pods, its migrations run by the migration Job."""

from __future__ import annotations

import pytest

from tests.components.kind import KindCluster, KubectlError, tool_versions
from tests.components.kube import wait_for
from tests.kind.conftest import (
    OPERATOR_NAMESPACE,
    Shop,
    condition,
    explain,
    running_and_ready,
)

# Generous: the first test also waits for the cluster, images and Storefront to come up.
pytestmark = [pytest.mark.kind, pytest.mark.timeout(1800)]


def shop_image(cluster: KindCluster) -> str:
    return f"{tool_versions()['APP_REPOSITORY']}:{cluster.tag}"


def test_the_operator_is_ready_and_helm_test_passes(
    kind_cluster: KindCluster, operator_release: str
) -> None:
    deployment = kind_cluster.get("deployment", "storefront", OPERATOR_NAMESPACE)
    assert condition(deployment, "Available")["status"] == "True"
    output = kind_cluster.helm(
        "test", operator_release, "--namespace", OPERATOR_NAMESPACE, "--logs", "--timeout", "3m"
    )
    assert "Phase:          Succeeded" in output, output


def test_the_migration_job_ran_the_migrations(shop: Shop) -> None:
    job_name = shop.status()["migration"]
    job = shop.cluster.get("job", job_name, shop.namespace)
    assert job["status"].get("succeeded") == 1
    logs = shop.cluster.kubectl("logs", "--namespace", shop.namespace, f"job/{job_name}")
    assert "Database at head." in logs, logs


def test_api_worker_and_scheduler_pods_are_running_and_ready(shop: Shop) -> None:
    """Each component's pods all Running and Ready at once. Read until they are: a Ready
    Storefront can still be finishing a rollout (old and new pods side by side), and a readiness
    probe can miss once on a loaded node."""
    expected = {"api": 2, "worker": 1, "scheduler": 1, "postgres": 1, "redis": 1}

    def ready_counts() -> dict[str, int]:
        return {c: sum(running_and_ready(p) for p in shop.pods(c)) for c in expected}

    try:
        wait_for(lambda: ready_counts() == expected, 300, interval=3, what="pods Running and Ready")
    except TimeoutError as exc:
        pytest.fail(f"{exc}: {ready_counts()}\n{explain(shop.cluster, shop.namespace)}")


def test_every_pod_runs_under_the_restricted_pod_security_standard(
    kind_cluster: KindCluster, shop: Shop
) -> None:
    """Both namespaces enforce `restricted`, so the pods above were admitted under it; and the
    enforcement is real: a privileged pod is refused."""
    for namespace in (OPERATOR_NAMESPACE, shop.namespace):
        labels = kind_cluster.get("namespace", namespace)["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {p["metadata"]["labels"].get("app.kubernetes.io/component") for p in
            kind_cluster.get("pods", namespace=shop.namespace)} >= {
        "api", "worker", "scheduler", "migrate", "postgres", "redis"}  # fmt: skip
    privileged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged", "namespace": shop.namespace},
        "spec": {
            "containers": [
                {"name": "c", "image": shop_image(kind_cluster),
                 "securityContext": {"privileged": True}}
            ]
        },
    }  # fmt: skip
    with pytest.raises(KubectlError, match="violates PodSecurity"):
        kind_cluster.apply(privileged)


def test_kubectl_get_sf_shows_it_ready(kind_cluster: KindCluster, shop: Shop) -> None:
    table = kind_cluster.kubectl("get", "sf", "--namespace", shop.namespace)
    header, row = table.splitlines()[:2]
    columns = dict(zip(header.split(), row.split(), strict=False))
    assert columns["NAME"] == shop.name and columns["READY"] == "True", table


def test_network_policies_guard_each_component(kind_cluster: KindCluster, shop: Shop) -> None:
    """The policies are in place, the managed Redis letting in the operator's namespace, which
    reads the queue depth (this cluster's bridge network does not enforce NetworkPolicy)."""
    policies = {
        p["metadata"]["name"]: p["spec"]
        for p in kind_cluster.get("networkpolicies", namespace=shop.namespace)
    }
    components = ("api", "worker", "scheduler", "migrate", "postgres", "redis")
    assert set(policies) >= {f"{shop.name}-{c}" for c in components}
    peers = policies[f"{shop.name}-redis"]["ingress"][0]["from"]
    namespaces = [p.get("namespaceSelector", {}).get("matchLabels", {}) for p in peers]
    assert {"kubernetes.io/metadata.name": OPERATOR_NAMESPACE} in namespaces

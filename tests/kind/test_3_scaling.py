"""Scaling for real: `kubectl scale sf/shop` sets the worker count; a deleted API Deployment
comes back; the API's HorizontalPodAutoscaler adds pods under load (metrics-server measuring
them) and removes them after; a burst of report jobs makes the operator add worker pods, which
drain the queue, and take them away again after the cooldown."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.components.kube import wait_for
from tests.kind.conftest import Shop, running_and_ready, start_traffic

# Generous: the first test also waits for the cluster, images and Storefront to come up.
pytestmark = [pytest.mark.kind, pytest.mark.timeout(1800)]
REPORTS = 120


def ready_pods(shop: Shop, component: str) -> int:
    return sum(1 for pod in shop.pods(component) if running_and_ready(pod))


def replicas(shop: Shop, component: str) -> int:
    deployment = shop.cluster.get("deployment", f"{shop.name}-{component}", shop.namespace)
    return int((deployment or {}).get("spec", {}).get("replicas", -1))


def scale_workers(shop: Shop, count: int) -> None:
    shop.cluster.kubectl(
        "scale", f"sf/{shop.name}", f"--replicas={count}", "--namespace", shop.namespace
    )


def patch_spec(shop: Shop, spec: dict[str, object]) -> None:
    shop.cluster.kubectl(
        "patch",
        f"sf/{shop.name}",
        "--namespace",
        shop.namespace,
        "--type",
        "merge",
        "--patch",
        json.dumps({"spec": spec}),
    )


@pytest.fixture(scope="module")
def product(shop: Shop) -> int:
    with shop.api() as api_url, httpx.Client(base_url=api_url, timeout=30) as api:
        created = api.post(
            "/api/v1/products",
            json={"name": "Load", "price": 1, "sku": f"LOAD-{uuid.uuid4().hex[:8]}", "stock": 10},
            headers=shop.admin_headers(api),
        )
    assert created.status_code == 201, created.text
    return int(created.json()["id"])


def test_kubectl_scale_gives_three_running_worker_pods(shop: Shop) -> None:
    scale_workers(shop, 3)
    wait_for(
        lambda: ready_pods(shop, "worker") == 3,
        timeout=240,
        interval=3,
        what="three ready worker pods",
    )
    wait_for(
        lambda: shop.status().get("workerReplicas") == 3,
        timeout=120,
        interval=3,
        what="status.workerReplicas = 3",
    )
    scale_workers(shop, 1)
    wait_for(
        lambda: len(shop.pods("worker")) == 1,
        timeout=180,
        interval=3,
        what="back to one worker pod",
    )


def test_a_deleted_api_deployment_comes_back_ready(shop: Shop) -> None:
    name = f"{shop.name}-api"
    before = shop.cluster.get("deployment", name, shop.namespace)["metadata"]["uid"]
    shop.cluster.kubectl("delete", "deployment", name, "--namespace", shop.namespace)

    def back() -> bool:
        deployment = shop.cluster.get("deployment", name, shop.namespace)
        return bool(
            deployment
            and deployment["metadata"]["uid"] != before
            and deployment["status"].get("readyReplicas", 0) >= 2
        )

    wait_for(back, timeout=240, interval=3, what="the API Deployment back, two pods ready")


def test_the_api_scales_out_under_load_and_back_in_after(shop: Shop, product: int) -> None:
    hpa = f"{shop.name}-api"
    start = shop.cluster.get("hpa", hpa, shop.namespace)["spec"]["minReplicas"]
    load = start_traffic(
        shop.cluster, shop, f"load-{uuid.uuid4().hex[:6]}", "load",
        "--product", str(product), "--seconds", "300", "--concurrency", "6",
    )  # fmt: skip
    wait_for(
        lambda: replicas(shop, "api") > start,
        timeout=240,
        interval=5,
        what="the HPA adding API pods under load",
    )
    load.stop()
    assert load.summary(timeout=120)["requests"] > 0
    wait_for(
        lambda: replicas(shop, "api") == start,
        timeout=300,
        interval=5,
        what="the HPA removing the extra API pods after the load",
    )


@pytest.fixture
def autoscaling_workers(shop: Shop) -> Iterator[None]:
    """Queue-depth autoscaling on, from zero workers: a report takes milliseconds, so one
    worker would drain the burst before the operator's next look at the queue (every 15 s)."""
    yield
    patch_spec(
        shop, {"worker": {"replicas": 1, "autoscaling": {"enabled": False, "minReplicas": 1}}}
    )


def test_a_burst_of_report_jobs_scales_workers_out_and_back(
    shop: Shop, api_url: str, autoscaling_workers: None
) -> None:
    scale_workers(shop, 0)
    wait_for(lambda: not shop.pods("worker"), timeout=180, interval=3, what="no worker pods")
    with httpx.Client(base_url=api_url, timeout=30) as api:
        admin = shop.admin_headers(api)
        for _ in range(REPORTS):
            queued = api.post(
                "/api/v1/reports",
                headers=admin,
                json={"start_date": "2026-01-01", "end_date": "2027-01-01"},
            )
            assert queued.status_code == 202, queued.text
    wait_for(
        lambda: (shop.status().get("queueDepth") or 0) >= REPORTS,
        timeout=120,
        interval=3,
        what="the operator seeing the queued reports",
    )
    patch_spec(shop, {"worker": {"autoscaling": {"enabled": True, "minReplicas": 0}}})
    wait_for(
        lambda: replicas(shop, "worker") == 3,
        timeout=120,
        interval=3,
        what="the operator scaling workers to the maximum",
    )
    wait_for(
        lambda: shop.status().get("queueDepth") == 0,
        timeout=300,
        interval=3,
        what="the workers draining the queue",
    )
    wait_for(
        lambda: replicas(shop, "worker") == 0,
        timeout=180,
        interval=3,
        what="the operator scaling back to the minimum after the cooldown",
    )

"""Monitoring on the cluster: its Prometheus scrapes every Storefront pod (API, each worker
process, scheduler, operator), and after a known workload every panel of the three dashboards
returns data for this instance: the same check the dashboard tests run against local processes."""

from __future__ import annotations

import httpx
import pytest

from dashboards.promql import DEFAULT_VARIABLES
from dashboards.smoke import drive, empty_panels, load_dashboards
from tests.components.kube import wait_for
from tests.kind.conftest import OPERATOR_NAMESPACE, Shop

# Generous: the first test also waits for the cluster, images and Storefront to come up.
pytestmark = [pytest.mark.kind, pytest.mark.timeout(1800)]
DASHBOARDS = ("storefront-service", "storefront-worker", "storefront-operator")


def scraped(prometheus_url: str) -> dict[str, str]:
    """pod → health of its targets ("up" only when every one of its ports is)."""
    response = httpx.get(f"{prometheus_url}/api/v1/targets", params={"state": "active"}, timeout=10)
    response.raise_for_status()
    health: dict[str, str] = {}
    for target in response.json()["data"]["activeTargets"]:
        pod = target["labels"].get("pod", "")
        if health.get(pod) != "down":
            health[pod] = "up" if target["health"] == "up" else "down"
    return health


def test_prometheus_scrapes_every_storefront_pod(shop: Shop, prometheus_url: str) -> None:
    def running(component: str) -> list[str]:
        return [p["metadata"]["name"] for p in shop.pods(component)
                if p["status"].get("phase") == "Running"]  # fmt: skip

    def all_up() -> dict[str, str]:
        pods = {component: running(component) for component in ("api", "worker", "scheduler")}
        operator = shop.cluster.get("pods", namespace=OPERATOR_NAMESPACE,
                                    selector="app.kubernetes.io/name=storefront")  # fmt: skip
        pods["operator"] = [p["metadata"]["name"] for p in operator]
        if not all(pods.values()):
            return {}  # a component between pods (the scaling tests just ran)
        health = scraped(prometheus_url)
        wanted = [pod for names in pods.values() for pod in names]
        return (
            {pod: health.get(pod, "missing") for pod in wanted}
            if all(health.get(pod) == "up" for pod in wanted)
            else {}
        )

    found = wait_for(all_up, timeout=180, interval=5, what="every Storefront pod scraped and up")
    assert len(found) >= 5, found


def test_every_dashboard_panel_has_data(shop: Shop, api_url: str, prometheus_url: str) -> None:
    drive(api_url, shop.admin_email, shop.admin_password)
    dashboards = load_dashboards(DASHBOARDS)
    variables = {**DEFAULT_VARIABLES, "__rate_interval": "30m", "__range": "1h"}

    def all_have_data() -> bool:
        return not empty_panels(prometheus_url, dashboards, variables)

    try:
        wait_for(all_have_data, timeout=180, interval=5, what="data in every panel")
    except TimeoutError:
        empty = [q.name for q in empty_panels(prometheus_url, dashboards, variables)]
        pytest.fail(f"panels without data: {empty}")

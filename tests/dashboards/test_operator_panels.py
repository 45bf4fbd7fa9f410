"""Every panel of the operator dashboard returns data from a real Prometheus scraping a real
`storefront operator` that reconciles a Storefront in a real kube-apiserver and scales its
workers on a real Redis queue; the preview renders from the same data."""

from __future__ import annotations

import base64
import contextlib
import json
import math
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from PIL import Image

from dashboards import preview
from dashboards.promql import DEFAULT_VARIABLES, PanelQuery, expand, panel_queries
from tests.components.kube import KubeAPIServer, wait_for
from tests.components.ports import free_port
from tests.components.process import REPO_ROOT, ManagedProcess
from tests.components.prometheus import PrometheusFactory, PrometheusServer
from tests.components.redis import RedisServer
from tests.dashboards.conftest import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus, pytest.mark.redis, pytest.mark.slow]

DASHBOARD = json.loads((REPO_ROOT / "dashboards" / "storefront-operator.json").read_text())
VARIABLES = {**DEFAULT_VARIABLES, "__rate_interval": "5m", "__range": "1h"}
CRD_FILE = REPO_ROOT / "charts" / "storefront" / "crds" / "storefronts.storefront.dev.yaml"
REDIS_DB = 13
QUEUED = 10


@dataclass
class ObservedOperator:
    prometheus: PrometheusServer
    namespace: str
    name: str


def _apply_crd(api: client.ApiClient) -> None:
    manifest = yaml.safe_load(CRD_FILE.read_text())
    extensions = client.ApiextensionsV1Api(api)
    with contextlib.suppress(ApiException):
        extensions.create_custom_resource_definition(manifest)

    def established() -> bool:
        crd = extensions.read_custom_resource_definition(manifest["metadata"]["name"])
        conditions = crd.status.conditions if crd.status else None
        return any(c.type == "Established" and c.status == "True" for c in conditions or [])

    wait_for(established, timeout=30, what="Storefront CRD established")


def _secret(name: str, url: str) -> client.V1Secret:
    return client.V1Secret(
        metadata=client.V1ObjectMeta(name=name),
        data={"url": base64.b64encode(url.encode()).decode()},
    )


@pytest.fixture(scope="module")
def observed_operator(
    kube_apiserver: KubeAPIServer,
    redis_server: RedisServer,
    prometheus_factory: PrometheusFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ObservedOperator]:
    workdir = tmp_path_factory.mktemp("observed-operator")
    api = kube_apiserver.api_client()
    core = client.CoreV1Api(api)
    namespace, name = f"dash-{uuid.uuid4().hex[:8]}", "shop"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    _apply_crd(api)
    # The instance's Redis holds a backlog of QUEUED messages: the operator must scale up.
    redis = redis_server.client(REDIS_DB)
    redis.flushdb()
    redis.rpush("dramatiq:default", *[f"message-{i}" for i in range(QUEUED)])
    core.create_namespaced_secret(namespace, _secret("shop-redis", redis_server.url_for(REDIS_DB)))
    core.create_namespaced_secret(
        namespace, _secret("shop-db", "postgresql+asyncpg://storefront@db.invalid/storefront")
    )

    metrics_port, liveness_port = free_port(), free_port()
    operator = ManagedProcess(
        "storefront operator",
        [sys.executable, "-m", "service.cli", "operator", "--namespace", namespace,
         "--metrics-port", str(metrics_port), "--liveness-port", str(liveness_port),
         "--resync-interval", "2", "--scaling-interval", "2", "--log-format", "json"],
        workdir / "operator.log",
        env=kube_apiserver.env,
        cwd=REPO_ROOT,
    ).start()  # fmt: skip
    prometheus = prometheus_factory(scrape_interval="1s")
    try:
        operator.wait_ready(
            lambda: httpx.get(f"http://127.0.0.1:{liveness_port}/healthz", timeout=2).is_success,
            timeout=90,
        )
        prometheus.set_targets([f"127.0.0.1:{metrics_port}"])
        prometheus.wait_for_targets_up("storefront", count=1, timeout=60)
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            "storefront.dev", "v1alpha1", namespace, "storefronts",
            {
                "apiVersion": "storefront.dev/v1alpha1",
                "kind": "Storefront",
                "metadata": {"name": name},
                "spec": {
                    "database": {"secretRef": {"name": "shop-db"}},
                    "redis": {"secretRef": {"name": "shop-redis"}},
                    "worker": {"replicas": 1, "autoscaling": {
                        "enabled": True, "minReplicas": 1, "maxReplicas": 4,
                        "targetMessagesPerWorker": 2}},
                },
            },
        )  # fmt: skip
        prometheus.wait_for_query('storefront_operator_scaling_decisions_total{direction="up"} > 0',
                                  timeout=90)  # fmt: skip
        time.sleep(2.5)
        yield ObservedOperator(prometheus, namespace, name)
    finally:
        operator.stop()
        with contextlib.suppress(ApiException):
            core.delete_namespace(namespace)
        api.close()


@pytest.mark.parametrize("query", list(panel_queries(DASHBOARD)), ids=lambda q: q.name)
def test_operator_panel_query_returns_data(
    observed_operator: ObservedOperator, query: PanelQuery
) -> None:
    promql = expand(query.expr, VARIABLES)

    def finite() -> list[float]:
        result = observed_operator.prometheus.query(promql)
        return [float(r["value"][1]) for r in result if not math.isnan(float(r["value"][1]))]

    assert wait_until(finite, timeout=60, what=query.name)


def test_scaling_panel_shows_the_scale_up_the_backlog_caused(
    observed_operator: ObservedOperator,
) -> None:
    decisions = expand(
        'sum by (direction) (storefront_operator_scaling_decisions_total{namespace=~"$namespace"})',
        VARIABLES,
    )
    made = {r["metric"]["direction"]: float(r["value"][1])
            for r in observed_operator.prometheus.query(decisions)}  # fmt: skip
    # 10 queued messages at 2 per worker, capped at 4 workers: one scale-up from 1 to 4.
    assert made.get("up") == 1
    assert made.get("down", 0) == 0
    phases = observed_operator.prometheus.query("storefront_operator_instances")
    assert {r["metric"]["phase"] for r in phases} == {"Ready", "Progressing", "Degraded"}
    assert sum(float(r["value"][1]) for r in phases) == 1


def test_operator_preview_renders_with_data(
    observed_operator: ObservedOperator, tmp_path: Path
) -> None:
    end = time.time()
    data = preview.fetch(observed_operator.prometheus.url, DASHBOARD, end - 300, end, 5, VARIABLES)
    panels, _ = preview.layout(DASHBOARD)
    empty = [p["title"] for p in panels if p.get("targets") and not data[p["id"]]]
    assert not empty
    path = preview.render(DASHBOARD, data, tmp_path / "storefront-operator.png")
    with Image.open(path) as image:
        assert image.size[0] == preview.FIGURE_WIDTH_IN * preview.DPI
    # Series and stat values are drawn, not just empty panel boxes.
    assert preview.drawn_pixels(path) > 300

"""The user's path on a real cluster, step by step: the operator installed with Helm, then the
example Storefront (examples/storefront.yaml, made to run on a two-core kind node) becoming
Ready with real pods. Each fixture is one step a user takes; the tests check what they see."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.components.kind import KindCluster, KubectlError, running_kind_cluster, tool_versions
from tests.components.kube import wait_for
from tests.components.process import REPO_ROOT

CHART = REPO_ROOT / "charts" / "storefront"
EXAMPLE = REPO_ROOT / "examples" / "storefront.yaml"
OPERATOR_NAMESPACE = "storefront-system"
RELEASE = "storefront"
NAMESPACE = "shop"
NAME = "shop"
ADMIN_EMAIL = "admin@example.com"
JAEGER_OTLP = "http://jaeger.monitoring.svc:4318"
TRAFFIC_SCRIPT = Path(__file__).with_name("traffic.py")


def storefront_manifest(images: str, tag: str) -> dict[str, Any]:
    """examples/storefront.yaml with this cluster's images, development PostgreSQL and Redis,
    every request traced to the cluster's Jaeger, and requests and cooldowns small enough for a
    two-core node (so the autoscalers act within a test's patience)."""
    versions = tool_versions()
    manifest: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    spec = manifest["spec"]
    spec["image"] = {"repository": versions["APP_REPOSITORY"], "tag": tag, "pullPolicy": "Never"}
    spec["database"] = {"managed": True}
    spec["redis"] = {"managed": True}
    if images == "local":
        spec["database"]["managedImage"] = versions["POSTGRES_IMAGE"]
        spec["redis"]["managedImage"] = versions["REDIS_IMAGE"]
    small = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
    spec["api"]["resources"] = copy.deepcopy(small)
    spec["api"]["autoscaling"].update(
        minReplicas=2,
        maxReplicas=4,
        targetCPUUtilizationPercentage=50,
        scaleDownStabilizationSeconds=30,
    )
    spec["worker"].update(processes=2, threads=4, resources=copy.deepcopy(small))
    # Off until the burst test turns it on: `kubectl scale` is tested first, by hand.
    spec["worker"]["autoscaling"].update(
        enabled=False,
        minReplicas=1,
        maxReplicas=3,
        targetMessagesPerWorker=20,
        scaleDownCooldownSeconds=20,
    )
    # Every minute the scheduler sends one probe job that succeeds and one that always fails,
    # retried quickly and then dead-lettered: the worker dashboard's retry and dead-letter
    # panels need both, and they prove the cron table runs in the cluster.
    spec["scheduler"]["entries"] += [
        {"name": "probe-ok", "cron": "* * * * *", "job": "probe",
         "args": {"key": "e2e-ok", "work_ms": 50}},
        {"name": "probe-doomed", "cron": "* * * * *", "job": "probe",
         "args": {"key": "e2e-doomed", "fail_times": 1_000_000}},
    ]  # fmt: skip
    spec["config"].update(
        STOREFRONT_WORKER_MIN_BACKOFF_MS="200", STOREFRONT_WORKER_MAX_BACKOFF_MS="1000"
    )
    spec["observability"].update(
        otlpEndpoint=JAEGER_OTLP,
        samplingRatio=1.0,
        serviceMonitor={"enabled": False},
        dashboards={"enabled": False},
    )
    return manifest


def restricted_namespace(name: str) -> dict[str, Any]:
    """A namespace where Pod Security Admission enforces the `restricted` profile: every pod
    Storefront's chart and operator create must be admitted there."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            },
        },
    }


@dataclass(frozen=True)
class Shop:
    """The Ready Storefront `shop/shop` and its administrator."""

    cluster: KindCluster
    namespace: str
    name: str
    admin_email: str
    admin_password: str

    def status(self) -> dict[str, Any]:
        body = self.cluster.get("storefront", self.name, self.namespace)
        return dict(body.get("status") or {})

    def pods(self, component: str) -> list[dict[str, Any]]:
        selector = f"app.kubernetes.io/instance={self.name},app.kubernetes.io/component={component}"
        return list(self.cluster.get("pods", namespace=self.namespace, selector=selector))

    def admin_headers(self, api: httpx.Client) -> dict[str, str]:
        return login(api, self.admin_email, self.admin_password)

    def api(self) -> contextlib.AbstractContextManager[str]:
        """The API's base URL through `kubectl port-forward service/<name>-api` (one pod)."""
        return self.cluster.port_forward(self.namespace, f"service/{self.name}-api", 80)


def login(api: httpx.Client, email: str, password: str) -> dict[str, str]:
    response = api.post("/api/v1/auth/token", data={"username": email, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def condition(body: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    conditions = ((body or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_), {})


def running_and_ready(pod: dict[str, Any]) -> bool:
    return (
        pod["status"].get("phase") == "Running" and condition(pod, "Ready").get("status") == "True"
    )


def explain(cluster: KindCluster, namespace: str) -> str:
    """What a user would look at when something is not Ready."""
    parts = []
    for args in (
        ("get", "storefronts,deployments,jobs,pods", "-o", "wide"),
        ("describe", "storefronts"),
        ("get", "events", "--sort-by=.lastTimestamp"),
    ):
        try:
            parts.append(cluster.kubectl(*args, "--namespace", namespace))
        except KubectlError as exc:
            parts.append(str(exc))
    return "\n".join(parts)[-6000:]


@pytest.fixture(scope="package")
def kind_cluster() -> Iterator[KindCluster]:
    """The kind cluster for this package's tests, deleted after the last of them."""
    with running_kind_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="package")
def operator_release(kind_cluster: KindCluster) -> str:
    """`helm install` of the chart with the operator image built here; waits for it."""
    versions = tool_versions()
    kind_cluster.apply(restricted_namespace(OPERATOR_NAMESPACE))
    kind_cluster.helm(
        "upgrade",
        "--install",
        RELEASE,
        str(CHART),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--wait",
        "--timeout",
        "5m",
        "--set",
        f"image.repository={versions['OPERATOR_REPOSITORY']}",
        "--set",
        f"image.tag={kind_cluster.tag}",
        "--set",
        "image.pullPolicy=Never",
    )
    return RELEASE


@pytest.fixture(scope="package")
def shop(kind_cluster: KindCluster, operator_release: str) -> Iterator[Shop]:
    """The example Storefront with an administrator, Ready (on a cluster kept from an earlier
    run, the same one: its administrator keeps the password it was created with)."""
    existing = kind_cluster.get("secret", "storefront-admin", NAMESPACE)
    password = (
        base64.b64decode(existing["data"]["password"]).decode()
        if existing
        else secrets.token_urlsafe(16)
    )
    kind_cluster.apply(
        restricted_namespace(NAMESPACE),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "storefront-admin", "namespace": NAMESPACE},
            "stringData": {"email": ADMIN_EMAIL, "password": password},
        },
    )
    manifest = storefront_manifest(kind_cluster.images, kind_cluster.tag)
    manifest["metadata"].update(name=NAME, namespace=NAMESPACE)
    kind_cluster.apply(manifest)
    try:
        wait_for(
            lambda: (
                condition(kind_cluster.get("storefront", NAME, NAMESPACE), "Ready").get("status")
                == "True"
            ),
            timeout=600,
            interval=3,
            what="storefront shop Ready",
        )
    except TimeoutError as exc:
        pytest.fail(f"{exc}\n{explain(kind_cluster, NAMESPACE)}")
    yield Shop(kind_cluster, NAMESPACE, NAME, ADMIN_EMAIL, password)


@dataclass(frozen=True)
class Traffic:
    """A Job running tests/kind/traffic.py against the shop's Service from inside the cluster."""

    cluster: KindCluster
    namespace: str
    name: str

    def pod(self) -> str:
        pods = self.cluster.get("pods", namespace=self.namespace, selector=f"job-name={self.name}")
        running = [p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"]
        return running[0] if running else ""

    def lines(self, prefix: str) -> list[dict[str, Any]]:
        logs = self.cluster.kubectl("logs", "--namespace", self.namespace, f"job/{self.name}")
        return [
            json.loads(line.removeprefix(prefix + " "))
            for line in logs.splitlines()
            if line.startswith(prefix + " ")
        ]

    def progress(self) -> dict[str, Any] | None:
        found = self.lines("progress")
        return found[-1] if found else None

    def stop(self) -> None:
        self.cluster.kubectl(
            "exec",
            "--namespace",
            self.namespace,
            self.pod(),
            "--",
            "python",
            "-c",
            "open('/tmp/stop', 'w').close()",
        )

    def summary(self, timeout: float = 300) -> dict[str, Any]:
        """The client's final counts, once its Job completed."""
        wait_for(
            lambda: self.cluster.get("job", self.name, self.namespace)["status"].get("succeeded"),
            timeout=timeout,
            interval=2,
            what=f"traffic job {self.name} completed",
        )
        (summary,) = self.lines("summary")
        return summary


def start_traffic(
    cluster: KindCluster, shop: Shop, name: str, *args: str, env: dict[str, str] | None = None
) -> Traffic:
    """Start `traffic.py ARGS` in a Job of the shop's namespace, as a restricted pod."""
    versions = tool_versions()
    cluster.apply(
        yaml.safe_load(
            cluster.kubectl(
                "create",
                "configmap",
                "traffic-script",
                "--namespace",
                shop.namespace,
                f"--from-file=traffic.py={TRAFFIC_SCRIPT}",
                "--dry-run=client",
                "-o",
                "yaml",
            )
        ),
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": shop.namespace},
            "spec": {
                "backoffLimit": 0,
                "ttlSecondsAfterFinished": 600,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "automountServiceAccountToken": False,
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [
                            {
                                "name": "traffic",
                                "image": f"{versions['APP_REPOSITORY']}:{cluster.tag}",
                                "imagePullPolicy": "Never",
                                "command": [
                                    "python",
                                    "/traffic/traffic.py",
                                    *args,
                                    "--url",
                                    f"http://{shop.name}-api.{shop.namespace}.svc",
                                ],
                                "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                "volumeMounts": [
                                    {"name": "script", "mountPath": "/traffic"},
                                    {"name": "tmp", "mountPath": "/tmp"},
                                ],
                            }
                        ],
                        "volumes": [
                            {"name": "script", "configMap": {"name": "traffic-script"}},
                            {"name": "tmp", "emptyDir": {}},
                        ],
                    }
                },
            },
        },
    )
    return Traffic(cluster, shop.namespace, name)


@pytest.fixture
def api_url(kind_cluster: KindCluster, shop: Shop) -> Iterator[str]:
    """The shop's API through `kubectl port-forward service/shop-api`: one pod behind it, so
    each test opens its own (an earlier one may have deleted or replaced that pod)."""
    with shop.api() as url:
        yield url


@pytest.fixture(scope="module")
def prometheus_url(kind_cluster: KindCluster) -> Iterator[str]:
    with kind_cluster.port_forward("monitoring", "service/prometheus", 9090) as url:
        yield url


@pytest.fixture(scope="module")
def jaeger_url(kind_cluster: KindCluster) -> Iterator[str]:
    with kind_cluster.port_forward("monitoring", "service/jaeger", 16686) as url:
        yield url

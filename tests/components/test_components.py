"""Smoke tests proving each real-component fixture starts and answers."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from tests.components.helm import Helm, HelmError
from tests.components.jaeger import JaegerServer
from tests.components.kube import KubeAPIServer, KubeCluster, wait_for
from tests.components.ports import free_port
from tests.components.postgres import PostgresDatabase, PostgresServer
from tests.components.prometheus import PrometheusServer


@pytest.mark.redis
async def test_redis_set_get(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        await client.set("storefront:smoke", "ok")
        assert await client.get("storefront:smoke") == b"ok"
    finally:
        await client.aclose()


@pytest.mark.redis
def test_redis_url_starts_empty(redis_url: str) -> None:
    import redis as redis_sync

    with redis_sync.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0


@pytest.mark.postgres
async def test_postgres_fresh_database(
    postgres_database: PostgresDatabase, postgres_url: str
) -> None:
    assert postgres_url.startswith("postgresql+asyncpg://")
    assert postgres_url.endswith(f"/{postgres_database.name}")
    conn = await asyncpg.connect(postgres_database.dsn)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval("SELECT current_database()") == postgres_database.name
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname='public'") == 0
    finally:
        await conn.close()


@pytest.mark.postgres
def test_postgres_server_runs_as_non_root(postgres_server: PostgresServer) -> None:
    out = postgres_server.psql("SELECT current_setting('fsync'), version()")
    assert out.startswith("off|PostgreSQL ")


@pytest.mark.prometheus
@pytest.mark.slow
def test_prometheus_scrapes_itself_and_given_targets(prometheus_server: PrometheusServer) -> None:
    prometheus_server.wait_for_targets_up(job="prometheus")
    up = prometheus_server.wait_for_query('up{job="prometheus"}')
    assert up[0]["value"][1] == "1"

    # An exporter of our own, then point the session Prometheus at it.
    registry = CollectorRegistry()
    Gauge("storefront_smoke_value", "smoke test gauge", registry=registry).set(42)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        prometheus_server.set_targets([f"127.0.0.1:{port}"])
        prometheus_server.wait_for_targets_up(job="storefront", count=1)
        result = prometheus_server.wait_for_query("storefront_smoke_value")
        assert result[0]["value"][1] == "42"
        assert result[0]["metric"]["job"] == "storefront"
    finally:
        prometheus_server.set_targets([])
        server.shutdown()
        thread.join(timeout=5)


@pytest.mark.jaeger
@pytest.mark.slow
def test_jaeger_receives_otlp_and_answers_queries(jaeger_server: JaegerServer) -> None:
    marker = uuid.uuid4().hex
    provider = TracerProvider(resource=Resource.create({"service.name": "storefront-smoke"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=jaeger_server.otlp_traces_url))
    )
    try:
        with provider.get_tracer("smoke").start_as_current_span("smoke-span") as span:
            span.set_attribute("smoke.marker", marker)
    finally:
        provider.shutdown()

    traces = jaeger_server.wait_for_traces("storefront-smoke", tags={"smoke.marker": marker})
    assert len(traces) == 1
    spans = traces[0]["spans"]
    assert [s["operationName"] for s in spans] == ["smoke-span"]
    assert "storefront-smoke" in jaeger_server.services()


@pytest.mark.cluster
@pytest.mark.slow
def test_kube_namespace_round_trip(kube_apiserver: KubeAPIServer, kube_namespace: str) -> None:
    from kubernetes import client

    api_client = kube_apiserver.api_client()
    try:
        core = client.CoreV1Api(api_client)
        status = core.read_namespace(kube_namespace).status
        assert status is not None
        assert status.phase == "Active"
        core.create_namespaced_config_map(
            kube_namespace,
            client.V1ConfigMap(metadata=client.V1ObjectMeta(name="smoke"), data={"k": "v"}),
        )
        assert core.read_namespaced_config_map("smoke", kube_namespace).data == {"k": "v"}
        version = client.VersionApi(api_client).get_code()
        assert version.git_version.startswith("v1.")
    finally:
        api_client.close()
    # RBAC is on: an unauthenticated request is refused.
    with kube_apiserver.http(admin=False) as anonymous:
        assert anonymous.get("/api/v1/namespaces").status_code in (401, 403)


@pytest.mark.helm
def test_helm_version_and_template(helm_bin: Helm, tmp_path: Path) -> None:
    assert helm_bin.version().startswith("v3.")
    chart = tmp_path / "smoke"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: smoke\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-smoke\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )
    docs = helm_bin.template(chart, "--set", "greeting=hi")
    assert docs == [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "test-smoke"},
            "data": {"greeting": "hi"},
        }
    ]
    with pytest.raises(HelmError):
        helm_bin.run("template", "test", str(tmp_path / "missing"))


@pytest.mark.cluster
@pytest.mark.slow
def test_kube_cluster_runs_a_deployment(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    from kubernetes import client

    api_client = kube_cluster.apiserver.api_client()
    try:
        apps = client.AppsV1Api(api_client)
        core = client.CoreV1Api(api_client)
        labels = {"app": "smoke"}
        apps.create_namespaced_deployment(
            kube_namespace,
            client.V1Deployment(
                metadata=client.V1ObjectMeta(name="smoke"),
                spec=client.V1DeploymentSpec(
                    replicas=1,
                    selector=client.V1LabelSelector(match_labels=labels),
                    template=client.V1PodTemplateSpec(
                        metadata=client.V1ObjectMeta(labels=labels),
                        # What the namespace's `restricted` Pod Security Standard requires.
                        spec=client.V1PodSpec(
                            security_context=client.V1PodSecurityContext(
                                run_as_non_root=True,
                                run_as_user=1000,
                                seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
                            ),
                            containers=[
                                client.V1Container(
                                    name="app",
                                    image="busybox",
                                    security_context=client.V1SecurityContext(
                                        allow_privilege_escalation=False,
                                        capabilities=client.V1Capabilities(drop=["ALL"]),
                                    ),
                                )
                            ],
                        ),
                    ),
                ),
            ),
        )
        # kube-controller-manager: deployment → replicaset → pod.
        pods = wait_for(
            lambda: core.list_namespaced_pod(kube_namespace, label_selector="app=smoke").items,
            what="a pod created for the deployment",
        )
        if kube_cluster.node_name is not None:
            # kube-scheduler binds the pod to the kwok node; kwok plays the kubelet.
            name = pods[0].metadata.name

            def running_pod() -> client.V1Pod | None:
                pod = core.read_namespaced_pod(name, kube_namespace)
                return pod if pod.status is not None and pod.status.phase == "Running" else None

            pod = wait_for(running_pod, what="a running pod")
            assert pod.spec.node_name == kube_cluster.node_name
        # Garbage collection: deleting the deployment removes its replicaset.
        apps.delete_namespaced_deployment("smoke", kube_namespace)
        wait_for(
            lambda: not apps.list_namespaced_replica_set(kube_namespace).items,
            what="replicasets garbage-collected",
        )
    finally:
        api_client.close()

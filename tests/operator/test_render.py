"""render(): every child of a Storefront, as plain manifests, without a cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from storefront_operator.render import (
    CONFIG_HASH_ANNOTATION,
    RenderContext,
    image_version,
    load_dashboards,
    migration_job_name,
    render,
    worker_selector,
)
from storefront_operator.spec import StorefrontSpec, parse_spec

NS = "shop"
NAME = "demo"
BASE: dict[str, Any] = {
    "database": {"secretRef": {"name": "db", "key": "url"}},
    "redis": {"secretRef": {"name": "cache"}},
}


def spec_of(**overrides: Any) -> StorefrontSpec:
    return parse_spec({**BASE, **overrides})


def by_kind(children: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["kind"], c["metadata"]["name"]): c for c in children}


def children(
    spec: StorefrontSpec | None = None, **ctx: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    return by_kind(render(NAME, NS, spec or spec_of(), RenderContext(**ctx)))


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c["env"]}


def test_default_children() -> None:
    got = children()
    assert set(got) == {
        ("ConfigMap", "demo-config"),
        ("Job", migration_job_name(NAME, spec_of())),
        ("Deployment", "demo-api"),
        ("Service", "demo-api"),
        ("Deployment", "demo-worker"),
        ("Service", "demo-worker-metrics"),
        ("Service", "demo-scheduler-metrics"),
        ("Deployment", "demo-scheduler"),
        ("PodDisruptionBudget", "demo-api"),
        *(("NetworkPolicy", f"demo-{c}") for c in ("api", "worker", "scheduler", "migrate")),
    }
    for child in got.values():
        assert child["metadata"]["namespace"] == NS


def test_standard_labels_on_every_child_and_pod() -> None:
    for child in children().values():
        labels = child["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "storefront"
        assert labels["app.kubernetes.io/instance"] == NAME
        assert labels["app.kubernetes.io/managed-by"] == "storefront-operator"
        assert labels["app.kubernetes.io/part-of"] == "storefront"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["app.kubernetes.io/component"]
        template = child.get("spec", {}).get("template")
        if template:
            assert template["metadata"]["labels"]["app.kubernetes.io/instance"] == NAME


def test_api_deployment() -> None:
    api = children()[("Deployment", "demo-api")]
    c = container(api)
    assert "command" not in c  # the image's entrypoint, `storefront`, runs the arguments
    assert c["args"] == ["api", "--host", "0.0.0.0", "--port", "8000"]
    assert c["image"] == "ghcr.io/storefront/storefront:0.1.0"
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["startupProbe"]["httpGet"]["path"] == "/livez"
    assert api["spec"]["replicas"] == 2
    annotations = api["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8000"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert api["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "storefront",
        "app.kubernetes.io/instance": NAME,
        "app.kubernetes.io/component": "api",
    }
    assert c["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"memory": "512Mi"},
    }


def test_api_service_has_http_and_named_metrics_port() -> None:
    svc = children()[("Service", "demo-api")]
    ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert ports["http"]["port"] == 80 and ports["http"]["targetPort"] == "http"
    assert ports["metrics"]["port"] == 8000
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "api"


@pytest.mark.parametrize("component", ["api", "worker", "scheduler"])
def test_hardened_security_context(component: str) -> None:
    deployment = children()[("Deployment", f"demo-{component}")]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(deployment)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"]: m["name"] for m in container(deployment)["volumeMounts"]}
    assert mounts["/tmp"] == "tmp"
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}} in pod["volumes"]


def test_worker_and_scheduler_commands() -> None:
    got = children()
    assert container(got[("Deployment", "demo-worker")])["args"] == ["worker"]
    scheduler = got[("Deployment", "demo-scheduler")]
    assert container(scheduler)["args"] == ["scheduler"]
    assert scheduler["spec"]["replicas"] == 1


def test_scheduler_only_when_enabled() -> None:
    got = children(spec_of(scheduler={"enabled": False}))
    assert ("Deployment", "demo-scheduler") not in got
    assert ("Service", "demo-scheduler-metrics") not in got


def test_builtin_schedule_unless_entries_given() -> None:
    assert "STOREFRONT_WORKER_CRON" not in children()[("ConfigMap", "demo-config")]["data"]


def test_one_metrics_port_per_worker_process() -> None:
    got = children(spec_of(worker={"processes": 3}))
    worker = container(got[("Deployment", "demo-worker")])
    assert worker["ports"] == [
        {"name": f"metrics-{i}", "containerPort": 9100 + i, "protocol": "TCP"} for i in range(3)
    ]
    service = got[("Service", "demo-worker-metrics")]
    assert service["spec"]["clusterIP"] == "None"
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [
        "metrics-0",
        "metrics-1",
        "metrics-2",
    ]
    data = got[("ConfigMap", "demo-config")]["data"]
    assert data["STOREFRONT_WORKER_METRICS_PORT"] == "9100"
    assert data["STOREFRONT_WORKER_PROCESSES"] == "3"
    scheduler = container(got[("Deployment", "demo-scheduler")])
    assert scheduler["ports"] == [{"name": "metrics", "containerPort": 9101, "protocol": "TCP"}]


def test_secret_refs_become_env() -> None:
    env = env_of(container(children()[("Deployment", "demo-api")]))
    assert env["STOREFRONT_DATABASE_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "db", "key": "url"}
    }
    assert env["STOREFRONT_REDIS_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "cache", "key": "url"}
    }
    assert env["STOREFRONT_JWT_SECRET"]["valueFrom"] == {
        "secretKeyRef": {"name": "demo-generated", "key": "jwt-secret"}
    }
    assert "STOREFRONT_ADMIN_EMAIL" not in env


def test_admin_and_jwt_secret_refs() -> None:
    spec = spec_of(admin={"secretRef": {"name": "adm"}}, jwtSecretRef={"name": "jwt", "key": "k"})
    env = env_of(container(children(spec)[("Deployment", "demo-api")]))
    assert env["STOREFRONT_ADMIN_EMAIL"]["valueFrom"]["secretKeyRef"] == {
        "name": "adm",
        "key": "email",
    }
    assert env["STOREFRONT_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "adm",
        "key": "password",
    }
    assert env["STOREFRONT_JWT_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "jwt", "key": "k"}


def test_managed_backing_services() -> None:
    spec = parse_spec({"database": {"managed": True}, "redis": {"managed": True}})
    got = children(spec)
    for component, port in (("postgres", 5432), ("redis", 6379)):
        deployment = got[("Deployment", f"demo-{component}")]
        assert deployment["spec"]["replicas"] == 1
        assert container(deployment)["securityContext"]["readOnlyRootFilesystem"] is True
        svc = got[("Service", f"demo-{component}")]
        assert svc["spec"]["ports"][0]["port"] == port
    env = env_of(container(got[("Deployment", "demo-api")]))
    names = list(env)
    # $(VAR) expansion needs the password defined before the URL that uses it.
    assert names.index("STOREFRONT_POSTGRES_PASSWORD") < names.index("STOREFRONT_DATABASE_URL")
    assert env["STOREFRONT_DATABASE_URL"]["value"] == (
        "postgresql+asyncpg://storefront:$(STOREFRONT_POSTGRES_PASSWORD)"
        "@demo-postgres.shop.svc:5432/storefront"
    )
    assert env["STOREFRONT_REDIS_URL"]["value"] == "redis://demo-redis.shop.svc:6379/0"


def test_a_new_storefront_image_leaves_the_managed_database_and_redis_pods_alone() -> None:
    """Their pods carry their own image's version: a Storefront upgrade that changed their pod
    template would recreate them, and the development database's data with them."""
    backing = {"database": {"managed": True}, "redis": {"managed": True}}

    def templates(tag: str) -> dict[str, dict[str, object]]:
        got = children(parse_spec({**backing, "image": {"tag": tag}}))
        return {
            c: got[("Deployment", f"demo-{c}")]["spec"]["template"] for c in ("postgres", "redis")
        }

    assert templates("1.0.0") == templates("1.1.0")
    labels = templates("1.0.0")["postgres"]["metadata"]["labels"]  # type: ignore[index]
    assert labels["app.kubernetes.io/version"] == "16-alpine"


@pytest.mark.parametrize(
    ("reference", "version"),
    [
        ("postgres:16-alpine", "16-alpine"),
        ("registry:5000/redis:7.0", "7.0"),
        ("registry:5000/redis", "latest"),
        ("redis", "latest"),
        ("redis@sha256:" + "a" * 64, "a" * 63),
    ],
)
def test_image_version_label(reference: str, version: str) -> None:
    assert image_version(reference) == version


def test_user_env_overrides_ours_without_duplicates() -> None:
    spec = spec_of(
        env=[{"name": "OTEL_SERVICE_NAME", "value": "mine"}, {"name": "EXTRA", "value": "1"}]
    )
    env = container(children(spec)[("Deployment", "demo-worker")])["env"]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names))
    assert {"name": "OTEL_SERVICE_NAME", "value": "mine"} in env
    assert {"name": "EXTRA", "value": "1"} in env


def test_config_map_settings_and_schedule() -> None:
    spec = spec_of(
        config={"STOREFRONT_PRODUCT_CACHE_TTL_SECONDS": "5"},
        observability={
            "logLevel": "DEBUG",
            "samplingRatio": 0.5,
            "otlpEndpoint": "http://otel:4318",
        },
        scheduler={
            "entries": [
                {
                    "name": "nightly",
                    "cron": "0 3 * * *",
                    "job": "generate_sales_report",
                    "args": {"days": 1},
                }
            ]
        },
        worker={"queues": ["default", "images"], "processes": 3, "threads": 4},
    )
    data = children(spec)[("ConfigMap", "demo-config")]["data"]
    assert data["STOREFRONT_PRODUCT_CACHE_TTL_SECONDS"] == "5"
    assert data["STOREFRONT_LOG_LEVEL"] == "DEBUG"
    assert data["STOREFRONT_TRACE_SAMPLE_RATIO"] == "0.5"
    assert data["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel:4318"
    assert data["STOREFRONT_WORKER_QUEUES"] == "default,images"
    assert data["STOREFRONT_WORKER_PROCESSES"] == "3"
    assert json.loads(data["STOREFRONT_WORKER_CRON"]) == [
        {
            "name": "nightly",
            "cron": "0 3 * * *",
            "job": "generate_sales_report",
            "args": {"days": 1},
        }
    ]


def test_config_change_rolls_pods() -> None:
    def pod_hash(spec: StorefrontSpec) -> str:
        api = children(spec)[("Deployment", "demo-api")]
        return str(api["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION])

    assert pod_hash(spec_of()) == pod_hash(spec_of())
    assert pod_hash(spec_of()) != pod_hash(spec_of(config={"STOREFRONT_LOG_LEVEL": "ERROR"}))


def test_api_autoscaling_renders_hpa_and_leaves_replicas_to_it() -> None:
    spec = spec_of(api={"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 7}})
    got = children(spec)
    hpa = got[("HorizontalPodAutoscaler", "demo-api")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["minReplicas"] == 3 and hpa["spec"]["maxReplicas"] == 7
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "demo-api",
    }
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert "replicas" not in got[("Deployment", "demo-api")]["spec"]


def test_api_scale_down_waits_for_the_configured_stabilization_window() -> None:
    scaling = {"enabled": True, "scaleDownStabilizationSeconds": 30}
    hpa = children(spec_of(api={"autoscaling": scaling}))[("HorizontalPodAutoscaler", "demo-api")]
    assert hpa["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 30}}


def test_pdb_only_when_several_api_replicas() -> None:
    assert ("PodDisruptionBudget", "demo-api") in children()
    pdb = children()[("PodDisruptionBudget", "demo-api")]
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"]["maxUnavailable"] == 1
    assert ("PodDisruptionBudget", "demo-api") not in children(spec_of(api={"replicas": 1}))
    disabled = spec_of(api={"podDisruptionBudget": {"enabled": False}})
    assert ("PodDisruptionBudget", "demo-api") not in children(disabled)


def test_worker_replicas_within_autoscaling_bounds() -> None:
    def replicas(worker: dict[str, Any]) -> int:
        return int(
            children(spec_of(worker=worker))[("Deployment", "demo-worker")]["spec"]["replicas"]
        )

    assert replicas({"replicas": 4}) == 4
    scaling = {"enabled": True, "minReplicas": 2, "maxReplicas": 5}
    assert replicas({"replicas": 9, "autoscaling": scaling}) == 5
    assert replicas({"replicas": 0, "autoscaling": scaling}) == 2
    assert replicas({"replicas": 3, "autoscaling": scaling}) == 3


def test_service_monitor_only_when_crd_exists() -> None:
    spec = spec_of(observability={"serviceMonitor": {"labels": {"release": "kps"}}})
    assert not any(kind == "ServiceMonitor" for kind, _ in children(spec))
    sm = children(spec, service_monitor_crd=True)[("ServiceMonitor", "demo")]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kps"
    assert sm["spec"]["endpoints"] == [
        {"port": port, "path": "/metrics", "interval": "30s"}
        for port in ("metrics", "metrics-0", "metrics-1")  # API/scheduler, 2 worker processes
    ]
    assert sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == NAME
    off = spec_of(observability={"serviceMonitor": {"enabled": False}})
    assert not any(kind == "ServiceMonitor" for kind, _ in children(off, service_monitor_crd=True))


def test_dashboards_are_off_by_default() -> None:
    # The chart ships them cluster-wide; per-instance copies would clash on uid.
    assert not any(
        name.startswith("demo-dashboard") for _, name in children(dashboards={"x": "{}"})
    )


def test_dashboards_labelled_for_grafana_sidecar() -> None:
    enabled = spec_of(observability={"dashboards": {"enabled": True}})
    got = children(enabled, dashboards={"storefront-api": '{"title": "API"}'})
    cm = got[("ConfigMap", "demo-dashboard-storefront-api")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"]["grafana_folder"] == "Storefront"
    assert cm["data"] == {"storefront-api.json": '{"title": "API"}'}
    custom = spec_of(
        observability={"dashboards": {"enabled": True, "label": "dash", "labelValue": "yes"}}
    )
    cm = children(custom, dashboards={"x": "{}"})[("ConfigMap", "demo-dashboard-x")]
    assert cm["metadata"]["labels"]["dash"] == "yes"
    assert not any(
        name.startswith("demo-dashboard")
        for _, name in children(
            spec_of(observability={"dashboards": {"enabled": False}}), dashboards={"x": "{}"}
        )
    )


def test_load_dashboards_tolerates_none(tmp_path: Path) -> None:
    assert load_dashboards(tmp_path / "absent") == {}
    assert load_dashboards(tmp_path) == {}
    (tmp_path / "Storefront_API.json").write_text("{}")
    assert load_dashboards(tmp_path) == {"storefront-api": "{}"}


def test_migration_job_per_image() -> None:
    spec = spec_of()
    job = children(spec)[("Job", migration_job_name(NAME, spec))]
    c = container(job)
    assert c["args"] == ["migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    api_env = env_of(container(children(spec)[("Deployment", "demo-api")]))
    job_env = env_of(c)
    assert job_env.keys() == api_env.keys()  # migrations see the same database and secrets
    assert job_env["STOREFRONT_DATABASE_URL"] == api_env["STOREFRONT_DATABASE_URL"]
    newer = spec_of(image={"tag": "0.2.0"})
    assert migration_job_name(NAME, newer) != migration_job_name(NAME, spec)
    assert migration_job_name(NAME, spec) == migration_job_name(NAME, spec_of())


def test_image_digest_and_pull_secrets() -> None:
    digest = "sha256:" + "a" * 64
    spec = spec_of(
        image={"tag": digest, "pullPolicy": "Always"}, imagePullSecrets=[{"name": "reg"}]
    )
    api = children(spec)[("Deployment", "demo-api")]
    assert container(api)["image"] == f"ghcr.io/storefront/storefront@{digest}"
    assert container(api)["imagePullPolicy"] == "Always"
    assert api["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "reg"}]
    assert len(api["metadata"]["labels"]["app.kubernetes.io/version"]) <= 63


def test_render_is_pure_and_deterministic() -> None:
    spec = spec_of()
    assert render(NAME, NS, spec) == render(NAME, NS, spec)


def test_worker_selector_matches_worker_pods() -> None:
    worker = children()[("Deployment", "demo-worker")]
    labels = worker["spec"]["template"]["metadata"]["labels"]
    for pair in worker_selector(NAME).split(","):
        k, v = pair.split("=")
        assert labels[k] == v


def test_network_policies_let_in_only_who_needs_each_port() -> None:
    spec = parse_spec(
        {
            "database": {"managed": True},
            "redis": {"managed": True},
            "networkPolicy": {
                "metricsNamespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                }
            },
        }
    )
    got = render(NAME, NS, spec, RenderContext(operator_namespace="storefront-system"))
    policies = {m["metadata"]["name"]: m["spec"] for m in got if m["kind"] == "NetworkPolicy"}
    assert set(policies) == {
        f"{NAME}-{c}" for c in ("api", "worker", "scheduler", "migrate", "postgres", "redis")
    }
    for component, policy in policies.items():
        assert policy["policyTypes"] == ["Ingress"]  # egress stays open
        labels = policy["podSelector"]["matchLabels"]
        assert labels["app.kubernetes.io/component"] == component.removeprefix(f"{NAME}-")

    own = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "storefront",
                                           "app.kubernetes.io/instance": NAME}}}  # fmt: skip
    assert policies[f"{NAME}-postgres"]["ingress"] == [
        {"from": [own], "ports": [{"protocol": "TCP", "port": 5432}]}
    ]
    (redis,) = policies[f"{NAME}-redis"]["ingress"]
    assert redis["from"] == [own, {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "storefront-system"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/component": "operator"}},
    }]  # fmt: skip
    # The API's port (which also serves its /metrics) from anywhere: no `from`.
    assert policies[f"{NAME}-api"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8000}]}]
    monitoring = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }
    (worker,) = policies[f"{NAME}-worker"]["ingress"]
    assert worker["from"] == [monitoring]
    assert [p["port"] for p in worker["ports"]] == [9100, 9101]  # one per worker process
    assert policies[f"{NAME}-migrate"]["ingress"] == []


def test_network_policies_follow_the_spec() -> None:
    def policy_names(spec: StorefrontSpec) -> set[str]:
        return {
            m["metadata"]["name"] for m in render(NAME, NS, spec) if m["kind"] == "NetworkPolicy"
        }

    # Without the operator's namespace (outside a cluster), Redis lets in the instance only;
    # without managed services or a scheduler, their policies go (and get pruned).
    assert policy_names(spec_of(scheduler={"enabled": False})) == {
        f"{NAME}-api", f"{NAME}-worker", f"{NAME}-migrate"
    }  # fmt: skip
    assert policy_names(spec_of(networkPolicy={"enabled": False})) == set()
    everyone = children(spec_of())[("NetworkPolicy", f"{NAME}-worker")]["spec"]["ingress"]
    assert everyone[0]["from"] == [{"namespaceSelector": {}}]  # every namespace by default

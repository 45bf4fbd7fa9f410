"""Spec → desired Kubernetes objects: a pure function of its arguments, no API calls.

`render()` returns every child of one Storefront (Deployments, Services, HPA, PDB, ConfigMaps,
the migration Job, managed PostgreSQL/Redis, ServiceMonitor, dashboards) as plain manifests ready
for server-side apply; the handlers add owner references and talk to the API server.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storefront_operator.spec import EnvVar, ResourceRequirements, StorefrontSpec

MANAGER = "storefront-operator"
APP_NAME = "storefront"
API_PORT = 8000
WORKER_METRICS_PORT = 9100  # worker process i serves /metrics on WORKER_METRICS_PORT + i
SCHEDULER_METRICS_PORT = 9101
POSTGRES_PORT = 5432
REDIS_PORT = 6379
RUN_AS_USER = 10001
CONFIG_HASH_ANNOTATION = "storefront.dev/config-hash"
IMAGE_ANNOTATION = "storefront.dev/image"
METRICS_LABEL = "storefront.dev/metrics"
GENERATED_SECRET_KEYS = ("jwt-secret", "postgres-password")
REPO_ROOT = Path(__file__).resolve().parents[2]

Manifest = dict[str, Any]


@dataclass(frozen=True)
class RenderContext:
    """What the cluster offers and what the operator observed, decided outside `render`."""

    service_monitor_crd: bool = False
    dashboards: Mapping[str, str] = field(default_factory=dict)
    """Dashboard file stem → JSON text."""


# ---------------------------------------------------------------------------------------------
# Names and labels
# ---------------------------------------------------------------------------------------------
def child_name(name: str, component: str) -> str:
    return f"{name}-{component}"


def config_map_name(name: str) -> str:
    return child_name(name, "config")


def generated_secret_name(name: str) -> str:
    """The Secret the operator creates once (JWT secret, managed PostgreSQL password)."""
    return child_name(name, "generated")


def migration_job_name(name: str, spec: StorefrontSpec) -> str:
    """One Job per image: a new image runs its migrations once, an unchanged one never again."""
    digest = hashlib.sha256(spec.image.reference.encode()).hexdigest()[:10]
    return f"{name}-migrate-{digest}"


def selector_labels(name: str, component: str) -> dict[str, str]:
    """The immutable subset of labels used in selectors."""
    return {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
    }


def labels(
    name: str, component: str, spec: StorefrontSpec, image: str | None = None
) -> dict[str, str]:
    """Standard labels; the version is Storefront's image tag, or that of `image` for a
    component running another image (managed PostgreSQL and Redis), whose pods must not be
    replaced when only Storefront's version changes."""
    return {
        **selector_labels(name, component),
        "app.kubernetes.io/managed-by": MANAGER,
        "app.kubernetes.io/part-of": APP_NAME,
        "app.kubernetes.io/version": image_version(image) if image else _label(spec.image.tag),
    }


def image_version(reference: str) -> str:
    """The tag (or digest) of an image reference, as a label value."""
    if "@" in reference:
        return _label(reference.rsplit("@", 1)[1].removeprefix("sha256:"))
    name, _, tag = reference.rpartition(":")
    return _label(tag) if name and "/" not in tag else "latest"


def _label(value: str) -> str:
    return value.removeprefix("sha256:")[:63]


def instance_selector(name: str) -> dict[str, str]:
    """Selects every child of one instance (used to prune children no longer desired)."""
    return {
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": MANAGER,
    }


def worker_selector(name: str) -> str:
    """The worker pods' label selector as a string (the scale subresource's labelSelectorPath)."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(name, "worker").items())


# ---------------------------------------------------------------------------------------------
# Pod building blocks
# ---------------------------------------------------------------------------------------------
def pod_security_context(user: int = RUN_AS_USER) -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": user,
        "runAsGroup": user,
        "fsGroup": user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> Manifest:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _resources(resources: ResourceRequirements) -> Manifest:
    out: Manifest = {}
    if resources.requests:
        out["requests"] = {k: str(v) for k, v in resources.requests.items()}
    if resources.limits:
        out["limits"] = {k: str(v) for k, v in resources.limits.items()}
    return out


def _secret_env(env_name: str, secret: str, key: str) -> Manifest:
    return {"name": env_name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def app_env(name: str, namespace: str, spec: StorefrontSpec, component: str) -> list[Manifest]:
    """Environment shared by every Storefront container: secrets, URLs, then the user's env
    (which wins, by name, so a user can override anything the operator sets)."""
    generated = generated_secret_name(name)
    env: list[Manifest] = [
        {"name": "OTEL_SERVICE_NAME", "value": f"storefront-{component}"},
        {
            "name": "OTEL_RESOURCE_ATTRIBUTES",
            "value": f"service.namespace={namespace},service.instance.id={name}",
        },
    ]
    if spec.database.secret_ref is not None:
        ref = spec.database.secret_ref
        env.append(_secret_env("STOREFRONT_DATABASE_URL", ref.name, ref.key))
    else:
        host = f"{child_name(name, 'postgres')}.{namespace}.svc"
        env.append(_secret_env("STOREFRONT_POSTGRES_PASSWORD", generated, "postgres-password"))
        env.append(
            {
                "name": "STOREFRONT_DATABASE_URL",
                # Kubernetes expands $(VAR) from variables defined earlier in this list.
                "value": "postgresql+asyncpg://storefront:$(STOREFRONT_POSTGRES_PASSWORD)"
                f"@{host}:{POSTGRES_PORT}/storefront",
            }
        )
    if spec.redis.secret_ref is not None:
        ref = spec.redis.secret_ref
        env.append(_secret_env("STOREFRONT_REDIS_URL", ref.name, ref.key))
    else:
        host = f"{child_name(name, 'redis')}.{namespace}.svc"
        env.append({"name": "STOREFRONT_REDIS_URL", "value": f"redis://{host}:{REDIS_PORT}/0"})
    jwt = spec.jwt_secret_ref
    env.append(
        _secret_env("STOREFRONT_JWT_SECRET", jwt.name, jwt.key)
        if jwt is not None
        else _secret_env("STOREFRONT_JWT_SECRET", generated, "jwt-secret")
    )
    if spec.admin is not None:
        admin = spec.admin.secret_ref
        env.append(_secret_env("STOREFRONT_ADMIN_EMAIL", admin.name, admin.email_key))
        env.append(_secret_env("STOREFRONT_ADMIN_PASSWORD", admin.name, admin.password_key))
    return merge_env(env, spec.env)


def merge_env(ours: list[Manifest], theirs: list[EnvVar]) -> list[Manifest]:
    """Our variables, with the user's replacing ours by name (env is a map keyed by name for
    server-side apply, so a duplicate name would be rejected)."""
    user = [var.manifest() for var in theirs]
    overridden = {var["name"] for var in user}
    return [var for var in ours if var["name"] not in overridden] + user


def settings(name: str, namespace: str, spec: StorefrontSpec) -> dict[str, str]:
    """The instance's ConfigMap data: STOREFRONT_* settings, the cron table; spec.config wins."""
    obs = spec.observability
    data = {
        "STOREFRONT_ENVIRONMENT": "production",
        "STOREFRONT_LOG_LEVEL": obs.log_level,
        "STOREFRONT_LOG_FORMAT": "json",
        "STOREFRONT_TRACE_SAMPLE_RATIO": str(obs.sampling_ratio),
        "STOREFRONT_DATA_DIR": "/tmp/storefront",
        "STOREFRONT_WORKER_PROCESSES": str(spec.worker.processes),
        "STOREFRONT_WORKER_THREADS": str(spec.worker.threads),
        "STOREFRONT_WORKER_QUEUES": ",".join(spec.worker.queues),
        "STOREFRONT_WORKER_METRICS_PORT": str(WORKER_METRICS_PORT),
        "STOREFRONT_WORKER_SCHEDULER_METRICS_PORT": str(SCHEDULER_METRICS_PORT),
    }
    if spec.scheduler.entries:
        data["STOREFRONT_WORKER_CRON"] = cron_json(spec)
    if obs.otlp_endpoint:
        data["OTEL_EXPORTER_OTLP_ENDPOINT"] = obs.otlp_endpoint
    data.update(spec.config)
    return data


def cron_json(spec: StorefrontSpec) -> str:
    """STOREFRONT_WORKER_CRON: the cron table as the scheduler reads it (a JSON list)."""
    entries = [e.model_dump(by_alias=True, mode="json") for e in spec.scheduler.entries]
    return json.dumps(entries, sort_keys=True, separators=(",", ":"))


def config_hash(name: str, namespace: str, spec: StorefrontSpec) -> str:
    """Changes whenever the ConfigMap changes, so pods roll to pick it up (envFrom is read
    only when a container starts)."""
    payload = json.dumps(settings(name, namespace, spec), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _container(
    name: str, namespace: str, spec: StorefrontSpec, component: str, args: list[str]
) -> Manifest:
    return {
        "name": component,
        "image": spec.image.reference,
        "imagePullPolicy": spec.image.pull_policy,
        # Arguments to the image's entrypoint (`storefront`), as `docker run IMAGE api` would:
        # an image that wraps the entrypoint (an init, a secrets fetcher) keeps working.
        "args": args,
        "envFrom": [{"configMapRef": {"name": config_map_name(name)}}],
        "env": app_env(name, namespace, spec, component),
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def _pod_spec(spec: StorefrontSpec, containers: list[Manifest], **extra: Any) -> Manifest:
    pod: Manifest = {
        "securityContext": pod_security_context(),
        "automountServiceAccountToken": False,
        "containers": containers,
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
        **extra,
    }
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": s.name} for s in spec.image_pull_secrets]
    return pod


def _deployment(
    name: str,
    namespace: str,
    spec: StorefrontSpec,
    component: str,
    pod_spec: Manifest,
    replicas: int | None,
    pod_annotations: Mapping[str, str] | None = None,
    strategy: Manifest | None = None,
) -> Manifest:
    deployment_spec: Manifest = {
        "selector": {"matchLabels": selector_labels(name, component)},
        "template": {
            "metadata": {
                "labels": labels(name, component, spec),
                "annotations": {
                    CONFIG_HASH_ANNOTATION: config_hash(name, namespace, spec),
                    **(pod_annotations or {}),
                },
            },
            "spec": pod_spec,
        },
    }
    # Left out while an autoscaler owns the count: applying it would fight the autoscaler.
    if replicas is not None:
        deployment_spec["replicas"] = replicas
    if strategy is not None:
        deployment_spec["strategy"] = strategy
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": child_name(name, component),
            "namespace": namespace,
            "labels": labels(name, component, spec),
            "annotations": {IMAGE_ANNOTATION: spec.image.reference},
        },
        "spec": deployment_spec,
    }


# ---------------------------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------------------------
def api_deployment(name: str, namespace: str, spec: StorefrontSpec) -> Manifest:
    container = _container(
        name, namespace, spec, "api", ["api", "--host", "0.0.0.0", "--port", str(API_PORT)]
    )
    container["ports"] = [{"name": "http", "containerPort": API_PORT, "protocol": "TCP"}]
    container["resources"] = _resources(spec.api.resources)
    probe = {"httpGet": {"path": "/livez", "port": "http"}, "periodSeconds": 10}
    container["startupProbe"] = {**probe, "periodSeconds": 2, "failureThreshold": 60}
    container["livenessProbe"] = {**probe, "timeoutSeconds": 2, "failureThreshold": 3}
    container["readinessProbe"] = {
        "httpGet": {"path": "/readyz", "port": "http"},
        "periodSeconds": 5,
        "timeoutSeconds": 3,
        "failureThreshold": 2,
    }
    container["lifecycle"] = {"preStop": {"sleep": {"seconds": 5}}}
    pod = _pod_spec(spec, [container], terminationGracePeriodSeconds=30)
    replicas = None if spec.api.autoscaling.enabled else spec.api.replicas
    return _deployment(
        name,
        namespace,
        spec,
        "api",
        pod,
        replicas,
        pod_annotations={
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(API_PORT),
            "prometheus.io/path": "/metrics",
        },
        strategy={
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
        },
    )


def worker_deployment(name: str, namespace: str, spec: StorefrontSpec) -> Manifest:
    container = _container(name, namespace, spec, "worker", ["worker"])
    container["ports"] = [
        {"name": port_name, "containerPort": port, "protocol": "TCP"}
        for port_name, port in worker_metrics_ports(spec)
    ]
    container["resources"] = _resources(spec.worker.resources)
    # A worker finishes its in-flight messages on SIGTERM; unfinished ones are redelivered.
    pod = _pod_spec(spec, [container], terminationGracePeriodSeconds=60)
    return _deployment(
        name,
        namespace,
        spec,
        "worker",
        pod,
        desired_worker_replicas(spec),
        pod_annotations={
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(WORKER_METRICS_PORT),
            "prometheus.io/path": "/metrics",
        },
    )


def worker_metrics_ports(spec: StorefrontSpec) -> list[tuple[str, int]]:
    """One /metrics port per worker process (the pod annotation can name only the first; the
    ServiceMonitor scrapes them all)."""
    return [
        (f"metrics-{index}", WORKER_METRICS_PORT + index) for index in range(spec.worker.processes)
    ]


def desired_worker_replicas(spec: StorefrontSpec) -> int:
    """spec.worker.replicas, kept within the autoscaling bounds while autoscaling is on."""
    scaling = spec.worker.autoscaling
    if not scaling.enabled:
        return spec.worker.replicas
    return max(scaling.min_replicas, min(scaling.max_replicas, spec.worker.replicas))


def scheduler_deployment(name: str, namespace: str, spec: StorefrontSpec) -> Manifest:
    container = _container(name, namespace, spec, "scheduler", ["scheduler"])
    container["resources"] = {
        "requests": {"cpu": "10m", "memory": "128Mi"},
        "limits": {"memory": "256Mi"},
    }
    container["ports"] = [
        {"name": "metrics", "containerPort": SCHEDULER_METRICS_PORT, "protocol": "TCP"}
    ]
    pod = _pod_spec(spec, [container], terminationGracePeriodSeconds=30)
    # One at a time: the Redis lease already prevents double ticks, Recreate avoids churn.
    return _deployment(
        name,
        namespace,
        spec,
        "scheduler",
        pod,
        1,
        pod_annotations={
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(SCHEDULER_METRICS_PORT),
            "prometheus.io/path": "/metrics",
        },
        strategy={"type": "Recreate"},
    )


def migration_job(name: str, namespace: str, spec: StorefrontSpec) -> Manifest:
    container = _container(name, namespace, spec, "migrate", ["migrate"])
    container["resources"] = {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"memory": "512Mi"},
    }
    pod = _pod_spec(spec, [container], restartPolicy="Never")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": migration_job_name(name, spec),
            "namespace": namespace,
            "labels": labels(name, "migrate", spec),
            "annotations": {IMAGE_ANNOTATION: spec.image.reference},
        },
        "spec": {
            "backoffLimit": 4,
            "activeDeadlineSeconds": 900,
            "template": {"metadata": {"labels": labels(name, "migrate", spec)}, "spec": pod},
        },
    }


def config_map(name: str, namespace: str, spec: StorefrontSpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(name),
            "namespace": namespace,
            "labels": labels(name, "config", spec),
        },
        "data": settings(name, namespace, spec),
    }


def api_service(name: str, namespace: str, spec: StorefrontSpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": child_name(name, "api"),
            "namespace": namespace,
            "labels": {**labels(name, "api", spec), METRICS_LABEL: "true"},
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(name, "api"),
            "ports": [
                {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                {"name": "metrics", "port": API_PORT, "targetPort": "http", "protocol": "TCP"},
            ],
        },
    }


def metrics_service(
    name: str,
    namespace: str,
    spec: StorefrontSpec,
    component: str,
    ports: list[tuple[str, int]],
) -> Manifest:
    """A headless Service for scraping: Prometheus reaches each pod, nothing load-balances."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": child_name(name, f"{component}-metrics"),
            "namespace": namespace,
            "labels": {**labels(name, component, spec), METRICS_LABEL: "true"},
        },
        "spec": {
            "clusterIP": "None",
            "selector": selector_labels(name, component),
            "ports": [
                {"name": port_name, "port": port, "targetPort": port_name, "protocol": "TCP"}
                for port_name, port in ports
            ],
        },
    }


def api_hpa(name: str, namespace: str, spec: StorefrontSpec) -> Manifest:
    scaling = spec.api.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": child_name(name, "api"),
            "namespace": namespace,
            "labels": labels(name, "api", spec),
        },
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": child_name(name, "api"),
            },
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds
                }
            },
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": scaling.target_cpu_utilization_percentage,
                        },
                    },
                }
            ],
        },
    }


def api_pdb(name: str, namespace: str, spec: StorefrontSpec) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": child_name(name, "api"),
            "namespace": namespace,
            "labels": labels(name, "api", spec),
        },
        "spec": {
            "maxUnavailable": spec.api.pod_disruption_budget.max_unavailable,
            "selector": {"matchLabels": selector_labels(name, "api")},
        },
    }


def _api_can_run_several(spec: StorefrontSpec) -> bool:
    return spec.api.autoscaling.enabled or spec.api.replicas > 1


def service_monitor(name: str, namespace: str, spec: StorefrontSpec) -> Manifest:
    sm = spec.observability.service_monitor
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**labels(name, "metrics", spec), **sm.labels},
        },
        "spec": {
            "selector": {
                "matchLabels": {
                    "app.kubernetes.io/name": APP_NAME,
                    "app.kubernetes.io/instance": name,
                    METRICS_LABEL: "true",
                }
            },
            # The API and scheduler Services name their port `metrics`, workers one per process.
            "endpoints": [
                {"port": port_name, "path": "/metrics", "interval": sm.interval}
                for port_name in ["metrics", *(p for p, _ in worker_metrics_ports(spec))]
            ],
        },
    }


def dashboard_config_maps(
    name: str, namespace: str, spec: StorefrontSpec, dashboards: Mapping[str, str]
) -> list[Manifest]:
    dash = spec.observability.dashboards
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": f"{name}-dashboard-{stem}",
                "namespace": namespace,
                "labels": {**labels(name, "dashboard", spec), dash.label: dash.label_value},
                # The folder annotation kube-prometheus-stack's Grafana sidecar reads.
                "annotations": {"grafana_folder": dash.folder},
            },
            "data": {f"{stem}.json": text},
        }
        for stem, text in sorted(dashboards.items())
    ]


def managed_postgres(name: str, namespace: str, spec: StorefrontSpec) -> list[Manifest]:
    """A single-replica PostgreSQL for development: data lives in an emptyDir and is lost when
    the pod goes; production points spec.database.secretRef at a real database."""
    component = "postgres"
    container = {
        "name": component,
        "image": spec.database.managed_image,
        "imagePullPolicy": "IfNotPresent",
        "env": [
            {"name": "POSTGRES_USER", "value": "storefront"},
            {"name": "POSTGRES_DB", "value": "storefront"},
            _secret_env("POSTGRES_PASSWORD", generated_secret_name(name), "postgres-password"),
            {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
        ],
        "ports": [{"name": "postgres", "containerPort": POSTGRES_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "exec": {"command": ["pg_isready", "-U", "storefront", "-d", "storefront"]},
            "periodSeconds": 5,
        },
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "data", "mountPath": "/var/lib/postgresql/data"},
            {"name": "run", "mountPath": "/var/run/postgresql"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod = {
        # uid 70 is `postgres` in the Alpine images.
        "securityContext": pod_security_context(70),
        "automountServiceAccountToken": False,
        "containers": [container],
        "volumes": [
            {"name": "data", "emptyDir": {}},
            {"name": "run", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    image = spec.database.managed_image
    return [
        _backing_deployment(name, namespace, spec, component, image, pod),
        _backing_service(name, namespace, spec, component, image, POSTGRES_PORT),
    ]


def managed_redis(name: str, namespace: str, spec: StorefrontSpec) -> list[Manifest]:
    """A single-replica Redis for development (no persistence)."""
    component = "redis"
    container = {
        "name": component,
        "image": spec.redis.managed_image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["--save", "", "--appendonly", "no", "--protected-mode", "no"],
        "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 5},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    pod = {
        # uid 999 is `redis` in the official images.
        "securityContext": pod_security_context(999),
        "automountServiceAccountToken": False,
        "containers": [container],
        "volumes": [{"name": "data", "emptyDir": {}}],
    }
    image = spec.redis.managed_image
    return [
        _backing_deployment(name, namespace, spec, component, image, pod),
        _backing_service(name, namespace, spec, component, image, REDIS_PORT),
    ]


def _backing_deployment(
    name: str, namespace: str, spec: StorefrontSpec, component: str, image: str, pod: Manifest
) -> Manifest:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": child_name(name, component),
            "namespace": namespace,
            "labels": labels(name, component, spec, image),
        },
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector_labels(name, component)},
            "template": {
                "metadata": {"labels": labels(name, component, spec, image)},
                "spec": pod,
            },
        },
    }


def _backing_service(
    name: str, namespace: str, spec: StorefrontSpec, component: str, image: str, port: int
) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": child_name(name, component),
            "namespace": namespace,
            "labels": labels(name, component, spec, image),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(name, component),
            "ports": [
                {"name": component, "port": port, "targetPort": component, "protocol": "TCP"}
            ],
        },
    }


# ---------------------------------------------------------------------------------------------
# Everything
# ---------------------------------------------------------------------------------------------
def render(
    name: str, namespace: str, spec: StorefrontSpec, context: RenderContext | None = None
) -> list[Manifest]:
    """Every desired child of the Storefront `namespace/name`, in apply order (dependencies
    first: config and backing services, the migration Job, then the workloads)."""
    ctx = context or RenderContext()
    children: list[Manifest] = [config_map(name, namespace, spec)]
    if spec.database.managed:
        children += managed_postgres(name, namespace, spec)
    if spec.redis.managed:
        children += managed_redis(name, namespace, spec)
    children.append(migration_job(name, namespace, spec))
    children += [
        api_deployment(name, namespace, spec),
        api_service(name, namespace, spec),
        worker_deployment(name, namespace, spec),
        metrics_service(name, namespace, spec, "worker", worker_metrics_ports(spec)),
    ]
    if spec.scheduler.enabled:
        children += [
            scheduler_deployment(name, namespace, spec),
            metrics_service(
                name, namespace, spec, "scheduler", [("metrics", SCHEDULER_METRICS_PORT)]
            ),
        ]
    if spec.api.autoscaling.enabled:
        children.append(api_hpa(name, namespace, spec))
    if spec.api.pod_disruption_budget.enabled and _api_can_run_several(spec):
        children.append(api_pdb(name, namespace, spec))
    if ctx.service_monitor_crd and spec.observability.service_monitor.enabled:
        children.append(service_monitor(name, namespace, spec))
    if spec.observability.dashboards.enabled:
        children += dashboard_config_maps(name, namespace, spec, ctx.dashboards)
    return children


def load_dashboards(directory: Path | None = None) -> dict[str, str]:
    """Dashboard JSON files (stem → text) from `dashboards/*.json`; none is fine."""
    folder = directory or REPO_ROOT / "dashboards"
    if not folder.is_dir():
        return {}
    found: dict[str, str] = {}
    for path in sorted(folder.glob("*.json")):
        stem = path.stem.lower().replace("_", "-")
        found[stem] = path.read_text()
    return found


def key(manifest: Manifest) -> tuple[str, str, str]:
    """(apiVersion, kind, name): identifies a child within its namespace."""
    return manifest["apiVersion"], manifest["kind"], manifest["metadata"]["name"]

"""Spec → desired Kubernetes objects: a pure function of its arguments, no API calls.

`render()` returns every child of one Storefront (Deployments, Services, HPA, PDB, ConfigMaps,
the migration Job, managed PostgreSQL/Redis, ServiceMonitor, dashboards, NetworkPolicies) as
plain manifests ready for server-side apply; the handlers add owner references and talk to the
API server. Each kind of child is rendered in a module of its own: `common` (names, labels, pod
blocks), `app`, `backing`, `monitoring`, `network`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from storefront_operator.render.app import (
    api_can_run_several,
    api_deployment,
    api_hpa,
    api_pdb,
    api_service,
    config_map,
    desired_worker_replicas,
    metrics_service,
    migration_job,
    scheduler_deployment,
    worker_deployment,
    worker_metrics_ports,
)
from storefront_operator.render.backing import managed_postgres, managed_redis
from storefront_operator.render.common import (
    API_PORT,
    APP_NAME,
    CONFIG_HASH_ANNOTATION,
    GENERATED_SECRET_KEYS,
    IMAGE_ANNOTATION,
    INSTANCE_LABEL,
    MANAGED_BY_LABEL,
    MANAGER,
    METRICS_LABEL,
    POSTGRES_PORT,
    REDIS_PORT,
    REPO_ROOT,
    SCHEDULER_METRICS_PORT,
    WORKER_METRICS_PORT,
    Manifest,
    child_name,
    config_hash,
    config_map_name,
    generated_secret_name,
    image_version,
    instance_selector,
    instances_selector,
    labels,
    migration_job_name,
    selector_labels,
    settings,
    worker_selector,
)
from storefront_operator.render.monitoring import (
    dashboard_config_maps,
    load_dashboards,
    service_monitor,
)
from storefront_operator.render.network import network_policies
from storefront_operator.spec import StorefrontSpec

__all__ = [
    "API_PORT",
    "APP_NAME",
    "CONFIG_HASH_ANNOTATION",
    "GENERATED_SECRET_KEYS",
    "IMAGE_ANNOTATION",
    "INSTANCE_LABEL",
    "MANAGED_BY_LABEL",
    "MANAGER",
    "METRICS_LABEL",
    "POSTGRES_PORT",
    "REDIS_PORT",
    "REPO_ROOT",
    "SCHEDULER_METRICS_PORT",
    "WORKER_METRICS_PORT",
    "Manifest",
    "RenderContext",
    "child_name",
    "config_hash",
    "config_map_name",
    "desired_worker_replicas",
    "generated_secret_name",
    "image_version",
    "instance_selector",
    "instances_selector",
    "key",
    "labels",
    "load_dashboards",
    "migration_job_name",
    "render",
    "selector_labels",
    "settings",
    "worker_metrics_ports",
    "worker_selector",
]


@dataclass(frozen=True)
class RenderContext:
    """What the cluster offers and what the operator observed, decided outside `render`."""

    service_monitor_crd: bool = False
    dashboards: Mapping[str, str] = field(default_factory=dict)
    """Dashboard file stem → JSON text."""
    operator_namespace: str | None = None
    """Where the operator's pods run (their NetworkPolicy peer for each managed Redis)."""


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
    if spec.api.pod_disruption_budget.enabled and api_can_run_several(spec):
        children.append(api_pdb(name, namespace, spec))
    if ctx.service_monitor_crd and spec.observability.service_monitor.enabled:
        children.append(service_monitor(name, namespace, spec))
    if spec.observability.dashboards.enabled:
        children += dashboard_config_maps(name, namespace, spec, ctx.dashboards)
    if spec.network_policy.enabled:
        children += network_policies(name, namespace, spec, ctx.operator_namespace)
    return children


def key(manifest: Manifest) -> tuple[str, str, str]:
    """(apiVersion, kind, name): identifies a child within its namespace."""
    return manifest["apiVersion"], manifest["kind"], manifest["metadata"]["name"]

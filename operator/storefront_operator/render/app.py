"""Storefront's own workloads: the API, worker and scheduler Deployments, the migration Job,
their ConfigMap and Services, the API's HorizontalPodAutoscaler and PodDisruptionBudget."""

from __future__ import annotations

from storefront_operator.render.common import (
    API_PORT,
    IMAGE_ANNOTATION,
    METRICS_LABEL,
    SCHEDULER_METRICS_PORT,
    WORKER_METRICS_PORT,
    Manifest,
    app_container,
    app_deployment,
    app_pod_spec,
    child_name,
    config_map_name,
    labels,
    migration_job_name,
    resources_manifest,
    selector_labels,
    settings,
)
from storefront_operator.spec import StorefrontSpec


def api_deployment(name: str, namespace: str, spec: StorefrontSpec) -> Manifest:
    container = app_container(
        name, namespace, spec, "api", ["api", "--host", "0.0.0.0", "--port", str(API_PORT)]
    )
    container["ports"] = [{"name": "http", "containerPort": API_PORT, "protocol": "TCP"}]
    container["resources"] = resources_manifest(spec.api.resources)
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
    pod = app_pod_spec(spec, [container], terminationGracePeriodSeconds=30)
    replicas = None if spec.api.autoscaling.enabled else spec.api.replicas
    return app_deployment(
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
    container = app_container(name, namespace, spec, "worker", ["worker"])
    container["ports"] = [
        {"name": port_name, "containerPort": port, "protocol": "TCP"}
        for port_name, port in worker_metrics_ports(spec)
    ]
    container["resources"] = resources_manifest(spec.worker.resources)
    # A worker finishes its in-flight messages on SIGTERM; unfinished ones are redelivered.
    pod = app_pod_spec(spec, [container], terminationGracePeriodSeconds=60)
    return app_deployment(
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
    container = app_container(name, namespace, spec, "scheduler", ["scheduler"])
    container["resources"] = {
        "requests": {"cpu": "10m", "memory": "128Mi"},
        "limits": {"memory": "256Mi"},
    }
    container["ports"] = [
        {"name": "metrics", "containerPort": SCHEDULER_METRICS_PORT, "protocol": "TCP"}
    ]
    pod = app_pod_spec(spec, [container], terminationGracePeriodSeconds=30)
    # One at a time: the Redis lease already prevents double ticks, Recreate avoids churn.
    return app_deployment(
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
    container = app_container(name, namespace, spec, "migrate", ["migrate"])
    container["resources"] = {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"memory": "512Mi"},
    }
    pod = app_pod_spec(spec, [container], restartPolicy="Never")
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


def api_can_run_several(spec: StorefrontSpec) -> bool:
    return spec.api.autoscaling.enabled or spec.api.replicas > 1

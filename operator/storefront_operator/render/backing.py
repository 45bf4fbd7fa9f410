"""The development PostgreSQL and Redis the operator runs for an instance (`managed: true`)."""

from __future__ import annotations

from storefront_operator.render.common import (
    POSTGRES_PORT,
    REDIS_PORT,
    Manifest,
    child_name,
    container_security_context,
    generated_secret_name,
    labels,
    pod_security_context,
    secret_env,
    selector_labels,
)
from storefront_operator.spec import StorefrontSpec


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
            secret_env("POSTGRES_PASSWORD", generated_secret_name(name), "postgres-password"),
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

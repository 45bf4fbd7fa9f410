"""NetworkPolicies around an instance's pods: who may open a connection to each of them."""

from __future__ import annotations

from typing import Any

from storefront_operator.render.app import worker_metrics_ports
from storefront_operator.render.common import (
    API_PORT,
    APP_NAME,
    POSTGRES_PORT,
    REDIS_PORT,
    SCHEDULER_METRICS_PORT,
    Manifest,
    child_name,
    labels,
    selector_labels,
)
from storefront_operator.spec import StorefrontSpec

# The operator's pods carry this label (the chart's selector labels).
OPERATOR_COMPONENT = "operator"


def network_policies(
    name: str, namespace: str, spec: StorefrontSpec, operator_namespace: str | None = None
) -> list[Manifest]:
    """One ingress policy per component. Egress is left open: pods reach DNS, the database,
    Redis, the trace collector and a mail server, none of which the operator can know."""
    own_pods = {"podSelector": {"matchLabels": instance_pods(name)}}
    scrapers = {"namespaceSelector": spec.network_policy.metrics_namespace_selector.manifest()}
    worker_ports = [tcp(port) for _, port in worker_metrics_ports(spec)]
    policies = [
        # The API serves its /metrics on its own port: reachable wherever the API is.
        policy(name, namespace, spec, "api", [{"ports": [tcp(API_PORT)]}]),
        policy(name, namespace, spec, "worker", [{"from": [scrapers], "ports": worker_ports}]),
        policy(name, namespace, spec, "migrate", []),  # listens on nothing
    ]
    if spec.scheduler.enabled:
        scheduler_ports = [tcp(SCHEDULER_METRICS_PORT)]
        scheduler = [{"from": [scrapers], "ports": scheduler_ports}]
        policies.append(policy(name, namespace, spec, "scheduler", scheduler))
    if spec.database.managed:
        database = [{"from": [own_pods], "ports": [tcp(POSTGRES_PORT)]}]
        policies.append(policy(name, namespace, spec, "postgres", database))
    if spec.redis.managed:
        # The operator reads each instance's queue depth from its Redis to scale the workers.
        peers: list[dict[str, Any]] = [own_pods]
        if operator_namespace:
            peers.append(operator_pods(operator_namespace))
        policies.append(
            policy(name, namespace, spec, "redis", [{"from": peers, "ports": [tcp(REDIS_PORT)]}])
        )
    return policies


def instance_pods(name: str) -> dict[str, str]:
    """Labels every pod of the instance carries."""
    return {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/instance": name}


def operator_pods(namespace: str) -> dict[str, Any]:
    return {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/component": OPERATOR_COMPONENT}},
    }


def tcp(port: int) -> dict[str, Any]:
    return {"protocol": "TCP", "port": port}


def policy(
    name: str, namespace: str, spec: StorefrontSpec, component: str, ingress: list[dict[str, Any]]
) -> Manifest:
    """Ingress to `component`'s pods only as `ingress` allows (an empty list: none at all)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": child_name(name, component),
            "namespace": namespace,
            "labels": labels(name, component, spec),
        },
        "spec": {
            "podSelector": {"matchLabels": selector_labels(name, component)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }

"""What every rendered child shares: names, labels, the pod and container blocks, the
environment and settings of Storefront's own containers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
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
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
GENERATED_SECRET_KEYS = ("jwt-secret", "postgres-password")
REPO_ROOT = Path(__file__).resolve().parents[3]

Manifest = dict[str, Any]


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
    return {INSTANCE_LABEL: name, MANAGED_BY_LABEL: MANAGER}


def instances_selector(names: Iterable[str]) -> str:
    """A label selector string for the children of several instances (in one namespace, or of
    instances with these names in any)."""
    return f"{MANAGED_BY_LABEL}={MANAGER},{INSTANCE_LABEL} in ({','.join(sorted(set(names)))})"


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


def resources_manifest(resources: ResourceRequirements) -> Manifest:
    out: Manifest = {}
    if resources.requests:
        out["requests"] = {k: str(v) for k, v in resources.requests.items()}
    if resources.limits:
        out["limits"] = {k: str(v) for k, v in resources.limits.items()}
    return out


def secret_env(env_name: str, secret: str, key: str) -> Manifest:
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
        env.append(secret_env("STOREFRONT_DATABASE_URL", ref.name, ref.key))
    else:
        host = f"{child_name(name, 'postgres')}.{namespace}.svc"
        env.append(secret_env("STOREFRONT_POSTGRES_PASSWORD", generated, "postgres-password"))
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
        env.append(secret_env("STOREFRONT_REDIS_URL", ref.name, ref.key))
    else:
        host = f"{child_name(name, 'redis')}.{namespace}.svc"
        env.append({"name": "STOREFRONT_REDIS_URL", "value": f"redis://{host}:{REDIS_PORT}/0"})
    jwt = spec.jwt_secret_ref
    env.append(
        secret_env("STOREFRONT_JWT_SECRET", jwt.name, jwt.key)
        if jwt is not None
        else secret_env("STOREFRONT_JWT_SECRET", generated, "jwt-secret")
    )
    if spec.admin is not None:
        admin = spec.admin.secret_ref
        env.append(secret_env("STOREFRONT_ADMIN_EMAIL", admin.name, admin.email_key))
        env.append(secret_env("STOREFRONT_ADMIN_PASSWORD", admin.name, admin.password_key))
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


def app_container(
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


def app_pod_spec(spec: StorefrontSpec, containers: list[Manifest], **extra: Any) -> Manifest:
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


def app_deployment(
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

"""The blocking half of a reconcile and of an autoscaling read, run in threads by the handlers:
read the live Storefront, apply its rendered children with owner references, prune the ones no
longer desired, write its status; read its queue depth and scale its workers."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import redis
import structlog
from pydantic import ValidationError

from storefront_operator import metrics
from storefront_operator.config import OperatorConfig
from storefront_operator.kube import (
    PRUNABLE,
    SERVICE_MONITOR,
    SERVICE_MONITOR_CRD,
    Kube,
    KubeError,
    owner_reference,
    with_owner,
)
from storefront_operator.queue import queue_depth
from storefront_operator.render import (
    IMAGE_ANNOTATION,
    REDIS_PORT,
    RenderContext,
    child_name,
    desired_worker_replicas,
    generated_secret_name,
    instance_selector,
    key,
    labels,
    migration_job_name,
    render,
)
from storefront_operator.scaling import decide_workers
from storefront_operator.spec import GROUP, VERSION, StorefrontSpec, parse_spec
from storefront_operator.status import (
    MigrationState,
    Observation,
    Problem,
    compute_status,
    migration_state,
    parse_timestamp,
    ready_transition,
    timestamp,
    utc_now,
)

log = structlog.get_logger("storefront.operator")
Body = Mapping[str, Any]
GONE = "Gone"
APP_COMPONENTS = ("api", "worker", "scheduler")


def reconcile_sync(
    kube: Kube,
    seen_body: Body,
    dashboards: Mapping[str, str],
    operator_namespace: str | None = None,
) -> str:
    """Blocking part of a reconcile (runs in a thread); returns the phase written to status,
    or "Gone" when the instance no longer exists."""
    seen_meta = seen_body["metadata"]
    # Work on the live object: a loop's snapshot may be older than the last status written.
    live = kube.get(*_storefront_ref(seen_meta["namespace"], seen_meta["name"]))
    if live is None:
        return GONE
    body: Body = live
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    generation = int(meta.get("generation") or 0)
    previous = body.get("status") or {}
    bound = log.bind(namespace=namespace, name=name, generation=generation)

    try:
        spec = parse_spec(body.get("spec"))
    except ValidationError as exc:
        invalid = Problem("InvalidSpec", _validation_message(exc))
        return _write_status(
            kube, body, Observation(name, namespace, generation, 0, 0, problem=invalid), bound
        )

    problem = missing_references(kube, namespace, spec)
    if problem is not None:
        seen = Observation(
            name,
            namespace,
            generation,
            spec.api.replicas,
            desired_worker_replicas(spec),
            problem=problem,
        )
        return _write_status(kube, body, seen, bound)

    owner = owner_reference(body)
    kube.ensure_generated_secret(
        namespace, generated_secret_name(name), owner, labels(name, "secret", spec)
    )
    context = RenderContext(
        service_monitor_crd=kube.crd_exists(SERVICE_MONITOR_CRD),
        dashboards=dashboards,
        operator_namespace=operator_namespace,
    )
    desired = render(name, namespace, spec, context)
    job_name = migration_job_name(name, spec)
    api_name = child_name(name, "api")
    job = kube.get("batch/v1", "Job", namespace, job_name)
    migration = migration_state(job)
    # New code must not meet an old schema: API, worker and scheduler wait for the migration.
    held = {
        child_name(name, component)
        for component in APP_COMPONENTS
        if not rollout_allowed(
            migration,
            kube.get("apps/v1", "Deployment", namespace, child_name(name, component)),
            spec.image.reference,
        )
    }

    apply_problem: Problem | None = None
    for manifest in desired:
        kind, child = manifest["kind"], manifest["metadata"]["name"]
        if kind == "Deployment" and child in held:
            continue  # waits for this image's migrations
        if kind == "Job" and job is not None:
            continue  # a Job's template is immutable; this one already ran or runs
        try:
            kube.apply(with_owner(manifest, owner))
        except KubeError as exc:
            if 400 <= exc.status < 500 and exc.status not in (404, 409, 429):
                apply_problem = Problem(
                    "ApplyFailed", f"{kind} {child} was rejected by the API server: {exc.message}"
                )
                bound.warning("child rejected", kind=kind, child=child, error=exc.message)
                continue
            raise
    keep = {key(m) for m in desired}
    prune(kube, namespace, name, meta["uid"], keep, context.service_monitor_crd, bound)

    if job is None:
        job = kube.get("batch/v1", "Job", namespace, job_name)
        migration = migration_state(job)
    seen = Observation(
        name=name,
        namespace=namespace,
        generation=generation,
        api_desired=spec.api.autoscaling.min_replicas
        if spec.api.autoscaling.enabled
        else spec.api.replicas,
        worker_desired=desired_worker_replicas(spec),
        api=kube.get("apps/v1", "Deployment", namespace, api_name),
        worker=kube.get("apps/v1", "Deployment", namespace, child_name(name, "worker")),
        migration=migration,
        migration_job=job_name,
        problem=apply_problem,
    )
    return _write_status(kube, body, seen, bound, previous)


def rollout_allowed(
    migration: MigrationState, deployment: Mapping[str, Any] | None, image: str
) -> bool:
    """Apply an application Deployment once this image's migration Job succeeded, or when it
    already runs this image (its Job may have been pruned since)."""
    if migration == "succeeded":
        return True
    annotations = ((deployment or {}).get("metadata") or {}).get("annotations") or {}
    return annotations.get(IMAGE_ANNOTATION) == image


def missing_references(kube: Kube, namespace: str, spec: StorefrontSpec) -> Problem | None:
    """A Secret (or key) the spec points at that does not exist, with the command to fix it."""
    refs: list[tuple[str, str, str]] = []
    if spec.database.secret_ref is not None:
        refs.append(
            ("spec.database.secretRef", spec.database.secret_ref.name, spec.database.secret_ref.key)
        )
    if spec.redis.secret_ref is not None:
        refs.append(("spec.redis.secretRef", spec.redis.secret_ref.name, spec.redis.secret_ref.key))
    if spec.jwt_secret_ref is not None:
        refs.append(("spec.jwtSecretRef", spec.jwt_secret_ref.name, spec.jwt_secret_ref.key))
    if spec.admin is not None:
        admin = spec.admin.secret_ref
        refs += [
            ("spec.admin.secretRef", admin.name, admin.email_key),
            ("spec.admin.secretRef", admin.name, admin.password_key),
        ]
    for field, secret, secret_key in refs:
        if kube.secret_value(namespace, secret, secret_key) is None:
            return Problem(
                "SecretNotFound",
                f"{field}: Secret {secret!r} with key {secret_key!r} not found in namespace "
                f"{namespace!r}; create it (kubectl create secret generic {secret} -n "
                f"{namespace} --from-literal={secret_key}=...) and the operator picks it up.",
            )
    return None


def prune(
    kube: Kube,
    namespace: str,
    name: str,
    uid: str,
    keep: set[tuple[str, str, str]],
    service_monitors: bool,
    bound: Any,
) -> None:
    """Delete children of this instance that are no longer desired (scheduler disabled, HPA
    turned off, an older image's migration Job...)."""
    kinds = [*PRUNABLE, SERVICE_MONITOR] if service_monitors else list(PRUNABLE)
    for api_version, kind in kinds:
        for obj in kube.list(api_version, kind, namespace, instance_selector(name)):
            obj_meta = obj.get("metadata") or {}
            owned = any(ref.get("uid") == uid for ref in obj_meta.get("ownerReferences") or [])
            if owned and (api_version, kind, obj_meta.get("name")) not in keep:
                kube.delete(api_version, kind, namespace, obj_meta["name"])
                bound.info("child pruned", kind=kind, child=obj_meta["name"])


def _write_status(
    kube: Kube,
    body: Body,
    seen: Observation,
    bound: Any,
    previous: Mapping[str, Any] | None = None,
) -> str:
    before = previous if previous is not None else (body.get("status") or {})
    status = compute_status(seen, before, utc_now())
    kube.patch_status(seen.namespace, seen.name, status)
    transition = ready_transition(before, status)
    if transition is not None:
        type_, reason, message = transition
        with contextlib.suppress(KubeError):
            kube.post_event(body, type_, reason, message)
        getattr(bound, "warning" if type_ == "Warning" else "info")(
            "phase changed", phase=status["phase"], reason=reason, detail=message
        )
    return str(status["phase"])


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "spec"
        parts.append(f"spec.{where}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def redis_url_for(kube: Kube, namespace: str, name: str, spec: StorefrontSpec) -> str | None:
    if spec.redis.secret_ref is not None:
        ref = spec.redis.secret_ref
        return kube.secret_value(namespace, ref.name, ref.key)
    return f"redis://{child_name(name, 'redis')}.{namespace}.svc:{REDIS_PORT}/0"


def autoscale_sync(kube: Kube, body: Body, config: OperatorConfig) -> None:
    """Read the queue depth into status and, when enabled, scale workers within bounds."""
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    bound = log.bind(namespace=namespace, name=name)
    try:
        spec = parse_spec(body.get("spec"))
    except ValidationError:
        return  # reconcile reports it
    current = kube.get(*_storefront_ref(namespace, name))
    if current is None:
        return
    status: dict[str, Any] = {}
    url = redis_url_for(kube, namespace, name, spec)
    if url is None:
        kube.patch_status(
            namespace, name, {"queueDepth": None, "queueError": "Redis Secret missing"}
        )
        return
    try:
        depth = queue_depth(url, spec.worker.queues, timeout=config.redis_timeout)
    except (redis.RedisError, OSError, ValueError) as exc:
        host = url.split("@")[-1].split("/")[2] if "://" in url else "?"
        message = f"Redis at {host} unreachable from the operator: {exc.__class__.__name__}: {exc}"
        bound.warning("queue depth unknown", error=message)
        kube.patch_status(namespace, name, {"queueDepth": None, "queueError": message[:500]})
        return
    status.update(queueDepth=depth, queueError=None)
    scaling = spec.worker.autoscaling
    if scaling.enabled:
        live_spec = parse_spec(current.get("spec"))
        now = utc_now()
        last = parse_timestamp((current.get("status") or {}).get("lastScaleTime"))
        decision = decide_workers(scaling, live_spec.worker.replicas, depth, now, last)
        if decision.direction != "none":
            kube.set_worker_replicas(namespace, name, decision.replicas)
            metrics.SCALING_DECISIONS.labels(direction=decision.direction).inc()
            status["lastScaleTime"] = timestamp(now)
            with contextlib.suppress(KubeError):
                kube.post_event(
                    current,
                    "Normal",
                    "ScaledWorkers",
                    f"workers {live_spec.worker.replicas} -> {decision.replicas}: "
                    f"{decision.reason}",
                )
            bound.info(
                "workers scaled",
                direction=decision.direction,
                replicas=decision.replicas,
                queue_depth=depth,
                reason=decision.reason,
            )
    kube.patch_status(namespace, name, status)


def _storefront_ref(namespace: str, name: str) -> tuple[str, str, str, str]:
    return (f"{GROUP}/{VERSION}", "Storefront", namespace, name)

"""The blocking half of a reconcile and of an autoscaling read, run in threads by the handlers:
read the live Storefront, apply its rendered children with owner references, prune the ones no
longer desired, write its status; read its queue depth and scale its workers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
import structlog
from pydantic import ValidationError

from storefront_operator import metrics
from storefront_operator.drift import (
    Applied,
    ChildKey,
    ChildState,
    child_key,
    child_state,
    owner_name,
)
from storefront_operator.kube import (
    PRUNABLE,
    SERVICE_MONITOR,
    SERVICE_MONITOR_CRD,
    WITH_STATUS,
    Kube,
    KubeError,
    owner_reference,
    with_owner,
)
from storefront_operator.queue import QueueReader
from storefront_operator.render import (
    IMAGE_ANNOTATION,
    REDIS_PORT,
    RenderContext,
    child_name,
    desired_worker_replicas,
    generated_secret_name,
    instance_selector,
    instances_selector,
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
    status_changed,
    timestamp,
    utc_now,
)

log = structlog.get_logger("storefront.operator")
Body = Mapping[str, Any]
GONE = "Gone"
APP_COMPONENTS = ("api", "worker", "scheduler")


@dataclass(frozen=True)
class Outcome:
    """What a reconcile did: the phase written to status (or Gone), the Degraded reason, and
    the children as it left them (None when it applied nothing)."""

    phase: str
    reason: str | None = None
    applied: Applied | None = None
    service_monitors: bool = False


def reconcile_sync(
    kube: Kube,
    namespace: str,
    name: str,
    dashboards: Mapping[str, str],
    operator_namespace: str | None = None,
    prune_children: bool = True,
) -> Outcome:
    """Blocking part of a reconcile (runs in a thread). `prune_children` False skips looking
    for children no longer desired, which a Storefront just created cannot have."""
    # Work on the live object: a cached snapshot may be older than the last status written.
    live = kube.get(*_storefront_ref(namespace, name))
    if live is None:
        return Outcome(GONE)
    body: Body = live
    meta = body["metadata"]
    generation = int(meta.get("generation") or 0)
    previous = body.get("status") or {}
    bound = log.bind(namespace=namespace, name=name, generation=generation)

    try:
        spec = parse_spec(body.get("spec"))
    except ValidationError as exc:
        invalid = Problem("InvalidSpec", _validation_message(exc))
        seen = Observation(name, namespace, generation, 0, 0, problem=invalid)
        return Outcome(*_write_status(kube, body, seen, bound))

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
        return Outcome(*_write_status(kube, body, seen, bound))

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
    api_name, worker_name = child_name(name, "api"), child_name(name, "worker")
    job = kube.get("batch/v1", "Job", namespace, job_name)
    # The Job as the rollout decision below saw it (or as this reconcile created it): what its
    # later status changes are measured against, so that a migration finishing while this
    # reconcile runs still calls for the reconcile that releases the Deployments.
    decided_job = job
    migration = migration_state(job)
    # New code must not meet an old schema: API, worker and scheduler wait for the migration.
    current = {
        child: kube.get("apps/v1", "Deployment", namespace, child)
        for child in (child_name(name, component) for component in APP_COMPONENTS)
    }
    held = {
        child
        for child, deployment in current.items()
        if not rollout_allowed(migration, deployment, spec.image.reference)
    }

    # What this reconcile leaves, for telling later changes by others from its own writes.
    children: dict[ChildKey, ChildState] = {
        child_key(d): child_state(d) for d in current.values() if d is not None
    }
    # The API server answers an apply with the whole object, status included: what the status
    # below is computed from, without reading it again.
    written: dict[ChildKey, dict[str, Any]] = {}
    apply_problem: Problem | None = None
    for manifest in desired:
        kind, child = manifest["kind"], manifest["metadata"]["name"]
        if kind == "Deployment" and child in held:
            continue  # waits for this image's migrations
        if kind == "Job" and job is not None:
            continue  # a Job's template is immutable; this one already ran or runs
        try:
            applied = kube.apply(with_owner(manifest, owner))
        except KubeError as exc:
            if 400 <= exc.status < 500 and exc.status not in (404, 409, 429):
                apply_problem = Problem(
                    "ApplyFailed", f"{kind} {child} was rejected by the API server: {exc.message}"
                )
                bound.warning("child rejected", kind=kind, child=child, error=exc.message)
                continue
            raise
        children[child_key(applied)] = child_state(applied)
        written[child_key(applied)] = applied
        if kind == "Job":
            decided_job = applied
    if prune_children:
        keep = {key(m) for m in desired}
        pruned = prune(kube, namespace, name, meta["uid"], keep, context.service_monitor_crd, bound)
        for gone in pruned:
            children.pop(gone, None)

    if job is None:
        job = decided_job
        migration = migration_state(job)
    api = written.get(("apps/v1", "Deployment", api_name), current.get(api_name))
    worker = written.get(("apps/v1", "Deployment", worker_name), current.get(worker_name))
    # The status below is computed from these: their status changes call for a reconcile.
    for observed in (decided_job, api, worker):
        if observed is not None:
            children[child_key(observed)] = child_state(observed, with_status=True)
    seen = Observation(
        name=name,
        namespace=namespace,
        generation=generation,
        api_desired=spec.api.autoscaling.min_replicas
        if spec.api.autoscaling.enabled
        else spec.api.replicas,
        worker_desired=desired_worker_replicas(spec),
        api=api,
        worker=worker,
        migration=migration,
        migration_job=job_name,
        problem=apply_problem,
    )
    phase, reason = _write_status(kube, body, seen, bound, previous)
    return Outcome(phase, reason, Applied(children), context.service_monitor_crd)


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
    found: dict[str, Mapping[str, str] | None] = {}  # each Secret read once
    for field, secret, secret_key in refs:
        if secret not in found:
            found[secret] = kube.secret_data(namespace, secret)
        if secret_key not in (found[secret] or {}):
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
) -> list[ChildKey]:
    """Delete children of this instance that are no longer desired (scheduler disabled, HPA
    turned off, an older image's migration Job...); returns what it deleted."""
    kinds = [*PRUNABLE, SERVICE_MONITOR] if service_monitors else list(PRUNABLE)
    pruned: list[ChildKey] = []
    for api_version, kind in kinds:
        for obj in kube.list(api_version, kind, namespace, instance_selector(name)):
            obj_meta = obj.get("metadata") or {}
            owned = any(ref.get("uid") == uid for ref in obj_meta.get("ownerReferences") or [])
            child = (api_version, kind, str(obj_meta.get("name")))
            if owned and child not in keep:
                kube.delete(api_version, kind, namespace, obj_meta["name"])
                bound.info("child pruned", kind=kind, child=obj_meta["name"])
                pruned.append(child)
    return pruned


def _write_status(
    kube: Kube,
    body: Body,
    seen: Observation,
    bound: Any,
    previous: Mapping[str, Any] | None = None,
) -> tuple[str, str | None]:
    """Write the status computed from `seen` unless only its time would change; returns the
    phase and, when Degraded, the reason."""
    before = previous if previous is not None else (body.get("status") or {})
    status = compute_status(seen, before, utc_now())
    if status_changed(before, status):
        kube.patch_status(seen.namespace, seen.name, status)
    transition = ready_transition(before, status)
    if transition is not None:
        type_, reason, message = transition
        with contextlib.suppress(KubeError):
            kube.post_event(body, type_, reason, message)
        getattr(bound, "warning" if type_ == "Warning" else "info")(
            "phase changed", phase=status["phase"], reason=reason, detail=message
        )
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    return str(status["phase"]), degraded["reason"] if degraded["status"] == "True" else None


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


def autoscale_sync(
    kube: Kube, body: Body, reader: QueueReader, redis_url: str | None = None
) -> str | None:
    """Read the queue depth into status and, when enabled, scale workers within bounds.

    `body` is the Storefront as last seen on the watch and `redis_url` the URL the previous
    pass used (None: read its Secret): at rest this makes no API request at all, and writes
    status only when the depth or the error changed. Returns the URL, for the next pass."""
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    bound = log.bind(namespace=namespace, name=name)
    try:
        spec = parse_spec(body.get("spec"))
    except ValidationError:
        return None  # reconcile reports it
    before = body.get("status") or {}
    url = redis_url if redis_url is not None else redis_url_for(kube, namespace, name, spec)
    if url is None:
        _patch_if_changed(kube, body, {"queueDepth": None, "queueError": "Redis Secret missing"})
        return None
    try:
        depth = reader.depth(url, spec.worker.queues)
    except (redis.RedisError, OSError, ValueError) as exc:
        host = url.split("@")[-1].split("/")[2] if "://" in url else "?"
        message = f"Redis at {host} unreachable from the operator: {exc.__class__.__name__}: {exc}"
        if _patch_if_changed(kube, body, {"queueDepth": None, "queueError": message[:500]}):
            bound.warning("queue depth unknown", error=message)
        return url
    status: dict[str, Any] = {"queueDepth": depth, "queueError": None}
    scaling = spec.worker.autoscaling
    if scaling.enabled:
        now = utc_now()
        last = parse_timestamp(before.get("lastScaleTime"))
        decision = decide_workers(scaling, spec.worker.replicas, depth, now, last)
        if decision.direction != "none":
            kube.set_worker_replicas(namespace, name, decision.replicas)
            metrics.SCALING_DECISIONS.labels(direction=decision.direction).inc()
            status["lastScaleTime"] = timestamp(now)
            with contextlib.suppress(KubeError):
                kube.post_event(
                    body,
                    "Normal",
                    "ScaledWorkers",
                    f"workers {spec.worker.replicas} -> {decision.replicas}: {decision.reason}",
                )
            bound.info(
                "workers scaled",
                direction=decision.direction,
                replicas=decision.replicas,
                queue_depth=depth,
                reason=decision.reason,
            )
    _patch_if_changed(kube, body, status)
    return url


def list_children(
    kube: Kube,
    namespace: str | None,
    names: Iterable[str],
    kinds: Iterable[tuple[str, str]],
) -> dict[tuple[str, str], dict[ChildKey, ChildState]]:
    """The children of the instances named `names` (in `namespace`, or in any when None), by
    (namespace, instance): one paginated list request per kind, metadata only for the kinds
    whose status the Storefront's status does not read."""
    found: dict[tuple[str, str], dict[ChildKey, ChildState]] = {}
    selector = instances_selector(names)
    for api_version, kind in kinds:
        objects = kube.list_selected(
            api_version, kind, namespace, selector, metadata_only=kind not in WITH_STATUS
        )
        for obj in objects:
            owner = owner_name(obj)
            if owner is not None:
                ident = (str(obj["metadata"].get("namespace", "")), owner)
                found.setdefault(ident, {})[child_key(obj)] = child_state(obj, with_status=True)
    return found


def _patch_if_changed(kube: Kube, body: Body, status: Mapping[str, Any]) -> bool:
    """Merge-patch `status` unless the Storefront already says so; True when written."""
    before = body.get("status") or {}
    if all(before.get(k) == v for k, v in status.items()):
        return False
    meta = body["metadata"]
    kube.patch_status(meta["namespace"], meta["name"], status)
    return True


def _storefront_ref(namespace: str, name: str) -> tuple[str, str, str, str]:
    return (f"{GROUP}/{VERSION}", "Storefront", namespace, name)

"""Kopf handlers for `Storefront` and its children: thin glue between watch events, the pure
deciders (render, status, drift, schedule, scaling) and the Kubernetes/Redis I/O.

A Storefront is reconciled when its spec changes (Kopf's create/update/resume handlers), when
one of its children is changed or deleted by someone else or a Deployment or Job it reports on
changes status (watch events on the children, debounced per instance, the operator's own
writes told apart by their server-side apply fields), and when its safety-net resync finds its
children differ from what its last reconcile left. At rest the operator makes almost no API
requests. No finalizer: deletion is left to the garbage collector through owner references,
so a stopped operator never blocks `kubectl delete sf`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import random
import time
from collections.abc import Mapping
from typing import Any

import kopf
import structlog
from prometheus_client import start_http_server

from service.observability.logging import configure_logging
from storefront_operator import kopf_requests, metrics
from storefront_operator.config import OperatorConfig
from storefront_operator.crd import storefront_crd
from storefront_operator.drift import (
    Applied,
    Verdict,
    child_key,
    children_match,
    owner_name,
    reconcile_reason,
    verdict,
)
from storefront_operator.kube import (
    PLURALS,
    PRUNABLE,
    SERVICE_MONITOR,
    Kube,
    KubeError,
    load_api_client,
)
from storefront_operator.peering import (
    PEERING_CRD_NAME,
    PEERING_PLURAL,
    PauseTracker,
    peering_crd,
    peering_object,
)
from storefront_operator.queue import QueueReader
from storefront_operator.reconcile import (
    GONE,
    Outcome,
    autoscale_sync,
    list_children,
    reconcile_sync,
)
from storefront_operator.render import MANAGED_BY_LABEL, MANAGER, load_dashboards
from storefront_operator.schedule import (
    DueSet,
    batches,
    first_resync,
    next_resync,
    resync_batch,
    resync_window,
    retry_after,
    retry_delay,
)
from storefront_operator.spec import GROUP, PLURAL, VERSION

log = structlog.get_logger("storefront.operator")
Body = Mapping[str, Any]
InstanceKey = tuple[str, str]
ChildEvent = tuple[str | None, Mapping[str, Any]]
# Children are watched by the operator's label: the API server filters, so the operator never
# sees the rest of the cluster's Deployments or ConfigMaps.
CHILD_KINDS = (*PRUNABLE, SERVICE_MONITOR)
CHILD_SELECTOR = {MANAGED_BY_LABEL: MANAGER}
# Instances whose children one resync request covers (one label selector lists their names).
RESYNC_BATCH = 50


class Runtime:
    """Process-wide operator state: config, API client, the instances seen, what their last
    reconcile left, and the work queued for them."""

    def __init__(self) -> None:
        self.explicit_config: OperatorConfig | None = None
        self.config = OperatorConfig()
        self._kube: Kube | None = None
        self.instances: dict[InstanceKey, dict[str, Any]] = {}
        self.phases: dict[InstanceKey, str] = {}
        self.locks: dict[InstanceKey, asyncio.Lock] = {}
        self.applied: dict[InstanceKey, Applied] = {}
        # Child events waiting for their instance's debounce, the latest per child.
        self.pending: dict[InstanceKey, dict[tuple[str, str, str], ChildEvent]] = {}
        self.queue: DueSet[InstanceKey] = DueSet(1.0, 5.0)
        self.triggers: dict[InstanceKey, str] = {}
        self.running: set[InstanceKey] = set()
        self.attempts: dict[InstanceKey, int] = {}
        self.resync_due: dict[InstanceKey, float] = {}
        self.redis_urls: dict[InstanceKey, str] = {}
        self.reader = QueueReader()
        self.service_monitors = False
        self.clusterwide = True
        self.pause = PauseTracker(peering=False)
        self.wake = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.dashboards: dict[str, str] = {}
        self.metrics_server: Any = None

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            self._kube = Kube()
        return self._kube

    @property
    def active(self) -> bool:
        """False while Kopf's peering has paused this replica in favour of another."""
        return self.pause.active

    def lock(self, ident: InstanceKey) -> asyncio.Lock:
        return self.locks.setdefault(ident, asyncio.Lock())

    def track(self, body: Body) -> None:
        meta = body["metadata"]
        ident = (meta["namespace"], meta["name"])
        # Without managedFields, which nothing here reads and which are most of a body's size.
        kept = {k: v for k, v in body.items() if k != "metadata"}
        kept["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
        self.instances[ident] = copy.deepcopy(kept)
        if ident not in self.resync_due:
            uid = str(meta.get("uid") or f"{ident}")
            interval = self.config.resync_interval
            self.resync_due[ident] = first_resync(time.monotonic(), interval, uid)

    def schedule(self, ident: InstanceKey, delay: float = 0.0, trigger: str | None = None) -> None:
        """Reconcile `ident` within `delay` seconds (for `trigger`, unless events say why)."""
        self.queue.at(ident, time.monotonic() + delay)
        if trigger is not None:
            self.triggers.setdefault(ident, trigger)
        self.wake.set()

    def forget(self, ident: InstanceKey) -> None:
        tables: tuple[dict[InstanceKey, Any], ...] = (
            self.instances,
            self.phases,
            self.locks,
            self.applied,
            self.pending,
            self.triggers,
            self.attempts,
            self.resync_due,
            self.redis_urls,
        )
        for table in tables:
            table.pop(ident, None)
        self.queue.discard(ident)
        metrics.set_instance_phases(self.phases)

    def publish_backlog(self) -> None:
        metrics.RECONCILE_BACKLOG.labels(state="queued").set(len(self.queue))
        metrics.RECONCILE_BACKLOG.labels(state="running").set(len(self.running))


RUNTIME = Runtime()


class QuietWatchHandlers(logging.Filter):
    """Drops Kopf's "Handler ... succeeded" line for the watch-event handlers: one per event on
    every child, thousands when many instances are created, and nothing a reader needs."""

    PREFIXES = ("Handler 'child-", "Handler 'storefront_event'")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return not str(record.msg).startswith(self.PREFIXES)


QUIET_WATCH_HANDLERS = QuietWatchHandlers()


def configure(config: OperatorConfig) -> None:
    """Set the operator's config before `kopf.run` (the CLI does; tests use the environment)."""
    RUNTIME.explicit_config = config


# ---------------------------------------------------------------------------------------------
# Operator lifecycle
# ---------------------------------------------------------------------------------------------
@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """Log in the way the handlers' own client does (in-cluster, else $KUBECONFIG read now)."""
    api = load_api_client()
    cfg = api.configuration
    api.close()  # only its configuration is needed
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix(
        "authorization"
    )
    parts = header.split(" ", 1) if header else []
    scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0] if parts else None)
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        scheme=scheme,
        token=token,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
    )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Tune kopf, serve metrics, apply the CRD when allowed, start the operator's loops."""
    # Read the environment now, not at import: tests and wrappers set it late.
    cfg = RUNTIME.config = RUNTIME.explicit_config or OperatorConfig()
    configure_logging(level=cfg.log_level, fmt=cfg.log_format, component="operator")
    kopf_requests.install()
    # A watch that silently stalls (NAT, proxies) must be re-opened, not waited on forever.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    settings.watching.inactivity_timeout = cfg.watch_inactivity_timeout
    # Kopf's own requests (progress annotations, Events, peering) give up instead of hanging.
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    for api_version, kind in CHILD_KINDS:
        plural = PLURALS[(api_version, kind)]
        settings.watching.label_selectors[api_version, plural] = f"{MANAGED_BY_LABEL}={MANAGER}"
    # Progress in annotations keeps `status` ours; Events only for kopf's warnings and errors.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # liveness probes
    logging.getLogger("kopf.objects").addFilter(QUIET_WATCH_HANDLERS)
    settings.execution.max_workers = 8

    RUNTIME.queue = DueSet(cfg.debounce, max(cfg.debounce, cfg.debounce_max))
    RUNTIME.reader = QueueReader(timeout=cfg.redis_timeout, max_clients=cfg.redis_clients)
    RUNTIME.wake = asyncio.Event()
    RUNTIME.clusterwide = settings.peering.clusterwide
    if not settings.peering.standalone:
        await _join_peering(settings, cfg)

    if cfg.metrics_port:
        RUNTIME.metrics_server, _thread = start_http_server(
            cfg.metrics_port, addr=cfg.metrics_host, registry=metrics.REGISTRY
        )
    metrics.set_instance_phases({})
    RUNTIME.publish_backlog()
    RUNTIME.dashboards = load_dashboards(cfg.dashboards_dir)
    if cfg.apply_crd:
        crd = storefront_crd()
        try:
            await asyncio.to_thread(RUNTIME.kube.apply_crd, crd)
            served = await asyncio.to_thread(RUNTIME.kube.wait_crd_served, crd)
            log.info("crd applied", crd=f"{PLURAL}.{GROUP}", served=served)
        except KubeError as exc:
            # Without cluster-scoped CRD rights the user applies the file; keep running.
            log.warning("crd not applied", status=exc.status, error=exc.message)
    RUNTIME.tasks = [
        asyncio.create_task(_work_loop(), name="reconcile queue"),
        asyncio.create_task(_resync_loop(), name="resync"),
        asyncio.create_task(_autoscale_loop(), name="autoscale"),
    ]
    log.info(
        "operator started",
        resync_interval=cfg.resync_interval,
        scaling_interval=cfg.scaling_interval,
        metrics_port=cfg.metrics_port,
        dashboards=len(RUNTIME.dashboards),
        peering=settings.peering.name if not settings.peering.standalone else None,
    )


async def _join_peering(settings: kopf.OperatorSettings, cfg: OperatorConfig) -> None:
    """One peering object for every replica, whatever namespaces they serve, which Kopf needs
    to exist; its CRD applied like the Storefront CRD when allowed."""
    settings.peering.clusterwide = True
    settings.peering.lifetime = cfg.peering_lifetime
    settings.peering.stealth = True
    RUNTIME.pause = PauseTracker(peering=True, level=logging.getLevelName(cfg.log_level))
    RUNTIME.pause.install()
    kube = RUNTIME.kube
    if cfg.apply_crd:
        try:
            await asyncio.to_thread(kube.apply_crd, peering_crd())
            await asyncio.to_thread(kube.wait_crd_served, peering_crd())
        except KubeError as exc:
            log.warning("peering crd not applied", status=exc.status, error=exc.message)
    path = f"/apis/kopf.dev/v1/{PEERING_PLURAL}"
    try:
        await asyncio.to_thread(kube.create_if_missing, path, peering_object(settings.peering.name))
    except KubeError as exc:
        raise kopf.PermanentError(
            f"--peering needs the {PEERING_CRD_NAME} CRD and the right to create, read and "
            f"patch {PEERING_PLURAL}: {exc}"
        ) from exc


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    for task in RUNTIME.tasks:
        task.cancel()
    for task in RUNTIME.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    RUNTIME.tasks = []
    RUNTIME.pause.uninstall()
    if RUNTIME.metrics_server is not None:
        RUNTIME.metrics_server.shutdown()
        RUNTIME.metrics_server = None
    RUNTIME.reader.close()
    if RUNTIME._kube is not None:
        RUNTIME._kube.close()
        RUNTIME._kube = None


# ---------------------------------------------------------------------------------------------
# Storefront handlers
# ---------------------------------------------------------------------------------------------
@kopf.on.event(GROUP, VERSION, PLURAL)
async def storefront_event(type: str | None, event: Mapping[str, Any], **_: Any) -> None:
    """Keep the latest Storefront (spec and status) for the loops; forget deleted ones."""
    obj = event["object"]
    meta = obj.get("metadata") or {}
    ident = (meta.get("namespace", ""), meta.get("name", ""))
    if type == "DELETED":
        RUNTIME.forget(ident)
    else:
        RUNTIME.track(obj)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def reconcile_handler(body: kopf.Body, reason: Any, **_: Any) -> None:
    """Render → apply → status, on every change of the spec (and on operator start)."""
    RUNTIME.track(body)
    meta = body["metadata"]
    ident = (meta["namespace"], meta["name"])
    async with RUNTIME.lock(ident):
        await _reconcile(ident, trigger=str(getattr(reason, "value", reason)), from_kopf=True)


async def child_event(type: str | None, event: Mapping[str, Any], **_: Any) -> None:
    """A child changed: queue its instance unless the change is one the last reconcile made
    or does not care about (decided again under the instance's lock when the debounce ends,
    when a reconcile in progress has recorded what it wrote)."""
    obj = event["object"]
    owner = owner_name(obj)
    if owner is None:
        return
    ident = ((obj.get("metadata") or {}).get("namespace", ""), owner)
    if ident not in RUNTIME.instances:
        return  # its Storefront is gone: the garbage collector is at work
    seen = verdict(type, obj, RUNTIME.applied.get(ident))
    if seen in ("matches", "unknown") and ident not in RUNTIME.running:
        metrics.CHILD_EVENTS.labels(verdict=seen).inc()
        return
    RUNTIME.pending.setdefault(ident, {})[child_key(obj)] = (type, obj)
    RUNTIME.queue.touch(ident, time.monotonic())
    RUNTIME.wake.set()


for _api_version, _kind in CHILD_KINDS:
    _plural = PLURALS[(_api_version, _kind)]
    kopf.on.event(_api_version, _plural, labels=CHILD_SELECTOR, id=f"child-{_plural}")(child_event)


async def _reconcile(ident: InstanceKey, trigger: str, from_kopf: bool = False) -> None:
    """One reconcile of one instance; the caller holds its lock. A failure is retried by Kopf
    for Kopf's handlers, by the queue with a backoff otherwise."""
    RUNTIME.running.add(ident)
    RUNTIME.publish_backlog()
    started = time.perf_counter()
    cfg = RUNTIME.config
    try:
        outcome: Outcome = await asyncio.to_thread(
            reconcile_sync,
            RUNTIME.kube,
            ident[0],
            ident[1],
            RUNTIME.dashboards,
            cfg.pod_namespace,
            trigger != "create",
        )
    except KubeError as exc:
        metrics.RECONCILES.labels(outcome="error").inc()
        attempt = RUNTIME.attempts[ident] = RUNTIME.attempts.get(ident, 0) + 1
        if from_kopf:
            raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=10) from exc
        log.warning(
            "reconcile will be retried",
            namespace=ident[0],
            name=ident[1],
            trigger=trigger,
            error=str(exc),
        )
        RUNTIME.schedule(ident, retry_delay(attempt), trigger="retry")
        return
    finally:
        RUNTIME.running.discard(ident)
        RUNTIME.publish_backlog()
        metrics.RECONCILE_DURATION.observe(time.perf_counter() - started)
    if outcome.phase == GONE or ident not in RUNTIME.instances:
        RUNTIME.forget(ident)
        return
    metrics.RECONCILES.labels(
        outcome="degraded" if outcome.phase == "Degraded" else "success"
    ).inc()
    log.debug("reconciled", namespace=ident[0], name=ident[1], trigger=trigger)
    RUNTIME.applied[ident] = outcome.applied or Applied()
    RUNTIME.service_monitors = outcome.service_monitors
    RUNTIME.redis_urls.pop(ident, None)  # the Secret it names may have changed
    RUNTIME.phases[ident] = outcome.phase
    metrics.set_instance_phases(RUNTIME.phases)
    attempt = RUNTIME.attempts.get(ident, 0) + 1
    again = retry_after(outcome.phase, outcome.reason, attempt)
    if again is None:
        RUNTIME.attempts.pop(ident, None)
    else:
        # Something outside the spec (a Secret, a policy) must change: look again later.
        RUNTIME.attempts[ident] = attempt
        RUNTIME.schedule(ident, again, trigger="retry")


# ---------------------------------------------------------------------------------------------
# The reconcile queue: child events, retries and resync findings
# ---------------------------------------------------------------------------------------------
async def _work_loop() -> None:
    """Start a reconcile for each instance that is due, at most `reconcile_workers` at once."""
    workers: set[asyncio.Task[None]] = set()
    limit = RUNTIME.config.reconcile_workers
    while True:
        RUNTIME.wake.clear()
        now = time.monotonic()
        if RUNTIME.active and len(workers) < limit:
            for ident in RUNTIME.queue.pop_due(now, limit - len(workers)):
                task = asyncio.create_task(_work(ident), name=f"reconcile {ident[0]}/{ident[1]}")
                workers.add(task)
                task.add_done_callback(_worker_done(workers))
        RUNTIME.publish_backlog()
        due = RUNTIME.queue.next_due()
        timeout = None if due is None else max(0.05, due - time.monotonic())
        if not RUNTIME.active or len(workers) >= limit:
            timeout = 1.0  # paused, or every worker busy: a finishing worker wakes the loop
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(RUNTIME.wake.wait(), timeout)


def _worker_done(workers: set[asyncio.Task[None]]) -> Any:
    def done(task: asyncio.Task[None]) -> None:
        workers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("reconcile worker failed", error=repr(task.exception()))
        RUNTIME.wake.set()

    return done


async def _work(ident: InstanceKey) -> None:
    async with RUNTIME.lock(ident):
        events = RUNTIME.pending.pop(ident, {})
        trigger = RUNTIME.triggers.pop(ident, None)
        if ident not in RUNTIME.instances:
            return
        applied = RUNTIME.applied.get(ident)
        verdicts: list[Verdict] = [verdict(t, obj, applied) for t, obj in events.values()]
        for seen in verdicts:
            metrics.CHILD_EVENTS.labels(verdict=seen).inc()
        reason = reconcile_reason(verdicts) or trigger
        if reason is None:
            return  # every event was the operator's own write
        await _reconcile(ident, trigger=reason)


# ---------------------------------------------------------------------------------------------
# The safety-net resync: children compared with the last reconcile, spread over the interval
# ---------------------------------------------------------------------------------------------
async def _resync_loop() -> None:
    cfg = RUNTIME.config
    window = resync_window(cfg.resync_interval)
    while True:
        now = time.monotonic()
        due = min(RUNTIME.resync_due.values(), default=now + cfg.resync_interval)
        await asyncio.sleep(min(max(0.0, due - now), window, 60.0))
        if not RUNTIME.active:
            continue
        try:
            await _resync_pass(cfg, window)
        except Exception:
            log.exception("resync pass failed")


async def _resync_pass(cfg: OperatorConfig, window: float) -> None:
    now = time.monotonic()
    chosen = resync_batch(RUNTIME.resync_due, now, window, RESYNC_BATCH)
    for ident in chosen:
        RUNTIME.resync_due[ident] = next_resync(
            now, cfg.resync_interval, cfg.resync_jitter, random.random()
        )
    # Instances with a reconcile already coming need no check.
    chosen = [i for i in chosen if i not in RUNTIME.queue and i not in RUNTIME.running]
    scopes: dict[str | None, list[InstanceKey]] = {}
    for ident in chosen:
        scopes.setdefault(None if RUNTIME.clusterwide else ident[0], []).append(ident)
    kinds = list(CHILD_KINDS if RUNTIME.service_monitors else PRUNABLE)
    for scope, idents in scopes.items():
        for group in batches(idents, RESYNC_BATCH):
            try:
                listed = await asyncio.to_thread(
                    list_children, RUNTIME.kube, scope, [i[1] for i in group], kinds
                )
            except KubeError as exc:
                log.warning("resync check failed", namespace=scope, error=str(exc))
                for ident in group:  # look again soon rather than a whole interval later
                    RUNTIME.resync_due[ident] = now + window
                continue
            for ident in group:
                children = listed.get(ident, {})
                if children_match(RUNTIME.applied.get(ident), children, (k for _, k in kinds)):
                    metrics.RESYNC_CHECKS.labels(result="matched").inc()
                else:
                    metrics.RESYNC_CHECKS.labels(result="reconciled").inc()
                    RUNTIME.schedule(ident, trigger="resync")


# ---------------------------------------------------------------------------------------------
# Queue depth and worker autoscaling
# ---------------------------------------------------------------------------------------------
async def _autoscale_loop() -> None:
    cfg = RUNTIME.config
    while True:
        await asyncio.sleep(cfg.scaling_interval)
        if not RUNTIME.active:
            continue
        started = time.perf_counter()
        try:
            await _autoscale_pass(cfg)
        except Exception:
            log.exception("autoscale pass failed")
        metrics.AUTOSCALE_DURATION.observe(time.perf_counter() - started)


async def _autoscale_pass(cfg: OperatorConfig) -> None:
    slots = asyncio.Semaphore(cfg.scaling_concurrency)

    async def one(ident: InstanceKey) -> None:
        # The instance's lock first: a slot must not sit idle behind a reconcile in progress.
        async with RUNTIME.lock(ident), slots:
            body = RUNTIME.instances.get(ident)
            if body is None:
                return
            try:
                url = await asyncio.to_thread(
                    autoscale_sync,
                    RUNTIME.kube,
                    body,
                    RUNTIME.reader,
                    RUNTIME.redis_urls.get(ident),
                )
            except KubeError as exc:
                log.warning("autoscale failed", namespace=ident[0], name=ident[1], error=str(exc))
                return
            if url is not None and ident in RUNTIME.instances:
                RUNTIME.redis_urls[ident] = url

    await asyncio.gather(*(one(ident) for ident in list(RUNTIME.instances)))

"""Kopf handlers for `Storefront`: thin glue between watch events, the pure deciders (render,
status, scaling) and the Kubernetes/Redis I/O. No finalizer: deletion is left to the garbage
collector through owner references, so a stopped operator never blocks `kubectl delete sf`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf
import structlog
from prometheus_client import start_http_server

from service.observability.logging import configure_logging
from storefront_operator import metrics
from storefront_operator.config import OperatorConfig
from storefront_operator.crd import storefront_crd
from storefront_operator.kube import Kube, KubeError, load_api_client
from storefront_operator.reconcile import GONE, autoscale_sync, reconcile_sync
from storefront_operator.render import load_dashboards
from storefront_operator.spec import GROUP, PLURAL, VERSION

log = structlog.get_logger("storefront.operator")
Body = Mapping[str, Any]
InstanceKey = tuple[str, str]


class Runtime:
    """Process-wide operator state: config, API client, the instances seen and their locks."""

    def __init__(self) -> None:
        self.explicit_config: OperatorConfig | None = None
        self.config = OperatorConfig()
        self._kube: Kube | None = None
        self.instances: dict[InstanceKey, dict[str, Any]] = {}
        self.phases: dict[InstanceKey, str] = {}
        self.locks: dict[InstanceKey, asyncio.Lock] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.dashboards: dict[str, str] = {}
        self.metrics_server: Any = None

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            self._kube = Kube()
        return self._kube

    def lock(self, ident: InstanceKey) -> asyncio.Lock:
        return self.locks.setdefault(ident, asyncio.Lock())

    def track(self, body: Body) -> None:
        meta = body["metadata"]
        self.instances[(meta["namespace"], meta["name"])] = copy.deepcopy(dict(body))

    def forget(self, ident: InstanceKey) -> None:
        self.instances.pop(ident, None)
        self.phases.pop(ident, None)
        self.locks.pop(ident, None)
        metrics.set_instance_phases(self.phases)


RUNTIME = Runtime()


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
    """Tune kopf, serve metrics, apply the CRD when allowed, start the reconcile loops."""
    # Read the environment now, not at import: tests and wrappers set it late.
    cfg = RUNTIME.config = RUNTIME.explicit_config or OperatorConfig()
    configure_logging(level=cfg.log_level, fmt=cfg.log_format, component="operator")
    # A watch that silently stalls (NAT, proxies) must be re-opened, not waited on forever.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    # Progress in annotations keeps `status` ours; Events only for kopf's warnings and errors.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # liveness probes
    settings.execution.max_workers = 8

    if cfg.metrics_port:
        RUNTIME.metrics_server, _thread = start_http_server(
            cfg.metrics_port, addr=cfg.metrics_host, registry=metrics.REGISTRY
        )
    metrics.set_instance_phases({})
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
        asyncio.create_task(_every(cfg.reconcile_interval, _reconcile_all), name="reconcile"),
        asyncio.create_task(_every(cfg.scaling_interval, _scale_all), name="autoscale"),
    ]
    log.info(
        "operator started",
        reconcile_interval=cfg.reconcile_interval,
        scaling_interval=cfg.scaling_interval,
        metrics_port=cfg.metrics_port,
        dashboards=len(RUNTIME.dashboards),
    )


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    for task in RUNTIME.tasks:
        task.cancel()
    for task in RUNTIME.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    RUNTIME.tasks = []
    if RUNTIME.metrics_server is not None:
        RUNTIME.metrics_server.shutdown()
        RUNTIME.metrics_server = None
    if RUNTIME._kube is not None:
        RUNTIME._kube.close()
        RUNTIME._kube = None


async def _every(interval: float, action: Any) -> None:
    """Run `action` forever, `interval` seconds apart; one failure never ends the loop."""
    while True:
        await asyncio.sleep(interval)
        try:
            await action()
        except Exception:
            log.exception("periodic task failed", task=getattr(action, "__name__", "?"))


# ---------------------------------------------------------------------------------------------
# Storefront handlers
# ---------------------------------------------------------------------------------------------
@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def forget(body: kopf.Body, **_: Any) -> None:
    """Stop the periodic loops for a deleted instance (optional: no finalizer is added)."""
    meta = body.get("metadata", {})
    RUNTIME.forget((meta.get("namespace", ""), meta.get("name", "")))


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def reconcile_handler(body: kopf.Body, **_: Any) -> None:
    """Render → apply → status, on every change of the spec (and on operator start)."""
    RUNTIME.track(body)
    await reconcile(copy.deepcopy(dict(body)))


async def _reconcile_all() -> None:
    for ident, body in list(RUNTIME.instances.items()):
        try:
            await reconcile(body)
        except kopf.TemporaryError as exc:
            log.warning(
                "reconcile will be retried", namespace=ident[0], name=ident[1], error=str(exc)
            )


async def reconcile(body: Body) -> None:
    """One reconcile of one instance, serialised per instance (handler and loop may overlap)."""
    meta = body["metadata"]
    ident = (meta["namespace"], meta["name"])
    async with RUNTIME.lock(ident):
        started = time.perf_counter()
        try:
            phase = await asyncio.to_thread(
                reconcile_sync,
                RUNTIME.kube,
                body,
                RUNTIME.dashboards,
                RUNTIME.config.pod_namespace,
            )
        except KubeError as exc:
            metrics.RECONCILES.labels(outcome="error").inc()
            raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=10) from exc
        finally:
            metrics.RECONCILE_DURATION.observe(time.perf_counter() - started)
        if phase == GONE:
            RUNTIME.forget(ident)
            return
        metrics.RECONCILES.labels(outcome="degraded" if phase == "Degraded" else "success").inc()
        if ident in RUNTIME.instances:
            RUNTIME.phases[ident] = phase
        metrics.set_instance_phases(RUNTIME.phases)


# ---------------------------------------------------------------------------------------------
# Queue depth and worker autoscaling
# ---------------------------------------------------------------------------------------------
async def _scale_all() -> None:
    for ident, body in list(RUNTIME.instances.items()):
        async with RUNTIME.lock(ident):
            try:
                await asyncio.to_thread(autoscale_sync, RUNTIME.kube, body, RUNTIME.config)
            except KubeError as exc:
                log.warning("autoscale failed", namespace=ident[0], name=ident[1], error=str(exc))

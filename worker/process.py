"""``storefront worker``: worker processes consuming the queues, stopped gracefully on SIGTERM.

One process runs in place. With several, this process supervises them: it forwards SIGTERM,
waits for them to finish their jobs, and restarts one that dies (a crash or an OOM kill), whose
unfinished messages the others recover through the broker's heartbeat.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.process import BaseProcess
from types import FrameType

import structlog
from dramatiq import Worker

from service import __version__
from service.core.settings import Settings
from service.observability.logging import configure_logging
from worker import metrics
from worker.settings import WorkerSettings

log = structlog.get_logger("storefront.worker")

RESTART_DELAY_SECONDS = 1.0
# A process stopped by its settings (a metrics port taken): restarting it would fail again.
EXIT_SETTING = 2


def _setup_tracing(settings: Settings, service_name: str) -> None:
    from service.observability.tracing import setup_tracing, tracing_config

    env = dict(os.environ)
    env.setdefault("OTEL_SERVICE_NAME", service_name)
    setup_tracing(tracing_config(env, settings.trace_sample_ratio, __version__))


def _shutdown_tracing() -> None:
    from service.observability.tracing import shutdown_tracing

    shutdown_tracing()


def run_worker_process(
    settings: Settings, worker_settings: WorkerSettings, redis_url: str, index: int = 0
) -> int:
    """Run one worker process until SIGTERM/SIGINT (or its supervisor disappears)."""
    from worker.broker import build_broker

    configure_logging(settings.log_level, settings.log_format, component="worker")
    structlog.contextvars.bind_contextvars(worker_index=index)
    _setup_tracing(settings, "storefront-worker")
    stop = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        log.info("worker_stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    broker = build_broker(settings, worker_settings, redis_url)
    if worker_settings.metrics_port:
        if index == 0:
            # One process reports queue depth; every process reports its own jobs.
            metrics.REGISTRY.register(
                metrics.QueueDepthCollector(broker.client, broker.namespace, worker_settings.queues)  # type: ignore[attr-defined]
            )
        port = worker_settings.metrics_port + index
        try:
            metrics.serve_metrics(port)
        except OSError as exc:
            log.error("metrics_port_unavailable", port=port, error=str(exc))
            broker.close()
            return EXIT_SETTING
    broker.emit_after("process_boot")
    worker = Worker(
        broker, queues=set(worker_settings.queues), worker_threads=worker_settings.threads
    )
    worker.start()
    log.info(
        "worker_started",
        pid=os.getpid(),
        broker_id=getattr(broker, "broker_id", None),
        queues=worker_settings.queues,
        threads=worker_settings.threads,
        heartbeat_timeout_ms=worker_settings.heartbeat_timeout_ms,
    )
    parent = os.getppid()
    while not stop.wait(0.5):
        if index and os.getppid() != parent:  # the supervisor died: do not linger as an orphan
            log.warning("worker_supervisor_gone")
            break
    started = time.monotonic()
    worker.stop(timeout=int(worker_settings.shutdown_timeout_seconds * 1000))
    broker.close()
    _shutdown_tracing()
    log.info("worker_stopped", shutdown_seconds=round(time.monotonic() - started, 3))
    return 0


def _child_main(
    settings: Settings, worker_settings: WorkerSettings, redis_url: str, index: int
) -> None:
    raise SystemExit(run_worker_process(settings, worker_settings, redis_url, index))


def run_worker(settings: Settings, worker_settings: WorkerSettings, redis_url: str) -> int:
    """Run the configured number of worker processes; returns the exit code."""
    if worker_settings.processes == 1:
        return run_worker_process(settings, worker_settings, redis_url)
    return Supervisor(settings, worker_settings, redis_url).run()


class Supervisor:
    """Keeps ``processes`` worker processes running until told to stop."""

    def __init__(self, settings: Settings, worker_settings: WorkerSettings, redis_url: str) -> None:
        self.settings = settings
        self.worker_settings = worker_settings
        self.redis_url = redis_url
        # A fresh interpreter per child: no threads or connections inherited from this one.
        self.context = multiprocessing.get_context("spawn")
        self.children: dict[int, BaseProcess] = {}
        self.stopping = threading.Event()

    def _start(self, index: int) -> None:
        child = self.context.Process(
            target=_child_main,
            args=(self.settings, self.worker_settings, self.redis_url, index),
            name=f"storefront-worker-{index}",
        )
        child.start()
        self.children[index] = child
        log.info("worker_process_started", index=index, pid=child.pid)

    def run(self) -> int:
        configure_logging(self.settings.log_level, self.settings.log_format, component="worker")

        def on_signal(signum: int, _: FrameType | None) -> None:
            self.stopping.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        for index in range(self.worker_settings.processes):
            self._start(index)
        while not self.stopping.wait(0.2):
            for index, child in list(self.children.items()):
                if child.exitcode is not None and not self.stopping.is_set():
                    if child.exitcode == EXIT_SETTING:
                        log.error("worker_process_cannot_start", index=index, pid=child.pid)
                        self.stopping.set()
                        break
                    log.error(
                        "worker_process_died", index=index, pid=child.pid, exitcode=child.exitcode
                    )
                    time.sleep(RESTART_DELAY_SECONDS)
                    self._start(index)
        return self._stop_children()

    def _stop_children(self) -> int:
        for child in self.children.values():
            if child.exitcode is None and child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.worker_settings.shutdown_timeout_seconds + 5
        code = 0
        for child in self.children.values():
            child.join(max(0.1, deadline - time.monotonic()))
            if child.exitcode is None:
                log.error("worker_process_kill", pid=child.pid)
                child.kill()
                child.join()
            code = code or (child.exitcode or 0)
        if code == EXIT_SETTING:
            return EXIT_SETTING
        return 0 if code in (0, -signal.SIGTERM) else 1

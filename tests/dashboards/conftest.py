"""A real observed Storefront for the dashboard tests: `storefront api`, `storefront worker` and
`storefront scheduler` processes on the session's Redis, scraped every second by a real
Prometheus, after the known workload of dashboards.smoke (catalogue reads, orders, errors, an
SSE stream) plus jobs that succeed, retry and dead-letter."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from dashboards.smoke import Workload, drive
from tests.components.jaeger import JaegerServer
from tests.components.ports import free_port
from tests.components.process import REPO_ROOT, ManagedProcess, clean_environment
from tests.components.prometheus import PrometheusFactory, PrometheusServer
from tests.components.redis import RedisServer

STOREFRONT = [sys.executable, "-m", "service.cli"]
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin-password-1234"  # a throwaway test account
REDIS_DB = 12
# Fired at once when the scheduler starts (the current minute's tick), then every minute.
CRON = [{"name": "probe-every-minute", "cron": "* * * * *", "job": "probe",
         "args": {"key": "scheduled"}}]  # fmt: skip


@dataclass
class ObservedStack:
    """The running processes, the Prometheus scraping them, and what the workload did."""

    prometheus: PrometheusServer
    jaeger: JaegerServer
    api_url: str
    targets: dict[str, str]
    processes: list[ManagedProcess] = field(default_factory=list)
    workload: Workload | None = None

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def _environment(redis_url: str, data_dir: Path, otlp_endpoint: str) -> dict[str, str]:
    env = clean_environment()
    env.update(
        {
            "STOREFRONT_ENVIRONMENT": "test",
            "STOREFRONT_JWT_SECRET": "dashboards-tests-secret-0123456789abcdef",
            "STOREFRONT_DATA_DIR": str(data_dir),
            "STOREFRONT_REDIS_URL": redis_url,
            "STOREFRONT_LOG_FORMAT": "json",
            "STOREFRONT_ADMIN_EMAIL": ADMIN_EMAIL,
            "STOREFRONT_ADMIN_PASSWORD": ADMIN_PASSWORD,
            # Every request sampled and exported: its trace ID becomes the latency histogram's
            # exemplar, and the trace is in Jaeger to be followed from it.
            "STOREFRONT_TRACE_SAMPLE_RATIO": "1.0",
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            # Fail fast: one retry after 100-400 ms, then the dead-letter queue.
            "STOREFRONT_WORKER_MAX_RETRIES": "1",
            "STOREFRONT_WORKER_MIN_BACKOFF_MS": "100",
            "STOREFRONT_WORKER_MAX_BACKOFF_MS": "400",
            "STOREFRONT_WORKER_HEARTBEAT_TIMEOUT_MS": "2000",
            "STOREFRONT_WORKER_HEARTBEAT_INTERVAL_MS": "500",
            "STOREFRONT_WORKER_SHUTDOWN_TIMEOUT_SECONDS": "5",
            "STOREFRONT_WORKER_CRON": json.dumps(CRON),
        }
    )
    return env


def _http_ok(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


def _start(name: str, args: list[str], env: dict[str, str], workdir: Path, ready_url: str) -> (
    ManagedProcess
):  # fmt: skip
    process = ManagedProcess(
        f"storefront {name}", [*STOREFRONT, *args], workdir / f"{name}.log", env=env, cwd=REPO_ROOT
    ).start()
    try:
        return process.wait_ready(lambda: _http_ok(ready_url), timeout=90)
    except BaseException:
        process.stop()
        raise


async def enqueue_probes(redis_url: str) -> None:
    """Jobs straight onto the queue: three that succeed, one that fails until dead-lettered."""
    from service.services.jobs import enqueue

    client = aioredis.from_url(redis_url)
    try:
        for i in range(3):
            await enqueue(client, "probe", {"key": f"ok-{i}", "work_ms": 150})
        await enqueue(client, "probe", {"key": "doomed", "fail_times": 100})
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def observed_stack(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
    prometheus_factory: PrometheusFactory,
    jaeger_server: JaegerServer,
) -> Iterator[ObservedStack]:
    workdir = tmp_path_factory.mktemp("observed-storefront")
    redis_url = redis_server.url_for(REDIS_DB)
    redis_server.client(REDIS_DB).flushdb()
    env = _environment(redis_url, workdir / "data", jaeger_server.otlp_http_endpoint)
    subprocess.run(
        [*STOREFRONT, "migrate"],
        env=env,
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    api_port, worker_port, scheduler_port = free_port(), free_port(), free_port()
    targets = {
        "api": f"127.0.0.1:{api_port}",
        "worker": f"127.0.0.1:{worker_port}",
        "scheduler": f"127.0.0.1:{scheduler_port}",
    }
    prometheus = prometheus_factory(scrape_interval="1s")
    stack = ObservedStack(prometheus, jaeger_server, f"http://{targets['api']}", targets)
    try:
        stack.processes.append(
            _start(
                "api",
                ["api", "--host", "127.0.0.1", "--port", str(api_port)],
                env,
                workdir,
                f"{stack.api_url}/readyz",
            )
        )
        stack.processes.append(
            _start(
                "worker",
                [
                    "worker",
                    "--processes",
                    "1",
                    "--threads",
                    "2",
                    "--metrics-port",
                    str(worker_port),
                ],
                env,
                workdir,
                f"http://{targets['worker']}/metrics",
            )
        )
        stack.processes.append(
            _start(
                "scheduler",
                ["scheduler", "--metrics-port", str(scheduler_port)],
                env,
                workdir,
                f"http://{targets['scheduler']}/metrics",
            )
        )
        prometheus.set_targets(list(targets.values()))
        prometheus.wait_for_targets_up("storefront", count=len(targets), timeout=60)
        stack.workload = drive(stack.api_url, ADMIN_EMAIL, ADMIN_PASSWORD)
        asyncio.run(enqueue_probes(redis_url))
        # The workload is over once the doomed probe is dead-lettered and every job is done;
        # two more scrapes give rate() its two samples.
        prometheus.wait_for_query("storefront_jobs_dead_lettered_total > 0", timeout=60)
        prometheus.wait_for_query('storefront_queue_depth{state="queued"} == 0', timeout=60)
        time.sleep(2.5)
        yield stack
    finally:
        stack.stop()


def wait_until(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            value = predicate()
            if value:
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still not true after {timeout:.0f}s")
        time.sleep(0.5)

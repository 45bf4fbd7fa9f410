"""Prometheus fixtures: real Prometheus servers on free loopback ports scraping targets a test
gives (`prometheus_factory(targets)`, or `prometheus_server.set_targets(...)`), plus PromQL."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.components.ports import free_port
from tests.components.process import ManagedProcess, require_binary, start_process

SELF_JOB = "prometheus"
DEFAULT_JOB = "storefront"


class PrometheusServer:
    """A running Prometheus. Job `prometheus` scrapes itself; job `storefront` (by default)
    scrapes the targets listed in a file_sd file that set_targets() rewrites at any time."""

    def __init__(
        self, host: str, port: int, workdir: Path, job: str, process: ManagedProcess | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.workdir = workdir
        self.job = job
        self.targets_file = workdir / "targets.json"
        self.process = process

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def set_targets(self, targets: Sequence[str], labels: dict[str, str] | None = None) -> None:
        """Replace the scraped targets ("host:port"); Prometheus picks the file up by itself."""
        groups = [{"targets": list(targets), "labels": labels or {}}] if targets else []
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.targets_file)

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path>; return its `data` (raise on an error status)."""
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        response.raise_for_status()
        body = response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus API {path} failed: {body}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; the `result` list ([{"metric": {...}, "value": [ts, "v"]}, ...])."""
        data = self.api("query", query=promql)
        result: list[dict[str, Any]] = data["result"]
        return result

    def active_targets(self, job: str | None = None) -> list[dict[str, Any]]:
        targets: list[dict[str, Any]] = self.api("targets", state="active")["activeTargets"]
        if job is not None:
            targets = [t for t in targets if t.get("labels", {}).get("job") == job]
        return targets

    def wait_for_targets_up(
        self, job: str | None = None, count: int | None = None, timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        """Wait until the active targets of `job` (all jobs if None) have been scraped and are
        all up (and, if given, there are `count` of them); return them."""
        deadline = time.monotonic() + timeout
        targets: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            targets = self.active_targets(job)
            if (
                targets
                and (count is None or len(targets) == count)
                and all(t.get("health") == "up" for t in targets)
            ):
                return targets
            time.sleep(0.25)
        raise TimeoutError(
            f"Prometheus targets of job {job!r} not all up after {timeout}s: "
            + json.dumps(
                [{k: t.get(k) for k in ("scrapeUrl", "health", "lastError")} for t in targets]
            )
        )

    def wait_for_query(self, promql: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll an instant query until it returns a non-empty result."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"PromQL {promql!r} still empty after {timeout}s")
            time.sleep(0.25)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def _write_config(
    workdir: Path, port: int, job: str, scrape_interval: str, metrics_path: str
) -> Path:
    config = {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": scrape_interval,
        },
        "scrape_configs": [
            {"job_name": SELF_JOB, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]},
            {
                "job_name": job,
                "metrics_path": metrics_path,
                "file_sd_configs": [
                    {"files": [str(workdir / "targets.json")], "refresh_interval": "1s"}
                ],
            },
        ],
    }
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


PrometheusFactory = Callable[..., PrometheusServer]


@pytest.fixture(scope="session")
def prometheus_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PrometheusFactory]:
    """Start Prometheus servers: factory(targets=["127.0.0.1:8000"], scrape_interval="1s",
    job="storefront", metrics_path="/metrics"); all are stopped at the end of the session."""
    binary = require_binary("prometheus")
    started: list[PrometheusServer] = []

    def start(
        targets: Sequence[str] = (),
        scrape_interval: str = "1s",
        job: str = DEFAULT_JOB,
        metrics_path: str = "/metrics",
    ) -> PrometheusServer:
        workdir = tmp_path_factory.mktemp("prometheus")
        host, port = "127.0.0.1", free_port()
        server = PrometheusServer(host, port, workdir, job)
        server.set_targets(targets)
        config = _write_config(workdir, port, job, scrape_interval, metrics_path)
        argv = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={host}:{port}",
            "--enable-feature=exemplar-storage",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]

        def ready() -> bool:
            return httpx.get(f"{server.url}/-/ready", timeout=1).status_code == 200

        server.process = start_process(
            "prometheus", argv, workdir / "prometheus.log", ready, timeout=60
        )
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="session")
def prometheus_server(prometheus_factory: PrometheusFactory) -> PrometheusServer:
    """The session's Prometheus (1s scrapes); point it at targets with set_targets()."""
    return prometheus_factory()

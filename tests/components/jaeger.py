"""Jaeger fixture: a session-scoped Jaeger v2 (in-memory storage) receiving OTLP on free loopback
ports and answering trace queries (`jaeger_server.find_traces(service, tags)`)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.components.ports import free_port, port_open
from tests.components.process import ManagedProcess, require_binary, start_process


class JaegerServer:
    """A running Jaeger v2 all-in-one (OTLP receivers, memory storage, query service)."""

    def __init__(
        self,
        host: str,
        otlp_grpc_port: int,
        otlp_http_port: int,
        query_port: int,
        process: ManagedProcess | None = None,
    ) -> None:
        self.host = host
        self.otlp_grpc_port = otlp_grpc_port
        self.otlp_http_port = otlp_http_port
        self.query_port = query_port
        self.process = process

    @property
    def otlp_http_endpoint(self) -> str:
        """Base URL for OTLP/HTTP exporters (traces go to <this>/v1/traces)."""
        return f"http://{self.host}:{self.otlp_http_port}"

    @property
    def otlp_traces_url(self) -> str:
        return f"{self.otlp_http_endpoint}/v1/traces"

    @property
    def otlp_grpc_endpoint(self) -> str:
        """Endpoint for OTLP/gRPC exporters (plaintext: use insecure=True)."""
        return f"http://{self.host}:{self.otlp_grpc_port}"

    @property
    def query_url(self) -> str:
        return f"http://{self.host}:{self.query_port}"

    def services(self) -> list[str]:
        response = httpx.get(f"{self.query_url}/api/services", timeout=10)
        response.raise_for_status()
        return list(response.json().get("data") or [])

    def find_traces(
        self,
        service: str,
        tags: dict[str, str] | None = None,
        operation: str | None = None,
        lookback_seconds: float = 3600,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Traces of `service` (with spans matching all `tags`), via the query API /api/traces;
        each trace is {"traceID", "spans": [...], "processes": {...}}."""
        now_us = int(time.time() * 1_000_000)
        params: dict[str, str | int] = {
            "service": service,
            "start": now_us - int(lookback_seconds * 1_000_000),
            "end": now_us + 60_000_000,
            "limit": limit,
        }
        if tags:
            params["tags"] = json.dumps(tags)
        if operation:
            params["operation"] = operation
        response = httpx.get(f"{self.query_url}/api/traces", params=params, timeout=10)
        response.raise_for_status()
        return list(response.json().get("data") or [])

    def wait_for_traces(
        self,
        service: str,
        tags: dict[str, str] | None = None,
        operation: str | None = None,
        count: int = 1,
        timeout: float = 30.0,
    ) -> list[dict[str, Any]]:
        """Poll find_traces until at least `count` traces match."""
        deadline = time.monotonic() + timeout
        while True:
            traces = self.find_traces(service, tags=tags, operation=operation)
            if len(traces) >= count:
                return traces
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(traces)} trace(s) of service {service!r} with tags {tags} after "
                    f"{timeout}s (services known: {self.services()})"
                )
            time.sleep(0.25)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def _write_config(path: Path, host: str, ports: dict[str, int]) -> None:
    """Jaeger v2 (OpenTelemetry collector) config: OTLP in, memory storage, query out."""
    config: dict[str, Any] = {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": [],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
            "telemetry": {
                "resource": {"service.name": "jaeger"},
                "metrics": {
                    "level": "basic",
                    "readers": [
                        {
                            "pull": {
                                "exporter": {"prometheus": {"host": host, "port": ports["metrics"]}}
                            }
                        }
                    ],
                },
                "logs": {"level": "info"},
            },
        },
        "extensions": {
            "jaeger_query": {
                "storage": {"traces": "memstore"},
                "http": {"endpoint": f"{host}:{ports['query_http']}"},
                "grpc": {"endpoint": f"{host}:{ports['query_grpc']}"},
            },
            "jaeger_storage": {"backends": {"memstore": {"memory": {"max_traces": 100000}}}},
        },
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"{host}:{ports['otlp_grpc']}"},
                    "http": {"endpoint": f"{host}:{ports['otlp_http']}"},
                }
            }
        },
        "processors": {},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture(scope="session")
def jaeger_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JaegerServer]:
    binary = require_binary("jaeger")
    workdir = tmp_path_factory.mktemp("jaeger")
    host = "127.0.0.1"
    ports = {
        name: free_port()
        for name in ("otlp_grpc", "otlp_http", "query_http", "query_grpc", "metrics")
    }
    config = workdir / "jaeger.yaml"
    _write_config(config, host, ports)
    server = JaegerServer(host, ports["otlp_grpc"], ports["otlp_http"], ports["query_http"])

    def ready() -> bool:
        return (
            httpx.get(f"{server.query_url}/api/services", timeout=1).status_code == 200
            and port_open(host, ports["otlp_http"])
            and port_open(host, ports["otlp_grpc"])
        )

    server.process = start_process(
        "jaeger", [binary, f"--config={config}"], workdir / "jaeger.log", ready, timeout=60
    )
    try:
        yield server
    finally:
        server.stop()

"""Run the real ``storefront api`` process (SQLite in a tmp dir, the session's Redis, OTLP to the
session's Jaeger, every request sampled) and read what it printed."""

from __future__ import annotations

import contextlib
import io
import itertools
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from PIL import Image

from tests.components.jaeger import JaegerServer
from tests.components.ports import free_port
from tests.components.process import clean_environment, tail
from tests.components.redis import RedisServer

REPO_ROOT = Path(__file__).resolve().parents[2]
STOREFRONT = str(Path(sys.executable).with_name("storefront"))
ADMIN_EMAIL = "admin@storefront.example.com"
ADMIN_PASSWORD = "admin-password-1234"  # a throwaway test account


@dataclass
class StorefrontProcess:
    """A running ``storefront api``; its stdout (the log stream) is kept in a file."""

    url: str
    service_name: str
    env: dict[str, str]
    stdout_path: Path
    stderr_path: Path
    popen: subprocess.Popen[bytes]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def log_lines(self) -> list[str]:
        return [line for line in self.stdout_path.read_text().splitlines() if line.strip()]

    def log_records(self) -> list[dict[str, Any]]:
        """Every stdout line parsed as JSON (a line that is not JSON fails the caller)."""
        return [orjson.loads(line) for line in self.log_lines()]

    def records_of(self, request_id: str) -> list[dict[str, Any]]:
        return [r for r in self.log_records() if r.get("request_id") == request_id]

    def admin_token(self) -> str:
        with self.client() as client:
            response = client.post(
                "/api/v1/auth/token", data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
            )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def start_storefront(
    workdir: Path,
    redis_url: str,
    otlp_endpoint: str,
    broken_image_table: bool = False,
) -> StorefrontProcess:
    """Migrate a fresh SQLite database, then start ``storefront api`` on a free port.

    ``broken_image_table`` drops the product images table, so image uploads fail inside the
    service with a real database error: the way to produce honest 5xx responses.
    """
    data_dir = workdir / "data"
    service_name = f"storefront-api-{uuid.uuid4().hex[:8]}"
    env = {
        **clean_environment(),
        "STOREFRONT_ENVIRONMENT": "test",
        "STOREFRONT_JWT_SECRET": "observability-tests-secret-0123456789abcdef",
        "STOREFRONT_DATA_DIR": str(data_dir),
        "STOREFRONT_REDIS_URL": redis_url,
        "STOREFRONT_LOG_FORMAT": "json",
        "STOREFRONT_TRACE_SAMPLE_RATIO": "1.0",
        "STOREFRONT_ADMIN_EMAIL": ADMIN_EMAIL,
        "STOREFRONT_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
        "OTEL_SERVICE_NAME": service_name,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "POD_NAME": "storefront-api-test-0",
        "POD_NAMESPACE": "observability-tests",
    }
    subprocess.run([STOREFRONT, "migrate"], env=env, cwd=REPO_ROOT, check=True, capture_output=True)
    if broken_image_table:
        with contextlib.closing(sqlite3.connect(data_dir / "storefront.db")) as db:
            db.execute("DROP TABLE product_images")
            db.commit()
    port = free_port()
    stdout_path, stderr_path = workdir / "api.stdout", workdir / "api.stderr"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        popen = subprocess.Popen(
            [STOREFRONT, "api", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    service = StorefrontProcess(
        f"http://127.0.0.1:{port}", service_name, env, stdout_path, stderr_path, popen
    )
    deadline = time.monotonic() + 60
    while True:
        if popen.poll() is not None:
            raise RuntimeError(
                f"storefront api exited with {popen.returncode}:\n{tail(stdout_path)}\n"
                f"{tail(stderr_path)}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{service.url}/readyz", timeout=2).status_code == 200:
                return service
        if time.monotonic() > deadline:
            service.stop()
            raise RuntimeError(f"storefront api not ready after 60s:\n{tail(stdout_path)}")
        time.sleep(0.2)


@pytest.fixture(scope="module", autouse=True)
def _untraced_test_client() -> Iterator[None]:
    """Keep the test process's own trace context out of its requests.

    The service honours an incoming ``traceparent``. Once an in-process app of another test has
    instrumented httpx here, this suite's requests would carry the test process's (unsampled)
    context and decide the service's sampling, so no exemplar or trace would be recorded.
    """
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    instrumentor = HTTPXClientInstrumentor()
    instrumented = instrumentor.is_instrumented_by_opentelemetry
    if instrumented:
        instrumentor.uninstrument()
    yield
    if instrumented:
        instrumentor.instrument()


StorefrontFactory = Callable[..., StorefrontProcess]
# Databases 8-15 of the session's Redis; other tests use the low numbers.
_redis_databases = itertools.cycle(range(8, 16))


@pytest.fixture(scope="module")
def storefront_factory(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
    jaeger_server: JaegerServer,
) -> Iterator[StorefrontFactory]:
    """Start real Storefront API processes for this module; all are stopped at its end."""
    started: list[StorefrontProcess] = []

    def start(**options: Any) -> StorefrontProcess:
        # Each service gets an empty Redis database of its own: every one starts a fresh SQLite
        # database, so product 1 of one service must not be served from another's cache.
        db = next(_redis_databases)
        with redis_server.client(db) as client:
            client.flushdb()
        service = start_storefront(
            tmp_path_factory.mktemp("storefront"),
            redis_server.url_for(db),
            jaeger_server.otlp_http_endpoint,
            **options,
        )
        started.append(service)
        return service

    try:
        yield start
    finally:
        for service in started:
            service.stop()

"""A real ``storefront api`` process for tests: a fresh database, the session's Redis, an admin
account, and its log stream kept in a file to read back."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.components.ports import free_port
from tests.components.process import REPO_ROOT, clean_environment, tail

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


def start_storefront(
    workdir: Path,
    redis_url: str,
    otlp_endpoint: str | None = None,
    database_url: str | None = None,
    broken_image_table: bool = False,
    extra_env: dict[str, str] | None = None,
) -> StorefrontProcess:
    """Migrate a fresh database, then start ``storefront api`` on a free port, with an admin
    account (:data:`ADMIN_EMAIL`).

    The database is SQLite in ``workdir`` unless ``database_url`` names another. With
    ``otlp_endpoint``, every request is traced and exported there. ``broken_image_table`` drops
    the product images table (SQLite), so image uploads fail inside the service with a real
    database error: the way to produce honest 5xx responses. ``extra_env`` adds or replaces
    settings.
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
        "OTEL_SERVICE_NAME": service_name,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "POD_NAME": "storefront-api-test-0",
        "POD_NAMESPACE": "observability-tests",
    }
    if otlp_endpoint is not None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp_endpoint
    if database_url is not None:
        env["STOREFRONT_DATABASE_URL"] = database_url
    env.update(extra_env or {})
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

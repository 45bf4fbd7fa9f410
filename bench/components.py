"""Processes a benchmark runs: redis-server, the OTLP sink, the HTTP servers and wrk, each pinned
to a CPU so the load generator never competes with the server it measures."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from bench.stats import BenchError, WrkResult, parse_wrk_output
from tests.components.ports import free_port
from tests.components.process import (
    ManagedProcess,
    clean_environment,
    find_binary,
    start_process,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_report.lua"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Pinning:
    """CPUs for the measured server and for everything else (load generator, Redis, sink)."""

    server_cpu: int | None
    client_cpu: int | None

    @classmethod
    def detect(cls) -> Pinning:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2 or shutil.which("taskset") is None:
            return cls(None, None)
        return cls(cpus[0], cpus[1])

    def server(self, argv: Sequence[str]) -> list[str]:
        return _pin(self.server_cpu, argv)

    def client(self, argv: Sequence[str]) -> list[str]:
        return _pin(self.client_cpu, argv)

    def describe(self) -> str:
        if self.server_cpu is None:
            return "not pinned (fewer than 2 CPUs or no taskset)"
        return f"server on CPU {self.server_cpu}; load generator, Redis, sink on {self.client_cpu}"


def _pin(cpu: int | None, argv: Sequence[str]) -> list[str]:
    return list(argv) if cpu is None else ["taskset", "-c", str(cpu), *argv]


def require(name: str) -> str:
    path = find_binary(name)
    if path is None:
        raise BenchError(f"{name} not found on PATH or in .tools/bin (run `make tools`)")
    return path


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The parent environment minus any Storefront/OpenTelemetry setting, plus ``extra``: a
    developer's shell must not change what is measured."""
    env = clean_environment()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return {**env, **extra}


def random_secret() -> str:
    return secrets.token_urlsafe(48)


@dataclass(frozen=True)
class RedisInstance:
    port: int
    process: ManagedProcess

    def url(self, db: int = 0) -> str:
        return f"redis://{HOST}:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, db=db)


def start_redis(workdir: Path, pinning: Pinning) -> RedisInstance:
    port = free_port()
    argv = pinning.client(
        [
            require("redis-server"),
            "--port", str(port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(workdir),
            "--protected-mode", "no",
            "--loglevel", "warning",
        ]
    )  # fmt: skip

    def ready() -> bool:
        with redis.Redis(host=HOST, port=port, socket_timeout=1) as client:
            return bool(client.ping())

    return RedisInstance(port, start_process("redis-server", argv, workdir / "redis.log", ready))


@dataclass(frozen=True)
class Sink:
    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stats(self) -> dict[str, int]:
        return httpx.get(f"{self.url}/stats", timeout=5).json()  # type: ignore[no-any-return]


def start_sink(workdir: Path, pinning: Pinning) -> Sink:
    port = free_port()
    argv = pinning.client([sys.executable, "-m", "bench.sink", "--port", str(port)])
    process = start_process(
        "otlp-sink",
        argv,
        workdir / "sink.log",
        lambda: httpx.get(f"http://{HOST}:{port}/stats", timeout=1).status_code == 200,
        env=clean_env({}),
        cwd=REPO_ROOT,
    )
    return Sink(port, process)


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def start_servers(
    specs: Sequence[tuple[str, str, Mapping[str, str]]],
    workdir: Path,
    pinning: Pinning,
    probe_path: str,
) -> list[Server]:
    """Start ``python -m bench.serve app`` for each (name, app, env) on the server CPU, all at
    once (start-up is the slow part), and return once each answers ``probe_path`` with 200.
    Each app's stdout (its logs) goes to a file, as a container runtime would keep it."""
    servers: list[Server] = []
    try:
        for name, app, env in specs:
            port = free_port()
            argv = pinning.server([sys.executable, "-m", "bench.serve", app, "--port", str(port)])
            process = ManagedProcess(
                name, argv, workdir / f"{name}.log", env=clean_env(env), cwd=REPO_ROOT
            )
            servers.append(Server(name, port, process.start()))
        for server in servers:
            url = server.url + probe_path
            server.process.wait_ready(
                lambda url=url: httpx.get(url, timeout=2).status_code == 200,  # type: ignore[misc]
                timeout=120,
            )
    except BaseException:
        for server in servers:
            server.process.stop()
        raise
    return servers


@dataclass(frozen=True)
class WrkRequest:
    """A request other than a plain GET, sent on every connection (see bench/wrk_report.lua)."""

    method: str
    content_type: str
    body: str  # several lines: one of them a request, in turn
    headers: tuple[str, ...] = ()  # "Name: value"; "{n}" in a value: the request's number


def wrk_command(
    url: str,
    duration_s: int,
    connections: int,
    pinning: Pinning,
    request: WrkRequest | None = None,
    timeout_s: int = 5,
) -> list[str]:
    """wrk's command line: one thread (it has one CPU), our JSON reporter, ``request`` if any."""
    argv = pinning.client(
        [
            require("wrk"),
            "-t1",
            f"-c{connections}",
            f"-d{max(1, duration_s)}s",
            "--timeout", f"{timeout_s}s",
            "--latency",
            "-s", str(WRK_SCRIPT),
            url,
        ]
    )  # fmt: skip
    if request is not None:
        argv += ["--", request.method, request.content_type, request.body, *request.headers]
    return argv


def run_wrk(
    url: str,
    duration_s: int,
    connections: int,
    pinning: Pinning,
    label: str,
    request: WrkRequest | None = None,
) -> WrkResult:
    """One wrk run of GET ``url``, or of ``request``."""
    argv = wrk_command(url, duration_s, connections, pinning, request)
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration_s + 60, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{label}: wrk did not finish") from None
    if done.returncode != 0:
        raise BenchError(f"{label}: wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse_wrk_output(done.stdout)

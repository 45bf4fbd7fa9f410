"""Login-burst benchmark: ``/livez`` latency, probed at a steady pace, while logins keep a real
Storefront hashing passwords, against the same probe on the same server at rest.

A liveness probe fails when ``/livez`` waits behind password hashing; the ratio of its p99
during a burst to its p99 at rest says how much of that wait is left.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx

from bench.components import (
    Pinning,
    RedisInstance,
    WrkRequest,
    random_secret,
    start_servers,
    wrk_command,
)
from bench.report import Row, TargetCheck
from bench.stats import BenchError, Target, WrkResult, median, parse_wrk_output, percentile

SECTION = "GET /livez, probed 50 times a second"
PROBE_INTERVAL_S = 0.02
LOGINS_IN_FLIGHT = 20
# Logins need a moment to reach their hashing slots before the probe starts measuring.
BURST_LEAD_S = 1.0
REDIS_DB = 3
ADMIN_EMAIL = "bench-admin@storefront.example.com"
ADMIN_PASSWORD = "bench-admin-password"  # a throwaway account in a temporary database
# Goal: reported as met or missed, never asserted.
TARGET = Target("idle", 2.0, at_most=True, measure="p99")
SUBJECTS = {"idle": "at rest", "burst": f"{LOGINS_IN_FLIGHT} logins in flight (logins/s)"}


@dataclass(frozen=True)
class LoginPlan:
    duration_s: int  # seconds of probing per phase
    rounds: int


@dataclass(frozen=True)
class Probes:
    """One phase's probe latencies, in milliseconds."""

    latencies_ms: tuple[float, ...]
    duration_s: float

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 99)

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.duration_s if self.duration_s > 0 else 0.0


@dataclass
class LoginOutcome:
    plan: LoginPlan
    idle: list[Probes] = field(default_factory=list)
    burst: list[Probes] = field(default_factory=list)
    logins: list[WrkResult] = field(default_factory=list)

    def ratio(self) -> float:
        """Median over rounds of (p99 during the burst) / (p99 at rest in the same round)."""
        return median(
            b.p99_ms / i.p99_ms if i.p99_ms else math.nan
            for i, b in zip(self.idle, self.burst, strict=True)
        )


def probe(url: str, duration_s: float, cpu: int | None) -> Probes:
    """GET ``url`` every PROBE_INTERVAL_S for ``duration_s``, on one kept-alive connection as a
    kubelet's probes would be, timing each answer."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})  # this thread only: the load generator's CPU
    latencies: list[float] = []
    with httpx.Client(timeout=30) as client:
        client.get(url)  # connect outside the measurement
        start = time.perf_counter()
        tick = start
        while (now := time.perf_counter()) - start < duration_s:
            response = client.get(url)
            took = time.perf_counter() - now
            if response.status_code != 200:
                raise BenchError(f"{url}: status {response.status_code}")
            latencies.append(took * 1000)
            tick += PROBE_INTERVAL_S
            time.sleep(max(0.0, tick - time.perf_counter()))
    return Probes(tuple(latencies), duration_s)


def probe_in_thread(url: str, duration_s: float, pinning: Pinning) -> Probes:
    result: list[Probes] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(probe(url, duration_s, pinning.client_cpu))
        except BaseException as exc:  # handed to the caller
            errors.append(exc)

    thread = threading.Thread(target=run, name="livez-probe")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def active_posts(url: str) -> float:
    """POST requests the server is still handling (its ``http_server_active_requests``)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith('http_server_active_requests{method="POST"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_until_quiet(url: str, timeout_s: float = 120) -> None:
    """Logins wrk gave up on at its deadline are still hashed: wait until they are done, so the
    next phase starts on a server at rest."""
    deadline = time.monotonic() + timeout_s
    while active_posts(url) > 0:
        if time.monotonic() > deadline:
            raise BenchError("logins still running long after the burst ended")
        time.sleep(0.2)


def burst(url: str, plan: LoginPlan, pinning: Pinning) -> tuple[Probes, WrkResult]:
    """Keep LOGINS_IN_FLIGHT logins running while probing ``/livez``."""
    form = urlencode({"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    request = WrkRequest("POST", "application/x-www-form-urlencoded", form)
    seconds = math.ceil(BURST_LEAD_S + plan.duration_s) + 1
    argv = wrk_command(
        f"{url}/api/v1/auth/token", seconds, LOGINS_IN_FLIGHT, pinning, request, timeout_s=60
    )
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as logins:
        try:
            time.sleep(BURST_LEAD_S)
            probes = probe_in_thread(f"{url}/livez", plan.duration_s, pinning)
            stdout, stderr = logins.communicate(timeout=seconds + 60)
        except BaseException:
            logins.kill()
            raise
    if logins.returncode != 0:
        raise BenchError(f"wrk (logins) failed ({logins.returncode}): {stderr.strip()}")
    result = parse_wrk_output(stdout)
    # Logins cut off by wrk's deadline count as errors; a refused login would be a non-2xx.
    if result.requests == 0 or result.non_2xx:
        raise BenchError(
            f"logins: {result.requests} answered, {result.non_2xx} of them not 2xx: the burst "
            "did not measure what it claims"
        )
    wait_until_quiet(url)
    return probes, result


def run_login(
    plan: LoginPlan,
    workdir: Path,
    redis_server: RedisInstance,
    pinning: Pinning,
    progress: Callable[[str], None],
) -> LoginOutcome:
    from service.core.settings import Settings
    from service.migrations import upgrade

    outcome = LoginOutcome(plan)
    with contextlib.ExitStack() as stack:
        progress("Logins: preparing the database")
        database_url = f"sqlite+aiosqlite:///{(workdir / 'storefront.db').resolve()}"
        upgrade(Settings(environment="dev", database_url=database_url, data_dir=workdir))
        with redis_server.client(REDIS_DB) as client:
            client.flushdb()
        env = {
            "STOREFRONT_ENVIRONMENT": "production",
            "STOREFRONT_JWT_SECRET": random_secret(),
            "STOREFRONT_DATABASE_URL": database_url,
            "STOREFRONT_REDIS_URL": redis_server.url(REDIS_DB),
            "STOREFRONT_DATA_DIR": str(workdir),
            "STOREFRONT_LOG_FORMAT": "json",
            "STOREFRONT_ADMIN_EMAIL": ADMIN_EMAIL,
            "STOREFRONT_ADMIN_PASSWORD": ADMIN_PASSWORD,
            # Measured with the default concurrency; no login is turned away however slowly
            # this machine hashes, so every round is a clean one.
            "STOREFRONT_PASSWORD_HASH_WAIT_SECONDS": "60",
            # The burst is one account from one address, which the sign-in limits would answer
            # with 429 before hashing: what is measured here is the hashing, so they are off.
            "STOREFRONT_RATE_LIMIT_LOGIN_ACCOUNT": "off",
            "STOREFRONT_RATE_LIMIT_LOGIN_ADDRESS": "off",
        }
        progress("Logins: starting Storefront")
        (server,) = start_servers(
            [("storefront-logins", "storefront", env)], workdir, pinning, "/livez"
        )
        stack.callback(server.process.stop)

        progress("Logins: warming up")
        probe_in_thread(f"{server.url}/livez", 1, pinning)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            token = client.post(
                "/api/v1/auth/token", data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
            )
            if token.status_code != 200:
                raise BenchError(f"the bench account cannot log in: {token.status_code}")

        for number in range(plan.rounds):
            # Alternate which phase goes first, so neither always follows the other.
            phases = ("idle", "burst") if number % 2 == 0 else ("burst", "idle")
            for phase in phases:
                progress(f"Logins: round {number + 1}/{plan.rounds}, {SUBJECTS[phase]}")
                if phase == "idle":
                    outcome.idle.append(
                        probe_in_thread(f"{server.url}/livez", plan.duration_s, pinning)
                    )
                else:
                    probes, logins = burst(server.url, plan, pinning)
                    outcome.burst.append(probes)
                    outcome.logins.append(logins)
    return outcome


def rows(outcome: LoginOutcome) -> list[Row]:
    """The probe at rest and during the burst (with the logins' rate), the ratio of their p99s
    and its target."""
    if not outcome.idle or not outcome.burst:
        return not_measured("no complete round")
    ratio = outcome.ratio()
    return [
        Row(
            section=SECTION,
            subject=SUBJECTS["idle"],
            value=median(p.rate for p in outcome.idle),
            unit="probes/s",
            p50_ms=median(p.p50_ms for p in outcome.idle),
            p99_ms=median(p.p99_ms for p in outcome.idle),
        ),
        Row(
            section=SECTION,
            subject=SUBJECTS["burst"],
            value=median(r.rps for r in outcome.logins),
            unit="logins/s",
            p50_ms=median(p.p50_ms for p in outcome.burst),
            p99_ms=median(p.p99_ms for p in outcome.burst),
            ratios={"idle": ratio},
            targets=(TargetCheck.of(TARGET, ratio),),
        ),
    ]


def not_measured(reason: str) -> list[Row]:
    return [
        Row(section=SECTION, subject=s, note=f"not measured: {reason}") for s in SUBJECTS.values()
    ]


def raw(outcome: LoginOutcome) -> dict[str, object]:
    return {
        "plan": outcome.plan.__dict__,
        "logins_in_flight": LOGINS_IN_FLIGHT,
        "probe_interval_s": PROBE_INTERVAL_S,
        "rounds": [
            {
                "idle": {"p50_ms": i.p50_ms, "p99_ms": i.p99_ms, "probes": len(i.latencies_ms)},
                "burst": {"p50_ms": b.p50_ms, "p99_ms": b.p99_ms, "probes": len(b.latencies_ms)},
                "logins": r.as_dict(),
            }
            for i, b, r in zip(outcome.idle, outcome.burst, outcome.logins, strict=True)
        ],
        "p99_ratio": outcome.ratio(),
    }

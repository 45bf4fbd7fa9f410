"""The real ``storefront worker`` on a real Redis: retries and dead letters across processes,
graceful SIGTERM, and the chaos test (SIGKILLed workers lose nothing and repeat no effect)."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis as sync_redis
from dramatiq import Message

from service.services import jobs
from tests.components.ports import free_port
from tests.components.process import REPO_ROOT, ManagedProcess
from tests.worker.conftest import base_env, start_storefront, wait_for
from worker.actors.probe import EFFECTS_KEY, RUNS_KEY
from worker.middleware import MaintainedRedisBroker
from worker.process import EXIT_SETTING

pytestmark = pytest.mark.redis


def producer(redis_url: str) -> MaintainedRedisBroker:
    return MaintainedRedisBroker(url=redis_url, namespace=jobs.NAMESPACE, middleware=[])


def send_probe(broker: MaintainedRedisBroker, key: str, **kwargs: object) -> str:
    message = Message(
        queue_name="default", actor_name="probe", args=(), kwargs={"key": key, **kwargs}, options={}
    )
    return broker.enqueue(message).message_id


def worker_pids(supervisor: ManagedProcess) -> list[int]:
    """The supervisor's worker processes (not multiprocessing's helper processes)."""
    children = Path(f"/proc/{supervisor.pid}/task/{supervisor.pid}/children").read_text().split()
    pids = []
    for pid in map(int, children):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline:
            pids.append(pid)
    return pids


def broker_ids(log_path: Path) -> dict[int, str]:
    """pid -> broker ID, from the workers' ``worker_started`` log lines."""
    ids = {}
    for line in log_path.read_text(errors="replace").splitlines():
        if '"worker_started"' in line:
            record = json.loads(line)
            ids[record["pid"]] = record["broker_id"]
    return ids


def all_started(supervisor: ManagedProcess, log_path: Path) -> bool:
    pids = worker_pids(supervisor)
    return len(pids) == 2 and set(pids) <= set(broker_ids(log_path))


def test_retries_then_dead_letter_with_a_real_worker(
    redis_url: str, redis_client: sync_redis.Redis, tmp_path: Path
) -> None:
    log_path = tmp_path / "worker.log"
    worker = start_storefront(
        "worker", log_path, base_env(redis_url, tmp_path), "--threads", "2", ready="worker_started"
    )
    try:
        broker = producer(redis_url)
        send_probe(broker, "flaky", fail_times=2)
        doomed = send_probe(broker, "doomed", fail_times=99)
        wait_for(lambda: redis_client.zcard("dramatiq:default.XQ") == 1, 30, what="dead letter")
        wait_for(lambda: redis_client.lrange(EFFECTS_KEY, 0, -1) == [b"flaky"], 30, what="flaky")
        assert int(redis_client.hget(RUNS_KEY, "flaky")) == 3
        assert int(redis_client.hget(RUNS_KEY, "doomed")) == 4  # first attempt + max_retries=3
        assert redis_client.hexists(
            "dramatiq:default.XQ.msgs", redis_client.zrange("dramatiq:default.XQ", 0, -1)[0]
        )
        status = jobs.decode_status(doomed, redis_client.hgetall(jobs.job_key(doomed)))
        assert status is not None and status.status == "failed"
        logged = log_path.read_text()
        assert '"job_dead_lettered"' in logged and doomed in logged
    finally:
        worker.stop()
    assert worker.popen is not None and worker.popen.returncode == 0


def test_sigterm_lets_the_running_job_finish(
    redis_url: str, redis_client: sync_redis.Redis, tmp_path: Path
) -> None:
    log_path = tmp_path / "worker.log"
    worker = start_storefront(
        "worker", log_path, base_env(redis_url, tmp_path), "--threads", "1", ready="worker_started"
    )
    send_probe(producer(redis_url), "slow", work_ms=2000)
    wait_for(lambda: redis_client.hget(RUNS_KEY, "slow"), 15, what="job start")
    started = time.monotonic()
    assert worker.popen is not None
    worker.popen.send_signal(signal.SIGTERM)
    assert worker.popen.wait(timeout=15) == 0
    assert time.monotonic() - started < 10
    assert redis_client.lrange(EFFECTS_KEY, 0, -1) == [b"slow"]
    assert redis_client.llen("dramatiq:default") == 0


@pytest.mark.slow
def test_chaos_sigkilled_workers_lose_nothing_and_repeat_no_effect(
    redis_url: str, redis_client: sync_redis.Redis, tmp_path: Path
) -> None:
    total = 2000
    log_path = tmp_path / "worker.log"
    env = base_env(redis_url, tmp_path, STOREFRONT_WORKER_MAX_REDELIVERIES="5")
    supervisor = start_storefront("worker", log_path, env, "--processes", "2", "--threads", "4")
    wait_for(lambda: all_started(supervisor, log_path), 60, what="two worker processes")
    broker = producer(redis_url)
    keys = [f"job-{i}" for i in range(total)]
    for key in keys:
        send_probe(broker, key, work_ms=40)
    rng = random.Random(20261124)
    delays: list[float] = []
    try:
        for _ in range(5):
            time.sleep(rng.uniform(0.8, 2.0))
            alive = worker_pids(supervisor)
            ids = broker_ids(log_path)
            victim = rng.choice(alive)
            ack_key = f"dramatiq:__acks__.{ids[victim]}.default"
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()
            if redis_client.scard(ack_key):
                wait_for(lambda k=ack_key: not redis_client.exists(k), 30, 0.05, what="redelivery")
                delays.append(time.monotonic() - killed_at)
            # The supervisor restarts the process; wait for it before the next kill.
            wait_for(lambda: all_started(supervisor, log_path), 60, what="restarted process")
        wait_for(lambda: redis_client.llen(EFFECTS_KEY) == total, 180, 0.5, what="every job")
        time.sleep(1)  # let any late duplicate finish: it must add no effect
        effects = [e.decode() for e in redis_client.lrange(EFFECTS_KEY, 0, -1)]
        runs = sum(int(v) for v in redis_client.hvals(RUNS_KEY))
    finally:
        supervisor.stop(timeout=30)
    assert sorted(effects) == sorted(keys)  # each exactly once, none lost
    assert redis_client.zcard("dramatiq:default.XQ") == 0
    assert redis_client.llen("dramatiq:default") == 0
    assert delays, "no kill caught a process with messages in flight"
    print(
        f"\nchaos: {total} jobs, 5 SIGKILLs, {runs} executions ({runs - total} repeated, "
        f"no repeated effect); redelivery after kill: {', '.join(f'{d:.2f}s' for d in delays)} "
        f"(heartbeat timeout 2.0s, beat every 0.5s)"
    )


RUN_WORKER = """
from service.core.settings import load_settings
from worker.process import run_worker
from worker.settings import load_worker_settings

settings = load_settings()
raise SystemExit(run_worker(settings, load_worker_settings(), settings.redis_url))
"""


def test_a_worker_process_whose_metrics_port_is_taken_stops_the_worker_not_loops(
    redis_url: str, tmp_path: Path
) -> None:
    # The command checks its ports before starting (tests/service/test_dev_ports.py); this is
    # the port taken between that check and the process binding it.
    base = free_port()
    with socket.socket() as other:
        other.bind(("0.0.0.0", base + 1))
        other.listen()
        env = base_env(
            redis_url,
            tmp_path,
            STOREFRONT_WORKER_PROCESSES="2",
            STOREFRONT_WORKER_METRICS_PORT=str(base),
        )
        result = subprocess.run(
            [sys.executable, "-c", RUN_WORKER],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == EXIT_SETTING, result.stdout[-3000:] + result.stderr[-3000:]
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    unavailable = [e for e in events if e["event"] == "metrics_port_unavailable"]
    assert [e["port"] for e in unavailable] == [base + 1]
    assert any(e["event"] == "worker_process_cannot_start" for e in events)
    assert not any(e["event"] == "worker_process_died" for e in events)  # not restarted
    assert "Traceback" not in result.stdout + result.stderr

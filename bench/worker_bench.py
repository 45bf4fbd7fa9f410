"""Worker benchmark: no-op and small-I/O jobs (async and sync actors) through a real Redis, bare
Dramatiq against Storefront's worker (its broker, middleware and actors), with 1 and 2 processes.

Throughput: a backlog is queued before the workers start, and jobs/s is the backlog over the
time from the first job's start to the last one's end (boot time excluded). Latency: jobs are
then sent at a steady rate below capacity and each one's enqueue-to-start (pick-up) and
enqueue-to-done times are kept.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.components import REPO_ROOT, Pinning, RedisInstance, clean_env, random_secret, start_sink
from bench.report import Row, TargetCheck
from bench.stats import BenchError, Target, median, median_ratio, percentile
from bench.worker_main import (
    QUEUE,
    SENT_AT,
    done_key,
    done_latency_key,
    latency_key,
    window_key,
)
from tests.components.process import ManagedProcess

STACKS = ("bare", "storefront")
JOBS = {
    "bench_noop": "no-op job",
    "probe": "small-I/O job, async actor (probe: 3 Redis commands)",
    "probe_sync": "small-I/O job, sync actor (the same 3 commands)",
}
PROCESS_COUNTS = (1, 2)
THREADS = 4  # Storefront's default STOREFRONT_WORKER_THREADS, used by both stacks
NAMESPACE = "dramatiq"
DB = {"bare": 1, "storefront": 2}


@dataclass(frozen=True)
class WorkerPlan:
    backlog: int  # jobs of each kind queued before the workers start
    paced: int  # jobs of each kind sent at a steady rate for pick-up latency
    rate: float  # jobs per second (both kinds together) during the paced phase
    rounds: int


@dataclass(frozen=True)
class Measurement:
    jobs_per_s: float
    pickup_p50_ms: float
    pickup_p99_ms: float
    done_p50_ms: float = math.nan
    done_p99_ms: float = math.nan


@dataclass
class WorkerOutcome:
    plan: WorkerPlan
    # (processes, job) -> stack -> one Measurement per round
    rounds: dict[tuple[int, str], dict[str, list[Measurement]]] = field(default_factory=dict)

    def ratio(self, processes: int, job: str) -> float:
        runs = self.rounds[(processes, job)]
        return median_ratio(
            [m.jobs_per_s for m in runs["storefront"]], [m.jobs_per_s for m in runs["bare"]]
        )


def encode_message(actor: str, kwargs: dict[str, Any], sent_at: float | None) -> tuple[str, bytes]:
    """A message as Dramatiq's Redis broker (and Storefront's API) stores it."""
    import dramatiq

    redis_id = str(uuid.uuid4())
    options: dict[str, Any] = {"redis_message_id": redis_id}
    if sent_at is not None:
        options[SENT_AT] = sent_at
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=QUEUE,
        actor_name=actor,
        args=(),
        kwargs=kwargs,
        options=options,
        message_id=str(uuid.uuid4()),
    )
    return redis_id, message.encode()


def job_kwargs(actor: str) -> dict[str, Any]:
    return {"key": uuid.uuid4().hex} if actor.startswith("probe") else {}


def enqueue(client: redis.Redis, actor: str, count: int, *, stamp: bool) -> None:
    queue = f"{NAMESPACE}:{QUEUE}"
    for start in range(0, count, 500):
        pipe = client.pipeline(transaction=True)
        for _ in range(min(500, count - start)):
            redis_id, body = encode_message(
                actor, job_kwargs(actor), time.time() if stamp else None
            )
            pipe.hset(f"{queue}.msgs", redis_id, body)
            pipe.rpush(queue, redis_id)
        pipe.execute()


def paced_warmup(plan: WorkerPlan) -> int:
    """Jobs of each kind sent, unmeasured, at the head of the paced phase: half a second's worth,
    at least 10."""
    return max(10, math.ceil(plan.rate / 2 / len(JOBS)))


def send_paced(
    client: redis.Redis, actors: list[str], count: int, rate: float, warmup: int = 0
) -> None:
    """``warmup`` then ``count`` jobs of each actor, alternating, at ``rate`` jobs/s in total;
    only the ``count`` are stamped for latency.

    The warm-up is there because the queue was empty a moment before: an idle Dramatiq consumer
    polls Redis with an exponential back-off (up to the worker's 1 s timeout), so the first
    jobs after a lull wait for its next poll, tens of milliseconds or more at random in either
    stack. Measured, that wait, not the stack, made the p99 of a few hundred jobs."""
    queue = f"{NAMESPACE}:{QUEUE}"
    interval = 1.0 / rate
    next_at = time.monotonic()
    for number in range(warmup + count):
        for actor in actors:
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent_at = time.time() if number >= warmup else None
            redis_id, body = encode_message(actor, job_kwargs(actor), sent_at)
            pipe = client.pipeline(transaction=True)
            pipe.hset(f"{queue}.msgs", redis_id, body)
            pipe.rpush(queue, redis_id)
            pipe.execute()
            next_at += interval


def wait_done(
    client: redis.Redis, targets: dict[str, int], workers: list[ManagedProcess], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        counts = {a: int(client.get(done_key(a)) or 0) for a in targets}
        if all(counts[a] >= n for a, n in targets.items()):
            return
        for worker in workers:
            if not worker.running():
                raise worker.error("exited during the benchmark")
        if time.monotonic() > deadline:
            raise BenchError(f"workers finished {counts} of {targets} jobs in {timeout:.0f}s")
        time.sleep(0.05)


def _score(client: redis.Redis, key: str, index: int) -> float:
    """Score of the sorted set's member at ``index`` (0: lowest, -1: highest)."""
    entries: Any = client.zrange(key, index, index, withscores=True)
    if not entries:
        raise BenchError(f"no timing recorded under {key}")
    return float(entries[0][1])


def start_workers(
    stack: str, processes: int, redis_url: str, env: dict[str, str], workdir: Path, tag: str
) -> list[ManagedProcess]:
    workers = []
    for index in range(processes):
        argv = [
            sys.executable, "-m", "bench.worker_main", stack,
            "--redis-url", redis_url, "--threads", str(THREADS),
        ]  # fmt: skip
        workers.append(
            ManagedProcess(
                f"{stack} worker {index}",
                argv,
                workdir / f"worker-{stack}-{tag}-{index}.log",
                env=clean_env(env),
                cwd=REPO_ROOT,
            ).start()
        )
    return workers


def stop_all(workers: list[ManagedProcess]) -> None:
    """Ask every worker to stop at once, then wait for each (each drains its own threads)."""
    for worker in workers:
        if worker.running() and worker.popen is not None:
            worker.popen.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.stop()


def measure(
    stack: str,
    processes: int,
    plan: WorkerPlan,
    redis_server: RedisInstance,
    env: dict[str, str],
    workdir: Path,
    tag: str,
) -> dict[str, Measurement]:
    db = DB[stack]
    client = redis_server.client(db)
    client.flushdb()
    for actor in JOBS:
        enqueue(client, actor, plan.backlog, stamp=False)
    workers = start_workers(stack, processes, redis_server.url(db), env, workdir, tag)
    try:
        wait_done(client, dict.fromkeys(JOBS, plan.backlog), workers, timeout=300)
        throughput = {}
        for actor in JOBS:
            # Each process wrote its own first start and last finish: the run spans both ends.
            first = _score(client, window_key(actor, "first"), 0)
            last = _score(client, window_key(actor, "last"), -1)
            throughput[actor] = plan.backlog / max(last - first, 1e-9)
        for actor in JOBS:
            client.delete(latency_key(actor), done_latency_key(actor))
        warmup = paced_warmup(plan)
        send_paced(client, list(JOBS), plan.paced, plan.rate, warmup)
        total = plan.backlog + warmup + plan.paced
        wait_done(client, dict.fromkeys(JOBS, total), workers, timeout=120)
        results = {}
        for actor in JOBS:
            latencies_ms = [float(v) * 1000 for v in client.lrange(latency_key(actor), 0, -1)]
            done_ms = [float(v) * 1000 for v in client.lrange(done_latency_key(actor), 0, -1)]
            if len(latencies_ms) != plan.paced or len(done_ms) != plan.paced:
                raise BenchError(
                    f"{stack}: {len(latencies_ms)} pick-up and {len(done_ms)} done latencies for "
                    f"{plan.paced} jobs"
                )
            results[actor] = Measurement(
                throughput[actor],
                percentile(latencies_ms, 50),
                percentile(latencies_ms, 99),
                percentile(done_ms, 50),
                percentile(done_ms, 99),
            )
        return results
    finally:
        stop_all(workers)
        client.close()


def run_worker(
    plan: WorkerPlan,
    workdir: Path,
    redis_server: RedisInstance,
    pinning: Pinning,
    progress: Callable[[str], None],
) -> WorkerOutcome:
    outcome = WorkerOutcome(plan)
    with contextlib.ExitStack() as stack:
        sink = start_sink(workdir, pinning)
        stack.callback(sink.process.stop)
        env = {
            "STOREFRONT_ENVIRONMENT": "production",
            "STOREFRONT_JWT_SECRET": random_secret(),
            "STOREFRONT_DATABASE_URL": f"sqlite+aiosqlite:///{(workdir / 'worker.db').resolve()}",
            "STOREFRONT_DATA_DIR": str(workdir),
            "STOREFRONT_LOG_FORMAT": "json",
            # Production exports traces; the default sampling ratio applies to new traces.
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url,
        }
        for number in range(plan.rounds):
            for processes in PROCESS_COUNTS:
                order = STACKS if number % 2 == 0 else tuple(reversed(STACKS))
                for stack_name in order:
                    progress(
                        f"worker: round {number + 1}/{plan.rounds}, {stack_name}, "
                        f"{processes} process(es)"
                    )
                    env_for = {**env, "STOREFRONT_REDIS_URL": redis_server.url(DB[stack_name])}
                    measured = measure(
                        stack_name, processes, plan, redis_server, env_for, workdir,
                        f"{number}-{processes}",
                    )  # fmt: skip
                    for actor, measurement in measured.items():
                        runs = outcome.rounds.setdefault((processes, actor), {})
                        runs.setdefault(stack_name, []).append(measurement)
    return outcome


def summary(runs: list[Measurement]) -> Measurement:
    return Measurement(
        median(m.jobs_per_s for m in runs),
        median(m.pickup_p50_ms for m in runs),
        median(m.pickup_p99_ms for m in runs),
        median(m.done_p50_ms for m in runs),
        median(m.done_p99_ms for m in runs),
    )


def raw(outcome: WorkerOutcome) -> dict[str, Any]:
    return {
        f"{processes}p/{actor}": {
            stack: [m.__dict__ for m in runs] for stack, runs in by_stack.items()
        }
        for (processes, actor), by_stack in outcome.rounds.items()
    }


STACK_LABELS = {"bare": "bare Dramatiq", "storefront": "Storefront worker"}
TARGET = Target("bare", 0.8)
# Goal on the tail of enqueue-to-done latency at the same offered rate: reported, never asserted.
LATENCY_TARGET = Target("bare", 1.5, at_most=True, measure="p99")
LATENCY_RATIO = "bare p99"  # the ratios' key: p99 against bare's, not a throughput ratio


def section(processes: int, actor: str) -> str:
    plural = "process" if processes == 1 else "processes"
    return f"Worker: {JOBS[actor]}, {processes} {plural} x {THREADS} threads"


def latency_section(processes: int, actor: str, rate: float) -> str:
    plural = "process" if processes == 1 else "processes"
    return (
        f"Worker latency, enqueue to done: {JOBS[actor]} at {rate / len(JOBS):g} jobs/s "
        f"(all kinds: {rate:g}/s), {processes} {plural} x {THREADS} threads"
    )


def p99_ratio(runs: dict[str, list[Measurement]]) -> float:
    """Median over rounds of Storefront's enqueue-to-done p99 / bare's in the same round."""
    return median_ratio(
        [m.done_p99_ms for m in runs["storefront"]], [m.done_p99_ms for m in runs["bare"]]
    )


def rows(outcome: WorkerOutcome) -> list[Row]:
    """Per configuration: each stack's median jobs/s and pick-up latency, Storefront's ratio;
    then each stack's enqueue-to-done latency at the paced rate, Storefront's p99 ratio."""
    result = []
    latency_rows = []
    for processes in PROCESS_COUNTS:
        for actor in JOBS:
            runs = outcome.rounds.get((processes, actor))
            if not runs:
                continue
            for stack in STACKS:
                if stack not in runs:
                    continue
                m = summary(runs[stack])
                ratios: dict[str, float] = {}
                checks: tuple[TargetCheck, ...] = ()
                latency_ratios: dict[str, float] = {}
                latency_checks: tuple[TargetCheck, ...] = ()
                if stack == "storefront" and "bare" in runs:
                    ratios = {"bare": outcome.ratio(processes, actor)}
                    checks = (TargetCheck.of(TARGET, ratios["bare"]),)
                    latency_ratios = {LATENCY_RATIO: p99_ratio(runs)}
                    latency_checks = (
                        TargetCheck.of(LATENCY_TARGET, latency_ratios[LATENCY_RATIO]),
                    )
                result.append(
                    Row(
                        section=section(processes, actor),
                        subject=STACK_LABELS[stack],
                        value=m.jobs_per_s,
                        unit="jobs/s",
                        p50_ms=m.pickup_p50_ms,
                        p99_ms=m.pickup_p99_ms,
                        ratios=ratios,
                        targets=checks,
                    )
                )
                latency_rows.append(
                    Row(
                        section=latency_section(processes, actor, outcome.plan.rate),
                        subject=STACK_LABELS[stack],
                        p50_ms=m.done_p50_ms,
                        p99_ms=m.done_p99_ms,
                        ratios=latency_ratios,
                        targets=latency_checks,
                    )
                )
    return result + latency_rows


def not_measured(reason: str, rate: float = math.nan) -> list[Row]:
    sections = [section, lambda p, a: latency_section(p, a, rate)]
    return [
        Row(section=name(p, a), subject=STACK_LABELS[s], note=f"not measured: {reason}")
        for name in sections
        for p in PROCESS_COUNTS
        for a in JOBS
        for s in STACKS
    ]

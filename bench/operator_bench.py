"""Operator benchmark (full mode only): a real etcd + kube-apiserver and the operator as its own
process, as ``storefront operator`` runs in its pod.

Figures: the time from creating a ``Storefront`` to its first reconcile being complete (every
child the operator applies at once exists and ``status.observedGeneration`` is written), over
instances created one after another; the time to reconcile a burst created at once; the
operator's resident memory with that many instances; then, with that many at rest, the API
requests it makes (its own client metrics, Kopf's requests included), the CPU it uses, the
time one autoscaling pass takes, and the time a child deleted by hand takes to come back.
Status write times come from a watch, not from polling, so they are exact to the event. Goals
are printed met or missed, never asserted.

Without kube-controller-manager no Job ever succeeds, so the workloads (Deployments, which wait
for their migration Job, and the API's HPA/PDB) are not among the children checked; the
ConfigMaps, Secret, Services and the migration Job are.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.components import REPO_ROOT, RedisInstance, clean_env
from bench.report import Row, TargetCheck
from bench.stats import BenchError, percentile
from tests.components.ports import free_port
from tests.components.process import ManagedProcess, find_binary

GROUP_PATH = "/apis/storefront.dev/v1alpha1"
SECTION = "Operator (real kube-apiserver)"


@dataclass(frozen=True)
class OperatorPlan:
    sequential: int = 50
    burst: int = 1000
    idle_seconds: float = 60.0
    drift_samples: int = 5


# The operator's goals at rest and for drift (absolute, not ratios to a baseline).
IDLE_REQUESTS_GOAL = 1.0  # API requests per instance per minute
IDLE_CPU_GOAL = 5.0  # % of one core
DRIFT_REPAIR_GOAL = 30.0  # seconds for a child deleted by hand to be back
BURST_GOAL = 120.0  # seconds for every instance created at once to be reconciled
RSS_GOAL = 200.0  # MiB of operator memory with every instance loaded


@dataclass
class OperatorOutcome:
    plan: OperatorPlan
    create_to_status_ms: list[float] = field(default_factory=list)
    burst_seconds: float = float("nan")
    rss_idle_mib: float = float("nan")
    rss_loaded_mib: float = float("nan")
    idle_requests: dict[str, float] = field(default_factory=dict)  # "verb/outcome" -> count
    idle_cpu_seconds: float = float("nan")
    drift_repair_s: list[float] = field(default_factory=list)
    autoscale_pass_s: float = float("nan")  # one autoscaling pass over every instance, at rest

    @property
    def idle_requests_per_instance_minute(self) -> float:
        if self.idle_cpu_seconds != self.idle_cpu_seconds:  # NaN: the window was not measured
            return float("nan")
        total = sum(self.idle_requests.values())
        return total / self.plan.burst / (self.plan.idle_seconds / 60)

    @property
    def idle_cpu_percent(self) -> float:
        return 100 * self.idle_cpu_seconds / self.plan.idle_seconds


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def api_requests(metrics_url: str) -> dict[str, float]:
    """The operator's API requests so far, by "client/verb/outcome", from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[str, float] = {}
    text = httpx.get(metrics_url, timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "storefront_operator_api_requests_total":
                labels = sample.labels
                key = f"{labels['client']}/{labels['verb']}/{labels['outcome']}"
                counts[key] = counts.get(key, 0.0) + sample.value
    return counts


AUTOSCALE_PASSES = "storefront_operator_autoscale_pass_duration_seconds_count"
AUTOSCALE_SECONDS = "storefront_operator_autoscale_pass_duration_seconds_sum"
BACKLOG = "storefront_operator_reconcile_backlog"


def operator_gauge(metrics_url: str, name: str) -> float:
    """The sum of one metric's samples (every label set) on the operator's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(metrics_url, timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def reconciled(obj: dict[str, Any]) -> bool:
    """The operator wrote status for the object's current generation."""
    generation = obj.get("metadata", {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    return generation is not None and observed == generation


class StatusWatcher:
    """Watches every Storefront and notes when each first reaches :func:`reconciled`."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.seen: dict[tuple[str, str], float] = {}
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> StatusWatcher:
        self.thread.start()
        return self

    def _run(self) -> None:
        version = self.client.get(f"{GROUP_PATH}/storefronts").json()["metadata"]["resourceVersion"]
        while True:
            params = {"watch": "true", "resourceVersion": version, "timeoutSeconds": "600"}
            try:
                with self.client.stream(
                    "GET", f"{GROUP_PATH}/storefronts", params=params, timeout=None
                ) as stream:
                    for line in stream.iter_lines():
                        event = orjson.loads(line)
                        obj = event.get("object", {})
                        version = obj.get("metadata", {}).get("resourceVersion", version)
                        if event.get("type") in ("ADDED", "MODIFIED") and reconciled(obj):
                            meta = obj["metadata"]
                            ident = (meta["namespace"], meta["name"])
                            with self.changed:
                                self.seen.setdefault(ident, time.monotonic())
                                self.changed.notify_all()
            except (httpx.HTTPError, RuntimeError):
                return  # the client was closed: the benchmark is over

    def wait(self, idents: list[tuple[str, str]], timeout: float) -> dict[tuple[str, str], float]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not all(i in self.seen for i in idents):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    missing = sum(i not in self.seen for i in idents)
                    raise BenchError(f"{missing} Storefronts not reconciled after {timeout:.0f}s")
                self.changed.wait(remaining)
            return {i: self.seen[i] for i in idents}


def _wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if check():
                return
        time.sleep(0.2)
    raise BenchError(f"timed out waiting for {what}")


def _exists(api: httpx.Client, path: str) -> bool:
    return api.get(path).status_code == 200


def _ok(response: httpx.Response, what: str) -> None:
    if response.status_code not in (200, 201):
        raise BenchError(f"{what}: {response.status_code} {response.text[:300]}")


def prepare_namespace(api: httpx.Client, namespace: str, redis_url: str) -> None:
    _ok(api.post("/api/v1/namespaces", json={"metadata": {"name": namespace}}), "namespace")
    for name, url in (("db", "postgresql://u:p@db.example:5432/shop"), ("cache", redis_url)):
        body = {"metadata": {"name": name}, "stringData": {"url": url}}
        _ok(api.post(f"/api/v1/namespaces/{namespace}/secrets", json=body), f"secret {name}")


SPEC: dict[str, Any] = {
    "database": {"secretRef": {"name": "db", "key": "url"}},
    "redis": {"secretRef": {"name": "cache", "key": "url"}},
}


def create(api: httpx.Client, namespace: str, name: str) -> None:
    body = {
        "apiVersion": "storefront.dev/v1alpha1",
        "kind": "Storefront",
        "metadata": {"name": name},
        "spec": SPEC,
    }
    _ok(api.post(f"{GROUP_PATH}/namespaces/{namespace}/storefronts", json=body), f"create {name}")


# Workloads wait for their migration Job, which only a Job controller can complete; the HPA,
# PDB and ServiceMonitor belong to the API workload.
WAIT_FOR_MIGRATION = frozenset(
    {"Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor"}
)


def verify_children(api: httpx.Client, namespace: str, name: str) -> int:
    """Every child the first reconcile applies exists; returns how many were checked."""
    from storefront_operator.kube import path_for
    from storefront_operator.render import generated_secret_name, render
    from storefront_operator.spec import parse_spec

    paths = [f"/api/v1/namespaces/{namespace}/secrets/{generated_secret_name(name)}"]
    for manifest in render(name, namespace, parse_spec(SPEC)):
        kind, child = manifest["kind"], manifest["metadata"]["name"]
        if kind in WAIT_FOR_MIGRATION:
            continue
        paths.append(path_for(manifest["apiVersion"], kind, namespace, child))
    for path in paths:
        if api.get(path).status_code != 200:
            raise BenchError(f"{path} missing after the status was written")
    return len(paths)


def run_operator(
    plan: OperatorPlan,
    workdir: Path,
    redis_server: RedisInstance,
    progress: Callable[[str], None],
) -> OperatorOutcome:
    for binary in ("etcd", "kube-apiserver"):
        if find_binary(binary) is None:
            raise BenchError(f"{binary} is not built (run `make tools`)")
    from tests.components.kube import start_kube_apiserver

    outcome = OperatorOutcome(plan)
    progress("operator: starting etcd and kube-apiserver")
    cluster = start_kube_apiserver(workdir / "kube")
    operator: ManagedProcess | None = None
    try:
        liveness, metrics_port = free_port(), free_port()
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        argv = [
            sys.executable, "-m", "service.cli", "operator", "--all-namespaces",
            "--metrics-port", str(metrics_port), "--liveness-port", str(liveness),
        ]  # fmt: skip
        operator = ManagedProcess(
            "storefront-operator",
            argv,
            workdir / "operator.log",
            env=clean_env({"KUBECONFIG": str(cluster.kubeconfig)}),
            cwd=REPO_ROOT,
        ).start()
        operator.wait_ready(
            lambda: httpx.get(f"http://127.0.0.1:{liveness}/healthz", timeout=1).is_success,
            timeout=120,
        )
        with cluster.http() as api, cluster.http() as watch_client:
            _wait_for(
                lambda: api.get(f"{GROUP_PATH}/storefronts").status_code == 200,
                60,
                "the Storefront CRD to be served",
            )
            for namespace in ("bench-seq", "bench-burst"):
                prepare_namespace(api, namespace, redis_server.url(3))
            watcher = StatusWatcher(watch_client).start()
            # Live is not ready: the operator may still be retrying a start-up step. One warm-up
            # instance, waited for generously, proves it watches and reconciles.
            progress("operator: waiting for a first reconcile")
            create(api, "bench-seq", "warm-up")
            watcher.wait([("bench-seq", "warm-up")], timeout=240)
            api.delete(f"{GROUP_PATH}/namespaces/bench-seq/storefronts/warm-up")
            time.sleep(2)
            outcome.rss_idle_mib = rss_mib(operator.pid)

            for i in range(plan.sequential):
                progress(f"operator: instance {i + 1}/{plan.sequential}, one at a time")
                name = f"seq-{i:03d}"
                started = time.monotonic()
                create(api, "bench-seq", name)
                done = watcher.wait([("bench-seq", name)], timeout=60)
                outcome.create_to_status_ms.append((done[("bench-seq", name)] - started) * 1000)
            verify_children(api, "bench-seq", f"seq-{plan.sequential - 1:03d}")
            for i in range(plan.sequential):
                api.delete(f"{GROUP_PATH}/namespaces/bench-seq/storefronts/seq-{i:03d}")

            progress(f"operator: {plan.burst} instances at once")
            names = [f"burst-{i:03d}" for i in range(plan.burst)]
            started = time.monotonic()
            for name in names:
                create(api, "bench-burst", name)
            done = watcher.wait([("bench-burst", n) for n in names], timeout=600)
            outcome.burst_seconds = max(done.values()) - started
            for name in (names[0], names[-1]):
                verify_children(api, "bench-burst", name)
            time.sleep(2)
            outcome.rss_loaded_mib = rss_mib(operator.pid)

            # At rest: what the operator asks of the API server with nothing changing. The
            # autoscaling timer keeps reading each instance's queue depth meanwhile.
            # At rest means after the burst's work is done: no reconcile queued or running, and
            # two autoscaling passes begun after the last status (the first queue-depth reads
            # of 200 new instances are work, not idle load).
            progress("operator: waiting for the burst's work to end")
            passes = operator_gauge(metrics_url, AUTOSCALE_PASSES)
            _wait_for(
                lambda: (
                    operator_gauge(metrics_url, AUTOSCALE_PASSES) >= passes + 2
                    and operator_gauge(metrics_url, BACKLOG) == 0
                ),
                300,
                "the operator to come to rest",
            )
            progress(f"operator: {plan.burst} instances at rest for {plan.idle_seconds:.0f}s")
            before, cpu_before = api_requests(metrics_url), cpu_seconds(operator.pid)
            passes_before = (
                operator_gauge(metrics_url, AUTOSCALE_SECONDS),
                operator_gauge(metrics_url, AUTOSCALE_PASSES),
            )
            time.sleep(plan.idle_seconds)
            after, cpu_after = api_requests(metrics_url), cpu_seconds(operator.pid)
            spent = operator_gauge(metrics_url, AUTOSCALE_SECONDS) - passes_before[0]
            passes = operator_gauge(metrics_url, AUTOSCALE_PASSES) - passes_before[1]
            outcome.autoscale_pass_s = spent / passes if passes else float("nan")
            outcome.idle_requests = {
                k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)
            }
            outcome.idle_cpu_seconds = cpu_after - cpu_before

            # Drift: a child deleted by hand, one instance at a time, timed until it is back.
            step = max(1, plan.burst // max(1, plan.drift_samples))
            for i in range(0, plan.burst, step)[: plan.drift_samples]:
                progress(f"operator: drift repair {len(outcome.drift_repair_s) + 1}")
                path = f"/api/v1/namespaces/bench-burst/services/{names[i]}-api"
                _ok(api.delete(path), f"delete {path}")
                deleted = time.monotonic()
                _wait_for(partial(_exists, api, path), 120, f"{path} back")
                outcome.drift_repair_s.append(time.monotonic() - deleted)
            if not operator.running():
                raise operator.error("exited during the benchmark")
    finally:
        if operator is not None:
            operator.stop()
        cluster.stop()
    return outcome


def rows(outcome: OperatorOutcome) -> list[Row]:
    plan = outcome.plan
    latencies = outcome.create_to_status_ms
    idle = outcome.rss_idle_mib
    drift = outcome.drift_repair_s
    return [
        Row(
            section=SECTION,
            subject=f"create -> children + status, {plan.sequential} one at a time",
            p50_ms=percentile(latencies, 50),
            p99_ms=percentile(latencies, 99),
        ),
        Row(
            section=SECTION,
            subject=f"reconcile {plan.burst} created at once",
            value=outcome.burst_seconds,
            unit="s",
            targets=(goal(f"<= {BURST_GOAL:g} s", outcome.burst_seconds, BURST_GOAL),),
        ),
        Row(
            section=SECTION,
            subject=f"operator RSS at {plan.burst} instances (after start-up: {idle:.0f} MiB)",
            value=outcome.rss_loaded_mib,
            unit="MiB",
            targets=(goal(f"<= {RSS_GOAL:g} MiB", outcome.rss_loaded_mib, RSS_GOAL),),
        ),
        Row(
            section=SECTION,
            subject=f"API requests per instance per minute at rest, {plan.burst} instances",
            value=outcome.idle_requests_per_instance_minute,
            unit="req",
            targets=(
                goal(
                    f"<= {IDLE_REQUESTS_GOAL:g}/instance/min",
                    outcome.idle_requests_per_instance_minute,
                    IDLE_REQUESTS_GOAL,
                ),
            ),
        ),
        Row(
            section=SECTION,
            subject=f"operator CPU at rest, {plan.burst} instances (% of a core)",
            value=outcome.idle_cpu_percent,
            unit="%",
            targets=(goal(f"<= {IDLE_CPU_GOAL:g}%", outcome.idle_cpu_percent, IDLE_CPU_GOAL),),
        ),
        Row(
            section=SECTION,
            subject=f"autoscaling pass (queue depths from Redis) over {plan.burst} instances",
            value=outcome.autoscale_pass_s,
            unit="s",
        ),
        Row(
            section=SECTION,
            subject=f"child deleted by hand -> back, {plan.burst} instances",
            p50_ms=percentile([s * 1000 for s in drift], 50) if drift else float("nan"),
            p99_ms=max(drift) * 1000 if drift else float("nan"),
            targets=(
                goal(
                    f"<= {DRIFT_REPAIR_GOAL:g} s",
                    max(drift) if drift else float("nan"),
                    DRIFT_REPAIR_GOAL,
                ),
            ),
        ),
    ]


def goal(description: str, value: float, limit: float) -> TargetCheck:
    """An absolute goal `value <= limit`, met or missed (n/a when not measured)."""
    met = None if value != value else value <= limit
    return TargetCheck(description, value / limit, met)


def not_measured(reason: str, plan: OperatorPlan | None = None) -> list[Row]:
    plan = plan or OperatorPlan()
    subjects = (
        f"create -> children + status, {plan.sequential} one at a time",
        f"reconcile {plan.burst} created at once",
        f"operator RSS at {plan.burst} instances",
        f"API requests per instance per minute at rest, {plan.burst} instances",
        f"operator CPU at rest, {plan.burst} instances",
        f"autoscaling pass (queue depths from Redis) over {plan.burst} instances",
        f"child deleted by hand -> back, {plan.burst} instances",
    )
    return [Row(section=SECTION, subject=s, note=f"not measured: {reason}") for s in subjects]


def raw(outcome: OperatorOutcome) -> dict[str, Any]:
    return {
        "plan": outcome.plan.__dict__,
        "create_to_status_ms": [round(v, 2) for v in outcome.create_to_status_ms],
        "burst_seconds": outcome.burst_seconds,
        "rss_idle_mib": outcome.rss_idle_mib,
        "rss_loaded_mib": outcome.rss_loaded_mib,
        "idle_seconds": outcome.plan.idle_seconds,
        "idle_requests": outcome.idle_requests,
        "idle_requests_per_instance_minute": outcome.idle_requests_per_instance_minute,
        "idle_cpu_percent": outcome.idle_cpu_percent,
        "drift_repair_s": [round(v, 3) for v in outcome.drift_repair_s],
        "autoscale_pass_s": outcome.autoscale_pass_s,
    }

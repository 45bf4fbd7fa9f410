"""``python -m bench [--quick]``: run every benchmark, print one table, write the results.

Results: ``bench/results/latest.json`` (every round, the machine, the plan), ``latest.md`` (the
table) and ``ratios.png`` (the ratios against their baselines, with the targets).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import http_bench, login_bench, operator_bench, order_bench, worker_bench
from bench.components import Pinning, start_redis
from bench.machine import describe
from bench.report import Row, finite, markdown_table, rich_table, write_png

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SCENARIOS = ("http", "orders", "login", "worker", "operator")


@dataclass(frozen=True)
class Plan:
    http: http_bench.HttpPlan
    orders: order_bench.OrderPlan
    login: login_bench.LoginPlan
    worker: worker_bench.WorkerPlan
    operator: operator_bench.OperatorPlan | None  # None: not run in this mode


def build_plan(args: argparse.Namespace) -> Plan:
    """Full mode: ~10 s rounds, five of them; quick mode: ~2 s rounds, two, no operator."""
    if args.quick:
        http = http_bench.HttpPlan(duration_s=2, warmup_s=1, rounds=2)
        orders = order_bench.OrderPlan(duration_s=2, warmup_s=2, rounds=2)
        login = login_bench.LoginPlan(duration_s=2, rounds=2)
        worker = worker_bench.WorkerPlan(backlog=300, paced=50, rate=150, rounds=1)
        operator = None
    else:
        http = http_bench.HttpPlan(duration_s=10, warmup_s=3, rounds=5)
        orders = order_bench.OrderPlan(duration_s=10, warmup_s=3, rounds=5)
        login = login_bench.LoginPlan(duration_s=5, rounds=5)
        worker = worker_bench.WorkerPlan(backlog=3000, paced=300, rate=150, rounds=3)
        operator = operator_bench.OperatorPlan(sequential=50, burst=args.operator_instances)
    http = http_bench.HttpPlan(
        duration_s=args.duration or http.duration_s,
        warmup_s=args.warmup if args.warmup is not None else http.warmup_s,
        rounds=args.rounds or http.rounds,
        connections=args.connections,
    )
    orders = order_bench.OrderPlan(
        # An order takes hundreds of milliseconds under load: a round shorter than this may
        # finish none, and a round that finished none measures nothing.
        duration_s=max(args.duration or orders.duration_s, order_bench.MIN_ROUND_SECONDS),
        warmup_s=args.warmup if args.warmup is not None else orders.warmup_s,
        rounds=args.rounds or orders.rounds,
        connections=args.connections,
    )
    worker = worker_bench.WorkerPlan(
        backlog=args.worker_jobs or worker.backlog,
        paced=max(10, args.worker_jobs // 10) if args.worker_jobs else worker.paced,
        rate=worker.rate,
        rounds=args.rounds or worker.rounds,
    )
    login = login_bench.LoginPlan(
        duration_s=args.duration or login.duration_s, rounds=args.rounds or login.rounds
    )
    return Plan(http, orders, login, worker, operator)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short rounds; no operator run")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument(
        "--duration", type=int, help="seconds per HTTP and order round (and login phase)"
    )
    parser.add_argument("--warmup", type=int, help="seconds of HTTP warm-up per server")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (HTTP, login, worker)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--worker-jobs", type=int, help="backlog of each job kind per run")
    parser.add_argument(
        "--operator-instances",
        type=int,
        default=operator_bench.OperatorPlan.burst,
        help="Storefronts created at once (and kept at rest) in the operator run",
    )
    parser.add_argument("--output", type=Path, default=RESULTS_DIR, help="results directory")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = build_plan(args)
    only = set(args.only.split(","))
    console = Console(stderr=True)
    started = time.time()
    machine = describe()
    pinning = Pinning.detect()
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    errors: dict[str, str] = {}
    seconds: dict[str, float] = {}

    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="storefront-bench-")))
        status = stack.enter_context(console.status("starting"))

        def progress(message: str) -> None:
            status.update(message)

        redis_server = start_redis(workdir, pinning)
        stack.callback(redis_server.process.stop)

        def attempt(
            name: str,
            run: Callable[[Path], Any],
            render: Callable[[Any], list[Row]],
            dump: Callable[[Any], Any],
            missing: Callable[[str], list[Row]],
        ) -> None:
            if name not in only:
                return
            scenario_dir = workdir / name
            scenario_dir.mkdir()
            begun = time.monotonic()
            try:
                outcome = run(scenario_dir)
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
                console.print(f"[red]{name} benchmark failed:[/]\n{traceback.format_exc()}")
                rows.extend(missing(str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
                return
            finally:
                seconds[name] = round(time.monotonic() - begun, 1)
            rows.extend(render(outcome))
            raw[name] = dump(outcome)

        attempt(
            "http",
            lambda d: http_bench.run_http(plan.http, d, redis_server, pinning, progress),
            http_bench.rows,
            http_bench.raw,
            http_bench.not_measured,
        )
        attempt(
            "orders",
            lambda d: order_bench.run_orders(plan.orders, d, redis_server, pinning, progress),
            order_bench.rows,
            order_bench.raw,
            order_bench.not_measured,
        )
        attempt(
            "login",
            lambda d: login_bench.run_login(plan.login, d, redis_server, pinning, progress),
            login_bench.rows,
            login_bench.raw,
            login_bench.not_measured,
        )
        attempt(
            "worker",
            lambda d: worker_bench.run_worker(plan.worker, d, redis_server, pinning, progress),
            worker_bench.rows,
            worker_bench.raw,
            lambda reason: worker_bench.not_measured(reason, plan.worker.rate),
        )
        if plan.operator is None:
            if "operator" in only:
                rows.extend(operator_bench.not_measured("full mode only (run without --quick)"))
        else:
            operator_plan = plan.operator
            attempt(
                "operator",
                lambda d: operator_bench.run_operator(operator_plan, d, redis_server, progress),
                operator_bench.rows,
                operator_bench.raw,
                lambda reason: operator_bench.not_measured(reason, operator_plan),
            )

    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    mode = "quick" if args.quick else "full"
    title = f"Storefront benchmarks ({mode}) - {machine['cpu_model']}, {machine['cpu_count']} CPUs"
    out = Console()
    if not out.is_terminal:
        out = Console(width=180)  # a log file or CI: keep each row on one line
    out.print(rich_table(rows, title))
    document = {
        "schema": 1,
        "mode": mode,
        "started_at": datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat(),
        "duration_seconds": round(time.time() - started, 1),
        "scenario_seconds": seconds,
        "machine": machine,
        "pinning": pinning.describe(),
        "plan": {
            "http": plan.http.__dict__,
            "orders": plan.orders.__dict__,
            "login": plan.login.__dict__,
            "worker": plan.worker.__dict__,
            "operator": plan.operator.__dict__ if plan.operator else None,
        },
        "rows": [row.as_dict() for row in rows],
        "raw": raw,
        "errors": errors,
    }
    write_results(args.output, document, rows, title)
    console.print(f"Results in {args.output}/ (latest.json, latest.md, ratios.png)")
    return 1 if errors else 0


def write_results(directory: Path, document: dict[str, Any], rows: list[Row], title: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "latest.json").write_text(
        json.dumps(finite(document), indent=2, allow_nan=False) + "\n"
    )
    machine = document["machine"]
    header = (
        f"# {title}\n\n"
        f"{document['started_at']}, {machine['cpu_count']} CPUs, Python {machine['python']}, "
        f"{document['pinning']}; load average {machine['load_average_at_start']} at start.\n"
        "Ratios are medians of per-round ratios against the baseline run in the same round. "
        "bare-gc is bare FastAPI with Storefront's garbage-collector settings (freeze the "
        "start-up heap, young threshold 10,000); bare and article keep Python's.\n\n"
    )
    (directory / "latest.md").write_text(header + markdown_table(rows))
    write_png(rows, directory / "ratios.png", title)


if __name__ == "__main__":
    sys.exit(main())

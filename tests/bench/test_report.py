"""Rendering a run: rows from outcomes, the Markdown table, the chart's bars, JSON safety."""

from __future__ import annotations

import json
import math
from pathlib import Path

from PIL import Image

from bench import http_bench, login_bench, operator_bench, worker_bench
from bench.report import Row, TargetCheck, chart_bars, finite, markdown_table, write_png
from bench.stats import Target, WrkResult, summarize


def wrk(rps: float) -> WrkResult:
    return WrkResult(int(rps), 1.0, 2.0, 4.0, 8.0, 0, 0)


def http_outcome() -> http_bench.HttpOutcome:
    outcome = http_bench.HttpOutcome(http_bench.HttpPlan(1, 1, 1))
    rps = {
        "bare": 1000,
        "bare-gc": 1200,
        "article": 150,
        "storefront-local": 900,
        "storefront": 850,
        "storefront-100": 500,
    }
    for endpoint in http_bench.ENDPOINTS:
        outcome.rounds[endpoint.key] = {k: [wrk(v)] for k, v in rps.items()}
        outcome.summaries[endpoint.key] = summarize(
            outcome.rounds[endpoint.key], http_bench.BASELINES
        )
    return outcome


def test_http_rows_cover_every_endpoint_and_variant_with_their_targets() -> None:
    rows = http_bench.rows(http_outcome())
    assert len(rows) == len(http_bench.ENDPOINTS) * len(http_bench.VARIANTS)
    default = next(r for r in rows if r.subject == "Storefront, sampling 10 %")
    assert [(t.description, t.met) for t in default.targets] == [
        (">= 0.8x bare", True),
        (">= 0.8x bare-gc", False),
        (">= 5x article", True),
    ]
    assert default.ratios["bare-gc"] == 850 / 1200
    full = next(r for r in rows if r.subject == "Storefront, sampling 100 %")
    assert [(t.description, t.met) for t in full.targets] == [
        (">= 0.6x bare", False),
        (">= 0.6x bare-gc", False),
    ]


def test_worker_rows_give_storefront_its_ratio_to_bare_dramatiq() -> None:
    outcome = worker_bench.WorkerOutcome(worker_bench.WorkerPlan(10, 10, 10, 1))
    for processes in worker_bench.PROCESS_COUNTS:
        for actor in worker_bench.JOBS:
            outcome.rounds[(processes, actor)] = {
                "bare": [worker_bench.Measurement(1000, 2, 9, 4, 10)],
                "storefront": [worker_bench.Measurement(900, 3, 12, 5, 16)],
            }
    rows = worker_bench.rows(outcome)
    configurations = len(worker_bench.PROCESS_COUNTS) * len(worker_bench.JOBS)
    throughput, latency = rows[: 2 * configurations], rows[2 * configurations :]
    assert len(latency) == 2 * configurations
    storefront = [r for r in throughput if r.subject == "Storefront worker"]
    assert all(r.ratios == {"bare": 0.9} for r in storefront)
    assert all(r.targets[0].met for r in storefront)


def test_worker_latency_rows_judge_storefronts_p99_against_bare_dramatiqs() -> None:
    outcome = worker_bench.WorkerOutcome(worker_bench.WorkerPlan(10, 10, 150, 2))
    outcome.rounds[(1, "probe")] = {
        "bare": [
            worker_bench.Measurement(1000, 2, 9, 4, 10),
            worker_bench.Measurement(1000, 2, 9, 4, 20),
        ],
        "storefront": [
            worker_bench.Measurement(900, 3, 12, 5, 14),
            worker_bench.Measurement(900, 3, 12, 5, 40),
        ],
    }
    latency = [r for r in worker_bench.rows(outcome) if r.section.startswith("Worker latency")]
    assert [(r.subject, r.value, r.p50_ms, r.p99_ms) for r in latency] == [
        ("bare Dramatiq", None, 4, 15),
        ("Storefront worker", None, 5, 27),
    ]
    # Round by round: 14 / 10 and 40 / 20; the median is 1.7, over the 1.5x goal.
    assert latency[1].ratios == {"bare p99": 1.7}
    assert [(t.description, t.met) for t in latency[1].targets] == [("p99 <= 1.5x bare", False)]
    assert "50 jobs/s (all kinds: 150/s)" in latency[0].section


def test_login_rows_give_the_burst_its_p99_ratio_to_the_server_at_rest() -> None:
    outcome = login_bench.LoginOutcome(login_bench.LoginPlan(1, 2))
    idle = [login_bench.Probes((1.0, 1.0, 2.0), 1.0), login_bench.Probes((1.0, 4.0), 1.0)]
    burst = [login_bench.Probes((1.0, 3.0), 1.0), login_bench.Probes((2.0, 20.0), 1.0)]
    outcome.idle, outcome.burst = idle, burst
    outcome.logins = [wrk(8), wrk(12)]
    at_rest, during = login_bench.rows(outcome)
    assert (at_rest.value, at_rest.unit, at_rest.p99_ms) == (2.5, "probes/s", 3.0)
    assert (during.value, during.unit, during.p99_ms) == (10, "logins/s", 11.5)
    # Round by round: 3 / 2 and 20 / 4.
    assert during.ratios == {"idle": 3.25}
    assert [(t.description, t.met) for t in during.targets] == [("p99 <= 2x idle", False)]
    assert "| 3.25x idle; p99 <= 2x idle MISSED |" in markdown_table([at_rest, during])


def test_not_measured_rows_keep_the_table_complete() -> None:
    rows = operator_bench.not_measured("no kube-apiserver")
    assert len(rows) == 7
    assert all(r.note == "not measured: no kube-apiserver" for r in rows)
    assert "not measured" in markdown_table(rows)


def test_operator_goals_are_met_or_missed() -> None:
    outcome = operator_bench.OperatorOutcome(operator_bench.OperatorPlan(burst=200))
    outcome.idle_requests = {"kopf/watch/success": 60.0, "operator/get/success": 40.0}
    outcome.idle_cpu_seconds = 1.2
    outcome.drift_repair_s = [1.0, 2.0, 40.0]
    idle, cpu, _autoscale, drift = operator_bench.rows(outcome)[3:]
    assert idle.value == 0.5  # 100 requests, 200 instances, one minute
    assert [(t.description, t.met) for t in idle.targets] == [("<= 1/instance/min", True)]
    assert cpu.value == 2.0 and cpu.targets[0].met is True
    assert drift.targets[0].met is False  # the slowest repair counts
    assert "MISSED" in markdown_table([drift])


def test_markdown_table_has_one_line_per_row() -> None:
    rows = http_bench.rows(http_outcome())
    table = markdown_table(rows)
    assert table.count("\n") == len(rows) + 2
    assert "| 850 req/s |" in table


def test_json_has_no_nan() -> None:
    row = Row("s", "x", value=math.nan, ratios={"bare": math.nan})
    assert json.loads(json.dumps(row.as_dict(), allow_nan=False))["value"] is None
    assert finite({"a": [math.inf, 1.0]}) == {"a": [None, 1.0]}


def test_chart_draws_one_bar_per_ratio_with_its_target(tmp_path: Path) -> None:
    rows = [
        *http_bench.rows(http_outcome()),
        Row("op", "rss", value=90, unit="MiB"),
        Row(
            "w",
            "sf",
            value=1,
            ratios={"bare": 0.5},
            targets=(TargetCheck.of(Target("bare", 0.8), 0.5),),
        ),
    ]
    bars = chart_bars(rows)
    # bare-gc, article and three Storefronts per endpoint, the worker row
    assert len(bars) == 2 * 5 + 1
    assert bars[-1][1:] == (0.5, 0.8, False)
    png = tmp_path / "ratios.png"
    write_png(rows, png, "test")
    with Image.open(png) as image:
        assert image.format == "PNG"

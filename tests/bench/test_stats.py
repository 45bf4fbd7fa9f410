"""The benchmark's arithmetic: wrk output, paired ratios, medians, round order, targets."""

from __future__ import annotations

import math

import pytest

from bench.stats import (
    BenchError,
    Target,
    WrkResult,
    check_clean,
    median_ratio,
    paired_ratios,
    parse_wrk_output,
    percentile,
    round_orders,
    summarize,
)

WRK_STDOUT = (
    "Running 2s test @ http://127.0.0.1:1234/api/v1/products/1\n"
    "  1 threads and 32 connections\n"
    'BENCH_JSON {"requests":2000,"duration_us":2000000,"bytes":100,"connect_errors":0,'
    '"read_errors":1,"write_errors":0,"status_errors":0,"timeouts":2,'
    '"p50_us":1500,"p90_us":3000,"p99_us":9000,"max_us":12000}\n'
)


def result(rps: float, p99: float = 10.0, non_2xx: int = 0, errors: int = 0) -> WrkResult:
    return WrkResult(int(rps), 1.0, 1.0, 5.0, p99, errors, non_2xx)


def test_parses_the_json_line_of_the_wrk_reporter() -> None:
    parsed = parse_wrk_output(WRK_STDOUT)
    assert parsed.rps == 1000
    assert (parsed.p50_ms, parsed.p90_ms, parsed.p99_ms) == (1.5, 3.0, 9.0)
    assert parsed.errors == 3
    assert parsed.non_2xx == 0


def test_output_without_a_result_line_is_an_error() -> None:
    with pytest.raises(BenchError, match="no result line"):
        parse_wrk_output("unable to connect to 127.0.0.1:1 Connection refused")


def test_runs_with_failed_responses_are_refused() -> None:
    check_clean(result(1000, errors=3), "ok")
    with pytest.raises(BenchError, match="not 2xx"):
        check_clean(result(1000, non_2xx=1), "404s")
    with pytest.raises(BenchError, match="socket errors"):
        check_clean(result(1000, errors=50), "resets")
    with pytest.raises(BenchError, match="no request"):
        check_clean(result(0), "dead")


def test_ratios_pair_each_round_with_the_same_round_of_the_baseline() -> None:
    # A slow second round hits both variants alike: the paired ratio stays 0.5.
    assert paired_ratios([50, 10, 40], [100, 20, 80]) == [0.5, 0.5, 0.5]
    assert median_ratio([50, 30, 40], [100, 20, 80]) == 0.5
    with pytest.raises(ValueError, match="same number of rounds"):
        paired_ratios([1, 2], [1])


def test_rounds_rotate_so_no_variant_always_runs_first() -> None:
    orders = round_orders(["a", "b", "c"], 4)
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    assert {order[0] for order in orders[:3]} == {"a", "b", "c"}


def test_summaries_give_medians_and_ratios_to_every_other_baseline() -> None:
    rounds = {
        "bare": [result(1000), result(800), result(900)],
        "article": [result(200), result(100), result(150)],
        "storefront": [result(900, p99=20), result(720, p99=30), result(810, p99=25)],
    }
    summaries = summarize(rounds, ["bare", "article"])
    assert summaries["storefront"].rps == 810
    assert summaries["storefront"].p99_ms == 25
    assert summaries["storefront"].ratios["bare"] == pytest.approx(0.9)
    assert summaries["storefront"].ratios["article"] == pytest.approx(5.4)
    assert "bare" not in summaries["bare"].ratios


def test_targets_are_judged_not_asserted() -> None:
    target = Target("bare", 0.8)
    assert target.met(0.81) is True
    assert target.met(0.79) is False
    assert target.met(math.nan) is None
    assert target.describe() == ">= 0.8x bare"


def test_a_latency_target_is_a_ceiling() -> None:
    target = Target("idle", 2.0, at_most=True, measure="p99")
    assert target.met(1.9) is True
    assert target.met(2.1) is False
    assert target.met(math.nan) is None
    assert target.describe() == "p99 <= 2x idle"


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([7.0], 99) == 7
    assert math.isnan(percentile([], 50))

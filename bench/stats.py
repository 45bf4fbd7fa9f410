"""Pure benchmark arithmetic: parse a wrk run, pair interleaved rounds into ratios, take medians,
judge targets. No I/O here, so every decision the report makes is unit-tested without servers."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

WRK_MARKER = "BENCH_JSON "


class BenchError(RuntimeError):
    """A benchmark could not produce a trustworthy figure (the message says why)."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: throughput, latency percentiles (milliseconds) and error counts."""

    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    non_2xx: int

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "rps": round(self.rps, 1)}


def parse_wrk_output(stdout: str) -> WrkResult:
    """Read the JSON line our wrk ``done()`` hook prints (see bench/wrk_report.lua)."""
    for line in stdout.splitlines():
        if line.startswith(WRK_MARKER):
            raw = json.loads(line[len(WRK_MARKER) :])
            return WrkResult(
                requests=int(raw["requests"]),
                duration_s=raw["duration_us"] / 1e6,
                p50_ms=raw["p50_us"] / 1000,
                p90_ms=raw["p90_us"] / 1000,
                p99_ms=raw["p99_us"] / 1000,
                errors=int(
                    raw["connect_errors"]
                    + raw["read_errors"]
                    + raw["write_errors"]
                    + raw["timeouts"]
                ),
                non_2xx=int(raw["status_errors"]),
            )
    raise BenchError(f"wrk printed no result line; its output was:\n{stdout[-2000:]}")


def check_clean(result: WrkResult, label: str) -> None:
    """A run with failed or non-2xx responses measures the wrong thing: refuse it."""
    if result.requests == 0:
        raise BenchError(f"{label}: wrk completed no request")
    if result.non_2xx:
        raise BenchError(f"{label}: {result.non_2xx} of {result.requests} responses were not 2xx")
    # A handful of socket errors at the very end of a run (connections cut by the deadline) are
    # normal for wrk; more than 1 % means the server was failing.
    if result.errors > max(5, result.requests // 100):
        raise BenchError(f"{label}: {result.errors} socket errors in {result.requests} requests")


def median(values: Iterable[float]) -> float:
    data = [v for v in values if not math.isnan(v)]
    return statistics.median(data) if data else math.nan


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Round-by-round ratios: round i of one variant against round i of its baseline, which ran
    moments apart on the same machine, so slow phases of a noisy host cancel out."""
    if len(numerators) != len(denominators):
        raise ValueError("each variant must have run the same number of rounds")
    return [n / d if d else math.nan for n, d in zip(numerators, denominators, strict=True)]


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    return median(paired_ratios(numerators, denominators))


def round_orders(variants: Sequence[str], rounds: int) -> list[list[str]]:
    """The order variants run in, round by round: rotated each round so no variant always runs
    first (after an idle pause) or last (after the others warmed the shared caches)."""
    n = len(variants)
    return [[variants[(r + i) % n] for i in range(n)] for r in range(rounds)]


@dataclass(frozen=True)
class Target:
    """A goal on a ratio, reported as met or missed, never asserted: ``ratio >= minimum`` (a
    throughput against its baseline's) or, with ``at_most``, ``ratio <= limit`` (a latency)."""

    baseline: str
    limit: float
    at_most: bool = False
    measure: str = ""  # what the ratio compares, when it is not throughput: "p99"

    def met(self, ratio: float) -> bool | None:
        if math.isnan(ratio):
            return None
        return ratio <= self.limit if self.at_most else ratio >= self.limit

    def describe(self) -> str:
        sign = "<=" if self.at_most else ">="
        return f"{self.measure} {sign} {self.limit:g}x {self.baseline}".strip()


@dataclass(frozen=True)
class VariantSummary:
    """Medians over the rounds of one variant of one scenario."""

    rps: float
    p50_ms: float
    p99_ms: float
    ratios: dict[str, float]  # baseline variant -> median paired throughput ratio


def summarize(
    rounds: Mapping[str, Sequence[WrkResult]], baselines: Sequence[str]
) -> dict[str, VariantSummary]:
    """Per-variant medians and median throughput ratios against each baseline variant."""
    summaries: dict[str, VariantSummary] = {}
    for variant, results in rounds.items():
        rps = [r.rps for r in results]
        ratios = {
            base: median_ratio(rps, [r.rps for r in rounds[base]])
            for base in baselines
            if base != variant and base in rounds
        }
        summaries[variant] = VariantSummary(
            rps=median(rps),
            p50_ms=median(r.p50_ms for r in results),
            p99_ms=median(r.p99_ms for r in results),
            ratios=ratios,
        )
    return summaries


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]

"""Smoke test of ``python -m bench --quick``: a very short run against the real servers must
produce every row and valid JSON. It asserts no timing: benchmarks are not tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import http_bench, login_bench, operator_bench, order_bench, worker_bench

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def test_quick_run_writes_every_row_and_valid_json(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable, "-m", "bench", "--quick",
            "--duration", "1", "--warmup", "1", "--rounds", "1", "--worker-jobs", "50",
            "--output", str(tmp_path),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

    document = json.loads((tmp_path / "latest.json").read_text())
    assert document["mode"] == "quick"
    assert document["errors"] == {}
    assert {"cpu_model", "cpu_count", "python"} <= document["machine"].keys()

    rows = document["rows"]
    measured = [(r["section"], r["subject"]) for r in rows if not r["note"]]
    expected_http = [(e.title, v.label) for e in http_bench.ENDPOINTS for v in http_bench.VARIANTS]
    assert [m for m in measured if m in expected_http] == expected_http
    order_rows = [r for r in rows if r["section"] == order_bench.SECTION]
    assert [r["subject"] for r in order_rows if not r["note"]] == [
        v.label for v in order_bench.VARIANTS
    ]
    assert order_rows[2]["targets"] and "storefront" in order_rows[3]["ratios"]
    login_rows = [r for r in rows if r["section"] == login_bench.SECTION]
    assert [r["subject"] for r in login_rows if not r["note"]] == list(
        login_bench.SUBJECTS.values()
    )
    assert login_rows[1]["ratios"]["idle"] > 0 and login_rows[1]["targets"]
    worker_rows = [r for r in rows if r["section"].startswith("Worker:")]
    assert len(worker_rows) == len(worker_bench.PROCESS_COUNTS) * len(worker_bench.JOBS) * 2
    assert all(r["value"] and r["value"] > 0 for r in worker_rows)
    latency_rows = [r for r in rows if r["section"].startswith("Worker latency")]
    assert len(latency_rows) == len(worker_rows)
    assert all(r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"] for r in latency_rows)
    assert all(r["targets"] for r in latency_rows if r["subject"] == "Storefront worker")
    operator_rows = [r for r in rows if r["section"].startswith("Operator")]
    assert [r["subject"] for r in operator_rows] == [
        r.subject for r in operator_bench.not_measured("")
    ]
    assert {r["note"] for r in operator_rows} == {
        "not measured: full mode only (run without --quick)"
    }
    for row in rows:
        if not row["note"] and row not in latency_rows:
            assert row["value"] > 0 and row["p99_ms"] > 0, row

    assert (tmp_path / "latest.md").read_text().count("\n| ") == len(rows) + 1
    assert (tmp_path / "ratios.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Storefront benchmarks (quick)" in done.stdout

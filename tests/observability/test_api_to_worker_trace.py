"""One trace from HTTP request to finished job, in the real Jaeger: the API's span, its PRODUCER
span and the worker's CONSUMER span share a trace, and both processes log the same IDs."""

from __future__ import annotations

import subprocess
import time
import uuid
from typing import Any

import httpx
import orjson
import pytest

from tests.components.jaeger import JaegerServer
from tests.components.process import REPO_ROOT
from tests.components.storefront import STOREFRONT
from tests.observability.conftest import StorefrontFactory

pytestmark = [pytest.mark.jaeger, pytest.mark.redis, pytest.mark.slow]


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)
    return value


def test_a_report_job_continues_the_request_trace(
    storefront_factory: StorefrontFactory, jaeger_server: JaegerServer, tmp_path: Any
) -> None:
    api = storefront_factory()
    worker_service = f"{api.service_name}-worker"
    worker_log = tmp_path / "worker.log"
    env = {
        **api.env,
        "OTEL_SERVICE_NAME": worker_service,
        "STOREFRONT_WORKER_METRICS_PORT": "0",
        "STOREFRONT_WORKER_PROCESSES": "1",
    }
    with worker_log.open("wb") as out:
        worker = subprocess.Popen(
            [STOREFRONT, "worker"], env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait(lambda: "worker_started" in worker_log.read_text(errors="replace"), 90, "worker")
        request_id = f"job-{uuid.uuid4().hex}"
        headers = {"Authorization": f"Bearer {api.admin_token()}"}
        with api.client() as client:
            accepted = client.post(
                "/api/v1/reports",
                json={"start_date": "2026-01-01", "end_date": "2026-02-01"},
                headers={**headers, "X-Request-ID": request_id},
            )
            assert accepted.status_code == 202, accepted.text
            job_id = accepted.json()["job_id"]

            def finished() -> bool:
                status = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()["status"]
                assert status != "failed"
                return status == "succeeded"

            _wait(finished, 90, "the report job")
    finally:
        worker.terminate()
        worker.wait(timeout=60)

    def whole_trace() -> dict[str, Any] | None:
        found = jaeger_server.find_traces(api.service_name, tags={"request.id": request_id})
        if not found:
            return None
        services = {p["serviceName"] for p in found[0]["processes"].values()}
        return found[0] if worker_service in services else None

    trace = _wait(
        whole_trace,
        60,
        f"the worker's spans in the request's trace (services: {jaeger_server.services()})",
    )
    spans = {span["spanID"]: span for span in trace["spans"]}
    service_of = {pid: p["serviceName"] for pid, p in trace["processes"].items()}

    def kind(span: dict[str, Any]) -> str:
        return next((t["value"] for t in span["tags"] if t["key"] == "span.kind"), "")

    consumer = next(
        s
        for s in spans.values()
        if service_of[s["processID"]] == worker_service and kind(s) == "consumer"
    )
    parent_id = next(r["spanID"] for r in consumer["references"] if r["refType"] == "CHILD_OF")
    producer = spans[parent_id]
    assert kind(producer) == "producer"
    assert service_of[producer["processID"]] == api.service_name
    assert "generate_sales_report" in producer["operationName"]

    # Both processes' log lines carry the request's ID and the same trace ID.
    trace_id = trace["traceID"].rjust(32, "0")
    worker_lines = [
        record
        for line in worker_log.read_text().splitlines()
        if line.startswith("{") and (record := orjson.loads(line)).get("request_id") == request_id
    ]
    assert worker_lines and {r.get("trace_id") for r in worker_lines} == {trace_id}
    assert {r.get("actor") for r in worker_lines} == {"generate_sales_report"}
    assert {r.get("trace_id") for r in api.records_of(request_id)} == {trace_id}


def test_the_worker_exposes_its_job_metrics(
    storefront_factory: StorefrontFactory, tmp_path: Any
) -> None:
    """Scraped over HTTP as Prometheus would: the job counters move after a job runs."""
    from tests.components.ports import free_port

    api = storefront_factory()
    port = free_port()
    env = {
        **api.env,
        "STOREFRONT_WORKER_METRICS_PORT": str(port),
        "STOREFRONT_WORKER_PROCESSES": "1",
    }
    worker_log = tmp_path / "worker.log"
    with worker_log.open("wb") as out:
        worker = subprocess.Popen(
            [STOREFRONT, "worker"], env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait(lambda: "worker_started" in worker_log.read_text(errors="replace"), 90, "worker")
        headers = {"Authorization": f"Bearer {api.admin_token()}"}
        with api.client() as client:
            job_id = client.post(
                "/api/v1/reports",
                json={"start_date": "2026-01-01", "end_date": "2026-02-01"},
                headers=headers,
            ).json()["job_id"]
            _wait(
                lambda: (
                    client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()["status"]
                    == "succeeded"
                ),
                90,
                "the report job",
            )

        def succeeded_count() -> float:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            for line in text.splitlines():
                if (
                    line.startswith("storefront_jobs_total{")
                    and 'actor="generate_sales_report"' in line
                    and 'outcome="succeeded"' in line
                ):
                    return float(line.rsplit(" ", 1)[1])
            return 0.0

        assert _wait(succeeded_count, 30, "storefront_jobs_total to move") >= 1
    finally:
        worker.terminate()
        worker.wait(timeout=60)

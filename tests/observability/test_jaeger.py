"""A real Jaeger receives the real service's spans: a request is found by its X-Request-ID, its
span tree holds the server, SQL and Redis spans, ``storefront trace`` prints it, an incoming
traceparent is joined, and the service's stdout ties the same IDs together."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.components.jaeger import JaegerServer
from tests.components.storefront import STOREFRONT, StorefrontProcess
from tests.observability.conftest import StorefrontFactory

pytestmark = [pytest.mark.jaeger, pytest.mark.redis, pytest.mark.slow]

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


@pytest.fixture(scope="module")
def service(storefront_factory: StorefrontFactory) -> StorefrontProcess:
    return storefront_factory()


@pytest.fixture(scope="module")
def product_id(service: StorefrontProcess) -> int:
    token = service.admin_token()
    with service.client() as client:
        response = client.post(
            "/api/v1/products",
            json={"name": "Kettle", "sku": f"K-{uuid.uuid4().hex[:6]}", "price": 30, "stock": 5},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


@pytest.fixture(scope="module")
def traced_request(
    service: StorefrontProcess, product_id: int, jaeger_server: JaegerServer
) -> tuple[str, dict[str, Any]]:
    """One product read (a cache miss: Redis GET, SQL SELECT, Redis SET) with a known ID, and
    the trace Jaeger holds for it."""
    request_id = f"obs-{uuid.uuid4().hex}"
    with service.client() as client:
        response = client.get(
            f"/api/v1/products/{product_id}", headers={"X-Request-ID": request_id}
        )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == request_id
    assert response.headers["x-cache"] == "MISS"
    traces = jaeger_server.wait_for_traces(service.service_name, tags={"request.id": request_id})
    assert len(traces) == 1
    return request_id, traces[0]


def _tags(span: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span.get("tags", [])}


def _parent(span: dict[str, Any]) -> str | None:
    refs = [r for r in span.get("references", []) if r["refType"] == "CHILD_OF"]
    return refs[0]["spanID"] if refs else None


def test_the_trace_is_found_by_request_id_with_a_server_span(
    traced_request: tuple[str, dict[str, Any]],
) -> None:
    request_id, trace = traced_request
    servers = [s for s in trace["spans"] if _tags(s).get("span.kind") == "server"]
    assert len(servers) == 1
    server = servers[0]
    tags = _tags(server)
    assert server["operationName"] == "GET /api/v1/products/{product_id}"
    assert tags["request.id"] == request_id
    assert tags["http.request.method"] == "GET"
    assert tags["http.route"] == "/api/v1/products/{product_id}"
    assert tags["http.response.status_code"] == 200
    assert tags["url.path"].startswith("/api/v1/products/")
    assert _parent(server) is None


def test_the_span_tree_holds_sql_and_redis_spans_under_the_server_span(
    traced_request: tuple[str, dict[str, Any]],
) -> None:
    _, trace = traced_request
    spans = {s["spanID"]: s for s in trace["spans"]}
    server_id = next(sid for sid, s in spans.items() if _tags(s).get("span.kind") == "server")

    def under_server(span: dict[str, Any]) -> bool:
        parent = _parent(span)
        while parent is not None:
            if parent == server_id:
                return True
            parent = _parent(spans[parent]) if parent in spans else None
        return False

    by_system: dict[str, list[str]] = {}
    for span in spans.values():
        system = _tags(span).get("db.system") or _tags(span).get("db.system.name")
        if system:
            assert under_server(span), span["operationName"]
            by_system.setdefault(str(system), []).append(span["operationName"])
    assert any("SELECT" in name for name in by_system.get("sqlite", [])), by_system
    assert sorted(by_system.get("redis", [])) == ["GET", "SET"], by_system
    process = trace["processes"][trace["spans"][0]["processID"]]
    resource = {tag["key"]: tag["value"] for tag in process["tags"]}
    assert resource["k8s.pod.name"] == "storefront-api-test-0"
    assert resource["k8s.namespace.name"] == "observability-tests"
    assert "service.version" in resource


def test_storefront_trace_prints_the_span_tree(
    service: StorefrontProcess,
    traced_request: tuple[str, dict[str, Any]],
    jaeger_server: JaegerServer,
) -> None:
    request_id, trace = traced_request
    result = subprocess.run(
        [
            STOREFRONT,
            "trace",
            request_id,
            "--backend-url",
            jaeger_server.query_url,
            "--service",
            service.service_name,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**service.env, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    print(result.stdout)  # shown with -s: what a user sees
    lines = result.stdout.splitlines()
    assert f"trace {trace['traceID']}" in lines[0]
    assert f"request {request_id}" in lines[0]
    server_line = next(
        i for i, line in enumerate(lines) if "GET /api/v1/products/{product_id}" in line
    )
    children = lines[server_line + 1 :]
    assert any("SELECT" in line and "db.system=sqlite" in line for line in children)
    assert any(re.search(r"\bSET\b.*db.system=redis", line) for line in children)
    assert re.search(r"\d+(\.\d+)? (ms|µs)", lines[server_line])


def test_storefront_trace_says_so_when_no_trace_matches(
    service: StorefrontProcess, jaeger_server: JaegerServer
) -> None:
    result = subprocess.run(
        [STOREFRONT, "trace", "no-such-request", "--backend-url", jaeger_server.query_url,
         "--service", service.service_name],
        capture_output=True, text=True, timeout=60, env=service.env,
    )  # fmt: skip
    assert result.returncode == 1
    assert "no-such-request" in result.stderr


def test_every_log_line_is_json_and_a_request_shares_one_trace(
    service: StorefrontProcess, traced_request: tuple[str, dict[str, Any]]
) -> None:
    request_id, trace = traced_request
    records = service.log_records()  # raises if any stdout line is not JSON
    assert any(r.get("logger", "").startswith("uvicorn") for r in records)
    mine = service.records_of(request_id)
    assert {r["event"] for r in mine} >= {"request"}
    assert {r["trace_id"] for r in mine} == {trace["traceID"].rjust(32, "0")}
    for record in records:
        if "request_id" in record:
            assert HEX32.match(record["trace_id"]), record
            assert HEX16.match(record["span_id"]), record


def test_an_incoming_traceparent_is_joined(
    service: StorefrontProcess, jaeger_server: JaegerServer
) -> None:
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    request_id = f"obs-{uuid.uuid4().hex}"
    with service.client() as client:
        response = client.get(
            "/api/v1/products",
            headers={"traceparent": f"00-{trace_id}-{parent_id}-01", "X-Request-ID": request_id},
        )
    assert response.status_code == 200
    traces = jaeger_server.wait_for_traces(service.service_name, tags={"request.id": request_id})
    assert traces[0]["traceID"].rjust(32, "0") == trace_id
    server = next(s for s in traces[0]["spans"] if _tags(s).get("request.id") == request_id)
    assert _parent(server) == parent_id
    deadline = time.monotonic() + 5
    while not service.records_of(request_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert {r["trace_id"] for r in service.records_of(request_id)} == {trace_id}


def test_probes_and_scrapes_are_not_traced(
    service: StorefrontProcess, jaeger_server: JaegerServer
) -> None:
    with service.client() as client:
        for path in ("/livez", "/readyz", "/metrics"):
            assert client.get(path).status_code == 200
        # A traced request after the probes: once it is in Jaeger, the probes would be too.
        marker = f"obs-{uuid.uuid4().hex}"
        client.get("/api/v1/products", headers={"X-Request-ID": marker})
    jaeger_server.wait_for_traces(service.service_name, tags={"request.id": marker})
    operations = httpx.get(
        f"{jaeger_server.query_url}/api/services/{service.service_name}/operations", timeout=10
    ).json()["data"]
    names = {op["name"] if isinstance(op, dict) else op for op in operations}
    assert not {n for n in names if any(p in n for p in ("/livez", "/readyz", "/metrics"))}
    # /readyz pings Redis and runs SELECT 1: neither may leak out as a trace of its own.
    assert "PING" not in names

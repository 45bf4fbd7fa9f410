"""The tracing decisions and the server-span layer, without servers: configuration from OTEL_*
variables, sampling, span names, HTTP semantic-convention attributes and log correlation."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import structlog
from fastapi import APIRouter, FastAPI
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind, StatusCode

from service.observability import log_output
from service.observability.middleware import RequestTelemetryMiddleware, normalized_method
from service.observability.tracing import (
    DEFAULT_SERVICE_NAME,
    RequestRootSampler,
    ServerSpanMiddleware,
    build_sampler,
    build_tracer_provider,
    is_server_error,
    parse_resource_attributes,
    resource_attributes,
    span_name,
    tracing_config,
)

TRACEPARENT_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


# --- configuration -----------------------------------------------------------------------------


def test_no_endpoint_means_no_export_and_nothing_recorded() -> None:
    config = tracing_config({}, 0.1, "1.2.3")
    assert config.endpoint is None
    assert not config.exports
    assert build_sampler(config) is ALWAYS_OFF


def test_base_endpoint_gets_the_traces_path_for_http() -> None:
    config = tracing_config({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318/"}, 0.1, "1")
    assert config.endpoint == "http://jaeger:4318/v1/traces"
    assert config.protocol == "http/protobuf"


def test_grpc_endpoint_is_used_as_given() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    }
    config = tracing_config(env, 0.1, "1")
    assert (config.endpoint, config.protocol) == ("http://jaeger:4317", "grpc")


def test_traces_endpoint_wins_over_the_base_endpoint() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4318/custom",
    }
    assert tracing_config(env, 0.1, "1").endpoint == "http://b:4318/custom"


def test_unknown_protocol_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        tracing_config({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, 0.1, "1")


@pytest.mark.parametrize("env", [{"OTEL_SDK_DISABLED": "true"}, {"OTEL_TRACES_EXPORTER": "none"}])
def test_export_can_be_switched_off_by_the_standard_variables(env: dict[str, str]) -> None:
    config = tracing_config({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", **env}, 0.1, "1")
    assert not config.exports


def test_default_sampler_is_parent_based_ratio_from_settings() -> None:
    config = tracing_config({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318"}, 0.25, "1")
    sampler = build_sampler(config)
    assert isinstance(sampler, RequestRootSampler)
    assert sampler.ratio == 0.25


def test_otel_traces_sampler_variables_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318",
        "OTEL_TRACES_SAMPLER": "traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.5",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    sampler = build_tracer_provider(tracing_config(env, 0.1, "1")).sampler
    assert isinstance(sampler, TraceIdRatioBased)
    assert sampler.rate == 0.5


def test_resource_defaults_to_storefront_api_and_the_version() -> None:
    assert resource_attributes({}, "1.2.3") == {
        "service.name": DEFAULT_SERVICE_NAME,
        "service.version": "1.2.3",
    }


def test_resource_takes_pod_identity_from_the_downward_api_variables() -> None:
    attributes = resource_attributes({"POD_NAME": "api-7d9f", "POD_NAMESPACE": "shop"}, "1")
    assert attributes["k8s.pod.name"] == "api-7d9f"
    assert attributes["k8s.namespace.name"] == "shop"


def test_resource_precedence_follows_opentelemetry() -> None:
    env = {
        "OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs,k8s.pod.name=pod%2Dx,deployment=eu",
        "POD_NAME": "ignored",
    }
    attributes = resource_attributes(env, "1")
    assert attributes["service.name"] == "from-attrs"
    assert attributes["k8s.pod.name"] == "pod-x"
    env["OTEL_SERVICE_NAME"] = "from-service-name"
    assert resource_attributes(env, "1")["service.name"] == "from-service-name"


def test_resource_attribute_list_is_parsed_leniently() -> None:
    assert parse_resource_attributes(" a=1 , b = x%20y,broken,=v") == {"a": "1", "b": "x y"}


# --- naming and status -------------------------------------------------------------------------


def test_span_name_is_method_and_route_template() -> None:
    assert span_name("GET", "/api/v1/orders/{order_id}") == "GET /api/v1/orders/{order_id}"


def test_span_name_without_a_route_is_the_method_alone() -> None:
    assert span_name("POST", None) == "POST"


def test_unknown_methods_are_folded_so_clients_cannot_grow_cardinality() -> None:
    assert normalized_method("BREW") == "_OTHER"
    assert span_name("_OTHER", "/x") == "HTTP /x"
    assert normalized_method("PATCH") == "PATCH"


@pytest.mark.parametrize(
    ("status", "error"), [(200, False), (404, False), (499, False), (500, True), (503, True)]
)
def test_only_server_errors_fail_a_server_span(status: int, error: bool) -> None:
    assert is_server_error(status) is error


# --- the middleware ----------------------------------------------------------------------------


def _app(provider: TracerProvider) -> FastAPI:
    app = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})
    router = APIRouter(prefix="/api/v1/orders")
    log = structlog.get_logger("test")

    @router.get("/{order_id}")
    async def read_order(order_id: int) -> dict[str, int]:
        log.info("inside", order_id=order_id)
        return {"id": order_id}

    @router.get("/{order_id}/crash")
    async def crash(order_id: int) -> None:
        raise RuntimeError("boom")

    @app.get("/livez")
    async def livez() -> dict[str, bool]:
        return {"instrumented": is_instrumentation_enabled()}

    app.include_router(router)
    app.add_middleware(RequestTelemetryMiddleware)
    app.add_middleware(ServerSpanMiddleware, tracer_provider=provider)
    return app


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    yield InMemorySpanExporter()


def _provider(exporter: InMemorySpanExporter, sampled: bool = True) -> TracerProvider:
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON if sampled else ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def _log_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """The JSON lines written so far, access lines still gathered for their batch included."""
    log_output.flush()
    return [orjson.loads(line) for line in capsys.readouterr().out.splitlines() if line]


async def _get(app: FastAPI, path: str, **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
        return await client.get(path, headers=headers)


def _only_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    spans = exporter.get_finished_spans()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


async def test_server_span_follows_the_http_semantic_conventions(
    exporter: InMemorySpanExporter,
) -> None:
    response = await _get(
        _app(_provider(exporter)), "/api/v1/orders/42", **{"X-Request-ID": "rq-1"}
    )
    assert response.status_code == 200
    span = _only_span(exporter)
    assert span.name == "GET /api/v1/orders/{order_id}"
    assert span.kind is SpanKind.SERVER
    assert span.attributes is not None
    assert span.attributes["http.request.method"] == "GET"
    assert span.attributes["http.route"] == "/api/v1/orders/{order_id}"
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["url.path"] == "/api/v1/orders/42"
    assert span.attributes["url.scheme"] == "http"
    assert span.attributes["request.id"] == "rq-1"
    assert span.status.status_code is StatusCode.UNSET


async def test_a_5xx_marks_the_span_as_failed_and_records_the_exception(
    exporter: InMemorySpanExporter,
) -> None:
    response = await _get(_app(_provider(exporter)), "/api/v1/orders/1/crash")
    assert response.status_code == 500
    span = _only_span(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "500"
    assert any(event.name == "exception" for event in span.events)


async def test_a_404_route_is_named_by_method_only(exporter: InMemorySpanExporter) -> None:
    await _get(_app(_provider(exporter)), "/no/such/page")
    span = _only_span(exporter)
    assert span.name == "GET"
    assert span.attributes is not None
    assert "http.route" not in span.attributes
    assert span.status.status_code is StatusCode.UNSET


async def test_an_incoming_traceparent_is_joined(exporter: InMemorySpanExporter) -> None:
    traceparent = f"00-{TRACEPARENT_TRACE_ID}-b7ad6b7169203331-01"
    await _get(_app(_provider(exporter)), "/api/v1/orders/7", traceparent=traceparent)
    span = _only_span(exporter)
    assert format(span.context.trace_id, "032x") == TRACEPARENT_TRACE_ID
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == "b7ad6b7169203331"


async def test_probes_and_scrapes_make_no_span_not_even_database_ones(
    exporter: InMemorySpanExporter,
) -> None:
    response = await _get(_app(_provider(exporter)), "/livez")
    assert exporter.get_finished_spans() == ()
    assert response.json() == {"instrumented": False}


async def test_unsampled_requests_record_nothing_but_logs_still_get_ids(
    exporter: InMemorySpanExporter, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.observability.logging import configure_logging

    configure_logging("INFO", "json", component="test")
    traceparent = f"00-{TRACEPARENT_TRACE_ID}-b7ad6b7169203331-00"  # parent not sampled
    response = await _get(
        _app(_provider(exporter, sampled=False)),
        "/api/v1/orders/9",
        traceparent=traceparent,
        **{"X-Request-ID": "rq-unsampled"},
    )
    assert response.status_code == 200
    assert exporter.get_finished_spans() == ()
    lines = _log_lines(capsys)
    mine = [line for line in lines if line.get("request_id") == "rq-unsampled"]
    assert {line["event"] for line in mine} == {"inside", "request"}
    assert {line["trace_id"] for line in mine} == {TRACEPARENT_TRACE_ID}
    assert len({line["span_id"] for line in mine}) == 1


async def test_unknown_methods_are_one_metric_series_not_one_each(
    exporter: InMemorySpanExporter,
) -> None:
    from service.observability.metrics import REGISTRY

    def count() -> float:
        value = REGISTRY.get_sample_value(
            "http_server_request_duration_seconds_count",
            {"method": "_OTHER", "route": "unmatched", "status_code": "404"},
        )
        return value or 0.0

    before = count()
    transport = httpx.ASGITransport(app=_app(_provider(exporter)))
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
        for method in ("BREW", "WHEN", "PROPFIND"):
            await client.request(method, "/api/v1/nowhere")
    assert count() == before + 3
    assert {span.name for span in exporter.get_finished_spans()} == {"HTTP"}


# --- the request-root sampler and the unsampled fast path --------------------------------------


def _ratio_provider(exporter: InMemorySpanExporter, ratio: float) -> TracerProvider:
    provider = TracerProvider(sampler=RequestRootSampler(ratio))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


async def _get_many(app: FastAPI, count: int, **headers: str) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
        return [await client.get(f"/api/v1/orders/{i}", headers=headers) for i in range(count)]


async def test_ratio_one_samples_every_request(exporter: InMemorySpanExporter) -> None:
    await _get_many(_app(_ratio_provider(exporter, 1.0)), 20)
    spans = exporter.get_finished_spans()
    assert len(spans) == 20
    assert len({span.context.trace_id for span in spans}) == 20
    assert all(span.parent is None for span in spans)


async def test_ratio_zero_records_nothing(exporter: InMemorySpanExporter) -> None:
    await _get_many(_app(_ratio_provider(exporter, 0.0)), 20)
    assert exporter.get_finished_spans() == ()


async def test_the_sampled_share_follows_the_ratio(exporter: InMemorySpanExporter) -> None:
    await _get_many(_app(_ratio_provider(exporter, 0.5)), 400)
    # Binomial(400, 0.5): sd 10, so 120..280 is 8 sd wide on each side.
    assert 120 <= len(exporter.get_finished_spans()) <= 280


async def test_a_sampled_parent_is_followed_whatever_the_ratio(
    exporter: InMemorySpanExporter,
) -> None:
    traceparent = f"00-{TRACEPARENT_TRACE_ID}-b7ad6b7169203331-01"
    await _get_many(_app(_ratio_provider(exporter, 0.0)), 3, traceparent=traceparent)
    spans = exporter.get_finished_spans()
    assert len(spans) == 3
    assert {format(s.context.trace_id, "032x") for s in spans} == {TRACEPARENT_TRACE_ID}


async def test_children_of_a_sampled_request_root_are_sampled_too(
    exporter: InMemorySpanExporter,
) -> None:
    provider = _ratio_provider(exporter, 1.0)
    app = _app(provider)
    tracer = provider.get_tracer("test")

    @app.get("/work")
    async def work() -> dict[str, bool]:
        with tracer.start_as_current_span("SELECT") as child:
            return {"recording": child.is_recording()}

    response = await _get(app, "/work")
    assert response.json() == {"recording": True}
    child, server = exporter.get_finished_spans()
    assert child.parent is not None and child.parent.span_id == server.context.span_id


async def test_unsampled_fast_path_still_gives_logs_fresh_ids(
    exporter: InMemorySpanExporter, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.observability.logging import configure_logging

    configure_logging("INFO", "json", component="test-fast-path")
    await _get_many(_app(_ratio_provider(exporter, 0.0)), 3, **{"X-Request-ID": "rq-fast"})
    lines = _log_lines(capsys)
    access = [line for line in lines if line.get("event") == "request"]
    assert len(access) == 3
    assert len({line["trace_id"] for line in access}) == 3
    assert all(len(line["trace_id"]) == 32 and len(line["span_id"]) == 16 for line in access)
    assert exporter.get_finished_spans() == ()


async def test_without_an_exporter_logs_still_carry_ids_and_the_callers_trace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from service.observability.logging import configure_logging

    configure_logging("INFO", "json", component="test-no-exporter")
    provider = build_tracer_provider(tracing_config({}, 0.1, "1"))
    app = _app(provider)
    await _get(app, "/api/v1/orders/1", **{"X-Request-ID": "rq-plain"})
    traceparent = f"00-{TRACEPARENT_TRACE_ID}-b7ad6b7169203331-01"
    await _get(app, "/api/v1/orders/2", traceparent=traceparent, **{"X-Request-ID": "rq-joined"})
    lines = _log_lines(capsys)
    by_request = {line["request_id"]: line for line in lines if line.get("event") == "request"}
    assert len(by_request["rq-plain"]["trace_id"]) == 32
    assert by_request["rq-joined"]["trace_id"] == TRACEPARENT_TRACE_ID


_INSTRUMENTED_PROBE = """
import asyncio, json, os
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from sqlalchemy.ext.asyncio import create_async_engine
from service.observability.tracing import instrument_libraries, setup_tracing, tracing_config

provider = setup_tracing(tracing_config(os.environ, 0.1, "1"))
engine = create_async_engine("sqlite+aiosqlite://")
instrument_libraries(engine, provider)
print(json.dumps([i().is_instrumented_by_opentelemetry for i in
    (SQLAlchemyInstrumentor, RedisInstrumentor, HTTPXClientInstrumentor)]))
asyncio.run(engine.dispose())
"""


@pytest.mark.parametrize(
    ("endpoint", "instrumented"),
    [(None, [False, False, False]), ("http://127.0.0.1:1", [True, True, True])],
)
def test_libraries_are_instrumented_only_when_spans_are_exported(
    endpoint: str | None, instrumented: list[bool]
) -> None:
    # A fresh process: instrumentation is once per process and cannot be undone cleanly here.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if endpoint is not None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    done = subprocess.run(
        [sys.executable, "-c", _INSTRUMENTED_PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert orjson.loads(done.stdout.splitlines()[-1]) == instrumented

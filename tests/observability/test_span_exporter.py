"""The OTLP/HTTP exporter with Storefront's encoder, exporting to the real Jaeger."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http import trace_exporter as library_exporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from service.observability.span_exporter import FastEncodingSpanExporter
from service.observability.tracing import Protocol, TracingConfig, build_exporter
from tests.components.jaeger import JaegerServer

pytestmark = [pytest.mark.jaeger]


class Exported:
    """A provider exporting every span at once to Jaeger, under a service name of its own."""

    def __init__(self, jaeger: JaegerServer) -> None:
        self.jaeger = jaeger
        self.service = f"exporter-test-{uuid.uuid4().hex[:8]}"
        self.exporter = FastEncodingSpanExporter(endpoint=jaeger.otlp_traces_url)
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": self.service}), shutdown_on_exit=False
        )
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def span(self, name: str, attributes: Mapping[str, Any]) -> None:
        tracer = self.provider.get_tracer("storefront.test", "1.0")
        with tracer.start_as_current_span(name, kind=SpanKind.SERVER, attributes=attributes) as s:
            s.add_event("checkpoint", {"step": 2})

    def tags_in_jaeger(self, marker: str) -> dict[str, tuple[str, Any]]:
        [trace] = self.jaeger.wait_for_traces(self.service, tags={"marker": marker})
        [span] = trace["spans"]
        assert span["logs"][0]["fields"][0]["key"] == "event"  # the event arrived too
        return {tag["key"]: (tag["type"], tag["value"]) for tag in span["tags"]}


@pytest.fixture
def exported(jaeger_server: JaegerServer) -> Iterator[Exported]:
    target = Exported(jaeger_server)
    yield target
    target.provider.shutdown()


def test_spans_reach_jaeger_through_our_encoder_alone(
    exported: Exported, monkeypatch: pytest.MonkeyPatch
) -> None:
    def reference_encoder_called(*_: object) -> None:
        raise AssertionError("the library's encoder ran")

    monkeypatch.setattr(library_exporter, "encode_spans", reference_encoder_called)
    assert exported.exporter.encodes_fast
    marker = uuid.uuid4().hex
    exported.span(
        "GET /api/v1/products/{product_id}",
        {"marker": marker, "http.response.status_code": 200, "cached": True, "ratio": 0.5},
    )
    tags = exported.tags_in_jaeger(marker)
    assert tags["http.response.status_code"] == ("int64", 200)
    assert tags["cached"] == ("bool", True)
    assert tags["ratio"] == ("float64", 0.5)
    assert tags["span.kind"] == ("string", "server")


def test_a_value_our_encoder_refuses_goes_through_the_library(exported: Exported) -> None:
    marker = uuid.uuid4().hex
    exported.span("huge", {"marker": marker, "n": 2**64, "kept": "yes"})
    tags = exported.tags_in_jaeger(marker)
    # The reference encoder drops the one attribute OTLP cannot carry and sends the rest.
    assert "n" not in tags
    assert tags["kept"] == ("string", "yes")


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_the_service_exports_with_our_encoder_over_http(protocol: Protocol) -> None:
    config = TracingConfig(
        endpoint="http://127.0.0.1:4318/v1/traces",
        protocol=protocol,
        sample_ratio=0.1,
        sampler_from_env=False,
    )
    exporter = build_exporter(config)
    try:
        # gRPC keeps the library's exporter: its encoder is protobuf's, behind gRPC's stub.
        assert isinstance(exporter, FastEncodingSpanExporter) == (protocol == "http/protobuf")
        if isinstance(exporter, FastEncodingSpanExporter):
            assert exporter.encodes_fast
    finally:
        exporter.shutdown()

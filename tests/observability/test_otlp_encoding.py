"""Storefront's span encoder writes the same OTLP message as OpenTelemetry's reference encoder,
for spans of every shape the SDK produces (decoded with the official OTLP classes)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import (
    encode_spans as reference_encode_spans,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from service.observability.otlp_encoding import UnencodableValueError, encode_spans


def decoded(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(encode_spans(spans))


def recorder(
    service: str = "storefront-api", limits: SpanLimits | None = None
) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "k8s.pod.name": "api-0"}),
        span_limits=limits,
        shutdown_on_exit=False,
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
def recorded() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    provider, exporter = recorder()
    yield provider, exporter
    provider.shutdown()


REMOTE_PARENT = SpanContext(
    trace_id=0x0AF7651916CD43DD8448EB211C80319C,
    span_id=0xB7AD6B7169203331,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "opaque"), ("other", "1")]),
)


def test_a_request_trace_encodes_as_the_reference_does(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = recorded
    http = provider.get_tracer("storefront.http", "0.1.0")
    redis = provider.get_tracer("opentelemetry.instrumentation.redis", "0.66b2")
    with (
        http.start_as_current_span(
            "GET /api/v1/products/{product_id}",
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": "GET",
                "url.path": "/api/v1/products/1",
                "server.port": 8000,
                "http.response.status_code": 200,
            },
        ),
        redis.start_as_current_span(
            "GET", kind=SpanKind.CLIENT, attributes={"db.system": "redis", "db.statement": "GET ?"}
        ),
    ):
        pass
    spans = exporter.get_finished_spans()
    assert len(spans) == 2
    assert decoded(spans) == reference_encode_spans(spans)


def test_every_attribute_type_encodes_as_the_reference_does(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = recorded
    attributes = {
        "text": "héllo, wörld ✓",
        "empty": "",
        "yes": True,
        "no": False,
        "zero": 0,
        "small": 7,
        "big": 2**62,
        "negative": -1,
        "most negative": -(2**63),
        "ratio": 0.25,
        "negative float": -1.5e300,
        "negative zero": -0.0,
        "strings": ("a", "b", ""),
        "ints": (1, -2, 300),
        "bools": (True, False),
        "floats": (0.5, 2.0),
        "no items": (),
    }
    with provider.get_tracer("t").start_as_current_span("typed", attributes=attributes):
        pass
    spans = exporter.get_finished_spans()
    assert decoded(spans) == reference_encode_spans(spans)
    # and the values survive the trip, checked once by hand
    [span] = decoded(spans).resource_spans[0].scope_spans[0].spans
    values = {kv.key: kv.value for kv in span.attributes}
    assert values["most negative"].int_value == -(2**63)
    assert values["text"].string_value == "héllo, wörld ✓"
    assert [v.int_value for v in values["ints"].array_value.values] == [1, -2, 300]


def test_events_links_status_trace_state_and_a_remote_parent(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = recorded
    tracer = provider.get_tracer("t", "1", schema_url="https://opentelemetry.io/schemas/1.26.0")
    linked = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(1))
    local_link = SpanContext(0x9999, 0x8888, is_remote=False)
    with tracer.start_as_current_span(
        "consume",
        context=set_span_in_context(NonRecordingSpan(REMOTE_PARENT)),
        kind=SpanKind.CONSUMER,
        links=[Link(linked, {"messaging.batch": 3}), Link(local_link)],
    ) as span:
        span.add_event("retry", {"attempt": 2, "reason": "timeout"})
        span.add_event("bare event")
        span.set_status(Status(StatusCode.ERROR, "it broke"))
        with tracer.start_as_current_span("child", kind=SpanKind.PRODUCER) as child:
            child.set_status(Status(StatusCode.OK))
        with tracer.start_as_current_span("internal"):
            pass
    spans = exporter.get_finished_spans()
    assert decoded(spans) == reference_encode_spans(spans)
    consume = next(s for s in decoded(spans).resource_spans[0].scope_spans[0].spans if s.events)
    assert consume.trace_state == "vendor=opaque,other=1"
    assert consume.status.message == "it broke"


def test_spans_group_by_resource_then_scope_in_order_of_arrival() -> None:
    first, first_spans = recorder("storefront-api")
    second, second_spans = recorder("storefront-worker")
    try:
        for provider in (first, second, first):
            for scope in ("a", "b", "a"):
                with provider.get_tracer(scope).start_as_current_span(f"in {scope}"):
                    pass
        spans = [*first_spans.get_finished_spans(), *second_spans.get_finished_spans()]
        spans.sort(key=lambda s: s.start_time or 0)
        request = decoded(spans)
        assert request == reference_encode_spans(spans)
        assert len(request.resource_spans) == 2
        assert [len(r.scope_spans) for r in request.resource_spans] == [2, 2]
    finally:
        first.shutdown()
        second.shutdown()


def test_dropped_attributes_events_and_links_are_counted() -> None:
    limits = SpanLimits(max_span_attributes=2, max_events=1, max_links=1)
    provider, exporter = recorder(limits=limits)
    try:
        tracer = provider.get_tracer("t")
        links = [Link(SpanContext(1, 2, False)), Link(SpanContext(3, 4, False))]
        with tracer.start_as_current_span("full", links=links) as span:
            span.set_attributes({"a": 1, "b": 2, "c": 3, "d": 4})
            span.add_event("one")
            span.add_event("two")
        spans = exporter.get_finished_spans()
        [encoded] = decoded(spans).resource_spans[0].scope_spans[0].spans
        assert encoded == reference_encode_spans(spans).resource_spans[0].scope_spans[0].spans[0]
        assert (
            encoded.dropped_attributes_count,
            encoded.dropped_events_count,
            encoded.dropped_links_count,
        ) == (2, 1, 1)
    finally:
        provider.shutdown()


def test_nothing_to_send_is_an_empty_request() -> None:
    assert encode_spans([]) == b""
    assert ExportTraceServiceRequest.FromString(b"") == reference_encode_spans([])


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1])
def test_an_integer_outside_int64_is_refused(
    recorded: tuple[TracerProvider, InMemorySpanExporter], value: int
) -> None:
    provider, exporter = recorded
    with provider.get_tracer("t").start_as_current_span("huge", attributes={"n": value}):
        pass
    with pytest.raises(UnencodableValueError):
        encode_spans(exporter.get_finished_spans())


def test_repeated_attributes_encode_the_same_every_time(
    recorded: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    # The encoder keeps encoded pairs: True and 1, 0.0 and -0.0 (equal as dict keys) stay apart.
    provider, exporter = recorded
    tracer = provider.get_tracer("t")
    for value in (True, 1, 1.0, "1", True, 1, 0.0, -0.0):
        with tracer.start_as_current_span("same key", attributes={"flag": value}):
            pass
    spans = exporter.get_finished_spans()
    request = decoded(spans)
    assert request == reference_encode_spans(spans)
    kinds = [
        s.attributes[0].value.WhichOneof("value")
        for s in request.resource_spans[0].scope_spans[0].spans
    ]
    assert kinds == [
        "bool_value",
        "int_value",
        "double_value",
        "string_value",
        "bool_value",
        "int_value",
        "double_value",
        "double_value",
    ]
    zeros = [
        s.attributes[0].value.double_value
        for s in request.resource_spans[0].scope_spans[0].spans[-2:]
    ]
    assert [math.copysign(1, z) for z in zeros] == [1, -1]  # 0.0 == -0.0, yet their bits differ

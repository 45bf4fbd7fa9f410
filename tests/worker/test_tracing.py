"""One trace across the queue: the worker's CONSUMER span is a child of the PRODUCER span made
at enqueue, inside the caller's trace; a retry links to its first attempt."""

from __future__ import annotations

from pathlib import Path

import redis as sync_redis
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from service.core.settings import Settings
from worker.broker import build_broker
from worker.settings import WorkerSettings


def test_the_job_continues_the_callers_trace(
    settings: Settings,
    worker_settings: WorkerSettings,
    redis_url: str,
    redis_client: sync_redis.Redis,
    tmp_path: Path,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    broker = StubBroker(middleware=[])
    broker.client = redis_client  # type: ignore[attr-defined]
    build_broker(settings, worker_settings, redis_url, broker=broker, tracer_provider=provider)
    broker.emit_after("process_boot")
    worker = Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        with provider.get_tracer("test").start_as_current_span("POST /api/v1/reports") as request:
            broker.get_actor("probe").send_with_options(kwargs={"key": "traced", "fail_times": 1})
        broker.join("default")
        worker.join()
    finally:
        worker.stop()
    spans = exporter.get_finished_spans()
    trace_id = request.get_span_context().trace_id
    producer = next(s for s in spans if s.kind == SpanKind.PRODUCER)
    consumers = sorted(
        (s for s in spans if s.kind == SpanKind.CONSUMER), key=lambda s: s.start_time or 0
    )
    assert producer.context.trace_id == trace_id
    assert (
        producer.parent is not None
        and producer.parent.span_id == request.get_span_context().span_id
    )
    assert len(consumers) == 2  # the failed first attempt and the retry
    for span in consumers:
        assert span.context.trace_id == trace_id
        assert span.parent is not None and span.parent.span_id == producer.context.span_id
    first, retry = consumers
    assert [link.context.span_id for link in retry.links] == [first.context.span_id]

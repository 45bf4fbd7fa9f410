"""In-process cost of each way to make server spans: µs per request through a raw ASGI driver.

Run: ``python -m tests.observability.overhead [--requests 5000] [--rounds 3] [--ratio 0.1]``.
Every variant serves the same trivial route in the same run; the best round of each is kept and
compared with the bare app (no middleware, no tracing).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from service.observability import log_output
from service.observability.logging import configure_logging
from service.observability.middleware import UNOBSERVED_PATHS, RequestTelemetryMiddleware
from service.observability.tracing import RequestRootSampler, ServerSpanMiddleware

ASGIApp = Callable[..., Any]


class DiscardingExporter(SpanExporter):
    """Exports nowhere: the batch pipeline's cost is counted, the network's is not."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


def provider(ratio: float) -> TracerProvider:
    """The sampler Storefront ships (parent-based ratio) and a batch pipeline, as in production."""
    tracer_provider = TracerProvider(sampler=RequestRootSampler(ratio), shutdown_on_exit=False)
    tracer_provider.add_span_processor(BatchSpanProcessor(DiscardingExporter()))
    return tracer_provider


def _app(telemetry: TelemetryConfig | None = None) -> FastAPI:
    app = FastAPI(telemetry=telemetry or {"tracing": False, "metrics": False, "logs": False})

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    return app


def bare() -> FastAPI:
    return _app()


def telemetry_only() -> FastAPI:
    app = _app()
    app.add_middleware(RequestTelemetryMiddleware)
    return app


def lean(ratio: float) -> FastAPI:
    app = telemetry_only()
    app.add_middleware(ServerSpanMiddleware, tracer_provider=provider(ratio))
    return app


def native(ratio: float, operation_spans: bool) -> FastAPI:
    app = _app(
        {
            "tracer_provider": provider(ratio),
            "tracing": True,
            "metrics": False,
            "logs": False,
            "operation_spans": operation_spans,
            "exclude": lambda scope: scope.get("path") in UNOBSERVED_PATHS,
        }
    )
    app.add_middleware(RequestTelemetryMiddleware)
    return app


def contrib(ratio: float) -> FastAPI:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    app = telemetry_only()
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider(ratio),
        excluded_urls="/metrics,/livez,/readyz",
        exclude_spans=["receive", "send"],
    )
    return app


async def drive(app: ASGIApp, requests: int) -> float:
    """CPU seconds to serve ``requests`` GETs, one after another, with no network in between.

    Process CPU time, not wall time: a shared machine's other load then barely moves the
    figures, and the span export thread's work is still counted."""
    body = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> dict[str, Any]:
        return body

    async def send(message: dict[str, Any]) -> None:
        return None

    def scope(i: int) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": f"/items/{i}",
            "raw_path": f"/items/{i}".encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"bench"), (b"user-agent", b"bench")],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
        }

    for i in range(200):  # warm caches and lazily built middleware stacks
        await app(scope(i), receive, send)
    gc.collect()
    start = time.process_time()
    for i in range(requests):
        await app(scope(i), receive, send)
    return time.process_time() - start


def variants(ratio: float) -> dict[str, Callable[[], FastAPI]]:
    return {
        "bare": bare,
        "request-id+metrics+access log": telemetry_only,
        f"lean ServerSpanMiddleware (ratio {ratio})": lambda: lean(ratio),
        "lean ServerSpanMiddleware (ratio 1.0)": lambda: lean(1.0),
        f"FastAPI native, no operation spans (ratio {ratio})": lambda: native(ratio, False),
        f"FastAPI native, operation spans (ratio {ratio})": lambda: native(ratio, True),
        f"contrib FastAPIInstrumentor (ratio {ratio})": lambda: contrib(ratio),
    }


def measure(requests: int, rounds: int, ratio: float) -> dict[str, float]:
    """Best µs/request of each variant over ``rounds`` interleaved rounds."""
    apps = {name: make() for name, make in variants(ratio).items()}
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, app in apps.items():
            seconds = asyncio.run(drive(app, requests))
            best[name] = min(best.get(name, float("inf")), seconds / requests * 1e6)
    return best


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ratio", type=float, default=0.1)
    args = parser.parse_args(argv)
    out = sys.stdout
    # The access log is part of the cost, but its lines would drown the table: write to memory.
    sys.stdout = io.StringIO()
    try:
        configure_logging("INFO", "json", component="api")
        results = measure(args.requests, args.rounds, args.ratio)
        log_output.flush()  # the access lines still gathered for their batch, to memory too
    finally:
        sys.stdout = out
    base = results["bare"]
    print(f"{'variant':58} {'µs/req':>8} {'x bare thr.':>11}")
    for name, micros in results.items():
        print(f"{name:58} {micros:8.1f} {base / micros:11.2f}")


if __name__ == "__main__":
    main()

"""Baseline 2, the "article" stack: observability as tutorials usually add it. Two
``BaseHTTPMiddleware`` classes (request ID, timing), the default ``FastAPIInstrumentor`` with an
SDK tracer provider, prometheus-fastapi-instrumentator, and one stdlib log line per request.

The tracer provider samples every request but has no span processor, so spans are built and
dropped, never exported: that favours this stack against Storefront, which exports."""

from __future__ import annotations

import logging
import sys
import time
import uuid

from fastapi import FastAPI, Request, Response
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from prometheus_fastapi_instrumentator import Instrumentator
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from bench.apps.common import lifespan, router

log = logging.getLogger("app.access")


class RequestIDMiddleware(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        request_id = request.headers.get("x-request-id") or str(uuid.uuid4())
        request.state.request_id = request_id
        response = await call_next(request)
        response.headers["X-Request-ID"] = request_id
        return response


class TimingMiddleware(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        elapsed_ms = (time.perf_counter() - start) * 1000
        response.headers["X-Process-Time-Ms"] = f"{elapsed_ms:.2f}"
        log.info(
            "%s %s %s %.2fms request_id=%s",
            request.method,
            request.url.path,
            response.status_code,
            elapsed_ms,
            getattr(request.state, "request_id", "-"),
        )
        return response


def create_app() -> FastAPI:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    provider = TracerProvider()
    trace.set_tracer_provider(provider)
    app = FastAPI(lifespan=lifespan)
    app.include_router(router)
    app.add_middleware(TimingMiddleware)
    app.add_middleware(RequestIDMiddleware)
    Instrumentator().instrument(app).expose(app)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    return app

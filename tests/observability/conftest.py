"""Real ``storefront api`` processes for the observability suite (tests/components/storefront.py):
SQLite in a tmp dir, the session's Redis, OTLP to the session's Jaeger, every request sampled."""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from PIL import Image

from tests.components.jaeger import JaegerServer
from tests.components.redis import RedisServer
from tests.components.storefront import StorefrontProcess, start_storefront


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module", autouse=True)
def _untraced_test_client() -> Iterator[None]:
    """Keep the test process's own trace context out of its requests.

    The service honours an incoming ``traceparent``. Once an in-process app of another test has
    instrumented httpx here, this suite's requests would carry the test process's (unsampled)
    context and decide the service's sampling, so no exemplar or trace would be recorded.
    """
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    instrumentor = HTTPXClientInstrumentor()
    instrumented = instrumentor.is_instrumented_by_opentelemetry
    if instrumented:
        instrumentor.uninstrument()
    yield
    if instrumented:
        instrumentor.instrument()


StorefrontFactory = Callable[..., StorefrontProcess]
# Databases 8-15 of the session's Redis; other tests use the low numbers.
_redis_databases = itertools.cycle(range(8, 16))


@pytest.fixture(scope="module")
def storefront_factory(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
    jaeger_server: JaegerServer,
) -> Iterator[StorefrontFactory]:
    """Start real Storefront API processes for this module; all are stopped at its end."""
    started: list[StorefrontProcess] = []

    def start(**options: Any) -> StorefrontProcess:
        # Each service gets an empty Redis database of its own: every one starts a fresh SQLite
        # database, so product 1 of one service must not be served from another's cache.
        db = next(_redis_databases)
        with redis_server.client(db) as client:
            client.flushdb()
        service = start_storefront(
            tmp_path_factory.mktemp("storefront"),
            redis_server.url_for(db),
            jaeger_server.otlp_http_endpoint,
            **options,
        )
        started.append(service)
        return service

    try:
        yield start
    finally:
        for service in started:
            service.stop()

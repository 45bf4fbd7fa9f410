"""OpenTelemetry tracing: the process's tracer provider, the server-span ASGI layer, and
instrumentation of SQLAlchemy, Redis and HTTPX.

The provider is configured from settings and the standard ``OTEL_*`` variables. Without an OTLP
endpoint nothing is recorded or exported, yet every request still gets trace and span IDs, so
log lines stay correlatable.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

import httpx
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util.types import Attributes
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import __version__
from service.observability.middleware import UNOBSERVED_PATHS, normalized_method, route_template

DEFAULT_SERVICE_NAME = "storefront-api"
TRACER_NAME = "storefront.http"

Protocol = Literal["grpc", "http/protobuf"]


# ---------------------------------------------------------------------------------------------
# Decisions (pure): configuration from settings + environment, span names and statuses.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TracingConfig:
    """What the tracer provider should be, decided from settings and the environment."""

    endpoint: str | None
    protocol: Protocol
    sample_ratio: float
    sampler_from_env: bool
    resource: dict[str, str] = field(default_factory=dict)

    @property
    def exports(self) -> bool:
        return self.endpoint is not None


def parse_resource_attributes(raw: str) -> dict[str, str]:
    """``OTEL_RESOURCE_ATTRIBUTES`` (``k=v,k2=v2``, values percent-encoded) as a dict."""
    attributes: dict[str, str] = {}
    for pair in raw.split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            attributes[key.strip()] = unquote(value.strip())
    return attributes


def resource_attributes(env: Mapping[str, str], version: str) -> dict[str, str]:
    """service.name/version and the pod's identity, by OpenTelemetry's precedence rules:
    OTEL_SERVICE_NAME, then OTEL_RESOURCE_ATTRIBUTES, then our defaults (POD_NAME and
    POD_NAMESPACE are what a Kubernetes Downward API usually provides)."""
    declared = parse_resource_attributes(env.get("OTEL_RESOURCE_ATTRIBUTES", ""))
    attributes = {
        "service.name": env.get("OTEL_SERVICE_NAME")
        or declared.get("service.name")
        or DEFAULT_SERVICE_NAME,
        "service.version": declared.get("service.version") or version,
    }
    for key, variable in (("k8s.pod.name", "POD_NAME"), ("k8s.namespace.name", "POD_NAMESPACE")):
        value = declared.get(key) or env.get(variable)
        if value:
            attributes[key] = value
    return attributes


def tracing_config(env: Mapping[str, str], sample_ratio: float, version: str) -> TracingConfig:
    """Decide exporter endpoint, protocol and sampling from ``OTEL_*`` variables."""
    protocol_raw = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol_raw not in ("grpc", "http/protobuf"):
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol_raw!r} is not grpc or http/protobuf"
        )
    protocol: Protocol = "grpc" if protocol_raw == "grpc" else "http/protobuf"
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or None
    if endpoint is None and (base := env.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
        # The signal path is appended for HTTP only; gRPC endpoints name a host:port.
        endpoint = base if protocol == "grpc" else f"{base.rstrip('/')}/v1/traces"
    disabled = (
        env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
        or env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none"
    )
    return TracingConfig(
        endpoint=None if disabled else endpoint,
        protocol=protocol,
        sample_ratio=sample_ratio,
        sampler_from_env=bool(env.get("OTEL_TRACES_SAMPLER")),
        resource=resource_attributes(env, version),
    )


_UNSAMPLED_RANDOM_ID = TraceFlags(TraceFlags.RANDOM_TRACE_ID)

# Marks a root the server-span layer has already drawn as sampled (see RequestRootSampler).
_ROOT_SAMPLED = otel_context.create_key("storefront.root_sampled")


class RequestRootSampler(Sampler):
    """Parent-based ratio sampling, with one addition: a request root that
    :class:`ServerSpanMiddleware` has already drawn as sampled is kept without a second draw.

    That draw is what lets the middleware skip the SDK entirely for the unsampled majority.
    """

    def __init__(self, ratio: float) -> None:
        self.ratio = ratio
        self.bound = TraceIdRatioBased.get_bound_for_rate(ratio)
        self._parent_based = ParentBased(TraceIdRatioBased(ratio))

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if parent_context is not None and otel_context.get_value(_ROOT_SAMPLED, parent_context):
            parent = trace.get_current_span(parent_context).get_span_context()
            if not parent.is_valid:
                return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        return self._parent_based.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"StorefrontRequestRoot{{{self.ratio}}}"

    def draw(self) -> int | None:
        """A root decision for a request: the new trace ID when unsampled, None when sampled.

        Same rule as TraceIdRatioBased (the low 64 bits of the trace ID against the bound)."""
        trace_id = random.getrandbits(128)
        if trace_id and (trace_id & TraceIdRatioBased.TRACE_ID_LIMIT) >= self.bound:
            return trace_id
        return None if trace_id else self.draw()


def build_sampler(config: TracingConfig) -> Sampler | None:
    """Parent-based ratio sampling by default; ``None`` when ``OTEL_TRACES_SAMPLER`` is set,
    which lets the SDK build the sampler it names. With no exporter nothing is recorded, but
    span contexts (and so the IDs in log lines) are still made."""
    if not config.exports:
        return ALWAYS_OFF
    if config.sampler_from_env:
        return None
    return RequestRootSampler(config.sample_ratio)


def records_nothing(provider: trace.TracerProvider) -> bool:
    """Whether ``provider`` never records a span: the sampler :func:`build_sampler` picks when no
    exporter is configured."""
    return getattr(provider, "sampler", None) is ALWAYS_OFF


def span_name(method: str, route: str | None) -> str:
    """``{method} {route}`` as the HTTP semantic conventions name server spans; the method alone
    when no route matched (a raw path would explode the number of distinct names)."""
    label = "HTTP" if method == "_OTHER" else method
    return f"{label} {route}" if route else label


def is_server_error(status: int) -> bool:
    """Server spans fail on 5xx only: a 4xx is the client's error, not the server's."""
    return status >= 500


# ---------------------------------------------------------------------------------------------
# The provider (acts): built once per process, flushed and shut down by the app's lifespan.
# ---------------------------------------------------------------------------------------------

_lock = threading.Lock()
_provider: TracerProvider | None = None
_instrumented: set[str] = set()


def build_exporter(config: TracingConfig) -> SpanExporter:
    """The OTLP exporter for ``config``'s protocol: over HTTP with Storefront's span encoder."""
    assert config.endpoint is not None
    if config.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter(endpoint=config.endpoint)
    from service.observability.span_exporter import FastEncodingSpanExporter

    return FastEncodingSpanExporter(endpoint=config.endpoint)


def build_tracer_provider(config: TracingConfig) -> TracerProvider:
    """A provider for ``config``: batch export to OTLP when an endpoint is configured."""
    provider = TracerProvider(
        sampler=build_sampler(config),
        resource=Resource.create(config.resource),
        shutdown_on_exit=False,
    )
    if config.exports:
        provider.add_span_processor(BatchSpanProcessor(build_exporter(config)))
    return provider


def setup_tracing(config: TracingConfig) -> TracerProvider:
    """Install the process's tracer provider (the first call wins: instrumented libraries bind
    to the global provider, which OpenTelemetry lets a process set only once)."""
    global _provider
    with _lock:
        if _provider is None:
            _provider = build_tracer_provider(config)
            trace.set_tracer_provider(_provider)
        return _provider


def shutdown_tracing(timeout_seconds: float = 5.0) -> None:
    """Export the spans still buffered and stop the exporter (blocking: call off the loop).

    Bounded, so an unreachable collector cannot hold a rolling update past its grace period.
    """
    with _lock:
        provider = _provider
    if provider is not None:
        provider.force_flush(timeout_millis=int(timeout_seconds * 1000))
        provider.shutdown()


def instrument_libraries(engine: AsyncEngine, provider: trace.TracerProvider) -> None:
    """Trace SQL, Redis commands and outgoing HTTPX calls, once per process.

    Not when ``provider`` never records a span (no exporter configured): each instrumentation
    wraps every call, and there would be nothing to record. Outgoing HTTPX calls still carry the
    trace context (:func:`inject_trace_context`).
    """
    if records_nothing(provider):
        return
    with _lock:
        if "sqlalchemy" not in _instrumented:
            from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

            # The instrumentation declares sqlalchemy < 2.1 but only uses the stable core event
            # API; the Jaeger tests prove its SQL spans against the installed version.
            SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine, skip_dep_check=True)
            _instrumented.add("sqlalchemy")
        if "redis" not in _instrumented:
            from opentelemetry.instrumentation.redis import RedisInstrumentor

            RedisInstrumentor().instrument()
            _instrumented.add("redis")
        if "httpx" not in _instrumented:
            from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

            HTTPXClientInstrumentor().instrument()
            _instrumented.add("httpx")


# ---------------------------------------------------------------------------------------------
# The server span (pure ASGI).
# ---------------------------------------------------------------------------------------------


class ServerSpanMiddleware:
    """One SERVER span per HTTP request, named ``{method} {route}`` from the matched route.

    Sits outside :class:`RequestTelemetryMiddleware`, so the access line and the latency
    exemplar see the span. With Storefront's sampler, a new trace that is not sampled never
    reaches the SDK: it costs one random draw and the two IDs its log lines carry. Attributes
    are built only for spans that are recorded.

    Inside a request whose span is not recorded, the SQL, Redis and HTTP client
    instrumentations are suppressed: a parent-based sampler would drop each span they start, and
    starting them cost about 35 µs a request on the cached product read (one Redis command).
    """

    def __init__(
        self,
        app: ASGIApp,
        tracer_provider: trace.TracerProvider | None = None,
        excluded_paths: frozenset[str] = UNOBSERVED_PATHS,
    ) -> None:
        self.app = app
        provider = tracer_provider or trace.get_tracer_provider()
        self.tracer = provider.get_tracer(TRACER_NAME, __version__)
        # New traces may skip the SDK when we know its sampler: ours, or "never" (no exporter).
        sampler = getattr(provider, "sampler", None)
        self.never_sampled = records_nothing(provider)
        self.root_sampler = sampler if isinstance(sampler, RequestRootSampler) else None
        self.excluded_paths = excluded_paths
        self.propagator = propagate.get_global_textmap()
        # Only the headers the configured propagators read (traceparent, tracestate, baggage...)
        # are copied; most requests carry none and skip extraction entirely.
        self.propagation_headers = frozenset(f.lower().encode() for f in self.propagator.fields)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] in self.excluded_paths:
            # A readiness probe's SELECT 1 and PING would otherwise each become a root trace.
            with suppress_instrumentation():
                await self.app(scope, receive, send)
            return

        carrier: dict[str, str] | None = None
        for key, value in scope["headers"]:
            if key in self.propagation_headers:
                if carrier is None:
                    carrier = {}
                carrier[key.decode("latin-1")] = value.decode("latin-1")
        parent = self.propagator.extract(carrier) if carrier else None
        if parent is None and (self.never_sampled or self.root_sampler is not None):
            unsampled_trace_id = (
                random.getrandbits(128) or 1
                if self.root_sampler is None
                else self.root_sampler.draw()
            )
            if unsampled_trace_id is not None:
                # Only the IDs its log lines carry, with the flags the SDK would give it: not
                # sampled, trace ID random (W3C level 2). One context holds the span and the
                # suppression, attached once (the SDK's exporters set the same key the same
                # way); suppress_instrumentation() would attach a second one. Inline rather
                # than a helper coroutine: one frame fewer on every resumption of the request.
                span_context = SpanContext(
                    unsampled_trace_id,
                    random.getrandbits(64) or 1,
                    False,
                    trace_flags=_UNSAMPLED_RANDOM_ID,
                )
                token = otel_context.attach(
                    otel_context.set_value(
                        _SUPPRESS_INSTRUMENTATION_KEY,
                        True,
                        trace.set_span_in_context(NonRecordingSpan(span_context)),
                    )
                )
                try:
                    await self.app(scope, receive, send)
                finally:
                    otel_context.detach(token)
                return
            parent = otel_context.set_value(_ROOT_SAMPLED, True)

        method = normalized_method(scope["method"])
        span = self.tracer.start_span(
            span_name(method, None),
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"]},
        )
        recording = span.is_recording()
        if recording:
            span.set_attributes(_request_attributes(scope, method))
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if recording:
                await self.app(scope, receive, send_status)
            else:
                with suppress_instrumentation():
                    await self.app(scope, receive, send)
        except BaseException as exc:
            if recording:
                span.record_exception(exc)
                status = status or 500
            raise
        finally:
            if recording:
                _finish(span, scope, method, status)
            span.end()
            otel_context.detach(token)


async def inject_trace_context(request: httpx.Request) -> None:
    """An HTTPX request hook: carry the current trace context to the server called.

    The HTTPX instrumentation injects its client span's context, but it is suppressed inside
    unsampled requests; this hook still sends their (unsampled) ``traceparent``, so a parent-based
    service downstream makes the same decision. When the instrumentation runs, it overwrites these
    headers with its own span's, which is a child of the same trace.
    """
    propagate.inject(request.headers)


def _request_attributes(scope: Scope, method: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {"url.scheme": scope.get("scheme", "http")}
    if scope["method"] != method:
        attributes["http.request.method_original"] = scope["method"]
    if version := scope.get("http_version"):
        attributes["network.protocol.version"] = version
    if server := scope.get("server"):
        attributes["server.address"] = server[0]
        if server[1] is not None:
            attributes["server.port"] = server[1]
    if client := scope.get("client"):
        attributes["client.address"] = client[0]
    return attributes


def _finish(span: trace.Span, scope: Scope, method: str, status: int) -> None:
    route = route_template(scope)
    matched = route != "unmatched"
    attributes: dict[str, Any] = {}
    if matched:
        attributes["http.route"] = route
        span.update_name(span_name(method, route))
    if status:
        attributes["http.response.status_code"] = status
    if not status or is_server_error(status):
        attributes["error.type"] = str(status) if status else "incomplete_response"
        span.set_status(Status(StatusCode.ERROR))
    span.set_attributes(attributes)

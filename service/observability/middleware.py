"""Pure ASGI middleware: request telemetry (ID, timing, metrics, access log) and a body limit.

No ``BaseHTTPMiddleware`` (it costs a task group per request and up
to 3x throughput on cheap routes). The telemetry middleware is also the last line of defence:
an exception that escapes the app becomes a logged 500 in the project's error format.
"""

from __future__ import annotations

import time

import orjson
import structlog
from opentelemetry import trace
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.errors import error_body
from service.observability import metrics
from service.observability.context import accept_request_id, reset_request_id, set_request_id
from service.observability.logging import ACCESS_LOGGER, log_access

log = structlog.get_logger(ACCESS_LOGGER)

# Probes and scrapes are neither user traffic nor worth a log line each.
UNOBSERVED_PATHS = frozenset({"/metrics", "/livez", "/readyz"})

_HTTP1 = frozenset({"1.0", "1.1"})

# The request methods named by the HTTP semantic conventions; any other becomes "_OTHER", so a
# client cannot grow metric series or span names at will.
KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
)


def normalized_method(method: str) -> str:
    return method if method in KNOWN_METHODS else "_OTHER"


def route_template(scope: Scope) -> str:
    """The matched route's template (``/api/v1/orders/{order_id}``), never the raw path.

    FastAPI >= 0.160 resolves included routers lazily: ``scope["route"]`` is then the route as
    declared in its own router (no prefixes), and the full template lives in FastAPI's
    effective route context. Both are read, newest first; a test pins the result.
    """
    fastapi_scope = scope.get("fastapi")
    if isinstance(fastapi_scope, dict):
        context = fastapi_scope.get("effective_route_context")
        if context is not None:
            starlette_route = getattr(context, "starlette_route", None)
            path = getattr(starlette_route, "path_format", None) or getattr(
                context, "path_format", None
            )
            if isinstance(path, str) and path:
                return path
    path = getattr(scope.get("route"), "path_format", None)
    return path if isinstance(path, str) else "unmatched"


class RequestTelemetryMiddleware:
    """Give each request an ID, time it, count it, log it once and answer its crash."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = accept_request_id(_header(scope, b"x-request-id"))
        token = set_request_id(request_id)  # log lines read it from here (logging.py)
        span = trace.get_current_span()
        recording = span.is_recording()
        if recording:
            # Whatever layer made the server span, this is how a trace is found by request ID.
            span.set_attribute("request.id", request_id)
        observed = scope["path"] not in UNOBSERVED_PATHS
        method = normalized_method(scope["method"])
        start = time.perf_counter()
        status = 500
        response_started = False
        request_id_header = request_id.encode()

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                elapsed_ms = (time.perf_counter() - start) * 1000
                headers = list(message.get("headers", ()))
                headers.append((b"x-request-id", request_id_header))
                headers.append((b"x-process-time-ms", f"{elapsed_ms:.2f}".encode()))
                message["headers"] = headers
            await send(message)

        if observed:
            active = metrics.ACTIVE_REQUESTS
            if method not in active:
                metrics.start_counting_active(method)
            active[method] += 1
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            span.record_exception(exc)
            log.exception("unhandled_error", method=method, path=scope["path"])
            if not response_started:
                await _send_internal_error(send_with_headers)
        finally:
            duration = time.perf_counter() - start
            if observed:
                route = route_template(scope)
                metrics.ACTIVE_REQUESTS[method] -= 1
                span_context = span.get_span_context()
                metrics.request_duration(method, route, status).observe(
                    duration, _exemplar(span_context) if recording else None
                )
                log_access(
                    {
                        "method": method,
                        "route": route,
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(duration * 1000, 3),
                        "client": _client(scope),
                    },
                    span_context,
                )
            reset_request_id(token)


class BodySizeLimitMiddleware:
    """Refuse request bodies over a limit with 413 in the project's error format.

    Written here rather than using Starlette's limiter, which answers in plain text. A declared
    length is checked up front; a streamed body is counted as it arrives.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: bytes | None = None
        transfer_encoding = False
        for key, value in scope["headers"]:  # one pass for both framing headers
            if key == b"content-length":
                declared = value
            elif key == b"transfer-encoding":
                transfer_encoding = True
        if declared is not None and declared.isdigit():
            if int(declared) > self.max_body_bytes:
                await _send_error(send, 413, "PAYLOAD_TOO_LARGE", self._message())
                return
            # The server frames the body by its declared length: no more can arrive.
            await self.app(scope, receive, send)
            return
        if not transfer_encoding and scope.get("http_version") in _HTTP1:
            # HTTP/1 with neither Content-Length nor Transfer-Encoding has no body (RFC 9112,
            # 6.3): most GETs. Only the rest (chunked uploads, HTTP/2 streams) are counted.
            await self.app(scope, receive, send)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLargeError(self._message())
            return message

        # The app's error handlers answer the error raised from receive (413, our format).
        await self.app(scope, limited_receive, send)

    def _message(self) -> str:
        return f"Request body exceeds {self.max_body_bytes} bytes"


class _BodyTooLargeError(HTTPException):
    """Raised from ``receive`` past the limit. An HTTPException, because FastAPI's body parsing
    turns any other exception into a 400 "error parsing the body" and passes these on to the
    error handlers, which answer 413 in the project's format."""

    def __init__(self, message: str) -> None:
        super().__init__(status_code=413, detail=message)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None


def _exemplar(span_context: trace.SpanContext) -> dict[str, str] | None:
    """The latency exemplar of a recorded span: its trace, when that trace is sampled."""
    if span_context.is_valid and span_context.trace_flags.sampled:
        return {"trace_id": format(span_context.trace_id, "032x")}
    return None


async def _send_error(send: Send, status: int, code: str, message: str) -> None:
    body = orjson.dumps(error_body(code, message))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _send_internal_error(send: Send) -> None:
    await _send_error(send, 500, "INTERNAL_ERROR", "Internal server error")

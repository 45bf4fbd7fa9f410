"""One logging pipeline: structlog for our lines, ``ProcessorFormatter`` for library lines.

Every line is one JSON object (orjson) or, on a terminal, coloured console output. Lines inside a
request or job carry ``request_id``, ``trace_id`` and ``span_id`` through contextvars.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import structlog
from opentelemetry.trace import SpanContext, get_current_span
from structlog.types import EventDict, Processor

from service.observability import log_output
from service.observability.context import current_request_id

_configured: tuple[str, str, str | None] | None = None

ACCESS_LOGGER = "storefront.access"
# Set by configure_logging: whether access lines take the one-step JSON path, and with which
# component.
_access_in_json = False
_access_component: str | None = None


def _add_correlation_ids(event_dict: EventDict, ctx: SpanContext | None = None) -> None:
    """Add the request ID of the work in progress (the one contextvar the middleware sets,
    rather than binding it into structlog's contextvars as well on every request) and the
    trace and span IDs, as hex, of ``ctx`` or else of the current span, when valid."""
    if "request_id" not in event_dict:
        request_id = current_request_id()
        if request_id is not None:
            event_dict["request_id"] = request_id
    if "trace_id" not in event_dict:
        if ctx is None:
            ctx = get_current_span().get_span_context()
        if ctx.is_valid:
            event_dict["trace_id"] = format(ctx.trace_id, "032x")
            event_dict["span_id"] = format(ctx.span_id, "016x")


def _correlate(_: Any, __: str, event_dict: EventDict) -> EventDict:
    _add_correlation_ids(event_dict)
    return event_dict


def _add_utc_datetime(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """The time of the line, left for orjson to render (RFC 3339, UTC, ``Z``): in C, it costs
    a fraction of ``TimeStamper``'s ``isoformat()``, and the access line is written per request."""
    event_dict["timestamp"] = datetime.now(UTC)
    return event_dict


def configure_logging(level: str = "INFO", fmt: str = "auto", component: str | None = None) -> None:
    """Configure structlog and the stdlib root logger once per process (idempotent)."""
    global _configured, _access_in_json, _access_component
    if _configured == (level, fmt, component):
        return
    _configured = (level, fmt, component)
    use_json = fmt == "json" or (fmt == "auto" and not sys.stdout.isatty())
    _access_in_json = use_json and logging.getLevelName(level) <= logging.INFO
    _access_component = component

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _correlate,
        structlog.stdlib.add_log_level,
        _add_logger_name,
        _add_utc_datetime if use_json else structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if component:
        shared.insert(1, _bind_component(component))

    renderer: Processor
    if use_json:
        renderer = structlog.processors.JSONRenderer(serializer=log_output.render_json)
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())

    structlog.configure(
        processors=[*shared, _Sink.router(renderer)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=_Sink,
        cache_logger_on_first_use=True,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = _StdoutHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)
    # Our middleware logs each request once; uvicorn's access log would be a second, slower copy.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "dramatiq", "kopf"):
        lib_logger = logging.getLogger(name)
        lib_logger.handlers[:] = []
        lib_logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    for noisy in ("sqlalchemy.engine", "httpx", "httpcore", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def log_access(fields: dict[str, Any], span_context: SpanContext | None = None) -> None:
    """Write one request's access line (event ``request``) with ``fields``, which it takes over;
    its trace and span IDs are ``span_context``'s, when the caller has it at hand, or else the
    current span's.

    There is one such line per request, so in JSON mode it is built in one step, with the keys,
    values and order the structlog pipeline gives every line (a test renders one line both
    ways), and written with a batch of others (:mod:`log_output`): in the running API, the
    pipeline's bound-logger dispatch and seven processors cost about 9 µs a line more. Console
    lines, and levels that drop INFO, go through structlog.
    """
    if not _access_in_json:
        # Looked up per line (not cached at import), so it follows configure_logging.
        structlog.get_logger(ACCESS_LOGGER).info("request", **fields)
        return
    fields["event"] = "request"
    structlog.contextvars.merge_contextvars(None, "info", fields)
    if _access_component is not None:
        fields.setdefault("component", _access_component)
    _add_correlation_ids(fields, span_context)
    fields["level"] = "info"
    fields["logger"] = ACCESS_LOGGER
    fields["timestamp"] = datetime.now(UTC)
    log_output.gather(fields)


def _bind_component(component: str) -> Processor:
    def add_component(_: Any, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("component", component)
        return event_dict

    return add_component


def _add_logger_name(logger: Any, _: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    name = record.name if record is not None else getattr(logger, "name", None)
    if name:
        event_dict["logger"] = name
    return event_dict


class _Sink:
    """Where our structlog lines end: debug and info lines are rendered and written straight to
    stdout (the stdlib ``logging`` detour costs about 5x per line, and an access line is written
    for every request); warnings and errors go through stdlib ``logging``, so every handler
    attached there (and pytest's ``caplog``) sees them."""

    _FAST = frozenset({"debug", "info"})

    def __init__(self, *args: Any) -> None:
        self.name = str(args[0]) if args else ""
        self._stdlib = logging.getLogger(self.name or "storefront")

    @classmethod
    def router(cls, renderer: Processor) -> Processor:
        """The last processor: render fast lines here, hand the rest to ``ProcessorFormatter``."""
        wrap = structlog.stdlib.ProcessorFormatter.wrap_for_formatter

        def route(logger: Any, method_name: str, event_dict: EventDict) -> Any:
            if method_name in cls._FAST:
                return renderer(logger, method_name, event_dict)
            return wrap(logger, method_name, event_dict)

        return route

    def debug(self, line: str) -> None:
        log_output.write_line(line)

    info = debug

    def warning(self, *args: Any, **kwargs: Any) -> None:
        self._stdlib.warning(*args, **kwargs)

    warn = warning

    def error(self, *args: Any, **kwargs: Any) -> None:
        self._stdlib.error(*args, **kwargs)

    def exception(self, *args: Any, **kwargs: Any) -> None:
        self._stdlib.error(*args, **kwargs)

    def critical(self, *args: Any, **kwargs: Any) -> None:
        self._stdlib.critical(*args, **kwargs)

    fatal = critical
    msg = debug


class _StdoutHandler(logging.Handler):
    """Writes stdlib records through the same writer as :class:`_Sink`, to whatever
    ``sys.stdout`` is now, so both halves of the pipeline share one ordered stream (a test's
    captured stdout included)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            log_output.write_line(self.format(record))
        except Exception:
            self.handleError(record)

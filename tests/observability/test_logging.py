"""One log pipeline: our lines and library lines are one JSON object a line (or console text),
and lines inside a request carry its request_id, trace_id and span_id."""

from __future__ import annotations

import io
import logging
import multiprocessing
import multiprocessing.connection
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

from service.observability import log_output
from service.observability.context import reset_request_id, set_request_id
from service.observability.logging import ACCESS_LOGGER, configure_logging, log_access


def _component() -> str:
    # configure_logging is idempotent per arguments: a fresh component forces a fresh handler
    # bound to this test's captured stdout.
    return f"test-{uuid.uuid4().hex[:6]}"


def _json_lines(out: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in out.splitlines() if line.strip()]


def test_our_lines_and_library_lines_are_json_with_request_and_trace_ids(
    capsys: pytest.CaptureFixture[str],
) -> None:
    component = _component()
    configure_logging("INFO", "json", component=component)
    tracer = TracerProvider().get_tracer("test")
    structlog.contextvars.bind_contextvars(request_id="rq-42")
    try:
        with tracer.start_as_current_span("work") as span:
            structlog.get_logger("storefront.test").info("ours", answer=42)
            structlog.get_logger("storefront.test").warning("careful")
            logging.getLogger("uvicorn.error").info("library line")
            logging.getLogger("sqlalchemy.pool").warning("pool warning")
            context = span.get_span_context()
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    records = _json_lines(capsys.readouterr().out)
    assert [r["event"] for r in records] == ["ours", "careful", "library line", "pool warning"]
    assert [r["logger"] for r in records] == [
        "storefront.test",
        "storefront.test",
        "uvicorn.error",
        "sqlalchemy.pool",
    ]
    assert [r["level"] for r in records] == ["info", "warning", "info", "warning"]
    for record in records:
        assert record["request_id"] == "rq-42"
        assert record["trace_id"] == format(context.trace_id, "032x")
        assert record["span_id"] == format(context.span_id, "016x")
        assert record["component"] == component
        # RFC 3339 in UTC with a "Z", for ours and the library lines alike.
        assert record["timestamp"].endswith("Z")
        stamped = datetime.fromisoformat(record["timestamp"])
        assert stamped.utcoffset() == timedelta(0)
        assert abs((datetime.now(UTC) - stamped).total_seconds()) < 60
    assert records[0]["answer"] == 42


def test_lines_outside_a_request_have_no_request_or_trace_ids(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json", component=_component())
    structlog.get_logger("storefront.test").info("startup")
    (record,) = _json_lines(capsys.readouterr().out)
    assert not {"request_id", "trace_id", "span_id"} & set(record)


def test_exceptions_are_rendered_into_the_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json", component=_component())
    try:
        raise ValueError("the reason")
    except ValueError:
        structlog.get_logger("storefront.test").exception("failed")
    (record,) = _json_lines(capsys.readouterr().out)
    assert record["level"] == "error"
    assert "ValueError: the reason" in str(record["exception"])


def test_levels_below_the_configured_one_are_dropped(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("WARNING", "json", component=_component())
    structlog.get_logger("storefront.test").info("hidden")
    logging.getLogger("uvicorn.error").info("hidden too")
    structlog.get_logger("storefront.test").error("shown")
    assert [r["event"] for r in _json_lines(capsys.readouterr().out)] == ["shown"]


def test_console_format_is_for_people(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "console", component=_component())
    structlog.get_logger("storefront.test").info("hello", user="ada")
    out = capsys.readouterr().out
    assert "hello" in out and "user" in out and "ada" in out
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(out.splitlines()[0])


def test_uvicorn_access_log_is_off_because_ours_replaces_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json", component=_component())
    logging.getLogger("uvicorn.access").info("GET / 200")
    assert capsys.readouterr().out == ""


ACCESS_FIELDS = {
    "method": "GET",
    "route": "/api/v1/products/{product_id}",
    "path": "/api/v1/products/1",
    "status": 200,
    "duration_ms": 1.25,
    "client": "127.0.0.1:5000",
}


def test_the_access_line_is_the_line_the_structlog_pipeline_writes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    component = _component()
    configure_logging("INFO", "json", component=component)
    tracer = TracerProvider().get_tracer("test")
    token = set_request_id("rq-7")
    structlog.contextvars.bind_contextvars(tenant="acme")
    try:
        with tracer.start_as_current_span("request") as span:
            log_access(dict(ACCESS_FIELDS))
            structlog.get_logger(ACCESS_LOGGER).info("request", **ACCESS_FIELDS)
            context = span.get_span_context()
    finally:
        structlog.contextvars.unbind_contextvars("tenant")
        reset_request_id(token)
    one_step, pipeline = _json_lines(capsys.readouterr().out)
    for record in (one_step, pipeline):
        assert datetime.fromisoformat(str(record.pop("timestamp"))).utcoffset() == timedelta(0)
    # Same keys, values and order.
    assert list(one_step.items()) == list(pipeline.items())
    assert one_step == {
        **ACCESS_FIELDS,
        "event": "request",
        "tenant": "acme",
        "component": component,
        "request_id": "rq-7",
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "level": "info",
        "logger": ACCESS_LOGGER,
    }


def test_the_access_line_follows_the_console_format_and_the_level(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "console", component=_component())
    log_access(dict(ACCESS_FIELDS))
    out = capsys.readouterr().out
    assert "request" in out and "/api/v1/products/1" in out
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(out.splitlines()[0])
    configure_logging("WARNING", "json", component=_component())
    log_access(dict(ACCESS_FIELDS))
    assert capsys.readouterr().out == ""


def test_gathered_access_lines_are_written_within_the_flush_interval_unprompted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json", component=_component())
    log_access(dict(ACCESS_FIELDS))
    deadline = time.monotonic() + 10 * log_output.FLUSH_INTERVAL_SECONDS
    out = ""
    while not out and time.monotonic() < deadline:
        time.sleep(log_output.FLUSH_INTERVAL_SECONDS / 4)
        out += capsys.readouterr().out
    assert [r["event"] for r in _json_lines(out)] == ["request"]


def test_any_other_line_writes_the_gathered_access_lines_first(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json", component=_component())
    for path in ("/a", "/b"):
        log_access({**ACCESS_FIELDS, "path": path})
    logging.getLogger("uvicorn.error").warning("library line")
    records = _json_lines(capsys.readouterr().out)
    assert [(r["event"], r.get("path")) for r in records] == [
        ("request", "/a"),
        ("request", "/b"),
        ("library line", None),
    ]


def test_a_full_batch_of_access_lines_is_written_at_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json", component=_component())
    for _ in range(log_output.MAX_GATHERED):
        log_access(dict(ACCESS_FIELDS))
    # Read at once: well inside the flush interval, so only the batch limit can have written.
    assert len(_json_lines(capsys.readouterr().out)) == log_output.MAX_GATHERED


def _flush_in_child(connection: multiprocessing.connection.Connection) -> None:
    sys.stdout = io.StringIO()
    log_output.flush()
    connection.send(sys.stdout.getvalue())


def test_a_forked_child_does_not_write_its_parents_gathered_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json", component=_component())
    log_access(dict(ACCESS_FIELDS))
    context = multiprocessing.get_context("fork")
    parent_end, child_end = context.Pipe()
    child = context.Process(target=_flush_in_child, args=(child_end,))
    child.start()
    written_by_child = parent_end.recv()
    child.join(10)
    assert written_by_child == ""
    log_output.flush()
    assert [r["event"] for r in _json_lines(capsys.readouterr().out)] == ["request"]


class _FailsFirstWrite(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def write(self, text: str) -> int:
        if not self.failed:
            self.failed = True
            raise BlockingIOError("the pipe is full")
        return super().write(text)


def test_the_flush_thread_survives_a_failed_write(monkeypatch: pytest.MonkeyPatch) -> None:
    configure_logging("INFO", "json", component=_component())
    stdout = _FailsFirstWrite()
    monkeypatch.setattr(sys, "stdout", stdout)
    deadline = time.monotonic() + 20 * log_output.FLUSH_INTERVAL_SECONDS
    log_access({**ACCESS_FIELDS, "path": "/lost"})
    while not stdout.failed and time.monotonic() < deadline:
        time.sleep(log_output.FLUSH_INTERVAL_SECONDS / 4)
    assert stdout.failed
    log_access({**ACCESS_FIELDS, "path": "/kept"})
    while not stdout.getvalue() and time.monotonic() < deadline:
        time.sleep(log_output.FLUSH_INTERVAL_SECONDS / 4)
    assert [r["path"] for r in _json_lines(stdout.getvalue())] == ["/kept"]


class _ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError("nobody reads")


def test_a_batch_that_cannot_be_written_does_not_fail_the_request_that_filled_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure_logging("INFO", "json", component=_component())
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    for _ in range(log_output.MAX_GATHERED):
        log_access(dict(ACCESS_FIELDS))  # the last one writes the batch, which fails
    monkeypatch.undo()

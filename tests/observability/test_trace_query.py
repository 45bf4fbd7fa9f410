"""Jaeger's trace JSON becomes a span tree (`storefront trace`), without a Jaeger."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from service.observability.trace_query import (
    format_duration,
    render_trace,
    span_tree,
    span_trees,
)


def _span(
    span_id: str,
    name: str,
    start: int,
    duration: int,
    parent: str | None = None,
    process: str = "p1",
    **tags: Any,
) -> dict[str, Any]:
    return {
        "traceID": "abc123",
        "spanID": span_id,
        "operationName": name,
        "references": (
            [{"refType": "CHILD_OF", "traceID": "abc123", "spanID": parent}] if parent else []
        ),
        "startTime": start,
        "duration": duration,
        # Keyword names stand for dotted tags (db_system is db.system) unless already dotted.
        "tags": [
            {"key": k if "." in k else k.replace("_", "."), "type": "string", "value": v}
            for k, v in tags.items()
        ],
        "processID": process,
    }


# Spans arrive in any order: Jaeger does not sort them.
TRACE = {
    "traceID": "abc123",
    "spans": [
        _span("s3", "SELECT storefront", 1_000_300, 900, parent="s1", db_system="sqlite"),
        _span("s2", "GET", 1_000_100, 150, parent="s1", db_system="redis"),
        _span(
            "s1",
            "GET /api/v1/products/{product_id}",
            1_000_000,
            4_500,
            **{"request.id": "rq-1", "http.response.status_code": 200},  # type: ignore[arg-type]
        ),
        _span("s4", "POST", 1_002_000, 1_200, parent="s1", process="p2"),
        _span("s5", "orphan", 1_003_000, 10, parent="missing"),
    ],
    "processes": {
        "p1": {"serviceName": "storefront-api", "tags": []},
        "p2": {"serviceName": "storefront-worker", "tags": []},
    },
}


def test_children_hang_under_their_parent_in_start_order() -> None:
    tree = span_tree(TRACE)
    assert [root.name for root in tree.roots] == ["GET /api/v1/products/{product_id}", "orphan"]
    server = tree.roots[0]
    assert [child.span_id for child in server.children] == ["s2", "s3", "s4"]
    assert tree.span_count() == 5
    assert tree.start_us == 1_000_000


def test_a_span_whose_parent_is_missing_becomes_a_root() -> None:
    tree = span_tree(TRACE)
    assert tree.roots[1].span_id == "s5"


def test_services_and_tags_are_kept() -> None:
    server = span_tree(TRACE).roots[0]
    assert server.service == "storefront-api"
    assert server.tags["request.id"] == "rq-1"
    assert server.children[2].service == "storefront-worker"


def test_errors_are_recognised_from_otel_status_or_error_tags() -> None:
    failing = {
        "traceID": "t",
        "spans": [
            _span("a", "GET /x", 0, 1, **{"otel.status_code": "ERROR"}),
            _span("b", "SELECT", 0, 1, parent="a", error=True),
            _span("c", "GET", 0, 1, parent="a"),
        ],
        "processes": {},
    }
    root = span_tree(failing).roots[0]
    assert root.error
    assert [child.error for child in root.children] == [True, False]


def test_the_most_recent_trace_comes_first() -> None:
    older = {"traceID": "old", "spans": [_span("x", "GET", 10, 1)], "processes": {}}
    newer = {"traceID": "new", "spans": [_span("y", "GET", 20, 1)], "processes": {}}
    assert [t.trace_id for t in span_trees([older, newer])] == ["new", "old"]


def test_durations_read_naturally() -> None:
    assert format_duration(850) == "850 µs"
    assert format_duration(4_500) == "4.50 ms"
    assert format_duration(2_500_000) == "2.50 s"


def test_rendered_tree_shows_each_span_with_duration_offset_and_service() -> None:
    console = Console(record=True, width=200, color_system=None)
    console.print(render_trace(span_tree(TRACE), "rq-1"))
    text = console.export_text()
    lines = text.splitlines()
    assert "trace abc123" in lines[0]
    assert "request rq-1" in lines[0]
    assert "5 spans" in lines[0]
    server_line = next(line for line in lines if "GET /api/v1/products/{product_id}" in line)
    assert "4.50 ms" in server_line
    assert "http.response.status_code=200" in server_line
    select_line = next(line for line in lines if "SELECT storefront" in line)
    assert "900 µs" in select_line
    assert "+300 µs" in select_line
    # Children are drawn indented under their parent.
    assert select_line.index("SELECT") > server_line.index("GET")
    worker_line = next(line for line in lines if "POST" in line)
    assert "[storefront-worker]" in worker_line


def test_an_empty_trace_renders_without_failing() -> None:
    console = Console(record=True, width=120, color_system=None)
    console.print(render_trace(span_tree({"traceID": "t", "spans": [], "processes": {}})))
    assert "0 spans" in console.export_text()

"""Find a trace by request ID in Jaeger and render its span tree (``storefront trace``).

Turning Jaeger's JSON into a tree is pure (:func:`span_trees`, :func:`render_trace`); only
:func:`fetch_traces` talks to the network.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.text import Text
from rich.tree import Tree

REQUEST_ID_TAG = "request.id"

# Attributes worth a glance in the tree, in display order; the rest stay in Jaeger's UI.
SHOWN_TAGS = (
    "http.response.status_code",
    "db.system",
    "db.statement",
    "db.query.text",
    "url.full",
    "error.type",
)
MAX_TAG_CHARS = 80


class TraceQueryError(RuntimeError):
    """The trace backend could not be asked or gave an answer we cannot read."""


@dataclass
class SpanNode:
    """One span of a trace and the spans it caused, ordered by start time."""

    span_id: str
    name: str
    service: str
    start_us: int
    duration_us: int
    tags: dict[str, Any]
    error: bool
    children: list[SpanNode] = field(default_factory=list)


@dataclass
class TraceTree:
    trace_id: str
    start_us: int
    roots: list[SpanNode]

    def span_count(self) -> int:
        def count(nodes: Sequence[SpanNode]) -> int:
            return sum(1 + count(node.children) for node in nodes)

        return count(self.roots)


def _tags(span: Mapping[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag.get("value") for tag in span.get("tags") or () if "key" in tag}


def _is_error(tags: Mapping[str, Any]) -> bool:
    return (
        tags.get("error") in (True, "true")
        or tags.get("otel.status_code") == "ERROR"
        or "error.type" in tags
    )


def _parent_id(span: Mapping[str, Any]) -> str | None:
    for ref in span.get("references") or ():
        if ref.get("refType") == "CHILD_OF":
            return str(ref.get("spanID"))
    parent = span.get("parentSpanID")
    return str(parent) if parent else None


def span_tree(trace: Mapping[str, Any]) -> TraceTree:
    """Jaeger's ``/api/traces`` trace object as a tree; spans whose parent is missing (not yet
    received, or in another service's part of the trace) become roots."""
    processes = trace.get("processes") or {}
    nodes: dict[str, SpanNode] = {}
    parents: dict[str, str | None] = {}
    for span in trace.get("spans") or ():
        tags = _tags(span)
        process = processes.get(span.get("processID"), {})
        node = SpanNode(
            span_id=str(span["spanID"]),
            name=str(span.get("operationName", "")),
            service=str(process.get("serviceName", "")),
            start_us=int(span.get("startTime", 0)),
            duration_us=int(span.get("duration", 0)),
            tags=tags,
            error=_is_error(tags),
        )
        nodes[node.span_id] = node
        parents[node.span_id] = _parent_id(span)
    roots: list[SpanNode] = []
    for span_id, node in nodes.items():
        parent = parents[span_id]
        if parent is not None and parent in nodes and parent != span_id:
            nodes[parent].children.append(node)
        else:
            roots.append(node)
    for node in nodes.values():
        node.children.sort(key=lambda child: child.start_us)
    roots.sort(key=lambda root: root.start_us)
    start = min((node.start_us for node in nodes.values()), default=0)
    return TraceTree(trace_id=str(trace.get("traceID", "")), start_us=start, roots=roots)


def span_trees(traces: Sequence[Mapping[str, Any]]) -> list[TraceTree]:
    """Every trace as a tree, the most recent first."""
    return sorted((span_tree(t) for t in traces), key=lambda t: t.start_us, reverse=True)


def format_duration(micros: int) -> str:
    if micros >= 1_000_000:
        return f"{micros / 1_000_000:.2f} s"
    if micros >= 1_000:
        return f"{micros / 1_000:.2f} ms"
    return f"{micros} µs"


def _shorten(value: Any) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= MAX_TAG_CHARS else text[: MAX_TAG_CHARS - 1] + "…"


def span_label(node: SpanNode, trace_start_us: int, root_service: str) -> Text:
    """``name  duration  +offset  [service]  key=value…`` for one line of the tree."""
    label = Text()
    label.append(node.name, style="bold red" if node.error else "bold")
    label.append(f"  {format_duration(node.duration_us)}", style="cyan")
    label.append(f"  +{format_duration(node.start_us - trace_start_us)}", style="dim")
    if node.service and node.service != root_service:
        label.append(f"  [{node.service}]", style="magenta")
    shown = [f"{key}={_shorten(node.tags[key])}" for key in SHOWN_TAGS if key in node.tags]
    if shown:
        label.append("  " + "  ".join(shown), style="dim")
    return label


def render_trace(tree: TraceTree, request_id: str | None = None) -> Tree:
    """A Rich tree of the trace: one node a span, children under their parent."""
    root_service = tree.roots[0].service if tree.roots else ""
    title = Text(f"trace {tree.trace_id}", style="bold")
    if request_id:
        title.append(f"  request {request_id}", style="green")
    title.append(f"  {tree.span_count()} spans", style="dim")
    if root_service:
        title.append(f"  {root_service}", style="magenta")
    rendered = Tree(title)

    def add(parent: Tree, node: SpanNode) -> None:
        branch = parent.add(span_label(node, tree.start_us, root_service))
        for child in node.children:
            add(branch, child)

    for root in tree.roots:
        add(rendered, root)
    return rendered


def fetch_traces(
    backend_url: str,
    service: str,
    request_id: str,
    lookback_seconds: float = 24 * 3600,
    timeout: float = 10.0,
) -> list[dict[str, Any]]:
    """The traces of ``service`` holding a span tagged ``request.id=request_id``."""
    now_us = int(time.time() * 1_000_000)
    params: dict[str, str | int] = {
        "service": service,
        "tags": json.dumps({REQUEST_ID_TAG: request_id}),
        "start": now_us - int(lookback_seconds * 1_000_000),
        "end": now_us + 60_000_000,
        "limit": 20,
    }
    url = f"{backend_url.rstrip('/')}/api/traces"
    try:
        response = httpx.get(url, params=params, timeout=timeout)
    except httpx.HTTPError as exc:
        raise TraceQueryError(f"cannot reach {url}: {exc}") from exc
    if response.status_code >= 400:
        raise TraceQueryError(f"{url} answered {response.status_code}: {response.text[:200]}")
    try:
        data = response.json().get("data")
    except ValueError as exc:
        raise TraceQueryError(f"{url} did not answer JSON") from exc
    return list(data or [])

"""The one Prometheus registry of the process and every metric Storefront exports.

One uvicorn process per pod is the design (scale with replicas): the multiprocess mode of
prometheus-client cannot carry exemplars and leaks per-pid files when workers are recycled.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

# Buckets advised by the OpenTelemetry HTTP semantic conventions.
HTTP_DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip

HTTP_REQUEST_DURATION = Histogram(
    "http_server_request_duration_seconds",
    "Duration of HTTP server requests, by route template.",
    ["method", "route", "status_code"],
    buckets=HTTP_DURATION_BUCKETS,
    registry=REGISTRY,
)
HTTP_ACTIVE_REQUESTS = Gauge(
    "http_server_active_requests",
    "HTTP requests in progress.",
    ["method"],
    registry=REGISTRY,
)
CACHE_REQUESTS = Counter(
    "storefront_cache_requests_total",
    "Cache look-ups by cache and result (hit or miss).",
    ["cache", "result"],
    registry=REGISTRY,
)
# Bound once: created at zero, so rate() sees the first hit and miss (it cannot see an
# increment that creates its series), and the product read, the hottest route, skips labels().
PRODUCT_CACHE_HITS = CACHE_REQUESTS.labels("product", "hit")
PRODUCT_CACHE_MISSES = CACHE_REQUESTS.labels("product", "miss")
ORDERS_CREATED = Counter("storefront_orders_created_total", "Orders created.", registry=REGISTRY)
ORDER_REVENUE = Counter(
    "storefront_order_revenue_total",
    "Revenue of created orders, in the currency's major unit.",
    registry=REGISTRY,
)
SSE_SUBSCRIBERS = Gauge(
    "storefront_sse_subscribers",
    "Server-Sent Events streams open, by kind.",
    ["kind"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "storefront_rate_limited_total",
    "Requests refused with 429 by a rate limit, by route template and limit.",
    ["route", "limit"],
    registry=REGISTRY,
)
RATE_LIMIT_DEGRADED = Counter(
    "storefront_rate_limit_degraded_total",
    "Rate-limit checks made without Redis (unreachable), by limit and fallback: let through "
    "(open) or counted in this process alone (memory).",
    ["limit", "fallback"],
    registry=REGISTRY,
)
DB_POOL_IN_USE = Gauge(
    "storefront_db_pool_connections_in_use",
    "Database connections checked out of the pool.",
    registry=REGISTRY,
)


# labels() costs a lock and a tuple check per call; the HTTP layer calls it on every request.
# Keys are bounded: methods are normalised, routes are templates, status codes are few.
_duration_children: dict[tuple[str, str, int], Histogram] = {}

# Requests in progress by method: plain counts, read by the gauge when it is scraped
# (set_function), so a request pays two integer updates instead of two locked gauge updates.
# Every request of an API process is served by its one event-loop thread.
ACTIVE_REQUESTS: dict[str, int] = {}


def start_counting_active(method: str) -> None:
    """Expose ``method``'s entry of :data:`ACTIVE_REQUESTS`, at zero, as a gauge series."""
    if method not in ACTIVE_REQUESTS:
        ACTIVE_REQUESTS[method] = 0
        HTTP_ACTIVE_REQUESTS.labels(method).set_function(lambda: ACTIVE_REQUESTS[method])


def request_duration(method: str, route: str, status: int) -> Histogram:
    """The ``http_server_request_duration_seconds`` child for one method, route and status."""
    key = (method, route, status)
    child = _duration_children.get(key)
    if child is None:
        child = _duration_children[key] = HTTP_REQUEST_DURATION.labels(method, route, str(status))
    return child


JOBS_ENQUEUED = Counter(
    "storefront_jobs_enqueued_total",
    "Jobs enqueued by the API, by actor.",
    ["actor"],
    registry=REGISTRY,
)

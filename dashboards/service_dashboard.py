"""The Storefront API dashboard: traffic, errors, rate-limited requests, latency by route (with
exemplars linking to traces), in-flight requests, cache, orders and revenue, database pool,
process resources."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dashboard_builders

from dashboards.common import (
    Query,
    cpu_panel,
    gauge,
    histogram_quantiles,
    memory_panel,
    new_dashboard,
    rate_sum,
    ratio,
    stat_panel,
)
from dashboards.common import timeseries_panel as ts

UID = "storefront-service"
HTTP = "http_server_request_duration_seconds"
REQUESTS = f"{HTTP}_count"
CACHE = "storefront_cache_requests_total"
RATE_LIMITED = "storefront_rate_limited_total"

REQUEST_RATE = rate_sum(REQUESTS)
SERVER_ERROR_RATIO = ratio(rate_sum(REQUESTS, matchers=['status_code=~"5.."']), REQUEST_RATE)
CLIENT_ERROR_RATIO = ratio(rate_sum(REQUESTS, matchers=['status_code=~"4.."']), REQUEST_RATE)
P95 = f"histogram_quantile(0.95, {rate_sum(HTTP + '_bucket', 'le')})"
CACHE_HIT_RATIO = rate_sum(CACHE, "cache", ['result="hit"']) + " / " + rate_sum(CACHE, "cache")
ORDERS_IN_RANGE = rate_sum("storefront_orders_created_total", fn="increase", window="$__range")
REVENUE_IN_RANGE = rate_sum("storefront_order_revenue_total", fn="increase", window="$__range")
ORDERS_PER_MINUTE = rate_sum("storefront_orders_created_total") + " * 60"
REVENUE_PER_MINUTE = rate_sum("storefront_order_revenue_total") + " * 60"


def build() -> dashboard_builders.Dashboard:
    """The service dashboard builder."""
    return (
        new_dashboard(
            UID,
            "Storefront / Service",
            "The Storefront API: RED metrics by route, cache, orders, database pool.",
            anchor=REQUESTS,
        )
        .with_row(dashboard_builders.Row("Overview"))
        .with_panel(stat_panel("Requests", "All routes, per second.", Query(REQUEST_RATE), "reqps"))
        .with_panel(
            stat_panel(
                "Server errors",
                "Share of responses with a 5xx status.",
                Query(SERVER_ERROR_RATIO),
                "percentunit",
                thresholds=((None, "green"), (0.01, "orange"), (0.05, "red")),
            )
        )
        .with_panel(
            stat_panel(
                "Latency p95",
                "95th percentile of request duration, all routes.",
                Query(P95),
                "s",
                thresholds=((None, "green"), (0.25, "orange"), (1.0, "red")),
            )
        )
        .with_panel(
            stat_panel(
                "Orders",
                "Orders created in the selected time range.",
                Query(ORDERS_IN_RANGE),
                "short",
            )
        )
        .with_panel(
            stat_panel(
                "Revenue",
                "Revenue of the orders created in the selected time range.",
                Query(REVENUE_IN_RANGE),
                "currencyUSD",
            )
        )
        .with_panel(
            stat_panel(
                "In flight",
                "HTTP requests being served now.",
                Query(gauge("http_server_active_requests")),
                "short",
            )
        )
        .with_row(dashboard_builders.Row("Traffic and errors"))
        .with_panel(
            ts(
                "Request rate by route",
                "Requests per second by route template and method.",
                [Query(rate_sum(REQUESTS, "method, route"), "{{method}} {{route}}")],
                "reqps",
            )
        )
        .with_panel(
            ts(
                "Error ratio",
                "Share of responses that are server (5xx) and client (4xx) errors.",
                [Query(SERVER_ERROR_RATIO, "5xx"), Query(CLIENT_ERROR_RATIO, "4xx")],
                "percentunit",
            )
        )
        .with_panel(
            ts(
                "Responses by status",
                "Responses per second by status code.",
                [Query(rate_sum(REQUESTS, "status_code"), "{{status_code}}")],
                "reqps",
                stacked=True,
            )
        )
        .with_panel(
            ts(
                "In-flight requests",
                "Requests being served, by method.",
                [Query(gauge("http_server_active_requests", "method"), "{{method}}")],
                "short",
            )
        )
        .with_panel(
            ts(
                "Rate limited",
                "Requests refused with 429, by limit and route template: failed sign-ins per "
                "account or address, sign-ups, reports, exports, image uploads, the global limit.",
                [Query(rate_sum(RATE_LIMITED, "limit, route"), "{{limit}} {{route}}")],
                "reqps",
                width=24,
                height=6,
            )
        )
        .with_row(dashboard_builders.Row("Latency"))
        .with_panel(
            ts(
                "Latency by route (p50 / p95 / p99)",
                "Request duration quantiles by route. Exemplar dots open the request's trace; "
                "the series links search the route's traces.",
                histogram_quantiles(HTTP, "route", exemplar_on=0.99),
                "s",
                width=24,
                height=10,
                trace_links_enabled=True,
            )
        )
        .with_row(dashboard_builders.Row("Business"))
        .with_panel(
            ts(
                "Cache hit ratio",
                "Share of cache look-ups served from Redis, by cache.",
                [Query(CACHE_HIT_RATIO, "{{cache}}")],
                "percentunit",
                width=8,
                max_value=1,
            )
        )
        .with_panel(
            ts(
                "Orders",
                "Orders created per minute.",
                [Query(ORDERS_PER_MINUTE, "orders")],
                "short",
                width=8,
            )
        )
        .with_panel(
            ts(
                "Revenue",
                "Revenue of created orders per minute.",
                [Query(REVENUE_PER_MINUTE, "revenue")],
                "currencyUSD",
                width=8,
            )
        )
        .with_row(dashboard_builders.Row("Resources"))
        .with_panel(
            ts(
                "Database pool",
                "Connections checked out of each instance's pool.",
                [Query(gauge("storefront_db_pool_connections_in_use", "instance"), "{{instance}}")],
                "short",
                width=6,
            )
        )
        .with_panel(
            ts(
                "Live event subscribers",
                "Open Server-Sent Events streams, by kind.",
                [Query(gauge("storefront_sse_subscribers", "kind"), "{{kind}}")],
                "short",
                width=6,
            )
        )
        .with_panel(cpu_panel(width=6))
        .with_panel(memory_panel(width=6))
    )

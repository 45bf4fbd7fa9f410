"""A real Prometheus scrapes the real service: after a known request mix, the PromQL an operator
would write (request rate, error ratio, p95 latency by route) gives the expected series."""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.components.prometheus import PrometheusFactory, PrometheusServer
from tests.components.storefront import ADMIN_EMAIL, ADMIN_PASSWORD, StorefrontProcess
from tests.observability.conftest import StorefrontFactory, png_bytes

pytestmark = [pytest.mark.prometheus, pytest.mark.jaeger, pytest.mark.redis, pytest.mark.slow]

PRICE = 12.5
QTY = 2
# Every route is hit in both phases of the mix (see `scraped`), so each has a rate.
EXPECTED_COUNTS = {
    "/api/v1/auth/token": 2,
    "/api/v1/products": 2,
    "/api/v1/products/{product_id}": 6,
    "/api/v1/orders": 2,
    "/api/v1/products/{product_id}/image": 2,
}
EXPECTED_5XX = 2
# Each order invalidates the product's cached copy, so each phase starts with a miss; the
# unknown product misses too.
EXPECTED_CACHE = {"hit": 2.0, "miss": 4.0}


class Mix:
    """Sends the requests of one phase and checks each answer's status."""

    def __init__(self, service: StorefrontProcess) -> None:
        self.service = service
        self.client = service.client()
        self.auth: dict[str, str] = {}
        self.product_id = 0

    def call(self, method: str, path: str, status: int, **kwargs: Any) -> httpx.Response:
        response = self.client.request(method, path, **kwargs)
        assert response.status_code == status, (path, response.text)
        return response

    def phase(self, product_reads: int) -> None:
        token = self.call(
            "POST",
            "/api/v1/auth/token",
            200,
            data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
        ).json()["access_token"]
        self.auth = {"Authorization": f"Bearer {token}"}
        created = self.call(
            "POST",
            "/api/v1/products",
            201,
            json={
                "name": "Teapot",
                "sku": f"TP-{uuid.uuid4().hex[:6]}",
                "price": PRICE,
                "stock": 50,
            },
            headers=self.auth,
        ).json()
        self.product_id = self.product_id or created["id"]
        path = f"/api/v1/products/{self.product_id}"
        caches = [self.call("GET", path, 200).headers["x-cache"] for _ in range(product_reads)]
        assert caches == ["MISS"] + ["HIT"] * (product_reads - 1)
        self.call("GET", "/api/v1/products/987654", 404)
        self.call(
            "POST",
            "/api/v1/orders",
            201,
            json={"items": [{"product_id": self.product_id, "qty": QTY}]},
            headers=self.auth,
        )
        self.call(
            "POST",
            f"{path}/image",
            500,
            files={"file": ("tiny.png", png_bytes(), "image/png")},
            headers=self.auth,
        )
        # Probes and scrapes are not user traffic: they must not appear in the counts.
        for probe in ("/livez", "/readyz", "/metrics"):
            self.call("GET", probe, 200)


def _by_label(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {series["metric"].get(label, ""): float(series["value"][1]) for series in result}


def _scalar(prometheus: PrometheusServer, promql: str) -> float:
    result = prometheus.wait_for_query(promql)
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def _eventually(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Retry ``check`` until it stops raising AssertionError (Prometheus scrapes every second)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture(scope="module")
def scraped(
    storefront_factory: StorefrontFactory, prometheus_factory: PrometheusFactory
) -> tuple[StorefrontProcess, PrometheusServer]:
    service = storefront_factory(broken_image_table=True)
    prometheus = prometheus_factory(targets=[service.url.removeprefix("http://")])
    prometheus.wait_for_targets_up(job="storefront")
    mix = Mix(service)
    # Prometheus sees no increase in the sample that creates a series: the first phase creates
    # every series and is scraped before the second phase moves them.
    mix.phase(product_reads=1)
    _eventually(
        lambda: _assert_routes(
            prometheus, 'http_server_request_duration_seconds_count{job="storefront"}'
        )
    )
    mix.phase(product_reads=3)
    mix.client.close()
    return service, prometheus


def test_request_counts_by_route_equal_the_requests_sent(
    scraped: tuple[StorefrontProcess, PrometheusServer],
) -> None:
    _, prometheus = scraped

    def counts() -> None:
        result = prometheus.query(
            'sum by (route) (http_server_request_duration_seconds_count{job="storefront"})'
        )
        assert _by_label(result, "route") == EXPECTED_COUNTS

    _eventually(counts)


def test_request_rate_by_route_has_a_series_per_route(
    scraped: tuple[StorefrontProcess, PrometheusServer],
) -> None:
    _, prometheus = scraped

    def rates() -> None:
        result = prometheus.query(
            "sum by (route) "
            '(rate(http_server_request_duration_seconds_count{job="storefront"}[1m]))'
        )
        by_route = _by_label(result, "route")
        assert set(by_route) == set(EXPECTED_COUNTS)
        assert all(rate > 0 for rate in by_route.values()), by_route

    _eventually(rates)


def test_error_ratio_counts_the_5xx_answers(
    scraped: tuple[StorefrontProcess, PrometheusServer],
) -> None:
    _, prometheus = scraped
    total = sum(EXPECTED_COUNTS.values())

    def ratio() -> None:
        value = _scalar(
            prometheus,
            'sum(http_server_request_duration_seconds_count{job="storefront",status_code=~"5.."})'
            ' / sum(http_server_request_duration_seconds_count{job="storefront"})',
        )
        assert value == pytest.approx(EXPECTED_5XX / total)

    _eventually(ratio)
    errors_by_route = _by_label(
        prometheus.query(
            "sum by (route) (rate(http_server_request_duration_seconds_count"
            '{job="storefront",status_code=~"5.."}[1m]))'
        ),
        "route",
    )
    assert list(errors_by_route) == ["/api/v1/products/{product_id}/image"]


def test_p95_latency_by_route_is_finite_for_every_route(
    scraped: tuple[StorefrontProcess, PrometheusServer],
) -> None:
    _, prometheus = scraped

    def p95() -> None:
        result = prometheus.query(
            "histogram_quantile(0.95, sum by (route, le) "
            '(rate(http_server_request_duration_seconds_bucket{job="storefront"}[1m])))'
        )
        by_route = _by_label(result, "route")
        assert set(by_route) == set(EXPECTED_COUNTS)
        assert all(0 < v <= 10 and math.isfinite(v) for v in by_route.values()), by_route

    _eventually(p95)


def test_latency_buckets_are_the_ones_opentelemetry_advises(
    scraped: tuple[StorefrontProcess, PrometheusServer],
) -> None:
    _, prometheus = scraped
    result = prometheus.wait_for_query(
        'count by (le) (http_server_request_duration_seconds_bucket{job="storefront"})'
    )
    bounds = sorted(float(series["metric"]["le"]) for series in result)
    assert bounds == [
        0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, math.inf,
    ]  # fmt: skip


def test_exemplars_link_latency_to_the_traces_of_the_requests(
    scraped: tuple[StorefrontProcess, PrometheusServer],
) -> None:
    service, prometheus = scraped
    access_trace_ids = {
        record["trace_id"]
        for record in service.log_records()
        if record.get("logger") == "storefront.access"
    }

    def exemplars() -> set[str]:
        now = time.time()
        data = prometheus.api(
            "query_exemplars",
            query='http_server_request_duration_seconds_bucket{job="storefront"}',
            start=now - 600,
            end=now + 60,
        )
        found = {
            exemplar["labels"]["trace_id"]
            for series in data
            for exemplar in series["exemplars"]
            if "trace_id" in exemplar["labels"]
        }
        assert found, data
        return found

    found = _eventually(exemplars)
    assert found <= access_trace_ids


def test_business_metrics_move_with_the_requests(
    scraped: tuple[StorefrontProcess, PrometheusServer],
) -> None:
    _, prometheus = scraped

    def business() -> None:
        assert _scalar(prometheus, "storefront_orders_created_total") == 2
        assert _scalar(prometheus, "storefront_order_revenue_total") == pytest.approx(
            2 * QTY * PRICE
        )
        cache = _by_label(
            prometheus.query('storefront_cache_requests_total{cache="product"}'), "result"
        )
        assert cache == EXPECTED_CACHE

    _eventually(business)


def test_process_pool_and_active_request_gauges_are_exported(
    scraped: tuple[StorefrontProcess, PrometheusServer],
) -> None:
    _, prometheus = scraped
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "storefront_db_pool_connections_in_use",
        "http_server_active_requests",
    ):
        assert prometheus.wait_for_query(f'{name}{{job="storefront"}}'), name


def test_sse_subscribers_gauge_follows_open_streams(
    scraped: tuple[StorefrontProcess, PrometheusServer],
) -> None:
    service, prometheus = scraped
    connected = threading.Event()
    done = threading.Event()

    def subscribe() -> None:
        with (
            httpx.Client(base_url=service.url, timeout=30) as client,
            client.stream("GET", "/api/v1/events/orders") as response,
        ):
            assert response.status_code == 200
            connected.set()
            done.wait(30)

    thread = threading.Thread(target=subscribe, daemon=True)
    thread.start()
    try:
        assert connected.wait(10)
        _eventually(
            lambda: _assert_value(prometheus, 'storefront_sse_subscribers{kind="events"}', 1)
        )
    finally:
        done.set()
        thread.join(10)
    _eventually(lambda: _assert_value(prometheus, 'storefront_sse_subscribers{kind="events"}', 0))


def _assert_value(prometheus: PrometheusServer, promql: str, expected: float) -> None:
    result = prometheus.query(promql)
    assert [float(series["value"][1]) for series in result] == [expected], result


def _assert_routes(prometheus: PrometheusServer, promql: str) -> None:
    routes = {series["metric"].get("route") for series in prometheus.query(promql)}
    assert routes == set(EXPECTED_COUNTS), routes

"""The known workload that lights every panel, and the check that the panels have data:
`python -m dashboards.smoke --api URL --prometheus URL` (the kind e2e script and the dashboard
tests run the same steps)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from dashboards.promql import DEFAULT_VARIABLES, PanelQuery, expand, panel_queries

REPO_ROOT = Path(__file__).resolve().parents[1]
SHOPPER_PASSWORD = "correct-horse-battery"  # a throwaway account the workload registers


@dataclass(frozen=True)
class Workload:
    """What drive() did: counts the business panels must show."""

    products: int
    orders: int
    cache_hits: int
    cache_misses: int
    rate_limited: int


def drive(api_url: str, admin_email: str, admin_password: str, settle: float = 2.5) -> Workload:
    """A short shopping session: an admin adds products, a shopper browses (cache misses, then
    hits), orders, hits a 404 and a 422, and listens to live events for a moment; then someone
    guesses a password until the sign-in limit answers 429.

    `settle` seconds pass between the warm-up and the counted reads, so both cache series exist
    when Prometheus scrapes (rate() cannot see the increments that create a series).
    """
    run = uuid.uuid4().hex[:8]
    with httpx.Client(base_url=api_url, timeout=30) as http:
        admin = _login(http, admin_email, admin_password)
        products = []
        for i, price in enumerate((12.5, 40.0, 7.25)):
            created = http.post(
                "/api/v1/products",
                json={"name": f"Item {i}", "price": price, "sku": f"SMOKE-{run}-{i}", "stock": 100},
                headers=admin,
            )
            _expect(created, 201)
            products.append(created.json())
        for _ in range(2):  # warm-up: one miss and one hit
            _expect(http.get(f"/api/v1/products/{products[0]['id']}"), 200)
        time.sleep(settle)
        for _ in range(3):
            _expect(http.get("/api/v1/products"), 200)
            for product in products:
                # The first read of products 1 and 2 misses the cache, every other read hits.
                _expect(http.get(f"/api/v1/products/{product['id']}"), 200)
        email = f"shopper-{run}@example.com"
        _expect(
            http.post(
                "/api/v1/users",
                json={"email": email, "name": "Shopper", "password": SHOPPER_PASSWORD},
            ),
            201,
        )
        shopper = _login(http, email, SHOPPER_PASSWORD)
        for product in products:
            order = {"items": [{"product_id": product["id"], "qty": 2}]}
            _expect(http.post("/api/v1/orders", json=order, headers=shopper), 201)
        _expect(http.get("/api/v1/products/987654321"), 404)
        _expect(http.post("/api/v1/orders", json={"items": "none"}, headers=shopper), 422)
        with http.stream("GET", "/api/v1/events/orders", timeout=10) as stream:
            _expect(stream, 200)
            time.sleep(1.5)
        # An account nobody has, so no real account is locked; refused twice, a scrape apart,
        # so the rate-limit series exists before it grows.
        guessed = f"nobody-{run}@example.com"
        _guess_until_refused(http, guessed)
        time.sleep(settle)
        _expect(_guess(http, guessed), 429)
    # Counted reads: 7 hits; misses: products 1 and 2 once each, and the unknown product.
    return Workload(products=3, orders=3, cache_hits=7, cache_misses=3, rate_limited=2)


def _guess(http: httpx.Client, email: str) -> httpx.Response:
    return http.post("/api/v1/auth/token", data={"username": email, "password": "a-wrong-guess"})


def _guess_until_refused(http: httpx.Client, email: str, attempts: int = 30) -> None:
    """Wrong passwords for ``email`` until the per-account sign-in limit answers 429."""
    for _ in range(attempts):
        response = _guess(http, email)
        if response.status_code == 429:
            return
        _expect(response, 401)
    raise AssertionError(f"no 429 after {attempts} failed sign-ins for one account")


def _login(http: httpx.Client, email: str, password: str) -> dict[str, str]:
    response = http.post("/api/v1/auth/token", data={"username": email, "password": password})
    _expect(response, 200)
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _expect(response: httpx.Response, status: int) -> None:
    if response.status_code != status:
        response.read()
        raise AssertionError(
            f"{response.request.method} {response.request.url.path}: expected {status}, "
            f"got {response.status_code}: {response.text[:500]}"
        )


def finite_values(prometheus_url: str, promql: str) -> list[float]:
    """The non-NaN values of an instant query."""
    response = httpx.get(f"{prometheus_url.rstrip('/')}/api/v1/query", params={"query": promql},
                         timeout=10)  # fmt: skip
    response.raise_for_status()
    body = response.json()
    values = [float(r["value"][1]) for r in body["data"]["result"]]
    return [v for v in values if not math.isnan(v)]


def empty_panels(
    prometheus_url: str,
    dashboards: Sequence[Mapping[str, Any]],
    variables: Mapping[str, str] = DEFAULT_VARIABLES,
) -> list[PanelQuery]:
    """The queries of `dashboards` that return no (finite) data right now."""
    return [
        query
        for dashboard in dashboards
        for query in panel_queries(dashboard)
        if not finite_values(prometheus_url, expand(query.expr, variables))
    ]


def load_dashboards(uids: Sequence[str]) -> list[dict[str, Any]]:
    return [json.loads((REPO_ROOT / "dashboards" / f"{uid}.json").read_text()) for uid in uids]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.smoke", description=__doc__)
    parser.add_argument("--api", help="Storefront API base URL: drive the workload first")
    parser.add_argument("--admin-email", default="admin@example.com")
    parser.add_argument("--admin-password", default="")
    parser.add_argument("--prometheus", required=True, help="Prometheus base URL")
    parser.add_argument(
        "--dashboard",
        action="append",
        help="Dashboard uid to check (repeatable; default: service and worker)",
    )
    parser.add_argument("--rate-interval", default="5m", help="Value of $__rate_interval")
    parser.add_argument("--timeout", type=float, default=180, help="Seconds to wait for data")
    args = parser.parse_args(argv)
    if args.api:
        done = drive(args.api, args.admin_email, args.admin_password)
        print(f"workload: {done}")
    dashboards = load_dashboards(args.dashboard or ["storefront-service", "storefront-worker"])
    variables = {**DEFAULT_VARIABLES, "__rate_interval": args.rate_interval}
    deadline = time.monotonic() + args.timeout
    while True:
        empty = empty_panels(args.prometheus, dashboards, variables)
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(5)
    total = sum(len(list(panel_queries(d))) for d in dashboards)
    for query in empty:
        print(f"no data: {query.name}", file=sys.stderr)
    print(f"{total - len(empty)}/{total} panel queries return data")
    return 1 if empty else 0


if __name__ == "__main__":
    raise SystemExit(main())

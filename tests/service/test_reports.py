"""The orders CSV report: streamed, attached, filtered by a validated date range."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta

import httpx

from tests.service.conftest import ProductFactory, UserFactory


async def test_orders_csv_streams_the_orders_in_range(
    client: httpx.AsyncClient,
    make_user: UserFactory,
    make_product: ProductFactory,
    admin_headers: dict[str, str],
) -> None:
    user = await make_user()
    product = await make_product(price=4, stock=100)
    ids = []
    for qty in (1, 2, 3):
        order = await client.post(
            "/api/v1/orders",
            json={"items": [{"product_id": product["id"], "qty": qty}]},
            headers=user.headers,
        )
        ids.append(order.json()["id"])
    today = datetime.now(UTC).date()
    async with client.stream(
        "GET",
        "/api/v1/reports/orders.csv",
        params={"start_date": str(today), "end_date": str(today + timedelta(days=1))},
        headers=admin_headers,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert response.headers["content-disposition"].startswith("attachment;")
        text = "".join([chunk async for chunk in response.aiter_text()])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["order_id"]) for r in rows] == ids
    assert [r["total"] for r in rows] == ["4.00", "8.00", "12.00"]


async def test_orders_outside_the_range_are_left_out(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    make_user: UserFactory,
    make_product: ProductFactory,
) -> None:
    user = await make_user()
    product = await make_product()
    await client.post(
        "/api/v1/orders",
        json={"items": [{"product_id": product["id"], "qty": 1}]},
        headers=user.headers,
    )
    response = await client.get(
        "/api/v1/reports/orders.csv",
        params={"start_date": "2020-01-01", "end_date": "2020-02-01"},
        headers=admin_headers,
    )
    assert response.text.strip().splitlines() == [
        "order_id,created_at,user_id,status,items,discount_pct,total"
    ]


async def test_end_not_after_start_is_rejected(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    day = str(date(2026, 1, 1))
    response = await client.get(
        "/api/v1/reports/orders.csv",
        params={"start_date": day, "end_date": day},
        headers=admin_headers,
    )
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "end_date must be after start_date"


async def test_report_is_admin_only(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    user = await make_user()
    response = await client.get(
        "/api/v1/reports/orders.csv",
        params={"start_date": "2026-01-01", "end_date": "2026-01-02"},
        headers=user.headers,
    )
    assert response.status_code == 403

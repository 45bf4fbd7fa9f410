"""Orders: pricing at order time, atomic stock, and no peeking at other users' orders."""

from __future__ import annotations

import asyncio
import re

import httpx

from tests.service.conftest import (
    ProductFactory,
    UserFactory,
)


async def test_order_is_priced_with_computed_totals(
    client: httpx.AsyncClient, make_user: UserFactory, make_product: ProductFactory
) -> None:
    user = await make_user()
    mug, lamp = await make_product(price=9.99), await make_product(price=30)
    response = await client.post(
        "/api/v1/orders",
        json={
            "items": [{"product_id": mug["id"], "qty": 3}, {"product_id": lamp["id"], "qty": 1}],
            "discount_pct": 10,
        },
        headers=user.headers,
    )
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "pending"
    assert [(i["product_id"], i["qty"], i["price"]) for i in order["items"]] == [
        (mug["id"], 3, 9.99),
        (lamp["id"], 1, 30.0),
    ]
    assert order["subtotal"] == 59.97
    assert order["total"] == 53.97  # 59.97 - 6.00 (10 %, rounded half up)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", order["created_at"])


async def test_price_is_captured_at_order_time(
    client: httpx.AsyncClient,
    make_user: UserFactory,
    make_product: ProductFactory,
    admin_headers: dict[str, str],
) -> None:
    user = await make_user()
    product = await make_product(price=10)
    order = (
        await client.post(
            "/api/v1/orders",
            json={"items": [{"product_id": product["id"], "qty": 1}]},
            headers=user.headers,
        )
    ).json()
    await client.patch(
        f"/api/v1/products/{product['id']}", json={"price": 99}, headers=admin_headers
    )
    again = (await client.get(f"/api/v1/orders/{order['id']}", headers=user.headers)).json()
    assert again["items"][0]["price"] == 10.0 and again["total"] == 10.0


async def test_stock_is_decremented_and_visible_through_the_cache(
    client: httpx.AsyncClient, make_user: UserFactory, make_product: ProductFactory
) -> None:
    user = await make_user()
    product = await make_product(stock=5)
    await client.get(f"/api/v1/products/{product['id']}")  # warm the cache
    await client.post(
        "/api/v1/orders",
        json={"items": [{"product_id": product["id"], "qty": 2}]},
        headers=user.headers,
    )
    after = await client.get(f"/api/v1/products/{product['id']}")
    assert after.json()["stock"] == 3 and after.headers["x-cache"] == "MISS"


async def test_unknown_product_is_not_found(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    response = await client.post(
        "/api/v1/orders", json={"items": [{"product_id": 12345, "qty": 1}]}, headers=user.headers
    )
    assert response.status_code == 404
    assert "12345" in response.json()["error"]["message"]


async def test_insufficient_stock_is_a_conflict_and_takes_nothing(
    client: httpx.AsyncClient, make_user: UserFactory, make_product: ProductFactory
) -> None:
    user = await make_user()
    plenty, scarce = await make_product(stock=10), await make_product(stock=1)
    response = await client.post(
        "/api/v1/orders",
        json={
            "items": [
                {"product_id": plenty["id"], "qty": 2},
                {"product_id": scarce["id"], "qty": 2},
            ]
        },
        headers=user.headers,
    )
    assert response.status_code == 409
    untouched = (await client.get(f"/api/v1/products/{plenty['id']}")).json()
    assert untouched["stock"] == 10  # the whole order rolled back


async def test_concurrent_orders_never_oversell(
    client: httpx.AsyncClient, make_user: UserFactory, make_product: ProductFactory
) -> None:
    users = [await make_user() for _ in range(4)]
    product = await make_product(stock=5)

    async def buy(headers: dict[str, str]) -> int:
        response = await client.post(
            "/api/v1/orders",
            json={"items": [{"product_id": product["id"], "qty": 1}]},
            headers=headers,
        )
        return response.status_code

    statuses = await asyncio.gather(*(buy(users[i % 4].headers) for i in range(8)))
    assert sorted(statuses) == [201] * 5 + [409] * 3
    assert (await client.get(f"/api/v1/products/{product['id']}")).json()["stock"] == 0


async def test_users_cannot_see_each_others_orders(
    client: httpx.AsyncClient, make_user: UserFactory, make_product: ProductFactory
) -> None:
    alice, bob = await make_user("Alice"), await make_user("Bob")
    product = await make_product()
    order = (
        await client.post(
            "/api/v1/orders",
            json={"items": [{"product_id": product["id"], "qty": 1}]},
            headers=alice.headers,
        )
    ).json()
    probe = await client.get(f"/api/v1/orders/{order['id']}", headers=bob.headers)
    assert probe.status_code == 404  # not 403: order ids cannot be probed
    assert probe.json()["error"]["code"] == "RESOURCE_NOT_FOUND"
    assert (await client.get("/api/v1/orders", headers=bob.headers)).json()["total"] == 0
    own = (await client.get("/api/v1/orders", headers=alice.headers)).json()
    assert [o["id"] for o in own["items"]] == [order["id"]]


async def test_order_validation(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    user = await make_user()
    for payload in (
        {"items": []},
        {"items": [{"product_id": 1, "qty": 0}]},
        {"items": [{"product_id": 1, "qty": 1}], "discount_pct": 150},
        {"items": [{"product_id": 10**30, "qty": 1}]},
    ):
        response = await client.post("/api/v1/orders", json=payload, headers=user.headers)
        assert response.status_code == 422, payload
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_a_new_order_names_its_confirmation_job_which_answers_at_once(
    client: httpx.AsyncClient,
    make_user: UserFactory,
    make_product: ProductFactory,
    admin_headers: dict[str, str],
) -> None:
    user = await make_user()
    product = await make_product()
    response = await client.post(
        "/api/v1/orders",
        json={"items": [{"product_id": product["id"], "qty": 1}]},
        headers=user.headers,
    )
    assert response.status_code == 201, response.text
    job_id = response.json()["confirmation_job_id"]
    # No worker runs here: the job is known as queued before any worker has seen it.
    job = await client.get(f"/api/v1/jobs/{job_id}", headers=admin_headers)
    assert job.status_code == 200, job.text
    assert job.json() == {
        "job_id": job_id,
        "status": "queued",
        "progress": 0,
        "result": None,
        "error": None,
    }
    forbidden = await client.get(f"/api/v1/jobs/{job_id}", headers=user.headers)
    assert forbidden.status_code == 403  # job status is for administrators


async def test_an_order_cannot_set_its_own_prices_status_or_owner(
    client: httpx.AsyncClient, make_user: UserFactory, make_product: ProductFactory
) -> None:
    shopper, other = await make_user(), await make_user()
    product = await make_product(price=20)
    response = await client.post(
        "/api/v1/orders",
        json={
            "items": [{"product_id": product["id"], "qty": 2, "price": 0.01, "unit_price": 0.01}],
            "status": "paid",
            "total": 0.01,
            "user_id": other.id,
        },
        headers=shopper.headers,
    )
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["items"][0]["price"] == 20.0 and order["total"] == 40.0
    assert order["status"] == "pending"
    theirs = await client.get(f"/api/v1/orders/{order['id']}", headers=other.headers)
    assert theirs.status_code == 404

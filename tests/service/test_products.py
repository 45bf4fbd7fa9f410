"""The catalogue: admin-only writes, the Redis cache, pagination and image off-loading."""

from __future__ import annotations

import io
import threading
from typing import Any

import httpx
import pytest
from PIL import Image

from service.services import products
from tests.service.conftest import ProductFactory, UserFactory


async def test_only_admins_create_products(
    client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    payload = {"name": "Lamp", "price": 30, "sku": "LAMP-1", "stock": 3}
    anonymous = await client.post("/api/v1/products", json=payload)
    assert anonymous.status_code == 401
    forbidden = await client.post("/api/v1/products", json=payload, headers=user.headers)
    assert forbidden.status_code == 403


async def test_duplicate_sku_is_a_conflict(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    payload = {"name": "Lamp", "price": 30, "sku": "LAMP-1", "stock": 3}
    assert (
        await client.post("/api/v1/products", json=payload, headers=admin_headers)
    ).status_code == 201
    again = await client.post("/api/v1/products", json=payload, headers=admin_headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "CONFLICT"


async def test_read_is_a_miss_then_a_hit(
    client: httpx.AsyncClient, make_product: ProductFactory
) -> None:
    product = await make_product(price=9.99)
    first = await client.get(f"/api/v1/products/{product['id']}")
    second = await client.get(f"/api/v1/products/{product['id']}")
    assert first.headers["x-cache"] == "MISS" and second.headers["x-cache"] == "HIT"
    assert first.json() == second.json() == product


async def test_cached_copy_lives_in_redis_with_a_ttl(
    client: httpx.AsyncClient, make_product: ProductFactory, app: Any
) -> None:
    product = await make_product()
    await client.get(f"/api/v1/products/{product['id']}")
    ttl = await app.state.resources.redis.ttl(products.cache_key(product["id"]))
    assert 0 < ttl <= app.state.resources.settings.product_cache_ttl_seconds


async def test_update_invalidates_the_cache(
    client: httpx.AsyncClient, make_product: ProductFactory, admin_headers: dict[str, str]
) -> None:
    product = await make_product(price=5)
    await client.get(f"/api/v1/products/{product['id']}")
    patched = await client.patch(
        f"/api/v1/products/{product['id']}", json={"price": 7.5}, headers=admin_headers
    )
    assert patched.status_code == 200 and patched.json()["price"] == 7.5
    after = await client.get(f"/api/v1/products/{product['id']}")
    assert after.headers["x-cache"] == "MISS" and after.json()["price"] == 7.5


async def test_unknown_product_is_not_found(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/products/999")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "RESOURCE_NOT_FOUND"


async def test_list_is_paginated(client: httpx.AsyncClient, make_product: ProductFactory) -> None:
    for _ in range(5):
        await make_product()
    page = (await client.get("/api/v1/products", params={"page": 2, "size": 2})).json()
    assert page["page"] == 2 and page["size"] == 2 and page["total"] == 5
    assert [item["sku"] for item in page["items"]] == ["SKU-3", "SKU-4"]


async def test_page_size_over_100_is_a_bad_request(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/products", params={"size": 101})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BAD_REQUEST"
    assert "100" in response.json()["error"]["message"]


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_image_upload_is_resized_off_the_event_loop(
    client: httpx.AsyncClient,
    make_product: ProductFactory,
    admin_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    product = await make_product()
    threads: list[str] = []
    original = products.resize_image

    def recording_resize(*args: Any) -> Any:
        threads.append(threading.current_thread().name)
        return original(*args)

    monkeypatch.setattr(products, "resize_image", recording_resize)
    response = await client.post(
        f"/api/v1/products/{product['id']}/image",
        files={"file": ("big.png", _png(3000, 1500), "image/png")},
        headers=admin_headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (1024, 512)
    assert body["bytes"] > 0
    job = await client.get(f"/api/v1/jobs/{body['job_id']}", headers=admin_headers)
    assert job.json()["status"] == "queued"  # thumbnails follow on the worker
    assert threads and threads[0] != threading.main_thread().name


async def test_non_image_upload_is_a_validation_error(
    client: httpx.AsyncClient, make_product: ProductFactory, admin_headers: dict[str, str]
) -> None:
    product = await make_product()
    response = await client.post(
        f"/api/v1/products/{product['id']}/image",
        files={"file": ("x.png", b"definitely not an image", "image/png")},
        headers=admin_headers,
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_v2_cursor_pagination_walks_every_product(
    client: httpx.AsyncClient, make_product: ProductFactory
) -> None:
    created = [(await make_product())["id"] for _ in range(5)]
    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/v2/products", params=params)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == created


async def test_v2_malformed_cursor_is_a_validation_error(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v2/products", params={"cursor": "!!not-base64!!"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"

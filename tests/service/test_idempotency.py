"""Idempotency-Key: a retried POST acts once and answers as the first request did, on SQLite and
PostgreSQL; a key reused with another request, or retried while its first request still runs,
is refused; without the header nothing changes."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI
from PIL import Image
from sqlalchemy import select, update

from service.api.idempotency import IdempotentRequest
from service.core.errors import BadRequestError, ConflictError
from service.core.settings import Settings
from service.main import create_app
from service.models import IdempotencyKey
from service.models.base import utcnow
from service.schemas.order import OrderCreate, OrderItemIn, OrderOut, OrderPlaced
from service.services import idempotency, orders
from tests.service.conftest import (
    ADMIN_PASSWORD,
    JWT_SECRET,
    ProductFactory,
    UserFactory,
    asgi_client,
    login,
    running_app,
)

ORDERS = "/api/v1/orders"
REPLAYED = "idempotent-replayed"


def keyed(headers: dict[str, str], key: str) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


def order_body(product_id: int, qty: int = 1) -> dict[str, Any]:
    return {"items": [{"product_id": product_id, "qty": qty}]}


def request_fingerprint(path: str, body: dict[str, Any]) -> str:
    return idempotency.fingerprint("POST", path, idempotency.canonical_json(orjson.dumps(body)))


async def stored_keys(app: FastAPI) -> list[IdempotencyKey]:
    async with app.state.resources.sessions() as session:
        return list(await session.scalars(select(IdempotencyKey).order_by(IdempotencyKey.id)))


async def order_ids(client: httpx.AsyncClient, headers: dict[str, str]) -> list[int]:
    page = (await client.get(ORDERS, headers=headers)).json()
    return [order["id"] for order in page["items"]]


async def stock(client: httpx.AsyncClient, product_id: int) -> int:
    return int((await client.get(f"/api/v1/products/{product_id}")).json()["stock"])


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and error["request_id"]
    return dict(error)


# ---------------------------------------------------------------------------------------------
# Orders, through the API.
# ---------------------------------------------------------------------------------------------


async def test_a_retry_with_the_same_key_gets_the_first_answer_and_orders_once(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory, make_product: ProductFactory
) -> None:
    user, product = await make_user(), await make_product(stock=5)
    body = {"items": [{"product_id": product["id"], "qty": 2}], "discount_pct": 10}
    first = await client.post(ORDERS, json=body, headers=keyed(user.headers, "order-1"))
    assert first.status_code == 201, first.text
    assert REPLAYED not in first.headers

    # The retry spells the same JSON document differently: same request.
    spelled = (
        b'{ "discount_pct": 10,\n  "items": [ {"qty": 2, "product_id": %d} ] }' % (product["id"])
    )
    retry = await client.post(
        ORDERS,
        content=spelled,
        headers={**keyed(user.headers, "order-1"), "Content-Type": "application/json"},
    )
    assert retry.status_code == 201
    assert retry.headers[REPLAYED] == "true"
    assert retry.content == first.content  # confirmation_job_id included
    assert await order_ids(client, user.headers) == [first.json()["id"]]
    assert await stock(client, product["id"]) == 3

    [key] = await stored_keys(app)
    assert (key.user_id, key.key, key.response_status) == (user.id, "order-1", 201)
    assert key.expires_at - key.created_at == timedelta(hours=24)  # the default TTL


async def test_the_same_key_with_another_request_is_refused(
    client: httpx.AsyncClient,
    make_user: UserFactory,
    make_product: ProductFactory,
    admin_headers: dict[str, str],
) -> None:
    user, product = await make_user(), await make_product()
    first = await client.post(
        ORDERS, json=order_body(product["id"], 1), headers=keyed(user.headers, "k")
    )
    assert first.status_code == 201
    other = await client.post(
        ORDERS, json=order_body(product["id"], 2), headers=keyed(user.headers, "k")
    )
    error = assert_error(other, 422, "IDEMPOTENCY_KEY_REUSED")
    assert "Idempotency-Key" in error["message"]
    assert await order_ids(client, user.headers) == [first.json()["id"]]

    # Method and path are part of the request: the same key on another route is reuse too.
    created = await client.post(
        "/api/v1/products",
        json={"name": "Kettle", "price": 30, "sku": "KETTLE-1", "stock": 1},
        headers=keyed(admin_headers, "admin-key"),
    )
    assert created.status_code == 201
    report = await client.post(
        "/api/v1/reports",
        json={"start_date": "2026-01-01", "end_date": "2026-02-01"},
        headers=keyed(admin_headers, "admin-key"),
    )
    assert_error(report, 422, "IDEMPOTENCY_KEY_REUSED")


async def test_keys_belong_to_their_user(
    client: httpx.AsyncClient, make_user: UserFactory, make_product: ProductFactory
) -> None:
    alice, bob = await make_user("Alice"), await make_user("Bob")
    product = await make_product()
    for account in (alice, bob):
        response = await client.post(
            ORDERS, json=order_body(product["id"]), headers=keyed(account.headers, "same-key")
        )
        assert response.status_code == 201 and REPLAYED not in response.headers
    assert len(await order_ids(client, alice.headers)) == 1
    assert len(await order_ids(client, bob.headers)) == 1


async def test_concurrent_requests_with_one_key_place_one_order(
    client: httpx.AsyncClient, make_user: UserFactory, make_product: ProductFactory
) -> None:
    user, product = await make_user(), await make_product(stock=100)

    async def place() -> httpx.Response:
        return await client.post(
            ORDERS, json=order_body(product["id"], 3), headers=keyed(user.headers, "double-click")
        )

    responses = await asyncio.gather(*(place() for _ in range(6)))
    originals = [r for r in responses if r.status_code == 201 and REPLAYED not in r.headers]
    assert len(originals) == 1, [(r.status_code, r.headers.get(REPLAYED)) for r in responses]
    for response in responses:
        if response is originals[0]:
            continue
        if response.status_code == 409:
            assert_error(response, 409, "CONFLICT")
            assert response.headers["retry-after"] == "1"
        else:  # arrived after the first request finished
            assert response.status_code == 201 and response.headers[REPLAYED] == "true"
            assert response.content == originals[0].content
    assert await order_ids(client, user.headers) == [originals[0].json()["id"]]
    assert await stock(client, product["id"]) == 97


async def test_a_retry_while_the_first_request_runs_is_a_conflict(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory, make_product: ProductFactory
) -> None:
    user, product = await make_user(), await make_product()
    body = order_body(product["id"])
    async with app.state.resources.sessions() as session:  # the first request, still running
        await idempotency.claim(
            session, user.id, "slow", request_fingerprint(ORDERS, body), timedelta(hours=1)
        )
    retry = await client.post(ORDERS, json=body, headers=keyed(user.headers, "slow"))
    assert_error(retry, 409, "CONFLICT")
    assert retry.headers["retry-after"] == "1"
    # Another request under that key is refused as reuse, running or not.
    other = await client.post(
        ORDERS, json=order_body(product["id"], 2), headers=keyed(user.headers, "slow")
    )
    assert_error(other, 422, "IDEMPOTENCY_KEY_REUSED")
    assert await order_ids(client, user.headers) == []


async def test_a_failed_request_frees_its_key_for_the_retry(
    app: FastAPI,
    client: httpx.AsyncClient,
    make_user: UserFactory,
    make_product: ProductFactory,
    admin_headers: dict[str, str],
) -> None:
    user, product = await make_user(), await make_product(stock=1)
    headers = keyed(user.headers, "retry-me")
    # Nothing was written, so nothing is remembered: the error is not replayed.
    short = await client.post(ORDERS, json=order_body(product["id"], 2), headers=headers)
    assert_error(short, 409, "CONFLICT")
    assert "retry-after" not in short.headers
    assert await stored_keys(app) == []
    invalid = await client.post(ORDERS, json={"items": []}, headers=headers)
    assert_error(invalid, 422, "VALIDATION_ERROR")
    assert await stored_keys(app) == []

    restocked = await client.patch(
        f"/api/v1/products/{product['id']}", json={"stock": 5}, headers=admin_headers
    )
    assert restocked.status_code == 200
    placed = await client.post(ORDERS, json=order_body(product["id"], 2), headers=headers)
    assert placed.status_code == 201 and REPLAYED not in placed.headers
    again = await client.post(ORDERS, json=order_body(product["id"], 2), headers=headers)
    assert again.status_code == 201 and again.headers[REPLAYED] == "true"
    assert await stock(client, product["id"]) == 3


async def test_an_abandoned_claim_is_taken_over_and_its_holder_can_no_longer_complete_it(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory, make_product: ProductFactory
) -> None:
    """A request that died after claiming its key (a killed pod) leaves it in flight; a retry
    after :data:`idempotency.ABANDONED_AFTER` takes it over. Should the first request turn out
    to be alive after all, its order is rolled back rather than placed twice."""
    user, product = await make_user(), await make_product(stock=10)
    body = order_body(product["id"], 2)
    resources = app.state.resources
    async with resources.sessions() as session:
        first = await idempotency.claim(
            session, user.id, "k", request_fingerprint(ORDERS, body), timedelta(hours=1)
        )
        await session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.id == first.id)
            .values(locked_at=utcnow() - idempotency.ABANDONED_AFTER - timedelta(seconds=1))
        )
        await session.commit()

    retry = await client.post(ORDERS, json=body, headers=keyed(user.headers, "k"))
    assert retry.status_code == 201 and REPLAYED not in retry.headers
    [key] = await stored_keys(app)
    assert key.id == first.id and key.lock_token != first.token and key.response_status == 201

    def render(placed: orders.PlacedOrder) -> OrderPlaced:
        order = OrderOut.model_validate(placed.order)
        return OrderPlaced(**dict(order), confirmation_job_id=placed.confirmation_job_id)

    late = IdempotentRequest(first, 201)
    data = OrderCreate(items=[OrderItemIn(product_id=product["id"], qty=2)])
    async with resources.sessions() as session:
        with pytest.raises(ConflictError):
            await orders.create_order(
                session, resources.redis, user.id, data, before_commit=late.records(render)
            )
    assert await order_ids(client, user.headers) == [retry.json()["id"]]
    assert await stock(client, product["id"]) == 8


async def test_bad_keys_are_a_bad_request_and_do_nothing(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory, make_product: ProductFactory
) -> None:
    user, product = await make_user(), await make_product()
    bad = [
        b"",
        b"k" * 256,
        "caf\u00e9".encode(),
        b"tab\there",
        b'""',
        b'"a"b"',
        b'"ends in a backslash\\"',
        b'"\\n is no escape"',
    ]
    authorization = {name.encode(): value.encode() for name, value in user.headers.items()}
    for value in bad:
        response = await client.post(
            ORDERS,
            json=order_body(product["id"]),
            headers={**authorization, b"Idempotency-Key": value},
        )
        error = assert_error(response, 400, "BAD_REQUEST")
        assert "Idempotency-Key" in error["message"], value
    assert await order_ids(client, user.headers) == []
    assert await stored_keys(app) == []

    # The draft's quoted form and the bare form name the same key; 255 characters fit.
    quoted = await client.post(
        ORDERS, json=order_body(product["id"]), headers=keyed(user.headers, '"k-\\"1\\""')
    )
    assert quoted.status_code == 201, quoted.text
    bare = await client.post(
        ORDERS, json=order_body(product["id"]), headers=keyed(user.headers, 'k-"1"')
    )
    assert bare.headers[REPLAYED] == "true"
    longest = await client.post(
        ORDERS, json=order_body(product["id"]), headers=keyed(user.headers, "k" * 255)
    )
    assert longest.status_code == 201
    assert [key.key for key in await stored_keys(app)] == ['k-"1"', "k" * 255]


async def test_requests_without_the_header_behave_as_before(
    app: FastAPI, client: httpx.AsyncClient, make_user: UserFactory, make_product: ProductFactory
) -> None:
    user, product = await make_user(), await make_product()
    first = await client.post(ORDERS, json=order_body(product["id"]), headers=user.headers)
    second = await client.post(ORDERS, json=order_body(product["id"]), headers=user.headers)
    assert (first.status_code, second.status_code) == (201, 201)
    assert REPLAYED not in first.headers and REPLAYED not in second.headers
    assert first.json()["id"] != second.json()["id"]
    assert len(await order_ids(client, user.headers)) == 2
    assert await stored_keys(app) == []


async def test_keys_expire_after_the_configured_time(settings: Settings) -> None:
    short = settings.model_copy(update={"idempotency_key_ttl_seconds": 1})
    async with running_app(short) as app, asgi_client(app) as api:
        admin = await login(api, settings.admin_email or "", ADMIN_PASSWORD)
        product = await api.post(
            "/api/v1/products",
            json={"name": "Lamp", "price": 12, "sku": "LAMP-1", "stock": 10},
            headers=admin,
        )
        body = order_body(product.json()["id"])
        first = await api.post(ORDERS, json=body, headers=keyed(admin, "daily"))
        assert first.status_code == 201
        [key] = await stored_keys(app)
        assert key.expires_at - key.created_at == timedelta(seconds=1)

        while utcnow() < key.expires_at:
            await asyncio.sleep(0.05)
        # As if never used: a new order under the same key, remembered anew.
        later = await api.post(ORDERS, json=body, headers=keyed(admin, "daily"))
        assert later.status_code == 201 and REPLAYED not in later.headers
        assert later.json()["id"] != first.json()["id"]
        [renewed] = await stored_keys(app)
        assert renewed.expires_at > key.expires_at


async def test_the_purge_deletes_expired_keys_and_keeps_running_requests(
    app: FastAPI, make_user: UserFactory
) -> None:
    user = await make_user()
    now = utcnow()
    hour, abandoned = timedelta(hours=1), now - idempotency.ABANDONED_AFTER - timedelta(seconds=1)

    def key(name: str, expires_at: datetime, locked_at: datetime, done: bool) -> IdempotencyKey:
        return IdempotencyKey(
            user_id=user.id,
            key=name,
            fingerprint="0" * 64,
            lock_token=name,
            locked_at=locked_at,
            expires_at=expires_at,
            response_status=201 if done else None,
            response_body="{}" if done else None,
        )

    async with app.state.resources.sessions() as session:
        session.add_all(
            [
                key("answered-expired", now - hour, now - 2 * hour, done=True),
                key("answered-live", now + hour, now, done=True),
                key("abandoned-expired", now - hour, abandoned, done=False),
                # Its request outlived the key's TTL and still runs: deleting it would fail it.
                key("running-expired", now - hour, now, done=False),
                key("running", now + hour, now, done=False),
            ]
        )
        await session.commit()
    sessions = app.state.resources.sessions
    assert await idempotency.purge_expired(sessions, now) == 2
    assert await idempotency.purge_expired(sessions, now) == 0
    assert [k.key for k in await stored_keys(app)] == [
        "answered-live",
        "running-expired",
        "running",
    ]


# ---------------------------------------------------------------------------------------------
# The other routes that create something.
# ---------------------------------------------------------------------------------------------


async def test_a_product_created_with_a_key_is_created_once(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    body = {"name": "Teapot", "price": 25, "sku": "TEAPOT-1", "stock": 3}
    headers = keyed(admin_headers, "new-teapot")
    first = await client.post("/api/v1/products", json=body, headers=headers)
    retry = await client.post("/api/v1/products", json=body, headers=headers)
    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.headers[REPLAYED] == "true" and retry.json() == first.json()
    # Without the key, the duplicate SKU is the conflict it always was.
    duplicate = await client.post("/api/v1/products", json=body, headers=admin_headers)
    assert_error(duplicate, 409, "CONFLICT")
    assert (await client.get("/api/v1/products")).json()["total"] == 1


@pytest.fixture
async def queue_length(settings: Settings) -> AsyncIterator[Any]:
    redis = aioredis.Redis.from_url(settings.redis_url or "")

    async def length(queue: str) -> int:
        return int(await redis.llen(f"dramatiq:{queue}"))  # type: ignore[misc]

    yield length
    await redis.aclose()


async def test_a_report_requested_with_a_key_is_queued_once(
    client: httpx.AsyncClient, admin_headers: dict[str, str], queue_length: Any
) -> None:
    window = {"start_date": "2026-01-01", "end_date": "2026-02-01"}
    headers = keyed(admin_headers, "january")
    first = await client.post("/api/v1/reports", json=window, headers=headers)
    retry = await client.post("/api/v1/reports", json=window, headers=headers)
    assert (first.status_code, retry.status_code) == (202, 202)
    assert retry.headers[REPLAYED] == "true" and retry.json() == first.json()
    assert await queue_length("reports") == 1
    job = await client.get(f"/api/v1/jobs/{first.json()['job_id']}", headers=admin_headers)
    assert job.json()["status"] == "queued"
    # Without a key each request is a report of its own, as before.
    await client.post("/api/v1/reports", json=window, headers=admin_headers)
    assert await queue_length("reports") == 2


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), colour).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_an_image_uploaded_with_a_key_is_stored_and_queued_once(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    make_product: ProductFactory,
    queue_length: Any,
) -> None:
    product = await make_product()
    path = f"/api/v1/products/{product['id']}/image"
    headers = keyed(admin_headers, "photo-1")
    red = {"file": ("lamp.png", _png((200, 10, 10)), "image/png")}
    first = await client.post(path, files=red, headers=headers)
    # httpx draws a new multipart boundary for every request: the body's bytes differ.
    retry = await client.post(path, files=red, headers=headers)
    assert (first.status_code, retry.status_code) == (200, 200)
    assert retry.headers[REPLAYED] == "true" and retry.json() == first.json()
    assert await queue_length("images") == 1
    blue = {"file": ("lamp.png", _png((10, 10, 200)), "image/png")}
    other = await client.post(path, files=blue, headers=headers)
    assert_error(other, 422, "IDEMPOTENCY_KEY_REUSED")


async def test_sign_up_takes_no_key_and_is_still_safe_to_retry(client: httpx.AsyncClient) -> None:
    """Sign-up is anonymous, so there is nobody to scope a key to; the unique e-mail already
    makes a retry harmless (409, and the account logs in)."""
    body = {"email": "once@example.com", "name": "Once", "password": "correct-horse-battery"}
    headers = {"Idempotency-Key": "signup"}
    assert (await client.post("/api/v1/users", json=body, headers=headers)).status_code == 201
    retry = await client.post("/api/v1/users", json=body, headers=headers)
    assert_error(retry, 409, "CONFLICT")
    await login(client, "once@example.com", "correct-horse-battery")


def test_the_openapi_document_shows_the_header_where_it_is_accepted(tmp_path: Any) -> None:
    app = create_app(Settings(environment="test", data_dir=tmp_path, jwt_secret=JWT_SECRET))
    document = app.openapi()
    taking = set()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}
            if "Idempotency-Key" in names:
                taking.add(f"{method.upper()} {path}")
                answers = operation["responses"]
                assert "Retry-After" in answers["409"]["headers"]
                assert "IDEMPOTENCY_KEY_REUSED" in answers["422"]["description"]
                success = next(code for code in answers if code.startswith("2"))
                assert "Idempotent-Replayed" in answers[success]["headers"]
    assert taking == {
        "POST /api/v1/orders",
        "POST /api/v1/products",
        "POST /api/v1/products/{product_id}/image",
        "POST /api/v1/reports",
    }


# ---------------------------------------------------------------------------------------------
# The rules, as pure functions.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("order-2026-0001", "order-2026-0001"),
        ("8e03978e-40d5-43e8-bc93-6894a57f9324", "8e03978e-40d5-43e8-bc93-6894a57f9324"),
        ('"8e03978e"', "8e03978e"),
        ('"say \\"hi\\" \\\\o/"', 'say "hi" \\o/'),
        ("with inner space", "with inner space"),
        ('"', '"'),  # one quote is not a quoted string
    ],
)
def test_a_key_is_taken_bare_or_quoted(value: str, key: str) -> None:
    assert idempotency.parse_key(value) == key


@pytest.mark.parametrize("value", ["", "x" * 256, "caf\u00e9", "a\x7fb", "\x00", '""', '"a\\b"'])
def test_a_malformed_key_is_a_bad_request(value: str) -> None:
    with pytest.raises(BadRequestError):
        idempotency.parse_key(value)


def test_the_fingerprint_is_method_path_and_document_not_its_spelling() -> None:
    def fp(method: str, path: str, body: bytes) -> str:
        return idempotency.fingerprint(method, path, idempotency.canonical_json(body))

    same = fp("POST", "/api/v1/orders", b'{"a": 1, "b": [1, 2]}')
    assert fp("post", "/api/v1/orders", b'{"b":[1,2],"a":1}') == same
    assert fp("POST", "/api/v1/orders", b'{"a": 1, "b": [2, 1]}') != same
    assert fp("POST", "/api/v1/orders", b'{"a": 2, "b": [1, 2]}') != same
    assert fp("POST", "/api/v1/products", b'{"a": 1, "b": [1, 2]}') != same
    assert fp("PUT", "/api/v1/orders", b'{"a": 1, "b": [1, 2]}') != same
    assert idempotency.canonical_json(b"not json \xff") == b"not json \xff"


def test_a_form_is_the_same_whatever_the_order_of_its_fields() -> None:
    photo = idempotency.FilePart("a.png", "image/png", "ab" * 32)
    one = idempotency.canonical_form([("file", photo), ("note", "x"), ("note", "y")])
    assert idempotency.canonical_form([("note", "y"), ("file", photo), ("note", "x")]) == one
    other = idempotency.FilePart("a.png", "image/png", "cd" * 32)
    assert idempotency.canonical_form([("file", other), ("note", "x"), ("note", "y")]) != one


def test_what_a_stored_key_means_for_a_request_that_brings_it_again() -> None:
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    fresh, stale = now - timedelta(seconds=5), now - idempotency.ABANDONED_AFTER
    later, earlier = now + timedelta(hours=1), now - timedelta(seconds=1)

    def judge(done: bool, locked_at: datetime, expires_at: datetime, fp: str = "f") -> str:
        stored = idempotency.StoredKey("f", done, locked_at, expires_at)
        return idempotency.judge(stored, fp, now).value

    assert judge(True, fresh, later) == "completed"
    assert judge(True, fresh, later, fp="g") == "reused"
    assert judge(False, fresh, later) == "in_flight"
    assert judge(False, fresh, later, fp="g") == "reused"
    assert judge(False, stale, later) == "abandoned"
    assert judge(True, fresh, earlier) == "expired"
    assert judge(True, fresh, earlier, fp="g") == "expired"  # an expired key is free for anything
    assert judge(False, stale, earlier) == "expired"
    assert judge(False, fresh, earlier) == "in_flight"  # still running: kept past its expiry

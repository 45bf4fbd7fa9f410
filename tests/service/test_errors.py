"""Every failure leaves in one shape, with the right status, and bad input is never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tests.service.conftest import UserFactory, served


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    return dict(error)


async def test_unknown_route(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/v1/nowhere"), 404, "NOT_FOUND")


async def test_wrong_method(client: httpx.AsyncClient) -> None:
    assert_error(await client.delete("/api/v1/products"), 405, "METHOD_NOT_ALLOWED")


async def test_validation_error_has_details(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/users", json={"email": "not-an-email", "name": "", "password": "x"}
    )
    error = assert_error(response, 422, "VALIDATION_ERROR")
    fields = {tuple(d["loc"])[-1] for d in error["details"]}  # type: ignore[attr-defined]
    assert {"email", "name", "password"} <= fields


async def test_internal_error_is_logged_not_leaked(
    app: FastAPI, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    response = await client.get("/boom")
    error = assert_error(response, 500, "INTERNAL_ERROR")
    assert "secret internals" not in response.text and "Traceback" not in response.text
    assert error["message"] == "Internal server error"
    assert "secret internals" in caplog.text  # the traceback went to the log


@pytest.mark.parametrize(
    "path",
    ["/api/v1/products/99999999999999999999999", "/api/v1/products/-1", "/api/v1/products/abc"],
)
async def test_bad_ids_are_validation_errors(client: httpx.AsyncClient, path: str) -> None:
    assert_error(await client.get(path), 422, "VALIDATION_ERROR")


async def test_nul_bytes_are_rejected(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/users",
        json={"email": "nul@example.com", "name": "a\x00b", "password": "password-1"},
    )
    assert_error(response, 422, "VALIDATION_ERROR")


async def test_malformed_json(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/users", content=b'{"email": ', headers={"content-type": "application/json"}
    )
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert error["message"] == "Request body is not valid JSON"


async def test_wrong_content_type(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/users",
        content=b'{"email": "ct@example.com", "name": "C", "password": "password-1"}',
        headers={"content-type": "text/plain"},
    )
    assert response.status_code in (415, 422)
    assert response.json()["error"]["code"] in ("UNSUPPORTED_MEDIA_TYPE", "VALIDATION_ERROR")


async def test_huge_body_is_refused(client: httpx.AsyncClient, make_user: UserFactory) -> None:
    user = await make_user()
    huge = b'{"items": [' + b'{"product_id": 1, "qty": 1},' * 20_000 + b"]}"
    response = await client.post(
        "/api/v1/orders", content=huge, headers={"content-type": "application/json", **user.headers}
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


async def test_oversized_integer_in_body(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await client.post(
        "/api/v1/products",
        json={"name": "n", "price": 1, "sku": "S-1", "stock": 10**30},
        headers=admin_headers,
    )
    assert_error(response, 422, "VALIDATION_ERROR")


async def test_integer_too_long_to_parse(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    # Python refuses to parse integers of more than 4300 digits: a parse error, not a crash.
    response = await client.post(
        "/api/v1/products",
        content=b'{"name": "n", "price": 1, "sku": "S-1", "stock": 1' + b"0" * 5000 + b"}",
        headers={"content-type": "application/json", **admin_headers},
    )
    assert_error(response, 400, "BAD_REQUEST")


async def test_request_id_is_kept_when_well_formed(client: httpx.AsyncClient) -> None:
    response = await client.get("/livez", headers={"X-Request-ID": "req-abc.123"})
    assert response.headers["x-request-id"] == "req-abc.123"
    assert float(response.headers["x-process-time-ms"]) >= 0


@pytest.mark.parametrize("bad", ["has space", "x" * 200, "<script>", "é"])
async def test_malformed_request_id_is_replaced(client: httpx.AsyncClient, bad: str) -> None:
    response = await client.get("/livez", headers={"X-Request-ID": bad.encode("utf-8")})
    assert response.headers["x-request-id"] != bad
    assert len(response.headers["x-request-id"]) == 32


async def test_error_carries_the_incoming_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/users/me", headers={"X-Request-ID": "trace-me-42"})
    assert response.json()["error"]["request_id"] == "trace-me-42"


async def _chunks(total: int, size: int = 16 * 1024) -> AsyncIterator[bytes]:
    """A JSON body of about ``total`` bytes, streamed in chunks (no Content-Length)."""
    yield b'{"email": "chunked@example.com", "name": "Chunked'
    for _ in range(max(0, total) // size):
        yield b"x" * size
    yield b'", "password": "password-123"}'


async def test_huge_chunked_body_is_refused(app: FastAPI) -> None:
    # Without Content-Length the limit is enforced while the body streams in (real uvicorn:
    # httpx's ASGI transport would buffer the upload).
    async with served(app) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post(
            "/api/v1/users",
            content=_chunks(1024 * 1024),
            headers={"content-type": "application/json"},
        )
        assert response.request.headers.get("transfer-encoding") == "chunked"
        assert_error(response, 413, "PAYLOAD_TOO_LARGE")


async def test_small_chunked_body_is_accepted(app: FastAPI) -> None:
    async with served(app) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        response = await http.post(
            "/api/v1/users", content=_chunks(0), headers={"content-type": "application/json"}
        )
        assert response.request.headers.get("transfer-encoding") == "chunked"
        assert response.status_code == 201, response.text

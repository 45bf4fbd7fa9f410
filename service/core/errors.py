"""The one error hierarchy and the handlers that give every failure the same JSON shape.

Every error leaves as ``{"error": {"code", "message", "request_id"[, "details"]}}``: our own
``AppError`` subclasses, Starlette's HTTP errors (unknown route, 405), request validation and
and (in the telemetry middleware) any unexpected exception, logged with its traceback and
answered without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from redis import exceptions as redis_exc
from sqlalchemy import exc as sqlalchemy_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from service.observability.context import current_request_id

log = structlog.get_logger("storefront.errors")


class AppError(Exception):
    """Base of every error Storefront raises on purpose."""

    status_code = 500
    code = "INTERNAL_ERROR"
    default_message = "Internal server error"

    def __init__(
        self,
        message: str | None = None,
        *,
        details: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.details = details
        self.headers = dict(headers or {})
        super().__init__(self.message)


class BadRequestError(AppError):
    status_code = 400
    code = "BAD_REQUEST"
    default_message = "Bad request"


class UnauthorizedError(AppError):
    status_code = 401
    code = "UNAUTHORIZED"
    default_message = "Not authenticated"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kwargs)


class ForbiddenError(AppError):
    status_code = 403
    code = "FORBIDDEN"
    default_message = "Not allowed"


class NotFoundError(AppError):
    status_code = 404
    code = "RESOURCE_NOT_FOUND"
    default_message = "Resource not found"


class ConflictError(AppError):
    status_code = 409
    code = "CONFLICT"
    default_message = "Conflict"


class IdempotencyKeyReusedError(AppError):
    """The request's ``Idempotency-Key`` came before with a different request."""

    status_code = 422
    code = "IDEMPOTENCY_KEY_REUSED"
    default_message = "The Idempotency-Key was used with a different request"


class PayloadTooLargeError(AppError):
    status_code = 413
    code = "PAYLOAD_TOO_LARGE"
    default_message = "Request body too large"


class ValidationFailedError(AppError):
    status_code = 422
    code = "VALIDATION_ERROR"
    default_message = "Request validation failed"


class ServiceUnavailableError(AppError):
    status_code = 503
    code = "SERVICE_UNAVAILABLE"
    default_message = "A dependency is unavailable"


# What an unreachable database or Redis raises: asyncpg's refused connection surfaces as a plain
# ConnectionError/OSError, SQLAlchemy's exhausted pool as its TimeoutError. A DBAPIError counts
# only when SQLAlchemy flags it as a disconnect: SQLite also reports a missing table as an
# OperationalError, and that is a bug (500), not an outage.
DEPENDENCY_OUTAGES: tuple[type[Exception], ...] = (
    sqlalchemy_exc.TimeoutError,
    redis_exc.ConnectionError,
    redis_exc.TimeoutError,
    ConnectionError,
    TimeoutError,
)


_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "TOO_MANY_REQUESTS",
    503: "SERVICE_UNAVAILABLE",
}


def error_body(
    code: str, message: str, request_id: str | None = None, details: Any = None
) -> dict[str, Any]:
    """The project's error document; ``request_id`` defaults to the current request's."""
    error: dict[str, Any] = {
        "code": code,
        "message": message,
        "request_id": request_id if request_id is not None else current_request_id(),
    }
    if details is not None:
        error["details"] = details
    return {"error": error}


def error_response(
    status_code: int,
    code: str,
    message: str,
    *,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(code, message, details=details), status_code=status_code, headers=headers
    )


def _clean_validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Validation details a client can read: location, message, type; never the raw input
    (it may be huge or binary) and never exception objects."""
    cleaned = []
    for err in errors:
        cleaned.append(
            {
                "loc": [str(part) for part in err.get("loc", ())],
                "msg": str(err.get("msg", "")).removeprefix("Value error, "),
                "type": str(err.get("type", "")),
            }
        )
    return cleaned


async def _app_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    if exc.status_code >= 500:
        log.error("app_error", code=exc.code, message=exc.message)
    return error_response(
        exc.status_code, exc.code, exc.message, details=exc.details, headers=exc.headers
    )


async def _http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
    message = exc.detail if isinstance(exc.detail, str) else "HTTP error"
    if exc.status_code == 404 and message == "Not Found":
        message = f"No route for {request.method} {request.url.path}"
    return error_response(exc.status_code, code, message, headers=exc.headers)


async def _database_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, sqlalchemy_exc.DBAPIError)
    if exc.connection_invalidated:
        return await _dependency_down_handler(request, exc)
    raise exc  # not an outage: the telemetry middleware logs it and answers 500


async def _dependency_down_handler(request: Request, exc: Exception) -> Response:
    # The database or Redis is unreachable: the client may retry later, so 503, and the cause
    # goes to the log rather than to the client.
    log.error("dependency_unavailable", exc_type=type(exc).__name__, error=str(exc)[:500])
    return error_response(
        503,
        "SERVICE_UNAVAILABLE",
        "A dependency is unavailable, try again later",
        headers={"Retry-After": "5"},
    )


async def _validation_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    details = _clean_validation_errors(exc.errors())
    first = details[0] if details else {"loc": [], "msg": "invalid request", "type": ""}
    if first["type"] == "json_invalid":
        return error_response(
            422, "VALIDATION_ERROR", "Request body is not valid JSON", details=details
        )
    where = ".".join(p for p in first["loc"] if p not in ("body", "query", "path"))
    message = f"{where}: {first['msg']}" if where else str(first["msg"])
    return error_response(422, "VALIDATION_ERROR", message, details=jsonable_encoder(details))


def install_error_handlers(app: FastAPI) -> None:
    """Route every failure through the project's error format."""
    app.add_exception_handler(AppError, _app_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    for outage in DEPENDENCY_OUTAGES:
        app.add_exception_handler(outage, _dependency_down_handler)
    app.add_exception_handler(sqlalchemy_exc.DBAPIError, _database_error_handler)
    # Unexpected exceptions are answered by RequestTelemetryMiddleware, which sits inside
    # Starlette's ServerErrorMiddleware and so still knows the request ID.

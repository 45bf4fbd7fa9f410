"""The ``Idempotency-Key`` header of the POSTs that create something: the dependency that claims
the key, the hook that stores the answer in the write's transaction, and the replay."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Annotated, Any, TypeVar

import structlog
from fastapi import Depends, FastAPI, Header, Request
from pydantic import BaseModel, WithJsonSchema
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.responses import Response

from service.api.deps import CurrentUser, SessionDep, SettingsDep
from service.core.database import BeforeCommit
from service.schemas.common import ErrorResponse
from service.services import idempotency

log = structlog.get_logger("storefront.idempotency")

T = TypeVar("T")

REPLAYED_HEADER = "Idempotent-Replayed"
_FORM_TYPES = frozenset({"multipart/form-data", "application/x-www-form-urlencoded"})
_CHUNK = 1 << 20

KEY_DESCRIPTION = (
    "Makes retrying this request safe. A retry with the same key and the same body gets the "
    f"first answer back (with `{REPLAYED_HEADER}: true`) instead of acting twice; the same key "
    "with another body is refused (422 `IDEMPOTENCY_KEY_REUSED`), and a retry while the first "
    "request still runs is answered 409 `CONFLICT` with `Retry-After`. Keys are the caller's "
    "own, 1 to 255 printable ASCII characters (a UUID is a good one), bare or as a quoted "
    "string; they expire 24 hours after first use by default "
    "(`STOREFRONT_IDEMPOTENCY_KEY_TTL_SECONDS`)."
)


class IdempotentRequest:
    """The request's claim on its key, if it sent one. The route hands :meth:`records` to the
    service that writes, so the answer is stored in that write's own transaction."""

    def __init__(self, claim: idempotency.Claim | None, status_code: int) -> None:
        self.claim = claim
        self.status_code = status_code
        self.recorded = False

    def records(self, render: Callable[[T], BaseModel]) -> BeforeCommit[T] | None:
        """A hook that stores ``render(result)`` with the key before the service commits; None
        without a key, so the service writes exactly as it does for any request."""
        held = self.claim
        if held is None:
            return None

        async def record(session: AsyncSession, result: T) -> None:
            body = render(result).model_dump_json()
            await idempotency.complete(session, held, self.status_code, body)
            self.recorded = True

        return record


async def idempotent_request(
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    key: Annotated[
        str | None,
        Header(alias=idempotency.HEADER, description=KEY_DESCRIPTION),
        # Documented, not enforced by FastAPI: a bad key gets our own 400, which says why.
        WithJsonSchema(
            {
                "type": "string",
                "minLength": 1,
                "maxLength": idempotency.MAX_HEADER_LENGTH,
                "pattern": "^[!-~]([ -~]*[!-~])?$",
            }
        ),
    ] = None,
) -> AsyncIterator[IdempotentRequest]:
    """Claim the request's key for its user, or answer for it: the stored answer replayed, 409
    while the first request runs, 422 when the key came with another request. A request that
    fails, or writes nothing, releases the key."""
    route = request.scope.get("route")
    status_code = getattr(route, "status_code", None) or 200
    if key is None:
        yield IdempotentRequest(None, status_code)
        return
    parsed = idempotency.parse_key(key)
    request_fingerprint = idempotency.fingerprint(
        request.method, request.url.path, await _canonical_body(request)
    )
    held = await idempotency.claim(
        session,
        user.id,
        parsed,
        request_fingerprint,
        timedelta(seconds=settings.idempotency_key_ttl_seconds),
    )
    handle = IdempotentRequest(held, status_code)
    try:
        yield handle
    except Exception:
        # (A cancelled request keeps its claim: awaiting here would be cancelled too. It is
        # taken over as abandoned.)
        await _release(session, held)
        raise
    if not handle.recorded:
        await _release(session, held)


IdempotencyDep = Annotated[IdempotentRequest, Depends(idempotent_request)]


async def _canonical_body(request: Request) -> bytes:
    """The body as the fingerprint sees it. FastAPI has read it already: JSON routes keep the
    bytes, form routes the parsed form, so this reads nothing from the network."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type in _FORM_TYPES:
        try:
            form = await request.form()
        except MultiPartException:
            pass  # a JSON route sent a broken form: it answers 422, any fingerprint will do
        else:
            return idempotency.canonical_form(
                [(name, await _part(value)) for name, value in form.multi_items()]
            )
    return idempotency.canonical_json(await request.body())


async def _part(value: str | UploadFile) -> str | idempotency.FilePart:
    if isinstance(value, str):
        return value
    digest = hashlib.sha256()
    await value.seek(0)
    while chunk := await value.read(_CHUNK):
        digest.update(chunk)
    await value.seek(0)  # the route reads the upload next
    return idempotency.FilePart(value.filename, value.content_type, digest.hexdigest())


async def _release(session: AsyncSession, held: idempotency.Claim) -> None:
    try:
        await idempotency.release(session, held)
    except (SQLAlchemyError, OSError) as exc:
        # Most likely the outage that failed the request. The key stays in flight and is taken
        # over by a retry once it is abandoned; the request's own error is what the client sees.
        log.warning("idempotency_key_not_released", key_id=held.id, error=str(exc)[:300])


async def _replay(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, idempotency.Replay)
    return Response(
        exc.body,
        status_code=exc.status_code,
        media_type="application/json",
        headers={REPLAYED_HEADER: "true"},
    )


def install_replay(app: FastAPI) -> None:
    """Answer a replayed request with the stored answer (raised by the dependency)."""
    app.add_exception_handler(idempotency.Replay, _replay)


def responses(success_status: int) -> dict[int | str, dict[str, Any]]:
    """What a route taking the header documents besides its own answers."""
    return {
        success_status: {
            "headers": {
                REPLAYED_HEADER: {
                    "description": "`true` when this is the stored answer to an earlier "
                    f"request with the same `{idempotency.HEADER}`",
                    "schema": {"type": "string", "enum": ["true"]},
                }
            }
        },
        409: {
            "model": ErrorResponse,
            "description": f"`CONFLICT`, also while a request with the same "
            f"`{idempotency.HEADER}` is still being processed (then with `Retry-After`)",
            "headers": {
                "Retry-After": {
                    "description": "Seconds to wait before retrying",
                    "schema": {"type": "integer"},
                }
            },
        },
        422: {
            "model": ErrorResponse,
            "description": "`VALIDATION_ERROR`, or `IDEMPOTENCY_KEY_REUSED`: the "
            f"`{idempotency.HEADER}` was used with a different request",
        },
    }

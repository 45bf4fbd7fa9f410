"""Idempotency keys: a retried POST carrying the same ``Idempotency-Key`` gets the first answer
back instead of acting twice.

A key is a row of ``idempotency_keys``, unique per user and key, that lives through two states:

- **in flight**: inserted and committed before the request acts. A concurrent duplicate fails to
  insert its own row and is answered 409, without waiting.
- **completed**: the response (status and body) is written into the row *in the transaction of
  the write it reports* (the order, the product, the job owed), so neither exists without the
  other.

A request that fails writes nothing (its transaction rolls back) and deletes its row, so a retry
with the same key runs afresh: only an effect that happened is remembered. A row whose request
died between the two (a killed process) stays in flight; after :data:`ABANDONED_AFTER` a retry
takes it over under a new ``lock_token``, and since completion requires the token, the old
request can never complete it too. Keys expire ``ttl`` after their first use: an expired key is
treated as unused (and deleted) when it comes back, and :func:`purge_expired` deletes the rest.
"""

from __future__ import annotations

import enum
import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
import structlog
from sqlalchemy import ColumnElement, and_, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.core.errors import BadRequestError, ConflictError, IdempotencyKeyReusedError
from service.models import IdempotencyKey
from service.models.base import utcnow

log = structlog.get_logger("storefront.idempotency")

HEADER = "Idempotency-Key"
MAX_HEADER_LENGTH = 255
# Longer than any request takes; a claim older than this belongs to a request that died.
ABANDONED_AFTER = timedelta(minutes=1)
# What a concurrent duplicate is told to wait: the first request is usually done by then.
RETRY_AFTER_SECONDS = 1
PURGE_BATCH = 1000
_CLAIM_ATTEMPTS = 3


# ---------------------------------------------------------------------------------------------
# Deciding (pure): the key a header carries, a request's fingerprint, what a stored key means.
# ---------------------------------------------------------------------------------------------


def parse_key(value: str) -> str:
    """The key in an ``Idempotency-Key`` value: 1 to 255 printable ASCII characters, bare (as
    payment APIs send it) or a structured-field string (``"..."``, as the IETF draft writes it),
    which names the same key as its bare content."""
    if not 1 <= len(value) <= MAX_HEADER_LENGTH or not all(" " <= c <= "~" for c in value):
        raise BadRequestError(f"{HEADER} must be 1 to 255 printable ASCII characters")
    if len(value) >= 2 and value[0] == value[-1] == '"':
        key = _unquote(value[1:-1])
        if not key:
            raise BadRequestError(f"{HEADER} must not be empty")
        return key
    return value


def _unquote(quoted: str) -> str:
    """The content of a structured-field string (RFC 8941 section 3.3.3): ``\\"`` and ``\\\\``
    are escapes, any other backslash or a bare quote makes it malformed."""
    chars: list[str] = []
    escaped = False
    for char in quoted:
        if escaped:
            if char not in '"\\':
                raise BadRequestError(f'{HEADER}: only \\" and \\\\ may be escaped')
            chars.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            raise BadRequestError(f'{HEADER}: a quote inside the key must be escaped as \\"')
        else:
            chars.append(char)
    if escaped:
        raise BadRequestError(f"{HEADER}: the key ends in a lone backslash")
    return "".join(chars)


def canonical_json(body: bytes) -> bytes:
    """A JSON body with its keys sorted and no spacing, so a retry that serializes the same
    document differently is still the same request; any other body as it came."""
    try:
        return orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONDecodeError:
        return body


@dataclass(frozen=True)
class FilePart:
    """An uploaded file as the fingerprint sees it: its name, type and content digest."""

    filename: str | None
    content_type: str | None
    sha256: str


def canonical_form(fields: Iterable[tuple[str, str | FilePart]]) -> bytes:
    """A form body as sorted ``[name, value]`` pairs: a retry's new multipart boundary, or its
    fields in another order, make it no different request."""
    pairs = [(name, value if isinstance(value, str) else vars(value)) for name, value in fields]
    pairs.sort(key=lambda pair: (pair[0], orjson.dumps(pair[1], option=orjson.OPT_SORT_KEYS)))
    return orjson.dumps(pairs, option=orjson.OPT_SORT_KEYS)


def fingerprint(method: str, path: str, canonical_body: bytes) -> str:
    """What makes two requests "the same" for a key: method, path and canonical body."""
    digest = hashlib.sha256(f"{method.upper()} {path}\n".encode())
    digest.update(canonical_body)
    return digest.hexdigest()


class Verdict(enum.Enum):
    """What a key already stored means for a request that brings it again."""

    EXPIRED = "expired"  # as if never used: deleted, and the request claims it afresh
    REUSED = "reused"  # another request's key: 422
    COMPLETED = "completed"  # the stored answer is replayed
    IN_FLIGHT = "in_flight"  # the first request still runs: 409
    ABANDONED = "abandoned"  # its request died: this one takes the claim over


@dataclass(frozen=True)
class StoredKey:
    """What :func:`judge` needs of a stored key."""

    fingerprint: str
    completed: bool
    locked_at: datetime
    expires_at: datetime


def judge(stored: StoredKey, request_fingerprint: str, now: datetime) -> Verdict:
    live = not stored.completed and stored.locked_at > now - ABANDONED_AFTER
    # A request still running keeps its key past expiry: deleting it would fail the request.
    if stored.expires_at <= now and not live:
        return Verdict.EXPIRED
    if stored.fingerprint != request_fingerprint:
        return Verdict.REUSED
    if stored.completed:
        return Verdict.COMPLETED
    return Verdict.IN_FLIGHT if live else Verdict.ABANDONED


def _expired(now: datetime) -> ColumnElement[bool]:
    """:func:`judge`'s EXPIRED in SQL, for the deletes."""
    return and_(
        IdempotencyKey.expires_at <= now,
        or_(
            IdempotencyKey.response_status.is_not(None),
            IdempotencyKey.locked_at <= now - ABANDONED_AFTER,
        ),
    )


# ---------------------------------------------------------------------------------------------
# Acting: claim, complete, release and purge.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A key this request holds in flight; only the holder of ``token`` completes it."""

    id: int
    token: str


class Replay(Exception):  # an answer rather than an error, raised to cut the request short
    """The key's first request completed: its stored answer is this request's answer."""

    def __init__(self, status_code: int, body: str) -> None:
        super().__init__(status_code)
        self.status_code = status_code
        self.body = body


async def claim(
    session: AsyncSession,
    user_id: int,
    key: str,
    request_fingerprint: str,
    ttl: timedelta,
) -> Claim:
    """Insert and commit the key in flight for this request and return the claim, or raise what
    an earlier use of the key decides: :class:`Replay`, 422 ``IDEMPOTENCY_KEY_REUSED``, or 409
    ``CONFLICT`` while that use is still running.

    The session is the request's, with nothing of its own to commit yet: the claim is
    committed on it before the request writes anything.
    """
    for _ in range(_CLAIM_ATTEMPTS):
        now = utcnow()
        token = uuid.uuid4().hex
        claimed = await session.scalar(
            _insert(session)
            .values(
                user_id=user_id,
                key=key,
                fingerprint=request_fingerprint,
                lock_token=token,
                locked_at=now,
                expires_at=now + ttl,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["user_id", "key"])
            .returning(IdempotencyKey.id)
        )
        if claimed is not None:
            await session.commit()
            return Claim(claimed, token)
        stored = (
            await session.execute(
                select(
                    IdempotencyKey.id,
                    IdempotencyKey.fingerprint,
                    IdempotencyKey.lock_token,
                    IdempotencyKey.locked_at,
                    IdempotencyKey.expires_at,
                    IdempotencyKey.response_status,
                    IdempotencyKey.response_body,
                ).where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
            )
        ).one_or_none()
        # Ends the insert's transaction, which wrote nothing (on SQLite it holds the database's
        # write lock). Committed rather than rolled back: a rollback would expire the objects the
        # request has loaded on this session, its user among them.
        await session.commit()
        if stored is None:  # released or purged since the insert: try again
            continue
        verdict = judge(
            StoredKey(
                stored.fingerprint,
                stored.response_status is not None,
                stored.locked_at,
                stored.expires_at,
            ),
            request_fingerprint,
            now,
        )
        if verdict is Verdict.REUSED:
            raise IdempotencyKeyReusedError(
                f"This {HEADER} was used with a different request; use a new key"
            )
        if verdict is Verdict.COMPLETED:
            assert stored.response_status is not None and stored.response_body is not None
            log.info("idempotent_replay", key_id=stored.id)
            raise Replay(stored.response_status, stored.response_body)
        if verdict is Verdict.IN_FLIGHT:
            raise ConflictError(
                f"A request with this {HEADER} is still being processed; retry later",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        if verdict is Verdict.EXPIRED:
            await session.execute(
                delete(IdempotencyKey).where(IdempotencyKey.id == stored.id, _expired(now))
            )
            await session.commit()
            continue
        # Abandoned: take it over, unless somebody else just did.
        taken = await session.scalar(
            update(IdempotencyKey)
            .where(
                IdempotencyKey.id == stored.id,
                IdempotencyKey.lock_token == stored.lock_token,
                IdempotencyKey.response_status.is_(None),
            )
            .values(lock_token=token, locked_at=now)
            .returning(IdempotencyKey.id)
        )
        await session.commit()
        if taken is not None:
            log.warning("idempotency_claim_taken_over", key_id=stored.id)
            return Claim(stored.id, token)
    # Every attempt lost a race with another request using the same key.
    raise ConflictError(
        f"A request with this {HEADER} is still being processed; retry later",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _insert(session: AsyncSession) -> postgresql.Insert | sqlite.Insert:
    # Both dialects spell "insert unless the key exists" the same way; neither raises, so a
    # duplicate neither aborts the transaction nor logs an error on the server.
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(IdempotencyKey)
    return sqlite.insert(IdempotencyKey)


async def complete(session: AsyncSession, held: Claim, status_code: int, body: str) -> None:
    """Store the response with the key, in the caller's transaction (before its commit).

    Raises 409 ``CONFLICT`` when the claim is no longer this request's (it ran so long that a
    retry took the key over): the caller's transaction must then roll back, so the effect is
    not written twice.
    """
    stored = await session.scalar(
        update(IdempotencyKey)
        .where(
            IdempotencyKey.id == held.id,
            IdempotencyKey.lock_token == held.token,
            IdempotencyKey.response_status.is_(None),
        )
        .values(response_status=status_code, response_body=body)
        .returning(IdempotencyKey.id)
    )
    if stored is None:
        raise ConflictError(
            f"A retry with this {HEADER} took over this request; its own answer stands"
        )


async def release(session: AsyncSession, held: Claim) -> None:
    """Forget an in-flight key whose request failed, so that a retry runs afresh; the request's
    own writes are rolled back first. A completed key is never released."""
    await session.rollback()
    await session.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.id == held.id,
            IdempotencyKey.lock_token == held.token,
            IdempotencyKey.response_status.is_(None),
        )
    )
    await session.commit()


async def purge_expired(
    sessions: async_sessionmaker[AsyncSession], now: datetime | None = None
) -> int:
    """Delete expired keys a batch at a time; returns how many went. Idempotent."""
    now = now or utcnow()
    purged = 0
    while True:
        async with sessions() as session:
            batch = (
                select(IdempotencyKey.id).where(_expired(now)).limit(PURGE_BATCH).scalar_subquery()
            )
            deleted = len(
                (
                    await session.scalars(
                        delete(IdempotencyKey)
                        .where(IdempotencyKey.id.in_(batch))
                        .returning(IdempotencyKey.id)
                    )
                ).all()
            )
            await session.commit()
        purged += deleted
        if deleted < PURGE_BATCH:
            return purged

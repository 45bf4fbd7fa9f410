"""The request ID of the work in progress (an HTTP request or a job), held in a contextvar."""

from __future__ import annotations

import random
import re
from contextvars import ContextVar

_request_id: ContextVar[str | None] = ContextVar("storefront_request_id", default=None)

# Incoming IDs are echoed into headers and logs, so only a conservative alphabet is kept.
_WELL_FORMED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def current_request_id() -> str | None:
    return _request_id.get()


def set_request_id(request_id: str | None) -> object:
    """Set the current request ID; returns a token for :func:`reset_request_id`."""
    return _request_id.set(request_id)


def reset_request_id(token: object) -> None:
    _request_id.reset(token)  # type: ignore[arg-type]


# The version (4) and variant (RFC 9562) bits of a random UUID.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_request_id() -> str:
    """A random (version 4) UUID as 32 hex digits.

    A correlation ID, not a secret: it comes from the process's PRNG (seeded from the OS, reseeded
    in a forked child), as OpenTelemetry's trace IDs do. ``os.urandom`` is a system call per
    request and ``uuid.uuid4()`` costs about 4x more again.
    """
    return f"{random.getrandbits(128) & _UUID4_CLEAR | _UUID4_SET:032x}"


def accept_request_id(candidate: str | bytes | None) -> str:
    """Keep a well-formed incoming ID; otherwise make a new one."""
    if isinstance(candidate, bytes):
        try:
            candidate = candidate.decode("ascii")
        except UnicodeDecodeError:
            candidate = None
    if candidate and _WELL_FORMED.match(candidate):
        return candidate
    return new_request_id()

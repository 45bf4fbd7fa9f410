"""Password hashing (argon2id) and signed access tokens (JWT)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from service.core.settings import Settings

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    """An argon2id hash: CPU-bound and 64 MiB, so the API calls it through PasswordHashing."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_in: int


def create_access_token(user_id: int, settings: Settings) -> AccessToken:
    now = int(time.time())
    ttl = settings.access_token_ttl_seconds
    claims = {"sub": str(user_id), "iat": now, "exp": now + ttl, "typ": "access"}
    token = jwt.encode(
        claims, settings.jwt_secret.get_secret_value(), algorithm=settings.jwt_algorithm
    )
    return AccessToken(token=token, expires_in=ttl)


def decode_access_token(token: str, settings: Settings) -> int | None:
    """The user ID a valid, unexpired token names; ``None`` for anything else."""
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret.get_secret_value(),
            algorithms=[settings.jwt_algorithm],
            options={"require": ["sub", "exp"]},
        )
    except jwt.PyJWTError:
        return None
    if claims.get("typ") != "access":
        return None
    try:
        return int(claims["sub"])
    except (TypeError, ValueError):
        return None

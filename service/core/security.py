"""Password hashing (argon2id) and signed access tokens (JWT): pure functions, no I/O."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from functools import lru_cache

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from service.core.settings import Settings

_hasher = PasswordHasher()

# Every claim an access token must carry; a token without one of them is refused.
REQUIRED_CLAIMS = ("sub", "exp", "iat", "iss", "aud", "typ")


def hash_password(password: str) -> str:
    """An argon2id hash: CPU-bound and 64 MiB, so the API calls it through PasswordHashing."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def key_id(secret: str) -> str:
    """The ``kid`` naming a signing secret: a MAC of a fixed label under the secret, so the
    header tells keys apart and no hash of the secret itself is ever published."""
    return hmac.new(secret.encode(), b"storefront-jwt-key-id", hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class Keyring:
    """The secret that signs new tokens and every secret that still verifies them, by ``kid``."""

    signing_kid: str
    keys: dict[str, bytes]

    @property
    def signing_key(self) -> bytes:
        return self.keys[self.signing_kid]


@lru_cache(maxsize=8)
def _keyring(current: str, previous: tuple[str, ...]) -> Keyring:
    keys = {key_id(secret): secret.encode() for secret in (*previous, current)}
    return Keyring(signing_kid=key_id(current), keys=keys)


def keyring(settings: Settings) -> Keyring:
    """``STOREFRONT_JWT_SECRET`` signs; it and ``STOREFRONT_JWT_PREVIOUS_SECRETS`` verify."""
    return _keyring(
        settings.jwt_secret.get_secret_value(),
        tuple(secret.get_secret_value() for secret in settings.jwt_previous_secrets),
    )


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_in: int


def create_access_token(user_id: int, settings: Settings) -> AccessToken:
    now = int(time.time())
    ttl = settings.access_token_ttl_seconds
    keys = keyring(settings)
    claims = {
        "sub": str(user_id),
        "iat": now,
        "exp": now + ttl,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "typ": "access",
    }
    token = jwt.encode(
        claims,
        keys.signing_key,
        algorithm=settings.jwt_algorithm,
        headers={"kid": keys.signing_kid},
    )
    return AccessToken(token=token, expires_in=ttl)


def decode_access_token(token: str, settings: Settings) -> int | None:
    """The user ID a valid, unexpired token names; ``None`` for anything else.

    Valid means: its ``kid`` names a configured secret, it is signed with that secret under the
    configured algorithm (``none`` and every other algorithm are refused), it was issued by
    ``STOREFRONT_JWT_ISSUER`` for ``STOREFRONT_JWT_AUDIENCE``, and it carries every claim of
    :data:`REQUIRED_CLAIMS`.
    """
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError:
        return None
    key = keyring(settings).keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        return None
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[settings.jwt_algorithm],
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            options={"require": list(REQUIRED_CLAIMS)},
        )
    except jwt.PyJWTError:
        return None
    if claims.get("typ") != "access":
        return None
    try:
        return int(claims["sub"])
    except (TypeError, ValueError):
        return None

"""Access tokens: issuer and audience required, keys rotated by ``kid``, one algorithm only.

Every refused token is refused as a 401 in the error format, never a 500.
"""

from __future__ import annotations

import base64
import time
import warnings
from typing import Any

import httpx
import jwt
import orjson
import pytest
from pydantic import SecretStr

from service.core.security import create_access_token, decode_access_token, key_id
from service.core.settings import Settings
from tests.service.conftest import JWT_SECRET, UserFactory, asgi_client, running_app

PREVIOUS = "a-previous-secret-still-listed-for-verification"
RETIRED = "a-retired-secret-no-longer-listed-anywhere-at-all"


def settings_with(secret: str = JWT_SECRET, previous: tuple[str, ...] = ()) -> Settings:
    return Settings(environment="test", jwt_secret=secret, jwt_previous_secrets=previous)


def claims(user_id: int = 7, **changes: Any) -> dict[str, Any]:
    """A valid access token's claims, with ``changes`` applied (``None`` removes a claim)."""
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": str(user_id),
        "iat": now,
        "exp": now + 600,
        "iss": "storefront",
        "aud": "storefront-api",
        "typ": "access",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def sign(
    payload: dict[str, Any],
    secret: str = JWT_SECRET,
    algorithm: str = "HS256",
    kid: str | None = "same-as-secret",
) -> str:
    headers = {} if kid is None else {"kid": key_id(secret) if kid == "same-as-secret" else kid}
    with warnings.catch_warnings():
        # PyJWT warns that the test secret is short for HS384/HS512: those tokens are forgeries.
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        return jwt.encode(payload, secret, algorithm=algorithm, headers=headers)


def handmade(header: dict[str, Any], payload: dict[str, Any], signature: str = "") -> str:
    """A token written by hand, as an attacker would, header and all."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()

    return f"{part(header)}.{part(payload)}.{signature}"


def test_a_token_names_its_key_by_a_kid_that_is_not_the_secret() -> None:
    token = create_access_token(7, settings_with()).token
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256"
    assert header["kid"] == key_id(JWT_SECRET) != key_id(PREVIOUS)
    assert len(header["kid"]) == 16
    assert JWT_SECRET not in token and JWT_SECRET not in str(header)
    body = jwt.decode(token, options={"verify_signature": False})
    assert (body["iss"], body["aud"], body["typ"], body["sub"]) == (
        "storefront",
        "storefront-api",
        "access",
        "7",
    )


def test_issuer_and_audience_come_from_the_settings() -> None:
    custom = Settings(
        environment="test", jwt_secret=JWT_SECRET, jwt_issuer="shop", jwt_audience="shop-api"
    )
    token = create_access_token(7, custom).token
    assert decode_access_token(token, custom) == 7
    # The same key, but issued for another deployment: refused.
    assert decode_access_token(token, settings_with()) is None


def test_a_token_signed_with_a_listed_previous_secret_verifies() -> None:
    old = create_access_token(7, settings_with(secret=PREVIOUS)).token
    assert decode_access_token(old, settings_with(previous=(PREVIOUS,))) == 7
    assert decode_access_token(old, settings_with()) is None


def test_new_tokens_are_signed_with_the_current_secret_only() -> None:
    rotated = settings_with(previous=(PREVIOUS,))
    token = create_access_token(7, rotated).token
    assert jwt.get_unverified_header(token)["kid"] == key_id(JWT_SECRET)
    assert decode_access_token(token, settings_with()) == 7


REFUSED: dict[str, str] = {
    "wrong issuer": sign(claims(iss="someone-else")),
    "wrong audience": sign(claims(aud="another-api")),
    "audience list without ours": sign(claims(aud=["another-api", "a-third"])),
    "no issuer": sign(claims(iss=None)),
    "no audience": sign(claims(aud=None)),
    "no subject": sign(claims(sub=None)),
    "no expiry": sign(claims(exp=None)),
    "no issued-at": sign(claims(iat=None)),
    "no type": sign(claims(typ=None)),
    "not an access token": sign(claims(typ="refresh")),
    "expired": sign(claims(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)),
    "subject not a user ID": sign(claims(sub="admin")),
    "retired secret, no longer listed": sign(claims(), secret=RETIRED),
    "unknown kid": sign(claims(), kid="0123456789abcdef"),
    "kid of a listed secret, signed with another": sign(claims(), kid=key_id(PREVIOUS)),
    "no kid": sign(claims(), kid=None),
    "kid not a string": handmade({"alg": "HS256", "kid": 12}, claims(), "c2lnbmF0dXJl"),
    "HS512 with the right secret": sign(claims(), algorithm="HS512"),
    "HS384 with the right secret": sign(claims(), algorithm="HS384"),
    "alg none": handmade({"alg": "none", "typ": "JWT", "kid": key_id(JWT_SECRET)}, claims()),
    "signature stripped": sign(claims()).rsplit(".", 1)[0] + ".",
    "not a JWT": "not-a-jwt",
    "header not JSON": "bm90LWpzb24." + sign(claims()).split(".", 1)[1],
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_tokens(case: str) -> None:
    assert decode_access_token(REFUSED[case], settings_with(previous=(PREVIOUS,))) is None


def test_the_valid_token_the_refused_ones_are_made_from_verifies() -> None:
    assert decode_access_token(sign(claims()), settings_with()) == 7


async def test_refused_tokens_get_401_in_the_error_format(client: httpx.AsyncClient) -> None:
    for case, token in REFUSED.items():
        response = await client.get(
            "/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 401, case
        assert response.headers["www-authenticate"] == "Bearer", case
        error = response.json()["error"]
        assert (error["code"], error["message"]) == (
            "UNAUTHORIZED",
            "Invalid or expired token",
        ), case


async def test_rotation_keeps_signed_in_users_signed_in(
    settings: Settings, client: httpx.AsyncClient, make_user: UserFactory
) -> None:
    user = await make_user()
    before_rotation = create_access_token(user.id, settings).token
    rotated = settings.model_copy(
        update={
            "jwt_secret": SecretStr("the-new-secret-after-rotation-0123456789"),
            "jwt_previous_secrets": (settings.jwt_secret,),
        }
    )
    retired = settings.model_copy(update={"jwt_secret": rotated.jwt_secret})
    headers = {"Authorization": f"Bearer {before_rotation}"}

    async with running_app(rotated, migrate=False) as app, asgi_client(app) as rotated_client:
        me = await rotated_client.get("/api/v1/users/me", headers=headers)
        assert me.status_code == 200 and me.json()["id"] == user.id
        login = await rotated_client.post(
            "/api/v1/auth/token", data={"username": user.email, "password": user.password}
        )
        new_token = login.json()["access_token"]
    assert jwt.get_unverified_header(new_token)["kid"] == key_id(
        rotated.jwt_secret.get_secret_value()
    )

    async with running_app(retired, migrate=False) as app, asgi_client(app) as retired_client:
        old = await retired_client.get("/api/v1/users/me", headers=headers)
        new = await retired_client.get(
            "/api/v1/users/me", headers={"Authorization": f"Bearer {new_token}"}
        )
    assert old.status_code == 401 and old.json()["error"]["code"] == "UNAUTHORIZED"
    assert new.status_code == 200

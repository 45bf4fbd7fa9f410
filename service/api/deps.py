"""Dependencies shared by the routers, as ``Annotated`` aliases so routes read like prose.

The auth chain is layered: bearer token -> current user -> admin. Each link is its own
dependency, so a test can override any one of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Query, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession

from service.core.database import session_scope
from service.core.errors import BadRequestError, ForbiddenError, UnauthorizedError
from service.core.passwords import PasswordHashing
from service.core.resources import Resources
from service.core.security import decode_access_token
from service.core.settings import Settings
from service.models import Role, User

MAX_PAGE_SIZE = 100


# Every dependency is ``async def``: FastAPI runs a plain ``def`` dependency in its threadpool,
# a thread hop per dependency per request.


def resources_of(request: Request) -> Resources:
    """The lifespan's resources, for a route that takes the request itself (see products)."""
    return request.app.state.resources  # type: ignore[no-any-return]


async def get_resources(request: Request) -> Resources:
    return resources_of(request)


ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_settings(resources: ResourcesDep) -> Settings:
    return resources.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_session(resources: ResourcesDep) -> AsyncIterator[AsyncSession]:
    async for session in session_scope(resources.sessions):
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def get_redis(resources: ResourcesDep) -> aioredis.Redis:
    return resources.redis


RedisDep = Annotated[aioredis.Redis, Depends(get_redis)]


async def get_passwords(resources: ResourcesDep) -> PasswordHashing:
    return resources.passwords


PasswordsDep = Annotated[PasswordHashing, Depends(get_passwords)]

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


async def get_token(token: Annotated[str | None, Depends(oauth2_scheme)]) -> str:
    if not token:
        raise UnauthorizedError("Missing bearer token")
    return token


TokenDep = Annotated[str, Depends(get_token)]


async def get_current_user(token: TokenDep, session: SessionDep, settings: SettingsDep) -> User:
    user_id = decode_access_token(token, settings)
    user = await session.get(User, user_id) if user_id is not None else None
    if user is None:
        raise UnauthorizedError("Invalid or expired token")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def require_admin(user: CurrentUser) -> User:
    if user.role != Role.ADMIN:
        raise ForbiddenError("Admin role required")
    return user


AdminUser = Annotated[User, Depends(require_admin)]


class Pagination:
    """``?page=&size=`` with bounds; a size over the maximum is a 400, not a silent cap."""

    def __init__(self, page: int, size: int) -> None:
        if size > MAX_PAGE_SIZE:
            raise BadRequestError(f"size must be at most {MAX_PAGE_SIZE}")
        self.page = page
        self.size = size

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size


async def get_pagination(
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    size: Annotated[int, Query(ge=1, le=2_147_483_647)] = 20,
) -> Pagination:
    return Pagination(page, size)


PaginationDep = Annotated[Pagination, Depends(get_pagination)]

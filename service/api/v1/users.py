"""Accounts: sign-up, tokens, the current user and users by ID."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, status
from fastapi.security import OAuth2PasswordRequestForm

from service.api.deps import CurrentUser, PasswordsDep, SessionDep, SettingsDep
from service.api.ratelimit import RATE_LIMITED_RESPONSES, LoginThrottleDep, SignupLimit
from service.core.errors import NotFoundError, UnauthorizedError
from service.core.mail import send_welcome_email
from service.core.passwords import PasswordHashingBusyError
from service.core.security import create_access_token
from service.models import Role, User
from service.schemas.common import ResourceId
from service.schemas.user import Token, UserCreate, UserOut
from service.services import users

router = APIRouter(tags=["users"])


@router.post("/users", status_code=status.HTTP_201_CREATED, responses=RATE_LIMITED_RESPONSES)
async def register(
    _limit: SignupLimit,
    data: UserCreate,
    session: SessionDep,
    passwords: PasswordsDep,
    settings: SettingsDep,
    background: BackgroundTasks,
) -> UserOut:
    """Create an account (role ``user``); a welcome e-mail follows in the background. Sign-ups
    per client address are limited (429)."""
    user = await users.create_user(session, passwords, data)
    background.add_task(send_welcome_email, settings, user.email, user.name)
    return UserOut.model_validate(user)


@router.post("/auth/token", responses=RATE_LIMITED_RESPONSES)
async def issue_token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    throttle: LoginThrottleDep,
    session: SessionDep,
    passwords: PasswordsDep,
    settings: SettingsDep,
) -> Token:
    """OAuth2 password flow: ``username`` is the e-mail. Too many at once: 503, retry later.
    Too many failed attempts for the account or from the client's address: 429."""
    if "\x00" in form.username or "\x00" in form.password:
        raise UnauthorizedError("Incorrect e-mail or password")
    try:
        user = await users.authenticate(session, passwords, form.username, form.password)
    except PasswordHashingBusyError:
        await throttle.not_checked()
        raise
    if user is None:
        raise UnauthorizedError("Incorrect e-mail or password")
    await throttle.succeeded()
    token = create_access_token(user.id, settings)
    return Token(access_token=token.token, expires_in=token.expires_in)


@router.get("/users/me")
async def read_me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user)


@router.get("/users/{user_id}")
async def read_user(user_id: ResourceId, user: CurrentUser, session: SessionDep) -> UserOut:
    """Admins see anyone; a user sees only itself (others are "not found")."""
    if user.role != Role.ADMIN and user.id != user_id:
        raise NotFoundError(f"User {user_id} not found")
    target = await session.get(User, user_id)
    if target is None:
        raise NotFoundError(f"User {user_id} not found")
    return UserOut.model_validate(target)

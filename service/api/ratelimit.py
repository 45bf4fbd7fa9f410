"""Rate limits as route dependencies: per client address, per user, and the login throttle.

Only the routes that declare one of these pay for a check; every other route, the cached
product read first of all, never reaches Redis for a limit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, NoReturn

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordRequestForm

from service.api.deps import CurrentUser, ResourcesDep
from service.core import ratelimit
from service.core.client_address import address_bucket, client_address
from service.core.ratelimit import Policy, RateLimits, Refusal, TooManyRequestsError
from service.observability import metrics
from service.observability.middleware import route_template
from service.schemas.common import ErrorResponse
from service.services.users import normalize_email

_INTEGER = {"schema": {"type": "integer", "minimum": 0}}

# The 429 every limited route documents in its OpenAPI operation.
RATE_LIMITED_RESPONSES: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorResponse,
        "description": "Over a rate limit (code TOO_MANY_REQUESTS); retry after Retry-After",
        "headers": {
            "Retry-After": {"description": "Seconds to wait", **_INTEGER},
            "RateLimit-Limit": {"description": "Requests allowed per window", **_INTEGER},
            "RateLimit-Remaining": {"description": "Requests left in this window", **_INTEGER},
            "RateLimit-Reset": {"description": "Seconds until the window resets", **_INTEGER},
            "RateLimit-Policy": {
                "description": "The quota policy: COUNT;w=WINDOW_SECONDS",
                "schema": {"type": "string"},
            },
        },
    }
}

_MESSAGES = {
    ratelimit.LOGIN_ACCOUNT: "Too many failed sign-ins for this account",
    ratelimit.LOGIN_ADDRESS: "Too many failed sign-ins from this address",
    ratelimit.SIGNUP: "Too many sign-ups from this address",
}


def refuse(request: Request, refusal: Refusal) -> NoReturn:
    """Count the refusal under the route's template and answer 429."""
    metrics.RATE_LIMITED.labels(route_template(request.scope), refusal.policy.name).inc()
    what = _MESSAGES.get(refusal.policy.name, "Too many requests")
    raise TooManyRequestsError(refusal, f"{what}, try again in {refusal.reset_after_seconds} s")


async def get_client_address(request: Request, resources: ResourcesDep) -> str:
    """The bucket of the client's address (see service/core/client_address.py)."""
    scope = request.scope
    forwarded = [
        value.decode("latin-1") for name, value in scope["headers"] if name == b"x-forwarded-for"
    ]
    peer = scope.get("client")
    address = client_address(
        peer[0] if peer else None, forwarded, resources.settings.trusted_proxies
    )
    return address_bucket(address)


ClientAddress = Annotated[str, Depends(get_client_address)]


async def _enforce(request: Request, rate_limits: RateLimits, name: str, key: str) -> None:
    policy = rate_limits.policy(name)
    if policy is None:
        return
    refusal = await rate_limits.hit(policy, key)
    if refusal is not None:
        refuse(request, refusal)


def per_address(name: str) -> Callable[..., Awaitable[None]]:
    """A dependency counting each request against limit ``name``, by client address."""

    async def limit_per_address(
        request: Request, address: ClientAddress, resources: ResourcesDep
    ) -> None:
        await _enforce(request, resources.rate_limits, name, address)

    return limit_per_address


def per_user(name: str) -> Callable[..., Awaitable[None]]:
    """A dependency counting each request against limit ``name``, by signed-in user."""

    async def limit_per_user(request: Request, user: CurrentUser, resources: ResourcesDep) -> None:
        await _enforce(request, resources.rate_limits, name, str(user.id))

    return limit_per_user


SignupLimit = Annotated[None, Depends(per_address(ratelimit.SIGNUP))]
ReportsLimit = Annotated[None, Depends(per_user(ratelimit.REPORTS))]
ExportsLimit = Annotated[None, Depends(per_user(ratelimit.EXPORTS))]
ImageUploadsLimit = Annotated[None, Depends(per_user(ratelimit.IMAGE_UPLOADS))]
GLOBAL_LIMIT = Depends(per_address(ratelimit.GLOBAL))


class LoginThrottle:
    """Failed sign-ins, counted per account and per client address.

    Each attempt is counted before the password is checked, in one atomic step per key: a check
    first and a count after the failure would let every attempt already in flight through, as
    many as a burst can start. What is not a failure is then taken back: a success clears the
    account's count and returns the address's hit; an attempt never checked (no hashing slot)
    returns both.
    """

    def __init__(
        self,
        rate_limits: RateLimits,
        counted: list[tuple[Policy, str]],
    ) -> None:
        self._rate_limits = rate_limits
        self._counted = counted

    async def succeeded(self) -> None:
        for policy, key in self._counted:
            if policy.name == ratelimit.LOGIN_ACCOUNT:
                await self._rate_limits.clear(policy, key)
            else:
                await self._rate_limits.give_back(policy, key)

    async def not_checked(self) -> None:
        for policy, key in self._counted:
            await self._rate_limits.give_back(policy, key)


async def get_login_throttle(
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    address: ClientAddress,
    resources: ResourcesDep,
) -> LoginThrottle:
    """Count this sign-in attempt, or answer 429 before any password is hashed."""
    limits: RateLimits = resources.rate_limits
    counted: list[tuple[Policy, str]] = []
    # The address first: a refused address leaves the account's count alone, while an attempt
    # on a locked account still counts against the address it came from.
    for name, key in (
        (ratelimit.LOGIN_ADDRESS, address),
        (ratelimit.LOGIN_ACCOUNT, ratelimit.account_key(normalize_email(form.username))),
    ):
        policy = limits.policy(name)
        if policy is None:
            continue
        refusal = await limits.hit(policy, key)
        if refusal is not None:
            refuse(request, refusal)
        counted.append((policy, key))
    return LoginThrottle(limits, counted)


LoginThrottleDep = Annotated[LoginThrottle, Depends(get_login_throttle)]

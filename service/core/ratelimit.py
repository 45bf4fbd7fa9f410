"""Rate limits shared by every replica: counters in Redis through ``limits``, a fallback per limit.

What is limited, by what key and how much is decided by pure functions here (:func:`policies`,
:func:`rate_limit_headers`); :class:`RateLimits` does the counting. Fixed windows: one Redis key
and one round trip per check, and a window's end is the key's TTL, so ``RateLimit-Reset`` and
``Retry-After`` are exact. The price is that a client can spend two windows' worth across a
boundary; the long-run rate still holds.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

import redis.asyncio as aioredis
import structlog
from limits import RateLimitItem
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter
from redis.exceptions import RedisError

from service.core.errors import AppError
from service.core.settings import Settings, parse_limit
from service.observability import metrics

log = structlog.get_logger("storefront.ratelimit")

T = TypeVar("T")

# Names of the limits: the ``limit`` label of storefront_rate_limited_total, and part of the key.
LOGIN_ACCOUNT = "login_account"
LOGIN_ADDRESS = "login_address"
SIGNUP = "signup"
REPORTS = "reports"
EXPORTS = "exports"
IMAGE_UPLOADS = "image_uploads"
GLOBAL = "global"

# What a check does when Redis cannot be reached. Most limits let the request through: an
# outage of the counter store must not become an outage of the shop. Failed logins are the
# one limit whose absence is an attack surface (password guessing), so they are counted in
# this process's memory instead: per replica, so looser, but never unlimited.
Fallback = Literal["open", "memory"]
FALLBACKS: dict[str, Fallback] = {LOGIN_ACCOUNT: "memory", LOGIN_ADDRESS: "memory"}

KEY_PREFIX = "storefront:ratelimit"
# A limiter check is a short Lua script: a Redis that has not answered in this long is treated
# as down, so an outage costs a limited request half a second at most, not the pool's timeouts.
REDIS_TIMEOUT_SECONDS = 0.5


@dataclass(frozen=True)
class Policy:
    """One configured limit: its name, how many per window, and what to do without Redis."""

    name: str
    item: RateLimitItem
    fallback: Fallback

    @property
    def window_seconds(self) -> int:
        return int(self.item.get_expiry())


def policies(settings: Settings) -> dict[str, Policy]:
    """The limits in force: every named limit whose setting is not ``off``."""
    configured = {
        LOGIN_ACCOUNT: settings.rate_limit_login_account,
        LOGIN_ADDRESS: settings.rate_limit_login_address,
        SIGNUP: settings.rate_limit_signup,
        REPORTS: settings.rate_limit_reports,
        EXPORTS: settings.rate_limit_exports,
        IMAGE_UPLOADS: settings.rate_limit_image_uploads,
        GLOBAL: settings.rate_limit_global,
    }
    return {
        name: Policy(name, parse_limit(value), FALLBACKS.get(name, "open"))
        for name, value in configured.items()
        if value is not None
    }


def account_key(email: str) -> str:
    """The per-account key of a login, from its normalised e-mail: a digest, so that a key has
    a fixed size whatever a client sends as a username."""
    return hashlib.sha256(email.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Refusal:
    """A request over its limit: which limit, and when the window ends."""

    policy: Policy
    reset_after_seconds: int
    remaining: int = 0


def rate_limit_headers(refusal: Refusal) -> dict[str, str]:
    """``Retry-After`` and the RateLimit fields of draft-ietf-httpapi-ratelimit-headers-06:
    the limit, what is left of it, seconds until the window resets, and the policy
    (``COUNT;w=WINDOW_SECONDS``)."""
    item = refusal.policy.item
    reset = str(refusal.reset_after_seconds)
    return {
        "Retry-After": reset,
        "RateLimit-Limit": str(item.amount),
        "RateLimit-Remaining": str(refusal.remaining),
        "RateLimit-Reset": reset,
        "RateLimit-Policy": f"{item.amount};w={refusal.policy.window_seconds}",
    }


class TooManyRequestsError(AppError):
    status_code = 429
    code = "TOO_MANY_REQUESTS"
    default_message = "Too many requests, try again later"

    def __init__(self, refusal: Refusal, message: str | None = None) -> None:
        super().__init__(message, headers=rate_limit_headers(refusal))
        self.refusal = refusal


def storage_uri(redis_url: str) -> str:
    """The ``limits`` storage URI for a redis-py URL (its client is built from our own pool)."""
    if redis_url.startswith("unix://"):
        return "async+redis+unix://" + redis_url.removeprefix("unix://")
    return "async+" + redis_url


class RateLimits:
    """Counts hits against :class:`Policy` limits in Redis, shared by every replica.

    ``limits`` counts; what it leaves to its caller is written here: when Redis fails, each
    policy's fallback (let through, or count in this process's memory), one log line per
    outage rather than one per request, a metric of the checks made without Redis, and, for
    ``retry_seconds`` after a failure, no further attempt on Redis, so that requests during an
    outage do not each wait for a connection timeout.
    """

    def __init__(
        self, redis_url: str, policies: Mapping[str, Policy], retry_seconds: float
    ) -> None:
        self._policies = dict(policies)
        self._pool = aioredis.ConnectionPool.from_url(
            redis_url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
        # A pool of our own, for its short timeouts, handed to redis-py's client (``limits`` would
        # otherwise use coredis); ``connection_pool`` is a documented option, typed too narrowly.
        shared = RedisStorage(
            storage_uri(redis_url),
            implementation="redispy",
            key_prefix=KEY_PREFIX,
            connection_pool=self._pool,  # type: ignore[arg-type]
        )
        self._shared = FixedWindowRateLimiter(shared)
        self._local = FixedWindowRateLimiter(MemoryStorage())
        self._retry_seconds = retry_seconds
        self._down_until: float | None = None

    def policy(self, name: str) -> Policy | None:
        """Limit ``name``, or ``None`` when it is switched off."""
        return self._policies.get(name)

    async def close(self) -> None:
        await self._pool.aclose()

    async def hit(self, policy: Policy, key: str) -> Refusal | None:
        """Count one request under ``key``; the refusal if that went over the limit."""

        async def hit(limiter: FixedWindowRateLimiter) -> Refusal | None:
            if await limiter.hit(policy.item, policy.name, key):
                return None
            reset_at, remaining = await limiter.get_window_stats(policy.item, policy.name, key)
            return Refusal(policy, max(1, math.ceil(reset_at - time.time())), remaining)

        return await self._run(policy, hit, check=True)

    async def give_back(self, policy: Policy, key: str) -> None:
        """Take back one hit: the request it counted turned out not to be what the limit counts
        (a login that succeeded, or that was never checked). ``limits`` has no decrement; a
        fixed window's counter is a plain integer, so its storage's ``incr`` by -1 is one."""

        async def give_back(limiter: FixedWindowRateLimiter) -> None:
            counter = policy.item.key_for(policy.name, key)
            await limiter.storage.incr(counter, policy.window_seconds, amount=-1)

        await self._run(policy, give_back, check=False)

    async def clear(self, policy: Policy, key: str) -> None:
        """Start ``key``'s count afresh."""

        async def clear(limiter: FixedWindowRateLimiter) -> None:
            await limiter.clear(policy.item, policy.name, key)

        await self._run(policy, clear, check=False)

    async def _run(
        self,
        policy: Policy,
        operation: Callable[[FixedWindowRateLimiter], Awaitable[T]],
        check: bool,
    ) -> T | None:
        """``operation`` on Redis's counters, or on the policy's fallback while Redis is down
        (``None`` when that fallback is to let the request through); a ``check`` made without
        Redis is counted."""
        if self._down_until is None or time.monotonic() >= self._down_until:
            try:
                result = await operation(self._shared)
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
            else:
                self._redis_answered()
                return result
        if check:
            metrics.RATE_LIMIT_DEGRADED.labels(policy.name, policy.fallback).inc()
        if policy.fallback == "memory":
            return await operation(self._local)
        return None

    def _redis_failed(self, exc: Exception) -> None:
        if self._down_until is None:
            log.warning(
                "rate_limit_redis_unavailable",
                error_type=type(exc).__name__,
                error=str(exc)[:300],
                retry_seconds=self._retry_seconds,
            )
        self._down_until = time.monotonic() + self._retry_seconds

    def _redis_answered(self) -> None:
        if self._down_until is not None:
            self._down_until = None
            log.info("rate_limit_redis_recovered")

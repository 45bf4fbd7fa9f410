"""The process's long-lived resources, created and closed by the application's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.core.passwords import PasswordHashing
from service.core.ratelimit import RateLimits
from service.core.settings import Settings
from service.services.events import EventHub
from service.services.outbox import SentRows


@dataclass
class Resources:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: aioredis.Redis
    redis_url: str
    http: httpx.AsyncClient
    events: EventHub
    passwords: PasswordHashing
    rate_limits: RateLimits
    sent_rows: SentRows

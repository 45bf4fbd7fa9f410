"""The scheduled purge of expired idempotency keys: expired keys go, live ones stay, and a second
run finds nothing to do."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import redis as sync_redis
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import select

from service.core.database import create_engine, create_session_factory
from service.core.passwords import PasswordHashing
from service.core.settings import Settings
from service.migrations import upgrade_async
from service.models import IdempotencyKey
from service.models.base import utcnow
from service.schemas.user import UserCreate
from service.services import jobs, users
from worker.settings import WorkerSettings


async def seed(settings: Settings) -> None:
    await upgrade_async(settings)
    engine = create_engine(settings)
    try:
        async with create_session_factory(engine)() as session:
            passwords = PasswordHashing(concurrency=1, wait_seconds=5)
            try:
                user = await users.create_user(
                    session,
                    passwords,
                    UserCreate(
                        email="ann@example.com", name="Ann", password="correct-horse-battery"
                    ),
                )
            finally:
                passwords.close()
            now = utcnow()
            for name, expires_in in (("old-1", -2), ("old-2", -1), ("today", 20)):
                session.add(
                    IdempotencyKey(
                        user_id=user.id,
                        key=name,
                        fingerprint="0" * 64,
                        lock_token=name,
                        locked_at=now - timedelta(hours=1),
                        expires_at=now + timedelta(hours=expires_in),
                        response_status=201,
                        response_body="{}",
                    )
                )
            await session.commit()
    finally:
        await engine.dispose()


async def remaining(settings: Settings) -> list[str]:
    engine = create_engine(settings)
    try:
        async with create_session_factory(engine)() as session:
            return list(await session.scalars(select(IdempotencyKey.key)))
    finally:
        await engine.dispose()


def run_job(broker: StubBroker, worker: Worker, client: sync_redis.Redis) -> object:
    message = broker.get_actor("purge_idempotency_keys").send()
    broker.join("default", fail_fast=True)
    worker.join()
    status = jobs.decode_status(
        message.message_id, client.hgetall(jobs.job_key(message.message_id))
    )
    assert status is not None and status.status == "succeeded", status
    return status.result


def test_the_scheduled_job_purges_expired_keys_and_a_rerun_changes_nothing(
    settings: Settings,
    stub_worker: tuple[StubBroker, Worker],
    redis_client: sync_redis.Redis,
) -> None:
    broker, worker = stub_worker
    asyncio.run(seed(settings))
    assert run_job(broker, worker, redis_client) == {"purged": 2}
    assert asyncio.run(remaining(settings)) == ["today"]
    assert run_job(broker, worker, redis_client) == {"purged": 0}
    assert asyncio.run(remaining(settings)) == ["today"]
    assert broker.dead_letters == []


def test_the_purge_is_on_the_default_schedule() -> None:
    [entry] = [e for e in WorkerSettings().cron if e.job == "purge_idempotency_keys"]
    assert entry.name == "expired-idempotency-keys" and entry.cron == "30 * * * *"

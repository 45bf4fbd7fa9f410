"""A scheduler that dies between claiming a tick and enqueueing its job loses nothing: the next
leader sends that tick again, once, with the message ID chosen at claim time, and the worker's
idempotency makes a copy that did land run only once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import redis as sync_redis
from dramatiq import Message, Worker
from dramatiq.brokers.stub import StubBroker

from service.services import jobs
from tests.worker.conftest import wait_for
from worker.actors.probe import EFFECTS_KEY, RUNS_KEY
from worker.scheduler import (
    Claim,
    Scheduler,
    TickDecision,
    broker_sender,
    claim_key,
    claims_needing_resend,
    job_id_for,
)
from worker.settings import CronEntry

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
NOW = T0 + timedelta(seconds=5)
NIGHTLY = CronEntry(name="nightly", cron="0 2 * * *", job="probe", args={"key": "nightly"})
LEASE_TTL_SECONDS = 1.0

Sender = Callable[[CronEntry, datetime, str], None]
Sent = list[tuple[str, datetime, str]]


# ---------------------------------------------------------------------------------------------
# The decision (pure).
# ---------------------------------------------------------------------------------------------


def fire_claim(**changes: object) -> Claim:
    fields: dict[str, object] = {
        "schedule": "nightly",
        "tick": T0,
        "action": "fire",
        "fence": 3,
        "message_id": job_id_for("nightly", T0),
        "coalesced": 2,
        "sent": False,
        **changes,
    }
    return Claim(**fields)  # type: ignore[arg-type]


def test_a_fired_claim_carries_the_tick_s_message_id_and_round_trips() -> None:
    claim = Claim.for_decision("nightly", TickDecision(fire=T0, coalesced=2), fence=3)
    assert claim == fire_claim()
    assert Claim.decode(claim.encode()) == claim
    assert Claim.decode(claim.encode().encode()) == claim


def test_a_skipped_claim_has_no_message_and_is_never_pending() -> None:
    claim = Claim.for_decision("nightly", TickDecision(skipped=T0), fence=3)
    assert claim.action == "skip" and claim.message_id is None and not claim.pending
    assert Claim.decode(claim.encode()) == claim


def test_a_decision_with_nothing_due_cannot_be_claimed() -> None:
    with pytest.raises(ValueError):
        Claim.for_decision("nightly", TickDecision(), fence=3)


def test_only_fired_unsent_claims_need_resending() -> None:
    pending = fire_claim()
    latest: dict[str, bytes | str | None] = {
        "nightly": pending.encode(),
        "sent": fire_claim(schedule="sent", sent=True).encode(),
        "skipped": Claim("skipped", T0, "skip", 3).encode(),
        "never-claimed": None,
        "older-scheduler": b"7",  # the bare fence stored before claims recorded decisions
        "corrupt": b"{not json",
        "fire-without-id": fire_claim(schedule="fire-without-id", message_id=None).encode(),
        "someone-else": fire_claim(schedule="other").encode(),
    }
    assert claims_needing_resend(latest) == [pending]


# ---------------------------------------------------------------------------------------------
# Crashes against a real Redis.
# ---------------------------------------------------------------------------------------------


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs, not even ``except Exception``."""


@pytest.fixture
def schedulers(redis_client: sync_redis.Redis) -> Iterator[Callable[[Sender], Scheduler]]:
    """Scheduler instances sharing one Redis, each as a fresh process would start."""
    made: list[Scheduler] = []

    def make(send: Sender) -> Scheduler:
        scheduler = Scheduler(
            redis_client,
            [NIGHTLY],
            send,
            lease_ttl_seconds=LEASE_TTL_SECONDS,
            catchup_window=timedelta(hours=1),
            clock=lambda: NOW,
        )
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.lease.release()


def recording(sent: Sent, then: Sender | None = None) -> Sender:
    def send(entry: CronEntry, tick: datetime, job_id: str) -> None:
        sent.append((entry.name, tick, job_id))
        if then is not None:
            then(entry, tick, job_id)

    return send


def crash(entry: CronEntry, tick: datetime, job_id: str) -> None:
    raise Killed


def stored_claim(client: sync_redis.Redis) -> Claim | None:
    raw = client.get(claim_key("nightly", T0))
    return Claim.decode(raw) if raw is not None else None


def lead(scheduler: Scheduler) -> Sent:
    """Step ``scheduler`` until it leads (once the dead leader's lease has run out)."""
    handled: Sent = []

    def leads() -> bool:
        handled.extend(scheduler.step())
        return scheduler.lease.held

    wait_for(leads, LEASE_TTL_SECONDS * 10, interval=0.05, what="the lease")
    return handled


def queued(client: sync_redis.Redis) -> list[Message[object]]:
    return [Message.decode(data) for data in client.hvals("dramatiq:default.msgs")]


@pytest.mark.redis
def test_a_tick_claimed_by_a_leader_killed_before_enqueueing_is_sent_once_by_the_next(
    redis_url: str,
    redis_client: sync_redis.Redis,
    schedulers: Callable[[Sender], Scheduler],
) -> None:
    attempted: Sent = []
    dead = schedulers(recording(attempted, crash))
    with pytest.raises(Killed):
        dead.step()
    job_id = job_id_for("nightly", T0)
    assert attempted == [("nightly", T0, job_id)]
    left = stored_claim(redis_client)
    assert left is not None and left.pending and left.fence == dead.lease.fence
    assert queued(redis_client) == []

    sent: Sent = []
    successor = schedulers(recording(sent, broker_sender(redis_url)))
    handled = lead(successor)
    assert successor.lease.fence > dead.lease.fence
    for _ in range(3):
        handled.extend(successor.step())

    assert handled == [("nightly", T0, "resent")]
    assert sent == [("nightly", T0, job_id)]  # the same message ID, exactly once
    [message] = queued(redis_client)
    assert message.message_id == job_id and message.options["scheduled_for"] == T0.isoformat()
    assert redis_client.llen("dramatiq:default") == 1
    done = stored_claim(redis_client)
    assert done == replace(left, fence=successor.lease.fence, sent=True)
    status = jobs.decode_status(job_id, redis_client.hgetall(jobs.job_key(job_id)))
    assert status is not None and status.status == "queued"

    # A scheduler that starts after this one has nothing left to send.
    successor.lease.release()
    later: Sent = []
    third = schedulers(recording(later))
    assert lead(third) == [] and later == []


@pytest.mark.redis
def test_a_tick_enqueued_just_before_the_leader_died_runs_once(
    stub_worker: tuple[StubBroker, Worker],
    redis_client: sync_redis.Redis,
    schedulers: Callable[[Sender], Scheduler],
) -> None:
    broker, worker = stub_worker
    delivered: list[str] = []

    def enqueue(entry: CronEntry, tick: datetime, job_id: str) -> None:
        message: Message[object] = Message(
            queue_name=jobs.ACTOR_QUEUES[entry.job],
            actor_name=entry.job,
            args=(),
            kwargs=dict(entry.args),
            options={},
            message_id=job_id,
        )
        delivered.append(broker.enqueue(message).message_id)

    def enqueue_then_die(entry: CronEntry, tick: datetime, job_id: str) -> None:
        enqueue(entry, tick, job_id)
        raise Killed  # before the claim is marked sent

    dead = schedulers(enqueue_then_die)
    with pytest.raises(Killed):
        dead.step()
    broker.join("default", fail_fast=True)
    worker.join()
    assert int(redis_client.hget(RUNS_KEY, "nightly")) == 1

    successor = schedulers(enqueue)
    assert lead(successor) == [("nightly", T0, "resent")]
    broker.join("default", fail_fast=True)
    worker.join()

    assert delivered == [job_id_for("nightly", T0)] * 2
    # The worker recognised the second copy by its message ID and did not run it.
    assert int(redis_client.hget(RUNS_KEY, "nightly")) == 1
    assert redis_client.lrange(EFFECTS_KEY, 0, -1) == [b"nightly"]
    claim = stored_claim(redis_client)
    assert claim is not None and claim.sent


@pytest.mark.redis
def test_a_failed_send_is_retried_by_the_same_leader_on_its_next_pass(
    redis_client: sync_redis.Redis, schedulers: Callable[[Sender], Scheduler]
) -> None:
    attempts: Sent = []

    def broker_down_once(entry: CronEntry, tick: datetime, job_id: str) -> None:
        attempts.append((entry.name, tick, job_id))
        if len(attempts) == 1:
            raise ConnectionError("broker unavailable")

    leader = schedulers(broker_down_once)
    with pytest.raises(ConnectionError):
        leader.step()
    assert leader.step() == [("nightly", T0, "resent")]
    assert leader.step() == []
    assert attempts == [("nightly", T0, job_id_for("nightly", T0))] * 2
    claim = stored_claim(redis_client)
    assert claim is not None and claim.sent and claim.fence == leader.lease.fence


@pytest.mark.redis
def test_a_resent_job_keeps_the_status_its_first_copy_reached(
    redis_url: str, redis_client: sync_redis.Redis
) -> None:
    job_id = job_id_for("nightly", T0)
    send = broker_sender(redis_url)
    send(NIGHTLY, T0, job_id)
    jobs.update_job_sync(redis_client, job_id, status="succeeded", progress=100)
    send(NIGHTLY, T0, job_id)
    status = jobs.decode_status(job_id, redis_client.hgetall(jobs.job_key(job_id)))
    assert status is not None and status.status == "succeeded"
    # The broker keeps both copies (at-least-once); the worker runs the one message ID once.
    assert [m.message_id for m in queued(redis_client)] == [job_id, job_id]

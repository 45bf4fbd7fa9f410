"""Actor logic and middleware on a StubBroker: retries, dead letters, idempotency, redelivery
cap, job status and tracing across the queue."""

from __future__ import annotations

import redis as sync_redis
from dramatiq import Message, Worker
from dramatiq.brokers.stub import StubBroker

from service.services import jobs
from worker import metrics
from worker.actors.probe import EFFECTS_KEY, RUNS_KEY
from worker.middleware import JobLedger


def send_probe(broker: StubBroker, key: str, **kwargs: object) -> Message[object]:
    return broker.get_actor("probe").send_with_options(kwargs={"key": key, **kwargs})


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_probe_that_fails_twice_succeeds_on_the_third_attempt(
    stub_worker: tuple[StubBroker, Worker], redis_client: sync_redis.Redis
) -> None:
    broker, worker = stub_worker
    retries_before = sample("storefront_job_retries_total", actor="probe")
    message = send_probe(broker, "flaky", fail_times=2)
    broker.join("default", fail_fast=False)
    worker.join()
    assert int(redis_client.hget(RUNS_KEY, "flaky")) == 3
    assert redis_client.lrange(EFFECTS_KEY, 0, -1) == [b"flaky"]
    assert sample("storefront_job_retries_total", actor="probe") - retries_before == 2
    status = jobs.decode_status(
        message.message_id, redis_client.hgetall(jobs.job_key(message.message_id))
    )
    assert status is not None and status.status == "succeeded" and status.progress == 100
    assert status.result == {"key": "flaky", "first": True}
    assert broker.dead_letters == []


def test_probe_that_always_fails_ends_in_the_dead_letter_queue(
    stub_worker: tuple[StubBroker, Worker], redis_client: sync_redis.Redis
) -> None:
    broker, worker = stub_worker
    dead_before = sample("storefront_jobs_dead_lettered_total", actor="probe")
    message = send_probe(broker, "doomed", fail_times=99)
    broker.join("default", fail_fast=False)
    worker.join()
    # max_retries=3 for the probe: the first attempt and three retries.
    assert int(redis_client.hget(RUNS_KEY, "doomed")) == 4
    assert [m.message_id for m in broker.dead_letters] == [message.message_id]
    assert sample("storefront_jobs_dead_lettered_total", actor="probe") - dead_before == 1
    status = jobs.decode_status(
        message.message_id, redis_client.hgetall(jobs.job_key(message.message_id))
    )
    assert status is not None and status.status == "failed"
    assert status.error is not None and "ProbeFailure" in status.error


def test_a_permanent_error_is_not_retried(
    stub_worker: tuple[StubBroker, Worker], redis_client: sync_redis.Redis
) -> None:
    broker, worker = stub_worker
    # The probe takes no such argument: a TypeError, which no retry can fix.
    broker.get_actor("probe").send_with_options(kwargs={"key": "bad", "colour": "red"})
    broker.join("default", fail_fast=False)
    worker.join()
    assert len(broker.dead_letters) == 1
    assert redis_client.hget(RUNS_KEY, "bad") is None


def test_a_duplicate_message_is_acknowledged_without_running(
    stub_worker: tuple[StubBroker, Worker], redis_client: sync_redis.Redis
) -> None:
    broker, worker = stub_worker
    message = send_probe(broker, "once")
    broker.join("default")
    worker.join()
    broker.enqueue(message)  # the same message delivered again
    broker.join("default")
    worker.join()
    assert int(redis_client.hget(RUNS_KEY, "once")) == 1


def test_a_message_redelivered_too_often_is_dead_lettered(
    stub_worker: tuple[StubBroker, Worker], redis_client: sync_redis.Redis
) -> None:
    broker, worker = stub_worker
    message = broker.get_actor("probe").message_with_options(kwargs={"key": "poison"})
    message = message.copy(options={"redis_message_id": "crashing-delivery"})
    # Two earlier deliveries died with their worker (max_redeliveries=1 in these settings).
    redis_client.set(JobLedger.delivery_key("crashing-delivery"), 2)
    broker.enqueue(message)
    broker.join("default", fail_fast=False)
    worker.join()
    assert [m.message_id for m in broker.dead_letters] == [message.message_id]
    assert redis_client.hget(RUNS_KEY, "poison") is None

"""Dramatiq middleware, one concern each (the job ledger's three rules share its Redis round
trips), hooks named after the message's life.

Order matters: ``before_*`` hooks run in list order and ``after_*`` hooks in reverse, so the
broker lists them as: Heartbeat, JobContext (trace + request ID first in, last out), JobMetrics,
JobLedger, ..., Retries, AsyncIO, RuntimeResources. Retries' after hook therefore runs before
the ones that need to know whether a failure was final.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import dramatiq
import redis as sync_redis
import structlog
from dramatiq.broker import Broker, MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name
from dramatiq.middleware import Middleware, SkipMessage
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from service.observability.context import reset_request_id, set_request_id
from service.services import jobs
from worker import metrics
from worker.runtime import pop_result

log = structlog.get_logger("storefront.worker")

TRACER_NAME = "storefront.worker"
LOG_CONTEXT_KEYS = ("request_id", "message_id", "actor", "retries", "queue")


def _error_text(message: MessageProxy, exception: BaseException | None) -> str:
    exc = exception or message._exception
    if exc is None:
        return "failed"
    return f"{type(exc).__name__}: {exc}"[:2000]


class Heartbeat(Middleware):
    """Beats for this process and runs queue maintenance from a thread of its own.

    The Redis broker records a heartbeat on every command and, on a command that draws
    maintenance, re-queues the unacknowledged messages of processes whose heartbeat is older
    than ``heartbeat_timeout``. A busy consumer sends no command, so a long job could make a
    live process look dead; a SIGKILLed one must be noticed quickly. This thread beats every
    ``interval`` seconds on every declared queue (delay queues included) with maintenance on,
    so a dead process's messages return within ``heartbeat_timeout + interval``.
    """

    def __init__(self, interval_seconds: float) -> None:
        self.interval = interval_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        if not isinstance(broker, MaintainedRedisBroker):
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(broker,), name="storefront-heartbeat", daemon=True
        )
        self._thread.start()

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self, broker: MaintainedRedisBroker) -> None:
        while not self._stop.wait(self.interval):
            try:
                broker.beat()
            except sync_redis.RedisError as exc:
                log.warning("heartbeat_failed", error=str(exc))


class MaintainedRedisBroker(RedisBroker):
    """The Redis broker plus :meth:`beat`: a heartbeat that always runs maintenance."""

    _beating = threading.local()

    def _should_do_maintenance(self, command: str) -> int:
        if getattr(self._beating, "active", False):
            return 1
        return super()._should_do_maintenance(command)

    def beat(self) -> None:
        self._beating.active = True
        try:
            for queue in sorted(self.get_declared_queues()):
                # qsize is read-only; the dispatch script records the heartbeat and maintains
                # the queue named in the call before running it.
                self.do_qsize(queue)
                self.do_qsize(dq_name(queue))
        finally:
            self._beating.active = False


class JobContext(Middleware):
    """Request ID and W3C trace context across the queue.

    ``before_enqueue`` puts the current ``request_id`` and ``traceparent`` (from a PRODUCER span)
    in the message options; ``before_process_message`` starts a CONSUMER span as that span's
    child, binds ``request_id``, ``message_id``, ``actor`` and ``retries`` to the log context,
    and on a retry links the span to the first attempt's.
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._provider = tracer_provider
        self._local = threading.local()

    @property
    def tracer(self) -> trace.Tracer:
        provider = self._provider or trace.get_tracer_provider()
        return provider.get_tracer(TRACER_NAME)

    def before_enqueue(self, broker: Broker, message: dramatiq.Message[Any], delay: int) -> None:
        # Retries and delayed messages are re-enqueued with their original context: keep it.
        if "traceparent" in message.options:
            return
        message.options.update(
            {
                **jobs.propagation_options(message.actor_name, message.queue_name, self.tracer),
                **{k: v for k, v in message.options.items() if k == "request_id"},
            }
        )

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        options = message.options
        parent = propagate.extract(
            {k: options[k] for k in ("traceparent", "tracestate") if k in options}
        )
        retries = int(options.get("retries", 0))
        links = []
        first = options.get("first_attempt")
        if retries and isinstance(first, dict):
            links.append(Link(_span_context(first), {"storefront.link": "first_attempt"}))
        span = self.tracer.start_span(
            f"{message.actor_name} process",
            context=parent,
            kind=SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.system": "dramatiq",
                "messaging.operation.type": "process",
                "messaging.destination.name": message.queue_name,
                "messaging.message.id": message.message_id,
                "storefront.job.retries": retries,
            },
        )
        if not retries:
            ctx = span.get_span_context()
            options["first_attempt"] = {
                "trace_id": format(ctx.trace_id, "032x"),
                "span_id": format(ctx.span_id, "016x"),
            }
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        request_id = options.get("request_id") or message.message_id
        rid_token = set_request_id(request_id)
        structlog.contextvars.bind_contextvars(
            request_id=request_id,
            message_id=message.message_id,
            actor=message.actor_name,
            retries=retries,
            queue=message.queue_name,
        )
        self._local.state = (span, token, rid_token, time.perf_counter())

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._finish(message, exception, "failed" if exception is not None else "succeeded")

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self._finish(message, None, "skipped")

    def _finish(self, message: MessageProxy, exception: BaseException | None, outcome: str) -> None:
        state = getattr(self._local, "state", None)
        self._local.state = None
        if state is None:
            structlog.contextvars.unbind_contextvars(*LOG_CONTEXT_KEYS)
            return
        span, token, rid_token, started = state
        # One line per job, like the API's access line, still inside the job's log context.
        log.info(
            "job_finished",
            outcome=outcome if exception is None or message.failed else "retrying",
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        structlog.contextvars.unbind_contextvars(*LOG_CONTEXT_KEYS)
        if exception is not None:
            span.record_exception(exception)
            span.set_status(Status(StatusCode.ERROR, type(exception).__name__))
        span.end()
        otel_context.detach(token)
        reset_request_id(rid_token)


def _span_context(ids: dict[str, str]) -> SpanContext:
    return SpanContext(
        trace_id=int(ids["trace_id"], 16),
        span_id=int(ids["span_id"], 16),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )


class JobMetrics(Middleware):
    """Outcome counts, durations, retries, jobs in progress and dead letters."""

    def __init__(self) -> None:
        self._local = threading.local()

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        metrics.JOBS_IN_PROGRESS.labels(message.actor_name).inc()
        self._local.started = time.perf_counter()

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        started = getattr(self._local, "started", None)
        self._local.started = None
        actor = message.actor_name
        if started is not None:
            metrics.JOBS_IN_PROGRESS.labels(actor).dec()
            metrics.JOB_DURATION.labels(actor).observe(time.perf_counter() - started)
        if exception is None:
            outcome = "succeeded"
        elif message.failed:
            outcome = "failed"
        else:
            outcome = "retried"
            metrics.JOB_RETRIES.labels(actor).inc()
        metrics.JOBS.labels(actor, message.queue_name, outcome).inc()

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        if getattr(self._local, "started", None) is not None:
            metrics.JOBS_IN_PROGRESS.labels(message.actor_name).dec()
            self._local.started = None
        outcome = "failed" if message.failed else "skipped"
        metrics.JOBS.labels(message.actor_name, message.queue_name, outcome).inc()

    def after_nack(self, broker: Broker, message: MessageProxy) -> None:
        metrics.JOBS_DEAD_LETTERED.labels(message.actor_name).inc()
        log.error(
            "job_dead_lettered",
            request_id=message.options.get("request_id"),
            message_id=message.message_id,
            actor=message.actor_name,
            queue=message.queue_name,
            retries=message.options.get("retries", 0),
            error=_error_text(message, None),
        )


class JobLedger(Middleware):
    """A job's bookkeeping in Redis, in one script round trip before the job and one after.

    Three rules share those round trips (separately they took five per job):

    - **Delivery limit.** A crash (SIGKILL, OOM) redelivers a message without touching its retry
      count, so a poison message would be redelivered forever. Each broker delivery has its own
      Redis message ID (a retry gets a new one), so deliveries counted per that ID are crash
      redeliveries; past ``max_redeliveries`` the message is dead-lettered.
    - **Idempotency.** Delivery is at least once, so after success ``storefront:done:{actor}:
      {key}`` is written (``SET NX`` with a TTL) and a later copy of the same work is acknowledged
      without running. The key is the actor's ``idempotency_key(kwargs)`` (a business key such
      as the order ID) or the message ID. Actors whose effect must happen exactly once also make
      it atomic with their own business key, since a crash between the effect and this mark
      re-runs them.
    - **Status.** running, back to queued on a retry, then succeeded or failed (with the error),
      published to the job's SSE followers.
    """

    def __init__(
        self,
        client: Callable[[], sync_redis.Redis],
        *,
        max_redeliveries: int,
        delivery_ttl_seconds: int,
        done_ttl_seconds: int,
        status_ttl_seconds: int,
    ) -> None:
        self.client = client
        self.max_redeliveries = max_redeliveries
        self.delivery_ttl_seconds = delivery_ttl_seconds
        self.done_ttl_seconds = done_ttl_seconds
        self.status_ttl_seconds = status_ttl_seconds

    @property
    def actor_options(self) -> set[str]:
        return {"idempotency_key"}

    @staticmethod
    def delivery_key(redis_message_id: str) -> str:
        return f"storefront:deliveries:{redis_message_id}"

    @staticmethod
    def done_key(broker: Broker, message: MessageProxy | dramatiq.Message[Any]) -> str:
        actor = broker.get_actor(message.actor_name)
        key_fn = actor.options.get("idempotency_key")
        key = key_fn(message.kwargs) if key_fn is not None else message.message_id
        return f"storefront:done:{message.actor_name}:{key}"

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        redis_id = message.options.get("redis_message_id")
        claim = self.client().register_script(CLAIM_SCRIPT)
        deliveries, verdict = claim(
            keys=[
                self.delivery_key(redis_id) if redis_id else "",
                self.done_key(broker, message),
                jobs.job_key(message.message_id),
            ],
            args=[
                self.delivery_ttl_seconds,
                1 + self.max_redeliveries,
                *jobs.status_args(
                    message.message_id,
                    self.status_ttl_seconds,
                    status="running",
                    actor=message.actor_name,
                ),
            ],
        )
        deliveries = int(deliveries)
        if verdict == b"limit":
            log.error(
                "job_redelivery_limit",
                message_id=message.message_id,
                actor=message.actor_name,
                deliveries=deliveries,
            )
            message.stuff_exception(RedeliveryLimitExceeded(deliveries))
            message.fail()
            raise SkipMessage(f"delivered {deliveries} times")
        if verdict == b"done":
            log.info("job_duplicate_skipped")
            raise SkipMessage("already done")
        if deliveries > 1:
            log.warning("job_redelivered", deliveries=deliveries)

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        value = pop_result()
        try:
            if exception is None:
                settle = self.client().register_script(SETTLE_SCRIPT)
                settle(
                    keys=[self.done_key(broker, message), jobs.job_key(message.message_id)],
                    args=[
                        self.done_ttl_seconds,
                        message.message_id,
                        *jobs.status_args(
                            message.message_id,
                            self.status_ttl_seconds,
                            status="succeeded",
                            progress=100,
                            result=value,
                        ),
                    ],
                )
            elif message.failed:
                self._update(message, status="failed", error=_error_text(message, exception))
            else:
                self._update(message, status="queued", error=_error_text(message, exception))
        except sync_redis.RedisError as exc:
            # The work is done (or will be retried): a lost mark or status must not undo that.
            log.warning("job_ledger_unavailable", error=str(exc))

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        if message.failed:
            try:
                self._update(message, status="failed", error=_error_text(message, None))
            except sync_redis.RedisError as exc:
                log.warning("job_ledger_unavailable", error=str(exc))

    def _update(self, message: MessageProxy, **changes: Any) -> None:
        jobs.update_job_sync(self.client(), message.message_id, self.status_ttl_seconds, **changes)


# Before a job (KEYS: delivery counter or "", done mark, status hash; ARGV: counter TTL, highest
# delivery allowed, then the status update): count the delivery, stop at the limit or at a
# done mark, else set the status to running. Returns {deliveries, verdict}.
CLAIM_SCRIPT = (
    jobs.STATUS_LUA
    + """
local deliveries = 0
if KEYS[1] ~= '' then
  deliveries = redis.call('INCR', KEYS[1])
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  if deliveries > tonumber(ARGV[2]) then return {deliveries, 'limit'} end
end
if redis.call('EXISTS', KEYS[2]) == 1 then return {deliveries, 'done'} end
update_status(KEYS[3], 3)
return {deliveries, 'run'}
"""
)

# After a successful job (KEYS: done mark, status hash; ARGV: mark TTL, message ID, then the
# status update): mark the work done (the first mark wins) and set the status to succeeded.
SETTLE_SCRIPT = (
    jobs.STATUS_LUA
    + """
redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', ARGV[1])
update_status(KEYS[2], 3)
return 1
"""
)


class RedeliveryLimitExceeded(Exception):
    """The message was delivered to crashing workers too many times."""

    def __init__(self, deliveries: int) -> None:
        super().__init__(f"delivered {deliveries} times without finishing (worker crashes)")


class RuntimeResources(Middleware):
    """Close the process's database engine and Redis client before the event loop stops."""

    def __init__(self, close: Callable[[], None]) -> None:
        self.close = close

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        try:
            self.close()
        except Exception as exc:
            log.warning("runtime_close_failed", error=str(exc))

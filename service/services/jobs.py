"""Background jobs as the API sees them: enqueueing Dramatiq messages and their status in Redis.

A job's ID is its Dramatiq message ID. Its status lives in the hash ``storefront:job:{id}``
(with a TTL) and every change is published on the event topic ``jobs.{id}``, which the SSE
endpoint follows. The API enqueues with its asyncio Redis client, writing the message exactly as
Dramatiq's Redis broker stores it (the hash ``{ns}:{queue}.msgs`` and the list ``{ns}:{queue}``),
so no request thread ever blocks on a synchronous client.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from datetime import date
from typing import Any

import orjson
import redis as sync_redis
import redis.asyncio as aioredis
from dramatiq import Message
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from service.observability import metrics
from service.observability.context import current_request_id
from service.schemas.job import JobState, JobStatus
from service.services import events

NAMESPACE = "dramatiq"  # the Dramatiq Redis broker's key prefix
JOB_TTL_SECONDS = 7 * 24 * 3600
TERMINAL_STATES: frozenset[JobState] = frozenset({"succeeded", "failed"})
TRACER_NAME = "storefront.jobs"

# Where each actor's messages go (the worker declares the same names; a test pins both).
ACTOR_QUEUES: dict[str, str] = {
    "send_order_confirmation": "default",
    "cancel_stale_orders": "default",
    "purge_idempotency_keys": "default",
    "probe": "default",
    "process_product_image": "images",
    "generate_sales_report": "reports",
}


def job_key(job_id: str) -> str:
    return f"storefront:job:{job_id}"


def job_topic(job_id: str) -> str:
    return f"jobs.{job_id}"


# ---------------------------------------------------------------------------------------------
# Status (pure): the hash fields <-> JobStatus.
# ---------------------------------------------------------------------------------------------


def status_fields(
    *,
    status: JobState | None = None,
    progress: int | None = None,
    result: Any = None,
    error: str | None = None,
    actor: str | None = None,
) -> dict[str, bytes]:
    """The hash fields to write for an update (only the ones given)."""
    fields: dict[str, bytes] = {"updated_at": str(time.time()).encode()}
    if status is not None:
        fields["status"] = status.encode()
    if progress is not None:
        fields["progress"] = str(max(0, min(100, int(progress)))).encode()
    if result is not None:
        fields["result"] = orjson.dumps(result, default=str)
    if error is not None:
        # Stored as JobStatus reads it (stripped), so the script's published copy matches.
        fields["error"] = error.strip()[:2000].encode()
    if actor is not None:
        fields["actor"] = actor.encode()
    return fields


def decode_status(job_id: str, raw: Mapping[bytes, bytes]) -> JobStatus | None:
    """The status stored in a job hash; None when the job is unknown or expired."""
    if not raw or b"status" not in raw:
        return None
    state = raw[b"status"].decode()
    result = orjson.loads(raw[b"result"]) if raw.get(b"result") else None
    error = raw[b"error"].decode() if raw.get(b"error") else None
    return JobStatus(
        job_id=job_id,
        status=state,  # type: ignore[arg-type]
        progress=int(raw.get(b"progress", b"0")),
        result=result,
        error=error,
    )


def is_terminal(status: JobStatus) -> bool:
    return status.status in TERMINAL_STATES


# ---------------------------------------------------------------------------------------------
# Status (acts): the API and actors use the asyncio client, worker middleware the sync one.
# ---------------------------------------------------------------------------------------------


async def get_job(redis: aioredis.Redis, job_id: str) -> JobStatus | None:
    raw: dict[bytes, bytes] = await redis.hgetall(job_key(job_id))  # type: ignore[assignment]
    return decode_status(job_id, raw)


async def update_job(
    redis: aioredis.Redis, job_id: str, ttl_seconds: int = JOB_TTL_SECONDS, **changes: Any
) -> JobStatus | None:
    """Write ``changes`` and publish the resulting status to the job's followers."""
    keys, args = _update_call(job_id, ttl_seconds, changes)
    raw = await redis.register_script(UPDATE_STATUS_SCRIPT)(keys=keys, args=args)
    return decode_status(job_id, _as_mapping(raw))


def update_job_sync(
    client: sync_redis.Redis, job_id: str, ttl_seconds: int = JOB_TTL_SECONDS, **changes: Any
) -> JobStatus | None:
    """:func:`update_job` for the worker's synchronous middleware threads."""
    keys, args = _update_call(job_id, ttl_seconds, changes)
    raw = client.register_script(UPDATE_STATUS_SCRIPT)(keys=keys, args=args)
    return decode_status(job_id, _as_mapping(raw))


# A Lua function for scripts that update a job's status: write the changed fields, renew the TTL,
# read the whole hash and publish the resulting status to the job's followers, all inside the
# script's one round trip (a MULTI pipeline and a PUBLISH took two, and the worker updates every
# job's status at least twice). ``update_status(key, base)`` reads ARGV from ``base`` on, laid
# out by :func:`status_args`. The JSON is JobStatus's (model_dump(mode="json")), assembled from
# the hash, whose ``result`` field holds JSON already; a test compares the two.
STATUS_LUA = """
local function text_or_null(value)
  if value == nil or value == '' then return 'null' end
  return cjson.encode(value)
end
local function update_status(key, base)
  redis.call('HSET', key, unpack(ARGV, base + 3))
  redis.call('EXPIRE', key, ARGV[base])
  local raw = redis.call('HGETALL', key)
  local h = {}
  for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end
  if not h['status'] then return raw end
  local result = h['result']
  if result == nil or result == '' then result = 'null' end
  redis.call('PUBLISH', ARGV[base + 1], '{"job_id":' .. cjson.encode(ARGV[base + 2])
    .. ',"status":' .. cjson.encode(h['status'])
    .. ',"progress":' .. (tonumber(h['progress']) or 0)
    .. ',"result":' .. result
    .. ',"error":' .. text_or_null(h['error']) .. '}')
  return raw
end
"""
UPDATE_STATUS_SCRIPT = STATUS_LUA + "return update_status(KEYS[1], 1)"
# "queued" for a job seen for the first time only: a job enqueued again under its ID (the outbox
# relaying a row whose first enqueue did go through) must not turn "succeeded" back to "queued".
QUEUED_IF_NEW_SCRIPT = (
    STATUS_LUA
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HGETALL', KEYS[1]) end
return update_status(KEYS[1], 1)
"""
)


def status_args(job_id: str, ttl_seconds: int, **changes: Any) -> list[str | bytes | int]:
    """The ARGV tail ``update_status`` reads: TTL, channel, job ID, then field/value pairs."""
    args: list[str | bytes | int] = [ttl_seconds, events.channel_for(job_topic(job_id)), job_id]
    for field, value in status_fields(**changes).items():
        args.extend((field, value))
    return args


def _update_call(
    job_id: str, ttl_seconds: int, changes: Mapping[str, Any]
) -> tuple[list[str], list[str | bytes | int]]:
    """KEYS and ARGV of :data:`UPDATE_STATUS_SCRIPT` for one update."""
    return [job_key(job_id)], status_args(job_id, ttl_seconds, **changes)


def _as_mapping(raw: Any) -> dict[bytes, bytes]:
    """HGETALL's reply as a script returns it (a flat list) as a mapping."""
    items = list(raw or ())
    return dict(zip(items[::2], items[1::2], strict=True))


# ---------------------------------------------------------------------------------------------
# Enqueueing.
# ---------------------------------------------------------------------------------------------


def propagation_options(
    actor_name: str, queue_name: str, tracer: trace.Tracer | None = None
) -> dict[str, str]:
    """``request_id`` and W3C ``traceparent`` of the current work, injected from a PRODUCER span
    so the consumer's span continues the same trace."""
    options: dict[str, str] = {}
    request_id = current_request_id()
    if request_id:
        options["request_id"] = request_id
    tracer = tracer or trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(
        f"{actor_name} send",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "dramatiq",
            "messaging.operation.type": "send",
            "messaging.destination.name": queue_name,
        },
    ):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
    options.update({k: v for k, v in carrier.items() if k in ("traceparent", "tracestate")})
    return options


def build_message(
    actor_name: str,
    kwargs: dict[str, Any],
    *,
    message_id: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> Message[Any]:
    """A Dramatiq message for ``actor_name`` carrying the current request ID and trace (or the
    ones given in ``options``, as the outbox keeps them from the request that owed the job)."""
    queue_name = ACTOR_QUEUES[actor_name]
    given = dict(options or {})
    propagated = {} if "traceparent" in given else propagation_options(actor_name, queue_name)
    all_options: dict[str, Any] = {**propagated, **given}
    all_options["redis_message_id"] = str(uuid.uuid4())
    return Message(
        queue_name=queue_name,
        actor_name=actor_name,
        args=(),
        kwargs=kwargs,
        options=all_options,
        message_id=message_id or str(uuid.uuid4()),
    )


async def enqueue(
    redis: aioredis.Redis,
    actor_name: str,
    kwargs: dict[str, Any],
    *,
    message_id: str | None = None,
    options: Mapping[str, Any] | None = None,
    track: bool = True,
) -> str:
    """Put one message on its actor's queue and return the job ID.

    With ``track`` the job is recorded as queued *before* the message exists, so a worker's
    "running" can never be overwritten by a late "queued" (nor a finished job's status, when the
    same job ID is enqueued again).
    """
    message = build_message(actor_name, kwargs, message_id=message_id, options=options)
    if track:
        keys, args = _update_call(
            message.message_id,
            JOB_TTL_SECONDS,
            {"status": "queued", "progress": 0, "actor": actor_name},
        )
        await redis.register_script(QUEUED_IF_NEW_SCRIPT)(keys=keys, args=args)
    queue = f"{NAMESPACE}:{message.queue_name}"
    redis_id = message.options["redis_message_id"]
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(f"{queue}.msgs", redis_id, message.encode())
        pipe.rpush(queue, redis_id)
        await pipe.execute()
    metrics.JOBS_ENQUEUED.labels(actor_name).inc()
    return message.message_id


def sales_report_kwargs(start: date, end: date) -> dict[str, Any]:
    return {"start_date": start.isoformat(), "end_date": end.isoformat()}


async def enqueue_sales_report(redis: aioredis.Redis, start: date, end: date) -> str:
    """Queue a sales report for [start, end); its job ID is also the report's ID."""
    return await enqueue(redis, "generate_sales_report", sales_report_kwargs(start, end))

"""``storefront scheduler``: fires cron schedules as jobs, one active scheduler at a time.

Deciding is pure (:func:`decide`: which tick is due given the last one fired, now and the
catch-up window; :func:`claims_needing_resend`: which decided ticks never reached the queue).
Acting needs Redis: a leader lease (``SET NX PX`` with a random token, extended only by its
holder through a compare-and-extend script, with a fencing token from ``INCR`` stored beside it)
and, per (schedule, fire time), a claim written atomically with a check that the lease is still
ours, so neither two replicas nor a restart decide a tick twice. The claim records the decision
(fire or skip, the job's message ID, the fence) and is marked sent once the job is enqueued; a
leader re-sends any fired-but-unsent claim with the same message ID before deciding new ticks,
so a scheduler killed between claim and enqueue loses nothing and the worker's idempotency
(keyed by message ID) drops the copy when the first send did land.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import signal
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any, Literal

import redis as sync_redis
import structlog
from croniter import croniter

from service.core.settings import Settings
from service.observability.logging import configure_logging
from service.services import jobs
from worker import metrics
from worker.settings import CronEntry, WorkerSettings

log = structlog.get_logger("storefront.scheduler")

KEY_PREFIX = "storefront:scheduler"
LEASE_KEY = f"{KEY_PREFIX}:leader"
FENCE_KEY = f"{KEY_PREFIX}:fence"
CLAIM_TTL_SECONDS = 30 * 24 * 3600
MAX_COALESCED_COUNT = 10_000
# Deterministic job IDs per (schedule, tick): a re-sent tick is the same job to the worker.
JOB_NAMESPACE = uuid.UUID("6f1c1a52-3f0e-4d8e-9a57-5e0c2b7d3a10")


# ---------------------------------------------------------------------------------------------
# Decisions (pure).
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TickDecision:
    """What to do for one schedule now: fire ``fire``, or record ``skipped`` as handled."""

    fire: datetime | None = None
    skipped: datetime | None = None
    coalesced: int = 0  # earlier missed ticks folded into this decision


def latest_tick(cron: str, now: datetime) -> datetime:
    """The most recent fire time at or before ``now``."""
    # croniter's get_prev is strictly before its start: nudge the start so "now" itself counts.
    return croniter(cron, now + timedelta(microseconds=1)).get_prev(datetime)  # type: ignore[no-any-return]


def decide(
    cron: str, last_fired: datetime | None, now: datetime, window: timedelta
) -> TickDecision:
    """Which tick of ``cron`` is due at ``now``.

    Ticks missed while no scheduler ran are coalesced: only the latest one fires, and only if
    it is at most ``window`` old; an older one is skipped (recorded, so it is not reconsidered).
    """
    latest = latest_tick(cron, now)
    if last_fired is not None and latest <= last_fired:
        return TickDecision()
    coalesced = 0
    if last_fired is not None:
        walker = croniter(cron, last_fired)
        while coalesced < MAX_COALESCED_COUNT and walker.get_next(datetime) < latest:
            coalesced += 1
    if now - latest <= window:
        return TickDecision(fire=latest, coalesced=coalesced)
    return TickDecision(skipped=latest, coalesced=coalesced)


def next_wakeup(entries: list[CronEntry], now: datetime, poll: float) -> float:
    """Seconds to sleep: until the next tick of any schedule, at most ``poll``."""
    soonest = min(
        (croniter(e.cron, now).get_next(datetime) for e in entries),
        default=now + timedelta(seconds=poll),
    )
    return max(0.01, min(poll, (soonest - now).total_seconds()))


def job_id_for(schedule: str, tick: datetime) -> str:
    return str(uuid.uuid5(JOB_NAMESPACE, f"{schedule}@{tick.isoformat()}"))


ClaimAction = Literal["fire", "skip"]


@dataclass(frozen=True)
class Claim:
    """What the leader decided for one (schedule, tick), stored as the claim key's value.

    ``message_id`` is chosen before anything is sent, so every send of this tick, first or
    re-sent, is the same message to the worker. ``fence`` is the lease holder responsible for
    sending it; ``sent`` turns true once the job is on the queue.
    """

    schedule: str
    tick: datetime
    action: ClaimAction
    fence: int
    message_id: str | None = None
    coalesced: int = 0
    sent: bool = False

    @classmethod
    def for_decision(cls, schedule: str, decision: TickDecision, fence: int) -> Claim:
        if decision.fire is not None:
            return cls(
                schedule,
                decision.fire,
                "fire",
                fence,
                job_id_for(schedule, decision.fire),
                decision.coalesced,
            )
        if decision.skipped is None:
            raise ValueError("nothing to claim: the decision neither fires nor skips")
        return cls(schedule, decision.skipped, "skip", fence, coalesced=decision.coalesced)

    @property
    def pending(self) -> bool:
        """Decided to fire, not yet known to be on the queue."""
        return self.action == "fire" and not self.sent

    def encode(self) -> str:
        # Canonical (sorted keys, no spaces): the scripts compare claim values byte for byte.
        return json.dumps(
            {
                "schedule": self.schedule,
                "tick": self.tick.isoformat(),
                "action": self.action,
                "fence": self.fence,
                "message_id": self.message_id,
                "coalesced": self.coalesced,
                "sent": self.sent,
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, raw: bytes | str) -> Claim | None:
        """The claim stored in ``raw``; None for a value that is not one (such as the bare fence
        older schedulers stored, whose ticks were un-claimed when their send failed)."""
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("action") not in ("fire", "skip"):
                return None
            tick = datetime.fromisoformat(data["tick"])
            message_id = data.get("message_id")
            if data["action"] == "fire" and not isinstance(message_id, str):
                return None
            return cls(
                schedule=str(data["schedule"]),
                tick=tick,
                action=data["action"],
                fence=int(data["fence"]),
                message_id=message_id,
                coalesced=int(data.get("coalesced", 0)),
                sent=bool(data.get("sent", False)),
            )
        except (ValueError, TypeError, KeyError):
            return None


def claims_needing_resend(latest: Mapping[str, bytes | str | None]) -> list[Claim]:
    """The claims to send again, from each schedule's latest claim value (None: no claim).

    Only a schedule's latest claim can be pending: a leader re-sends it before it decides a
    newer tick for that schedule, and does not move on while that send fails.
    """
    out = []
    for schedule, raw in latest.items():
        claim = Claim.decode(raw) if raw is not None else None
        if claim is not None and claim.pending and claim.schedule == schedule:
            out.append(claim)
    return out


def claim_key(schedule: str, tick: datetime) -> str:
    return f"{KEY_PREFIX}:fired:{schedule}:{int(tick.timestamp())}"


def last_key(schedule: str) -> str:
    return f"{KEY_PREFIX}:last:{schedule}"


# ---------------------------------------------------------------------------------------------
# The lease (acts).
# ---------------------------------------------------------------------------------------------

_ACQUIRE = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local fence = redis.call('incr', KEYS[2])
  redis.call('set', KEYS[1], ARGV[1] .. ':' .. fence, 'PX', ARGV[2])
  return fence
end
return 0
"""

# Extend only while the stored value is still ours (token and fence).
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""

# Claim a tick only while holding the lease; remember it as the schedule's last handled tick.
# ARGV[2] is the encoded Claim.
_CLAIM = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then
  return -1
end
if redis.call('set', KEYS[2], ARGV[2], 'NX', 'EX', ARGV[3]) then
  local last = tonumber(redis.call('get', KEYS[3]) or '0')
  if tonumber(ARGV[4]) > last then
    redis.call('set', KEYS[3], ARGV[4])
  end
  return 1
end
return 0
"""

# Take over a pending claim for re-sending: only while holding the lease, only if the claim is
# still exactly as read (nobody marked it sent or took it over meanwhile).
_ADOPT = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then
  return -1
end
if redis.call('get', KEYS[2]) == ARGV[2] then
  redis.call('set', KEYS[2], ARGV[3], 'KEEPTTL')
  return 1
end
return 0
"""

# Mark a claim sent if it is still the one we sent. No lease check: the job is on the queue
# whoever leads now, and recording that spares the next leader a redundant send.
_MARK_SENT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('set', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0
"""


class Lease:
    """The scheduler leader lease; ``fence`` grows with every new holder."""

    def __init__(self, client: sync_redis.Redis, ttl_seconds: float) -> None:
        self.client = client
        self.ttl_ms = int(ttl_seconds * 1000)
        self.token = secrets.token_hex(16)
        self.fence = 0
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    @property
    def value(self) -> str:
        return f"{self.token}:{self.fence}"

    @property
    def held(self) -> bool:
        return self.fence > 0

    def acquire_or_renew(self) -> bool:
        """Keep or take the lease; returns whether this scheduler leads now."""
        if self.held and not self._renew(keys=[LEASE_KEY], args=[self.value, self.ttl_ms]):
            log.warning("scheduler_lease_lost", fence=self.fence)
            self.fence = 0
        if not self.held:
            fence = int(self._acquire(keys=[LEASE_KEY, FENCE_KEY], args=[self.token, self.ttl_ms]))
            if fence:
                self.fence = fence
                log.info("scheduler_leader", fence=fence)
        return self.held

    def release(self) -> None:
        if self.held:
            self._release(keys=[LEASE_KEY], args=[self.value])
            self.fence = 0


# ---------------------------------------------------------------------------------------------
# The loop (acts).
# ---------------------------------------------------------------------------------------------


class Scheduler:
    """Leads or waits; while leading, sends each fired-but-unsent claim again, then fires each
    schedule's due tick once."""

    def __init__(
        self,
        client: sync_redis.Redis,
        entries: list[CronEntry],
        send: Callable[[CronEntry, datetime, str], None],
        *,
        lease_ttl_seconds: float,
        catchup_window: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.entries = entries
        self.send = send
        self.clock = clock
        self.window = catchup_window
        self.lease = Lease(client, lease_ttl_seconds)
        self.renew_every = lease_ttl_seconds / 3
        self._last_renewal = float("-inf")
        self._claim = client.register_script(_CLAIM)
        self._adopt = client.register_script(_ADOPT)
        self._mark_sent = client.register_script(_MARK_SENT)

    def step(self) -> list[tuple[str, datetime, str]]:
        """One pass: keep the lease, re-send what a previous pass or leader claimed but did not
        send, then handle due ticks. Returns (schedule, tick, outcome) for each."""
        monotonic = time.monotonic()
        if not self.lease.held or monotonic - self._last_renewal >= self.renew_every:
            self.lease.acquire_or_renew()
            self._last_renewal = monotonic
        metrics.SCHEDULER_LEADER.set(1 if self.lease.held else 0)
        if not self.lease.held:
            return []
        lasts = self._last_ticks()
        handled = self._resend_pending(lasts)
        if not self.lease.held:
            return handled
        now = self.clock()
        for entry in self.entries:
            last = lasts[entry.name]
            decision = decide(entry.cron, last, now, self.window)
            if decision.fire is None and decision.skipped is None:
                continue
            claim = Claim.for_decision(entry.name, decision, self.lease.fence)
            claimed = int(
                self._claim(
                    keys=[LEASE_KEY, claim_key(entry.name, claim.tick), last_key(entry.name)],
                    args=[
                        self.lease.value,
                        claim.encode(),
                        CLAIM_TTL_SECONDS,
                        claim.tick.timestamp(),
                    ],
                )
            )
            if claimed == -1:
                self._lost_lease()
                break
            if claimed == 0:
                continue  # another holder already handled this tick
            if claim.action == "skip":
                metrics.SCHEDULER_TICKS.labels(entry.name, "skipped").inc()
                log.warning(
                    "schedule_tick_skipped", schedule=entry.name, tick=claim.tick.isoformat()
                )
                handled.append((entry.name, claim.tick, "skipped"))
                continue
            # A failure (or the process dying) from here on leaves the claim pending: the next
            # pass, or the next leader, sends it again with the same message ID.
            self._send(entry, claim)
            metrics.SCHEDULER_TICKS.labels(entry.name, "fired").inc()
            log.info(
                "schedule_fired",
                schedule=entry.name,
                tick=claim.tick.isoformat(),
                job=entry.job,
                job_id=claim.message_id,
                fence=self.lease.fence,
                coalesced=claim.coalesced,
            )
            handled.append((entry.name, claim.tick, "fired"))
        return handled

    def _last_ticks(self) -> dict[str, datetime | None]:
        """Each schedule's latest claimed tick, in one round trip."""
        raw = self.client.mget([last_key(e.name) for e in self.entries])
        return {
            e.name: datetime.fromtimestamp(float(value), UTC) if value else None
            for e, value in zip(self.entries, raw, strict=True)
        }

    def _resend_pending(
        self, lasts: Mapping[str, datetime | None]
    ) -> list[tuple[str, datetime, str]]:
        """Send again each schedule's latest claim that was fired but never marked sent."""
        keys = {name: claim_key(name, tick) for name, tick in lasts.items() if tick is not None}
        if not keys:
            return []
        values = self.client.mget(list(keys.values()))
        entries = {e.name: e for e in self.entries}
        handled: list[tuple[str, datetime, str]] = []
        for claim in claims_needing_resend(dict(zip(keys, values, strict=True))):
            adopted = replace(claim, fence=self.lease.fence)
            taken = int(
                self._adopt(
                    keys=[LEASE_KEY, keys[claim.schedule]],
                    args=[self.lease.value, claim.encode(), adopted.encode()],
                )
            )
            if taken == -1:
                self._lost_lease()
                break
            if taken == 0:
                continue  # marked sent (or taken over) since we read it
            entry = entries[claim.schedule]
            self._send(entry, adopted)
            metrics.SCHEDULER_TICKS.labels(entry.name, "resent").inc()
            log.warning(
                "schedule_resent",
                schedule=entry.name,
                tick=claim.tick.isoformat(),
                job=entry.job,
                job_id=claim.message_id,
                fence=self.lease.fence,
                claimed_by_fence=claim.fence,
                coalesced=claim.coalesced,
            )
            handled.append((entry.name, claim.tick, "resent"))
        return handled

    def _send(self, entry: CronEntry, claim: Claim) -> None:
        if claim.message_id is None:
            raise ValueError(f"claim of {claim.schedule} at {claim.tick} has no message ID")
        self.send(entry, claim.tick, claim.message_id)
        self._mark_sent(
            keys=[claim_key(claim.schedule, claim.tick)],
            args=[claim.encode(), replace(claim, sent=True).encode()],
        )

    def _lost_lease(self) -> None:
        log.warning("scheduler_lease_lost", fence=self.lease.fence)
        self.lease.fence = 0
        metrics.SCHEDULER_LEADER.set(0)

    def run(self, stop: threading.Event, poll_seconds: float) -> None:
        try:
            while not stop.is_set():
                try:
                    self.step()
                except sync_redis.RedisError as exc:
                    log.warning("scheduler_redis_error", error=str(exc))
                    metrics.SCHEDULER_LEADER.set(0)
                    self.lease.fence = 0
                stop.wait(next_wakeup(self.entries, self.clock(), poll_seconds))
        finally:
            with contextlib.suppress(sync_redis.RedisError):
                self.lease.release()
            metrics.SCHEDULER_LEADER.set(0)


def broker_sender(redis_url: str) -> Callable[[CronEntry, datetime, str], None]:
    """Send a schedule's job through a Redis broker that adds request ID and trace context."""
    from dramatiq import Message

    from worker.middleware import JobContext, MaintainedRedisBroker

    broker = MaintainedRedisBroker(
        url=redis_url, namespace=jobs.NAMESPACE, middleware=[JobContext()]
    )
    client = broker.client

    def send(entry: CronEntry, tick: datetime, job_id: str) -> None:
        # A re-sent tick may already be running or done: only a new job starts as "queued".
        if not client.exists(jobs.job_key(job_id)):
            jobs.update_job_sync(client, job_id, status="queued", progress=0, actor=entry.job)
        broker.enqueue(
            Message(
                queue_name=jobs.ACTOR_QUEUES[entry.job],
                actor_name=entry.job,
                args=(),
                kwargs=dict(entry.args),
                options={
                    "request_id": f"schedule-{entry.name}-{int(tick.timestamp())}",
                    "scheduled_for": tick.isoformat(),
                },
                message_id=job_id,
            )
        )

    return send


def run_scheduler(settings: Settings, worker_settings: WorkerSettings, redis_url: str) -> int:
    """Run the scheduler until SIGTERM/SIGINT; the lease is released on the way out."""
    from worker.process import EXIT_SETTING, _setup_tracing, _shutdown_tracing

    configure_logging(settings.log_level, settings.log_format, component="scheduler")
    _setup_tracing(settings, "storefront-scheduler")
    unknown = [e.job for e in worker_settings.cron if e.job not in jobs.ACTOR_QUEUES]
    if unknown:
        log.error("scheduler_unknown_job", jobs=unknown)
        return EXIT_SETTING
    stop = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        log.info("scheduler_stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        metrics.serve_metrics(worker_settings.scheduler_metrics_port)
    except OSError as exc:
        log.error(
            "metrics_port_unavailable", port=worker_settings.scheduler_metrics_port, error=str(exc)
        )
        return EXIT_SETTING
    client: Any = sync_redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2)
    scheduler = Scheduler(
        client,
        worker_settings.cron,
        broker_sender(redis_url),
        lease_ttl_seconds=worker_settings.lease_ttl_seconds,
        catchup_window=timedelta(seconds=worker_settings.catchup_window_seconds),
    )
    log.info("scheduler_started", schedules=[e.name for e in worker_settings.cron])
    scheduler.run(stop, worker_settings.scheduler_poll_seconds)
    client.close()
    _shutdown_tracing()
    log.info("scheduler_stopped")
    return 0

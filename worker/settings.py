"""Worker and scheduler settings, read from ``STOREFRONT_WORKER_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

from croniter import croniter
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.core.settings import SettingsError

QUEUES = ("default", "images", "reports")


class CronEntry(BaseModel):
    """One schedule: fire actor ``job`` with keyword arguments ``args`` at each ``cron`` tick."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")
    cron: str
    job: str
    args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        # Five fields (minute resolution) or six (a trailing seconds field, croniter's extension).
        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression")
        return value


DEFAULT_CRON = [
    CronEntry(name="nightly-sales-report", cron="0 2 * * *", job="generate_sales_report"),
    CronEntry(name="stale-pending-orders", cron="0 * * * *", job="cancel_stale_orders"),
    CronEntry(name="expired-idempotency-keys", cron="30 * * * *", job="purge_idempotency_keys"),
]


class WorkerSettings(BaseSettings):
    """How the worker consumes, retries and recovers, and how the scheduler fires."""

    model_config = SettingsConfigDict(env_prefix="STOREFRONT_WORKER_", extra="ignore", frozen=True)

    processes: int = Field(default=1, ge=1, le=64, description="Worker processes (CPU-bound work)")
    threads: int = Field(default=4, ge=1, le=256, description="Worker threads per process")
    queues: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(QUEUES))
    # A SIGKILLed process stops heartbeating; once its last heartbeat is this old, the next
    # maintenance pass on each queue puts its unacknowledged messages back. Live processes beat
    # every heartbeat_interval_ms from a dedicated thread, so only a dead one goes quiet.
    heartbeat_timeout_ms: int = Field(default=5_000, ge=1_000)
    heartbeat_interval_ms: int = Field(default=1_000, ge=100)
    maintenance_chance: float = Field(
        default=0.001,
        ge=0.0,
        le=1.0,
        description="Chance that an ordinary broker command also runs queue maintenance; the "
        "heartbeat thread runs it on every beat regardless.",
    )
    dead_message_ttl_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=60_000)
    shutdown_timeout_seconds: float = Field(
        default=20.0,
        gt=0,
        description="Time running jobs get on SIGTERM (keep under the pod's grace period)",
    )
    max_retries: int = Field(default=5, ge=0)
    min_backoff_ms: int = Field(default=1_000, ge=10)
    max_backoff_ms: int = Field(default=300_000, ge=10)
    max_redeliveries: int = Field(
        default=3,
        ge=0,
        description="Deliveries after a worker crash before the message is dead-lettered",
    )
    job_status_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    done_ttl_seconds: int = Field(
        default=7 * 24 * 3600, ge=60, description="How long a finished job's idempotency key lives"
    )
    thumbnail_sizes: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [128, 256, 512])
    metrics_port: int = Field(default=9100, ge=0, le=65535, description="0 disables /metrics")
    # Scheduler.
    cron: list[CronEntry] = Field(default_factory=lambda: list(DEFAULT_CRON))
    catchup_window_seconds: float = Field(default=3600, ge=0)
    lease_ttl_seconds: float = Field(default=15, gt=0.5)
    scheduler_poll_seconds: float = Field(default=0.5, gt=0, le=60)
    scheduler_metrics_port: int = Field(default=9101, ge=0, le=65535, description="0 disables")

    @field_validator("queues", mode="before")
    @classmethod
    def _split_queues(cls, value: object) -> object:
        if isinstance(value, str):
            return [q.strip() for q in value.split(",") if q.strip()]
        return value

    @field_validator("thumbnail_sizes", mode="before")
    @classmethod
    def _split_sizes(cls, value: object) -> object:
        if isinstance(value, str):
            return [int(s) for s in value.split(",") if s.strip()]
        return value

    @field_validator("queues")
    @classmethod
    def _known_queues(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(QUEUES))
        if unknown or not value:
            raise ValueError(f"must be a non-empty subset of {', '.join(QUEUES)}")
        return value

    @field_validator("thumbnail_sizes")
    @classmethod
    def _sizes(cls, value: list[int]) -> list[int]:
        if not value or any(not 8 <= s <= 4096 for s in value):
            raise ValueError("sizes must be between 8 and 4096 pixels")
        return sorted(set(value))

    @model_validator(mode="after")
    def _consistent(self) -> WorkerSettings:
        if self.heartbeat_interval_ms * 2 > self.heartbeat_timeout_ms:
            # One late beat must not make a live worker look dead.
            raise ValueError(
                "STOREFRONT_WORKER_HEARTBEAT_TIMEOUT_MS must be at least twice the interval"
            )
        if self.min_backoff_ms > self.max_backoff_ms:
            raise ValueError("STOREFRONT_WORKER_MIN_BACKOFF_MS must not exceed MAX_BACKOFF_MS")
        names = [entry.name for entry in self.cron]
        if len(names) != len(set(names)):
            raise ValueError("STOREFRONT_WORKER_CRON: schedule names must be unique")
        return self

    @property
    def maintenance_per_million(self) -> int:
        """The broker counts maintenance chance in commands per million."""
        return round(self.maintenance_chance * 1_000_000)


def load_worker_settings(**overrides: object) -> WorkerSettings:
    """Read worker settings, turning a validation failure into one line naming the setting."""
    try:
        return WorkerSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        if message.startswith("STOREFRONT_"):
            raise SettingsError(message) from None
        field = str(first["loc"][0]) if first["loc"] else "settings"
        raise SettingsError(f"STOREFRONT_WORKER_{field.upper()}: {message}") from None


@lru_cache
def get_worker_settings() -> WorkerSettings:
    return load_worker_settings()

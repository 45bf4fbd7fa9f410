"""Settings: read from STOREFRONT_*, unsafe defaults refused, one clear line per mistake."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from service.core.settings import DEFAULT_JWT_SECRET, Settings, SettingsError, load_settings


def test_database_url_accepts_the_libpq_spelling() -> None:
    settings = Settings(environment="dev", database_url="postgresql://u:p@db:5432/shop")
    assert settings.resolved_database_url == "postgresql+asyncpg://u:p@db:5432/shop"


def test_default_database_is_sqlite_under_the_data_dir(tmp_path: os.PathLike[str]) -> None:
    settings = Settings(environment="dev", data_dir=tmp_path)
    assert settings.resolved_database_url.endswith(f"{tmp_path}/storefront.db")
    assert settings.is_sqlite


def test_production_refuses_the_default_jwt_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STOREFRONT_JWT_SECRET", raising=False)
    monkeypatch.setenv("STOREFRONT_ENVIRONMENT", "production")
    with pytest.raises(SettingsError, match="STOREFRONT_JWT_SECRET must be set outside dev"):
        load_settings()


def test_wrong_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOREFRONT_ENVIRONMENT", "dev")
    monkeypatch.setenv("STOREFRONT_DATABASE_URL", "mysql://nope")
    with pytest.raises(SettingsError, match=r"^STOREFRONT_DATABASE_URL: must start with"):
        load_settings()


def test_admin_email_and_password_go_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOREFRONT_ENVIRONMENT", "dev")
    monkeypatch.setenv("STOREFRONT_ADMIN_EMAIL", "a@example.com")
    monkeypatch.delenv("STOREFRONT_ADMIN_PASSWORD", raising=False)
    with pytest.raises(SettingsError, match="STOREFRONT_ADMIN_EMAIL and STOREFRONT_ADMIN_PASSWORD"):
        load_settings()


def test_cli_stops_with_one_line_naming_the_setting() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOREFRONT_")}
    env |= {"STOREFRONT_ENVIRONMENT": "production", "STOREFRONT_LOG_LEVEL": "LOUD"}
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "api"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "STOREFRONT_LOG_LEVEL" in lines[0] and "Traceback" not in result.stderr


def test_token_and_hashing_defaults() -> None:
    settings = Settings(environment="dev")
    assert (settings.jwt_issuer, settings.jwt_audience) == ("storefront", "storefront-api")
    assert settings.jwt_previous_secrets == ()
    assert (settings.password_hash_concurrency, settings.password_hash_wait_seconds) == (2, 5.0)


OLD_SECRET = "an-old-secret-that-is-long-enough-0123456789"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f'["{OLD_SECRET}"]', (OLD_SECRET,)),
        (f'["{OLD_SECRET}", "{OLD_SECRET[::-1]}"]', (OLD_SECRET, OLD_SECRET[::-1])),
        ("[]", ()),
        ("", ()),
    ],
)
def test_previous_jwt_secrets_are_a_json_list(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: tuple[str, ...]
) -> None:
    monkeypatch.setenv("STOREFRONT_ENVIRONMENT", "dev")
    monkeypatch.setenv("STOREFRONT_JWT_PREVIOUS_SECRETS", value)
    settings = load_settings()
    assert tuple(s.get_secret_value() for s in settings.jwt_previous_secrets) == expected
    assert OLD_SECRET not in repr(settings)


@pytest.mark.parametrize("value", [OLD_SECRET, f"{OLD_SECRET},{OLD_SECRET}", "[1]", '{"a": "b"}'])
def test_previous_jwt_secrets_in_another_format_name_the_format(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("STOREFRONT_ENVIRONMENT", "dev")
    monkeypatch.setenv("STOREFRONT_JWT_PREVIOUS_SECRETS", value)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    message = str(refused.value)
    assert message.startswith("STOREFRONT_JWT_PREVIOUS_SECRETS: must be a JSON list of strings")
    assert OLD_SECRET not in message


def test_a_short_previous_jwt_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOREFRONT_ENVIRONMENT", "dev")
    monkeypatch.setenv("STOREFRONT_JWT_PREVIOUS_SECRETS", f'["{OLD_SECRET}", "too-short"]')
    with pytest.raises(SettingsError, match="every secret must be at least 32 characters"):
        load_settings()


def test_production_refuses_the_default_jwt_secret_among_previous_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STOREFRONT_ENVIRONMENT", "production")
    monkeypatch.setenv("STOREFRONT_JWT_SECRET", OLD_SECRET)
    monkeypatch.setenv("STOREFRONT_JWT_PREVIOUS_SECRETS", json.dumps([DEFAULT_JWT_SECRET]))
    with pytest.raises(SettingsError, match="must not list the default secret outside dev"):
        load_settings()


def test_rate_limit_defaults() -> None:
    settings = Settings(environment="dev")
    assert settings.rate_limit_login_account == "10/5 minutes"
    assert settings.rate_limit_login_address == "50/5 minutes"
    assert settings.rate_limit_global is None
    assert settings.trusted_proxies == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("20/hour", "20/hour"), (" 5 per 10 seconds ", "5 per 10 seconds"), ("off", None), ("", None)],
)
def test_a_rate_limit_is_count_per_period_or_off(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str | None
) -> None:
    monkeypatch.setenv("STOREFRONT_ENVIRONMENT", "dev")
    monkeypatch.setenv("STOREFRONT_RATE_LIMIT_SIGNUP", value)
    assert load_settings().rate_limit_signup == expected


@pytest.mark.parametrize("value", ["twenty", "20", "20/fortnight", "0/minute", "1/second;5/minute"])
def test_a_wrong_rate_limit_names_the_setting(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("STOREFRONT_ENVIRONMENT", "dev")
    monkeypatch.setenv("STOREFRONT_RATE_LIMIT_LOGIN_ACCOUNT", value)
    with pytest.raises(SettingsError, match=r"^STOREFRONT_RATE_LIMIT_LOGIN_ACCOUNT: ") as refused:
        load_settings()
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "value", ['["10.0.0.0/8", "fd00::/8"]', "10.0.0.0/8, fd00::/8", "10.0.0.0/8,fd00::/8"]
)
def test_trusted_proxies_are_a_json_or_comma_separated_list(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("STOREFRONT_ENVIRONMENT", "dev")
    monkeypatch.setenv("STOREFRONT_TRUSTED_PROXIES", value)
    assert [str(n) for n in load_settings().trusted_proxies] == ["10.0.0.0/8", "fd00::/8"]


@pytest.mark.parametrize("value", ["10.0.0.1/8", "proxy.internal", '["10.0.0.0/8"', "[8]"])
def test_a_wrong_trusted_proxy_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("STOREFRONT_ENVIRONMENT", "dev")
    monkeypatch.setenv("STOREFRONT_TRUSTED_PROXIES", value)
    with pytest.raises(SettingsError, match=r"^STOREFRONT_TRUSTED_PROXIES: "):
        load_settings()

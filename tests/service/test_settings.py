"""Settings: read from STOREFRONT_*, unsafe defaults refused, one clear line per mistake."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from service.core.settings import Settings, SettingsError, load_settings


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

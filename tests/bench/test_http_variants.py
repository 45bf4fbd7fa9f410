"""Each HTTP benchmark variant runs with the settings its label claims."""

from __future__ import annotations

import pytest

from bench.http_bench import VARIANTS, server_env
from service.core.settings import Settings

BASE = {"STOREFRONT_ENVIRONMENT": "dev"}
SINK = "http://127.0.0.1:4318"


def settings_of(key: str) -> tuple[Settings, dict[str, str]]:
    """The settings a variant's server reads from its environment, and that environment."""
    variant = next(v for v in VARIANTS if v.key == key)
    env = server_env(variant, BASE, SINK)
    prefix = "STOREFRONT_"
    fields = {k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix)}
    return Settings(**fields), env


@pytest.mark.parametrize("key", ["bare", "article"])
def test_the_issue_baselines_keep_pythons_collector(key: str) -> None:
    settings, _ = settings_of(key)
    assert (settings.gc_freeze, settings.gc_young_threshold) == (False, 0)


@pytest.mark.parametrize("key", ["bare-gc", "storefront-local", "storefront", "storefront-100"])
def test_the_others_run_with_storefronts_collector_settings(key: str) -> None:
    settings, _ = settings_of(key)
    defaults = Settings(environment="dev")
    assert (settings.gc_freeze, settings.gc_young_threshold) == (
        defaults.gc_freeze,
        defaults.gc_young_threshold,
    )


def test_only_the_sampling_variants_export_to_the_sink() -> None:
    exporting = {v.key for v in VARIANTS if "OTEL_EXPORTER_OTLP_ENDPOINT" in settings_of(v.key)[1]}
    assert exporting == {"storefront", "storefront-100"}
    assert settings_of("storefront-100")[0].trace_sample_ratio == 1.0

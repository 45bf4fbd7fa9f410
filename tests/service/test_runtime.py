"""The API process tunes the garbage collector once start-up is done (service/core/runtime.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from service.core.settings import Settings
from tests.service.conftest import running_app


@pytest.fixture
def restored_collector() -> Iterator[None]:
    """The collector's state is process-wide: put it back as it was."""
    threshold = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_collector")
async def test_started_api_freezes_its_heap_and_raises_the_young_threshold(
    settings: Settings,
) -> None:
    tuned = settings.model_copy(update={"gc_freeze": True, "gc_young_threshold": 10_000})
    assert gc.get_freeze_count() == 0
    async with running_app(tuned):
        # Everything start-up built (the app, its routes, the engine, the Redis client) is frozen.
        assert gc.get_freeze_count() > 10_000
        assert gc.get_threshold()[0] == 10_000


@pytest.mark.usefixtures("restored_collector")
async def test_collector_left_alone_when_tuning_is_off(settings: Settings) -> None:
    before = gc.get_threshold()
    async with running_app(settings):  # the suite's settings switch both off
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == before


def test_gc_settings_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOREFRONT_ENVIRONMENT", "dev")
    monkeypatch.setenv("STOREFRONT_GC_FREEZE", "false")
    monkeypatch.setenv("STOREFRONT_GC_YOUNG_THRESHOLD", "50000")
    settings = Settings()
    assert settings.gc_freeze is False
    assert settings.gc_young_threshold == 50_000


def test_gc_tuning_is_on_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOREFRONT_ENVIRONMENT", "dev")
    settings = Settings()
    assert settings.gc_freeze is True
    assert settings.gc_young_threshold == 10_000

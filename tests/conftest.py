"""Shared pytest configuration: registers the real-component fixtures (tests/components)."""

from collections.abc import Iterator

import pytest

from service.observability import log_output

pytest_plugins = [
    "tests.components.redis",
    "tests.components.postgres",
    "tests.components.prometheus",
    "tests.components.jaeger",
    "tests.components.kube",
    "tests.components.helm",
]


@pytest.fixture(autouse=True)
def _write_gathered_log_lines() -> Iterator[None]:
    """Access lines wait for their batch (service/observability/log_output.py): write a test's
    own before its captured output closes, so none turns up in the next test's."""
    yield
    log_output.flush()

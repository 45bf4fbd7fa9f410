"""Shared pytest configuration: registers the real-component fixtures (tests/components)."""

from collections.abc import Generator

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


def _writing_gathered_log_lines() -> Generator[None, object, object]:
    """Access lines wait for their batch (service/observability/log_output.py): write those of
    each test phase before pytest stops capturing it, so the flush thread never writes one while
    pytest prints its progress, or into the next test's output."""
    try:
        return (yield)
    finally:
        log_output.flush()


# trylast: inside pytest's own capturing wrapper of each phase, so the lines are still captured.
@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_setup() -> Generator[None, object, object]:
    return (yield from _writing_gathered_log_lines())


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_call() -> Generator[None, object, object]:
    return (yield from _writing_gathered_log_lines())


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown() -> Generator[None, object, object]:
    return (yield from _writing_gathered_log_lines())

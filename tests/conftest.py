"""Shared pytest configuration: registers the real-component fixtures (tests/components)."""

pytest_plugins = [
    "tests.components.redis",
    "tests.components.postgres",
    "tests.components.prometheus",
    "tests.components.jaeger",
    "tests.components.kube",
    "tests.components.helm",
]

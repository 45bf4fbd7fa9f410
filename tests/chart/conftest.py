"""Helpers for the chart tests: the chart's paths, `helm template` with a values file, and
look-ups over the rendered objects."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.components.helm import Helm
from tests.components.process import REPO_ROOT

CHART = REPO_ROOT / "charts" / "storefront"
VALUES_DIR = Path(__file__).parent / "values"
FIXTURES_DIR = Path(__file__).parent / "fixtures"
VALUES_FILES = sorted(p.stem for p in VALUES_DIR.glob("*.yaml"))
RELEASE_NAMESPACE = "storefront-system"

Manifest = dict[str, Any]
Render = Callable[..., list[Manifest]]


@pytest.fixture(scope="session")
def render(helm_bin: Helm) -> Render:
    """render(values_name=None, *extra_args): the chart rendered by `helm template` (release
    "test" in namespace storefront-system) as parsed objects."""

    def run(values: str | None = None, *args: str) -> list[Manifest]:
        options = ["--namespace", RELEASE_NAMESPACE]
        if values is not None:
            options += ["--values", str(VALUES_DIR / f"{values}.yaml")]
        return helm_bin.template(CHART, *options, *args)

    return run


def of_kind(manifests: Iterable[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: Iterable[Manifest], kind: str) -> Manifest:
    found = of_kind(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, got {[m['metadata']['name'] for m in found]}"
    return found[0]


def rule_triples(rules: Iterable[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """RBAC rules flattened to (apiGroup, resource, verb) triples."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }

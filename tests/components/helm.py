"""Helm fixture: the real `helm` binary (.tools/bin or PATH) with its cache/config/data homes in
a temp dir, run through `helm_bin.run(*args)` (raises with stderr on failure)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.components.process import require_binary


class HelmError(RuntimeError):
    """A helm command exited non-zero."""


@dataclass(frozen=True)
class Helm:
    """The helm binary plus an isolated environment (HELM_*_HOME in a temp dir)."""

    path: str
    home: Path

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }

    def run(
        self,
        *args: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        """Run `helm ARGS...`; return the completed process, raise HelmError on failure."""
        argv = [self.path, *(str(a) for a in args)]
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise HelmError(
                f"{' '.join(argv)} exited {result.returncode}:\n{result.stderr}{result.stdout}"
            )
        return result

    def template(self, chart: str | os.PathLike[str], *args: str) -> list[dict[str, Any]]:
        """`helm template` the chart; the rendered manifests as parsed YAML documents."""
        out = self.run("template", "test", str(chart), *args).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]

    def version(self) -> str:
        return self.run("version", "--short").stdout.strip()


@pytest.fixture(scope="session")
def helm_bin(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    path = require_binary("helm")
    return Helm(path, tmp_path_factory.mktemp("helm-home"))

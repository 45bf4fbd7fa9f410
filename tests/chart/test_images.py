"""The Dockerfiles the chart's images come from, checked without a Docker engine: multi-stage on
a pinned slim base, build tools only in the build stage, a non-root user matching the chart's
securityContext, a health check, and nothing copied that .dockerignore leaves out."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.chart.conftest import CHART
from tests.components.process import REPO_ROOT

DOCKERFILES = {
    "app": REPO_ROOT / "Dockerfile",
    "operator": REPO_ROOT / "operator" / "Dockerfile",
}
BASE = "python:3.11-slim-bookworm"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [value for key, value in self.instructions if key == keyword]


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """(ARGs declared before the first FROM, stages) of a Dockerfile; continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            stages.append(Stage(name.strip(), base.strip()))
        elif not stages and keyword == "ARG":
            key, _, value = rest.partition("=")
            args[key] = value
        else:
            stages[-1].instructions.append((keyword, rest.strip()))
    return args, stages


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_multi_stage_on_the_pinned_slim_base(image: str) -> None:
    args, stages = parse(DOCKERFILES[image])
    assert args["PYTHON_IMAGE"] == BASE
    assert [s.name for s in stages] == ["build", "runtime"]
    assert all(s.base == "${PYTHON_IMAGE}" for s in stages)


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_build_tools_stay_in_the_build_stage(image: str) -> None:
    _, (build, runtime) = parse(DOCKERFILES[image])
    assert any("build-essential" in run for run in build.args("RUN"))
    assert not any("apt-get install" in run for run in runtime.args("RUN"))
    copies = runtime.args("COPY")
    assert "--from=build /opt/venv /opt/venv" in copies
    assert not any(c.startswith("--from=build /src") for c in copies)


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_runs_as_the_non_root_user_the_chart_expects(image: str) -> None:
    _, (_, runtime) = parse(DOCKERFILES[image])
    (user,) = runtime.args("USER")
    uid = int(user.split(":")[0])
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert uid != 0
    assert uid == values["podSecurityContext"]["runAsUser"]
    assert any(f"--uid {uid}" in run for run in runtime.args("RUN"))


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_health_check_and_entrypoint(image: str) -> None:
    _, (_, runtime) = parse(DOCKERFILES[image])
    (healthcheck,) = runtime.args("HEALTHCHECK")
    assert "CMD" in healthcheck and "urlopen" in healthcheck
    assert runtime.args("ENTRYPOINT") == ['["storefront"]']
    (cmd,) = runtime.args("CMD")
    assert cmd.startswith('["api"' if image == "app" else '["operator"')


def _ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        if pattern == "**" or fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(
            relative, pattern + "/*"
        ) or relative.startswith(pattern + "/"):  # fmt: skip
            ignored = not negate
    return ignored


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_every_copied_source_exists_and_is_in_the_build_context(image: str) -> None:
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # The context is what the images need, not the repository (tests, tools, the venv).
    assert _ignored("tests/chart/test_images.py", patterns)
    assert _ignored(".venv/bin/python", patterns)
    assert _ignored("service/__pycache__/main.cpython-311.pyc", patterns)
    _, stages = parse(DOCKERFILES[image])
    for stage in stages:
        for copy in stage.args("COPY"):
            if copy.startswith("--from="):
                continue
            *sources, _ = copy.split()
            for source in sources:
                matches = sorted(REPO_ROOT.glob(source)) if "*" in source else [REPO_ROOT / source]
                assert matches and all(m.exists() for m in matches), source
                for match in matches:
                    files = [match] if match.is_file() else [p for p in match.rglob("*.py")]
                    for file in files:
                        relative = str(file.relative_to(REPO_ROOT))
                        assert not _ignored(relative, patterns), f"{relative} is .dockerignored"


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_builds_offline_with_any_builder(image: str) -> None:
    """No `# syntax=` directive: it makes BuildKit pull a frontend image from Docker Hub before
    building, which fails where no registry answers. Without it every builder uses its own
    frontend, so the Dockerfile keeps to what both the classic builder and Docker 20.10's
    BuildKit read: no RUN --mount, COPY --chmod/--link or heredocs."""
    text = DOCKERFILES[image].read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    for newer in ("--mount=", "--chmod=", "--link", "<<"):
        assert newer not in text, newer


def test_operator_image_ships_the_generated_dashboards() -> None:
    _, (_, runtime) = parse(DOCKERFILES["operator"])
    assert "dashboards/*.json /opt/storefront/dashboards/" in runtime.args("COPY")
    assert any(
        "STOREFRONT_OPERATOR_DASHBOARDS_DIR=/opt/storefront/dashboards" in env
        for env in runtime.args("ENV")
    )
    from storefront_operator.config import OperatorConfig

    assert "dashboards_dir" in OperatorConfig.model_fields

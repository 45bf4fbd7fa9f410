"""Render Storefront's dashboards to JSON: `python -m dashboards.generate` writes dashboards/*.json
and the chart's copy (charts/storefront/dashboards/); `--check` fails if either is stale."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from dashboards import operator_dashboard, service_dashboard, worker_dashboard

REPO_ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS_DIR = REPO_ROOT / "dashboards"
# Helm's .Files only reaches files inside the chart, so the chart carries its own copy.
CHART_DASHBOARDS_DIR = REPO_ROOT / "charts" / "storefront" / "dashboards"
OUTPUT_DIRS = (DASHBOARDS_DIR, CHART_DASHBOARDS_DIR)

BUILDERS: dict[str, Callable[[], dashboard_builders.Dashboard]] = {
    service_dashboard.UID: service_dashboard.build,
    worker_dashboard.UID: worker_dashboard.build,
    operator_dashboard.UID: operator_dashboard.build,
}


def to_dict(builder: dashboard_builders.Dashboard) -> dict[str, Any]:
    """The dashboard as plain JSON data, panels (rows included) numbered 1, 2, ... in order:
    Grafana keys panel state and links (`viewPanel=`) by a unique id."""
    data: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    next_id = 1
    for panel in data.get("panels", []):
        for item in [panel, *panel.get("panels", [])]:
            item["id"] = next_id
            next_id += 1
    return data


def render(builder: dashboard_builders.Dashboard) -> str:
    """Stable JSON text of a dashboard (sorted keys, 2-space indent, final newline)."""
    return json.dumps(to_dict(builder), indent=2, sort_keys=True) + "\n"


def render_all() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    return {f"{uid}.json": render(build()) for uid, build in BUILDERS.items()}


def write(directory: Path, files: dict[str, str]) -> list[Path]:
    """Write the files into `directory`; return the paths that changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, text in files.items():
        path = directory / name
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed


def stale(directory: Path, files: dict[str, str]) -> list[str]:
    """Problems that make `directory` differ from the rendered files (missing, outdated, extra)."""
    problems = []
    for name, text in files.items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.read_text() != text:
            problems.append(f"{path}: differs from the code")
    extra = {p.name for p in directory.glob("*.json")} - set(files)
    problems += [
        f"{directory / name}: no dashboard in the code renders it" for name in sorted(extra)
    ]
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.generate", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="Only compare; exit 1 when a file is stale."
    )
    parser.add_argument(
        "--out", type=Path, action="append", help="Output directory (repeatable; default: both)."
    )
    args = parser.parse_args(argv)
    directories = tuple(args.out) if args.out else OUTPUT_DIRS
    files = render_all()
    if args.check:
        problems = [p for d in directories for p in stale(d, files)]
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run `make dashboards` (python -m dashboards.generate)", file=sys.stderr)
        return 1 if problems else 0
    for directory in directories:
        for path in write(directory, files):
            print(
                f"wrote {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

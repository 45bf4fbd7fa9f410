"""The committed dashboard JSON (and the chart's copy) is exactly what the code renders, and the
dashboards follow Storefront's conventions: variables, selectors, units, trace links."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from dashboards import generate
from dashboards.common import SELECTOR, TRACE_SERVICE, trace_search_url
from dashboards.promql import panel_queries
from tests.components.process import REPO_ROOT

RENDERED = generate.render_all()
DASHBOARDS = {name: json.loads(text) for name, text in RENDERED.items()}


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_generate_check_passes_on_the_committed_files() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dashboards.generate", "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "directory", generate.OUTPUT_DIRS, ids=lambda d: str(d.relative_to(REPO_ROOT))
)
def test_committed_json_is_what_the_code_renders(directory: Path) -> None:
    assert generate.stale(directory, RENDERED) == []


def test_regenerating_into_an_empty_directory_writes_every_dashboard(tmp_path: Path) -> None:
    assert generate.main(["--out", str(tmp_path)]) == 0
    assert {p.name: p.read_text() for p in tmp_path.glob("*.json")} == RENDERED
    # A second run has nothing to change.
    assert generate.write(tmp_path, RENDERED) == []


def test_check_reports_stale_missing_and_extra_files(tmp_path: Path, capsys: Any) -> None:
    generate.write(tmp_path, RENDERED)
    (tmp_path / "storefront-service.json").write_text("{}\n")
    (tmp_path / "storefront-worker.json").unlink()
    (tmp_path / "old.json").write_text("{}\n")
    assert generate.main(["--check", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "storefront-service.json: differs from the code" in err
    assert "storefront-worker.json: missing" in err
    assert "old.json: no dashboard in the code renders it" in err
    assert "make dashboards" in err


def test_three_dashboards_with_stable_uids() -> None:
    assert sorted(DASHBOARDS) == [
        "storefront-operator.json",
        "storefront-service.json",
        "storefront-worker.json",
    ]
    for name, dashboard in DASHBOARDS.items():
        assert dashboard["uid"] == name.removesuffix(".json")
        assert "storefront" in dashboard["tags"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_template_variables(name: str) -> None:
    variables = {v["name"]: v for v in DASHBOARDS[name]["templating"]["list"]}
    assert list(variables) == ["datasource", "traces", "namespace", "job", "instance"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["traces"]["type"] == "datasource"
    assert variables["traces"]["query"] == "jaeger"
    for scoped in ("namespace", "job", "instance"):
        assert variables[scoped]["includeAll"] is True
        assert variables[scoped]["allValue"] == ".*"
        assert variables[scoped]["datasource"]["uid"] == "${datasource}"
    # Each level narrows the next: job by namespace, instance by namespace and job.
    assert "$namespace" in variables["job"]["query"]
    assert "$job" in variables["instance"]["query"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_query_is_scoped_by_the_variables_and_the_datasource(name: str) -> None:
    dashboard = DASHBOARDS[name]
    queries = list(panel_queries(dashboard))
    assert queries
    for query in queries:
        # Every selector of every query carries namespace, job and instance.
        assert query.expr.count("{") == query.expr.count(SELECTOR), query.name
    for panel in _panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
        assert panel.get("description"), panel["title"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_layout_fits_the_grid_and_ids_are_unique(name: str) -> None:
    panels = DASHBOARDS[name]["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    occupied: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                 for y in range(pos["y"], pos["y"] + pos["h"])}  # fmt: skip
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells


def test_required_panels_exist() -> None:
    titles = {
        name.removesuffix(".json").removeprefix("storefront-"): {p["title"] for p in _panels(d)}
        for name, d in DASHBOARDS.items()
    }
    assert {
        "Request rate by route",
        "Error ratio",
        "Latency by route (p50 / p95 / p99)",
        "In-flight requests",
        "Cache hit ratio",
        "Orders",
        "Revenue",
        "Database pool",
    } <= titles["service"]
    assert {
        "Jobs by outcome",
        "Job duration by actor (p50 / p95 / p99)",
        "Retries",
        "Dead letters",
        "Queue depth by state",
        "Scheduler ticks",
        "Scheduler leader",
    } <= titles["worker"]
    assert {
        "Reconciles by outcome",
        "Reconcile error ratio",
        "Reconcile duration (p50 / p95 / p99)",
        "Instances by phase",
        "Scaling decisions",
    } <= titles["operator"]


def test_latency_panel_links_to_traces_through_exemplars() -> None:
    service = DASHBOARDS["storefront-service.json"]
    (latency,) = [p for p in _panels(service) if p["title"].startswith("Latency by route")]
    exemplar_targets = [t for t in latency["targets"] if t.get("exemplar")]
    assert len(exemplar_targets) == 1
    assert exemplar_targets[0]["expr"].startswith("histogram_quantile(0.99,")
    (panel_link,) = latency["links"]
    (data_link,) = latency["fieldConfig"]["defaults"]["links"]
    for link in (panel_link, data_link):
        assert link["url"].startswith("/explore?schemaVersion=1&panes=")
        assert "${traces}" in link["url"]
        assert TRACE_SERVICE in link["url"]
    assert "${__field.labels.method}%20${__field.labels.route}" in data_link["url"]


def test_trace_search_url_keeps_variables_for_grafana() -> None:
    url = trace_search_url("${__field.labels.method} ${__field.labels.route}")
    panes = json.loads(unquote(url.split("panes=", 1)[1]))
    (query,) = panes["traces"]["queries"]
    assert query["datasource"] == {"type": "jaeger", "uid": "${traces}"}
    assert query["operation"] == "${__field.labels.method} ${__field.labels.route}"
    assert panes["traces"]["range"] == {"from": "${__from}", "to": "${__to}"}


def test_committed_previews_show_every_dashboard_with_data() -> None:
    from dashboards.preview import drawn_pixels

    previews = REPO_ROOT / "dashboards" / "previews"
    assert sorted(p.name for p in previews.glob("*.png")) == [
        name.replace(".json", ".png") for name in sorted(DASHBOARDS)
    ]
    for path in previews.glob("*.png"):
        assert path.stat().st_size < 150_000, f"{path.name} is too large to commit"
        assert drawn_pixels(path) > 1000, f"{path.name} shows no data"

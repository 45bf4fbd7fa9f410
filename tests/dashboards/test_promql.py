"""Every panel's PromQL parses (checked by promtool, Prometheus's own parser, with Grafana's
variables expanded as "All" expands them), and the helpers that read and fill dashboards work."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import yaml

from dashboards import generate
from dashboards.preview import Series, format_value, layout
from dashboards.promql import expand, legend, panel_queries, variable_selectors
from tests.components.process import require_binary

DASHBOARDS = {name: json.loads(text) for name, text in generate.render_all().items()}
QUERIES = [q for d in DASHBOARDS.values() for q in panel_queries(d)]


def _promtool_check(tmp_path: Path, exprs: dict[str, str]) -> subprocess.CompletedProcess[str]:
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [{"record": f"storefront:panel_{i}", "expr": e}
                          for i, e in enumerate(exprs.values())],
            }
        ]
    }  # fmt: skip
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    return subprocess.run(
        [require_binary("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_every_panel_query_parses(tmp_path: Path) -> None:
    assert len(QUERIES) >= 45
    exprs = {q.name: expand(q.expr) for q in QUERIES}
    result = _promtool_check(tmp_path, exprs)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


def test_every_variable_selector_parses(tmp_path: Path) -> None:
    exprs = {
        f"{uid}/{name}": expand(selector)
        for uid, d in DASHBOARDS.items()
        for name, selector in variable_selectors(d).items()
    }
    assert len(exprs) == 9
    result = _promtool_check(tmp_path, exprs)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_syntax_check_rejects_a_broken_query(tmp_path: Path) -> None:
    result = _promtool_check(tmp_path, {"broken": "sum by (route (rate(x[5m]))"})
    assert result.returncode != 0
    assert "parse error" in (result.stdout + result.stderr)


def test_expand_replaces_both_variable_forms() -> None:
    expr = 'rate(x{job=~"$job", instance=~"${instance}"}[$__rate_interval])'
    assert expand(expr, {"job": "a|b", "instance": ".*", "__rate_interval": "2m"}) == (
        'rate(x{job=~"a|b", instance=~".*"}[2m])'
    )
    with pytest.raises(KeyError, match=r"\$nope"):
        expand('up{a="$nope"}', {})


def test_legend_fills_grafana_templates() -> None:
    labels = {"route": "/api/v1/products", "method": "GET"}
    assert legend("p95 {{route}}", labels) == "p95 /api/v1/products"
    assert legend("{{ method }} {{route}}", labels) == "GET /api/v1/products"
    assert legend("__auto", labels) == "method=GET,route=/api/v1/products"
    assert legend("", {}) == "value"


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (0.0123, "percentunit", "1.2%"),
        (0.25, "s", "250 ms"),
        (2.5, "s", "2.50 s"),
        (3 * 2**20, "bytes", "3.0 MiB"),
        (12.5, "currencyUSD", "$12.50"),
        (4.0, "reqps", "4 req/s"),
        (0.5, "ops", "0.5 ops/s"),
        (2500, "short", "2.5k"),
        (math.nan, "s", "NaN"),
    ],
)
def test_format_value(value: float, unit: str, text: str) -> None:
    assert format_value(value, unit) == text


def test_preview_layout_flattens_rows_and_measures_the_grid() -> None:
    dashboard = DASHBOARDS["storefront-service.json"]
    panels, height = layout(dashboard)
    assert len(panels) == len(dashboard["panels"])
    assert height == max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
    assert Series("x").values == []

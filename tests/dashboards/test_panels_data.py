"""Every panel of the service and worker dashboards returns data from a real Prometheus that
scraped real Storefront processes after a known workload; latency exemplars carry trace IDs;
the template variables resolve; previews render from the same data."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from dashboards import preview
from dashboards.common import TRACE_SERVICE
from dashboards.promql import DEFAULT_VARIABLES, PanelQuery, expand, panel_queries
from tests.components.process import REPO_ROOT
from tests.dashboards.conftest import ObservedStack, wait_until

pytestmark = [pytest.mark.prometheus, pytest.mark.redis, pytest.mark.jaeger, pytest.mark.slow]

DASHBOARDS = {p.stem: json.loads(p.read_text()) for p in (REPO_ROOT / "dashboards").glob("*.json")}
# Wide enough that rates computed just after the workload stay above zero for the whole module.
VARIABLES = {**DEFAULT_VARIABLES, "__rate_interval": "5m", "__range": "1h"}
PROVEN = ("storefront-service", "storefront-worker")


def _queries(uid: str) -> list[PanelQuery]:
    return list(panel_queries(DASHBOARDS[uid]))


def _finite(result: list[dict[str, Any]]) -> list[float]:
    return [float(r["value"][1]) for r in result if not math.isnan(float(r["value"][1]))]


@pytest.mark.parametrize(
    "query",
    [q for uid in PROVEN for q in _queries(uid)],
    ids=lambda q: q.name,
)
def test_panel_query_returns_data(observed_stack: ObservedStack, query: PanelQuery) -> None:
    promql = expand(query.expr, VARIABLES)
    values = wait_until(
        lambda: _finite(observed_stack.prometheus.query(promql)), timeout=90, what=query.name
    )
    assert values, query.name


def test_workload_is_what_the_business_panels_show(observed_stack: ObservedStack) -> None:
    orders = expand(
        'sum(increase(storefront_orders_created_total{namespace=~"$namespace"}[$__range]))',
        VARIABLES,
    )
    # increase() extrapolates to the window's edges; the count is near the 3 orders placed.
    value = wait_until(lambda: _finite(observed_stack.prometheus.query(orders)), 30, "orders")
    workload = observed_stack.workload
    assert workload is not None
    assert value[0] >= workload.orders - 0.5
    hit_ratio = next(q for q in _queries("storefront-service") if q.panel == "Cache hit ratio").expr
    (ratio,) = _finite(observed_stack.prometheus.query(expand(hit_ratio, VARIABLES)))
    hits, misses = workload.cache_hits, workload.cache_misses
    assert ratio == pytest.approx(hits / (hits + misses), abs=0.05)


def test_the_rate_limit_panel_shows_the_refused_sign_ins(observed_stack: ObservedStack) -> None:
    (panel,) = [q for q in _queries("storefront-service") if q.panel == "Rate limited"]
    series = wait_until(
        lambda: observed_stack.prometheus.query(expand(panel.expr, VARIABLES)), 30, "429s"
    )
    labels = {(s["metric"]["limit"], s["metric"]["route"]) for s in series}
    assert labels == {("login_account", "/api/v1/auth/token")}
    assert all(float(s["value"][1]) > 0 for s in series)


def test_latency_exemplars_lead_to_the_request_trace(observed_stack: ObservedStack) -> None:
    (latency,) = [
        q for q in _queries("storefront-service") if q.exemplar and q.panel.startswith("Latency")
    ]
    now = time.time()

    def exemplars() -> list[dict[str, Any]]:
        response = httpx.get(
            f"{observed_stack.prometheus.url}/api/v1/query_exemplars",
            params={"query": expand(latency.expr, VARIABLES), "start": now - 600, "end": now + 60},
            timeout=10,
        )
        response.raise_for_status()
        return [e for series in response.json()["data"] for e in series["exemplars"]]

    found = wait_until(exemplars, timeout=30, what="exemplars")
    trace_ids = {e["labels"].get("trace_id", "") for e in found}
    assert all(len(t) == 32 and int(t, 16) for t in trace_ids), trace_ids

    # What Grafana does with an exemplar: open its trace in the trace datasource.
    trace_id = sorted(trace_ids)[0]

    def trace() -> list[dict[str, Any]]:
        got = httpx.get(f"{observed_stack.jaeger.query_url}/api/traces/{trace_id}", timeout=10)
        return list(got.json().get("data") or []) if got.status_code == 200 else []

    (found_trace,) = wait_until(trace, timeout=30, what=f"trace {trace_id} in Jaeger")
    operations = {span["operationName"] for span in found_trace["spans"]}
    service = next(iter(found_trace["processes"].values()))["serviceName"]
    assert service == TRACE_SERVICE
    # The per-route trace links search Jaeger by "METHOD /route/template".
    assert any(op.split(" ", 1)[0] in {"GET", "POST"} and "/" in op for op in operations)


@pytest.mark.parametrize("uid", PROVEN)
def test_template_variables_resolve(observed_stack: ObservedStack, uid: str) -> None:
    from dashboards.promql import variable_selectors

    selectors = variable_selectors(DASHBOARDS[uid])
    assert set(selectors) == {"namespace", "job", "instance"}
    for name in ("job", "instance"):
        selector = expand(selectors[name], VARIABLES)
        response = httpx.get(
            f"{observed_stack.prometheus.url}/api/v1/label/{name}/values",
            params={"match[]": selector},
            timeout=10,
        )
        response.raise_for_status()
        values = response.json()["data"]
        if name == "job":
            assert values == ["storefront"]
        else:
            assert set(values) <= set(observed_stack.targets.values()) and values


def test_previews_render_every_panel_from_prometheus(
    observed_stack: ObservedStack, tmp_path: Path
) -> None:
    end = time.time()
    for uid in PROVEN:
        dashboard = DASHBOARDS[uid]
        data = preview.fetch(observed_stack.prometheus.url, dashboard, end - 300, end, 5,
                             VARIABLES)  # fmt: skip
        panels, _ = preview.layout(dashboard)
        empty = [p["title"] for p in panels if p.get("targets") and not data[p["id"]]]
        assert not empty, f"{uid}: panels without data: {empty}"
        path = preview.render(dashboard, data, tmp_path / f"{uid}.png")
        with Image.open(path) as image:
            width, height = image.size
        assert width == preview.FIGURE_WIDTH_IN * preview.DPI
        assert height > width / 2
        assert path.stat().st_size < 400_000
        # Series and stat values are drawn, not just empty panel boxes.
        assert preview.drawn_pixels(path) > 300


def test_preview_command_writes_a_png_per_dashboard(
    observed_stack: ObservedStack, tmp_path: Path
) -> None:
    args = ["--prometheus", observed_stack.prometheus.url, "--out", str(tmp_path),
            "--minutes", "5", "--rate-interval", "1m", "--var", "job=storefront"]  # fmt: skip
    assert preview.main(args) == 0
    written = sorted(p.name for p in tmp_path.glob("*.png"))
    assert written == [f"{uid}.png" for uid in sorted(DASHBOARDS)]
    for uid in PROVEN:
        assert preview.drawn_pixels(tmp_path / f"{uid}.png") > 300

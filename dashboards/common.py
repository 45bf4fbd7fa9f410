"""Building blocks shared by Storefront's dashboards: template variables, the label selector
every query carries, and panel factories (time series, stat) with consistent defaults."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import common, dashboard

# Every query is scoped by these variables; "All" expands to ".*", which also matches a series
# without the label (a Prometheus outside Kubernetes adds no `namespace`).
SELECTOR = 'namespace=~"$namespace", job=~"$job", instance=~"$instance"'
RATE = "$__rate_interval"

PROMETHEUS_DS = dashboard.DataSourceRef(type_val="prometheus", uid="${datasource}")
TRACES_DS_TYPE = "jaeger"
# The OpenTelemetry service.name of the API: trace links search this service.
TRACE_SERVICE = "storefront-api"

SCHEMA_VERSION = 39
TAGS = ["storefront"]


def sel(*matchers: str) -> str:
    """The dashboard's label selector, plus extra matchers (`'status_code=~"5.."'`)."""
    return "{" + ", ".join([SELECTOR, *matchers]) + "}"


def rate_sum(
    metric: str, by: str = "", matchers: Sequence[str] = (), fn: str = "rate", window: str = RATE
) -> str:
    """`sum by (by) (fn(metric{selector}[window]))`: per-second rate (or increase) of a counter."""
    group = f" by ({by})" if by else ""
    return f"sum{group} ({fn}({metric}{sel(*matchers)}[{window}]))"


def gauge(metric: str, by: str = "", agg: str = "sum") -> str:
    """`agg by (by) (metric{selector})`: a gauge aggregated over the selected series."""
    group = f" by ({by})" if by else ""
    return f"{agg}{group} ({metric}{sel()})"


def ratio(numerator: str, denominator: str) -> str:
    """numerator / denominator, where an empty numerator (no such series yet) counts as 0;
    both sides must be aggregated to no labels."""
    return f"({numerator} or vector(0)) / {denominator}"


@dataclass(frozen=True)
class Query:
    """One PromQL target of a panel."""

    expr: str
    legend: str = "__auto"
    exemplar: bool = False


def _target(query: Query, ref_id: str) -> prometheus.Dataquery:
    target = (
        prometheus.Dataquery()
        .expr(query.expr)
        .legend_format(query.legend)
        .ref_id(ref_id)
        .range()
        .datasource(PROMETHEUS_DS)
    )
    if query.exemplar:
        target = target.exemplar(True)
    return target


def _ref_ids(count: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(count)]


def variables(anchor: str) -> list[cogbuilder.Builder[dashboard.VariableModel]]:
    """datasource, traces, namespace, job, instance; label values come from the series that
    `anchor` matches (a metric name or a `__name__=~"a|b"` matcher)."""
    all_option = dashboard.VariableOption(selected=True, text="All", value="$__all")
    name_matcher = anchor if "__name__" in anchor else f'__name__="{anchor}"'

    def label_values(name: str, label: str, *scope: str) -> dashboard_builders.QueryVariable:
        selector = "{" + ", ".join([name_matcher, *scope]) + "}"
        return (
            dashboard_builders.QueryVariable(name)
            .label(label)
            .datasource(PROMETHEUS_DS)
            .query(f"label_values({selector}, {name})")
            .refresh(dashboard.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dashboard.VariableSort.ALPHABETICAL_ASC)
            .include_all(True)
            .all_value(".*")
            .multi(True)
            .current(all_option)
        )

    return [
        dashboard_builders.DatasourceVariable("datasource").label("Prometheus").type("prometheus"),
        dashboard_builders.DatasourceVariable("traces").label("Traces").type(TRACES_DS_TYPE),
        label_values("namespace", "Namespace"),
        label_values("job", "Job", 'namespace=~"$namespace"'),
        label_values("instance", "Instance", 'namespace=~"$namespace"', 'job=~"$job"'),
    ]


def trace_search_url(operation: str = "") -> str:
    """Grafana Explore on the trace datasource, searching the API's spans (an operation is
    "METHOD /route/template", as OpenTelemetry names server spans)."""
    query: dict[str, object] = {
        "refId": "A",
        "datasource": {"type": TRACES_DS_TYPE, "uid": "${traces}"},
        "queryType": "search",
        "service": TRACE_SERVICE,
    }
    if operation:
        query["operation"] = operation
    time_range = {"from": "${__from}", "to": "${__to}"}
    panes = {"traces": {"datasource": "${traces}", "queries": [query], "range": time_range}}
    text = json.dumps(panes, separators=(",", ":"))
    # Variables stay readable ("${traces}") so Grafana interpolates them before following.
    return "/explore?schemaVersion=1&panes=" + quote(text, safe="${}:,[]_")


def trace_links() -> tuple[
    list[cogbuilder.Builder[dashboard.DashboardLink]],
    list[cogbuilder.Builder[dashboard.DashboardLink]],
]:
    """(panel links, per-series data links) from a latency panel to its traces."""
    panel = dashboard_builders.DashboardLink("Traces of this period").url(trace_search_url())
    data = dashboard_builders.DashboardLink("Traces of ${__field.labels.route}").url(
        trace_search_url("${__field.labels.method} ${__field.labels.route}")
    )
    return [panel.target_blank(True)], [data.target_blank(True)]


def timeseries_panel(
    title: str,
    description: str,
    queries: Sequence[Query],
    unit: str,
    *,
    width: int = 12,
    height: int = 8,
    stacked: bool = False,
    max_value: float | None = None,
    trace_links_enabled: bool = False,
) -> timeseries.Panel:
    """A time series panel: one target per query, legend as a table with mean and max."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS_DS)
        .unit(unit)
        .min(0)
        .span(width)
        .height(height)
        .line_width(1)
        .fill_opacity(20 if stacked else 10)
        .show_points(common.VisibilityMode.NEVER)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max", "lastNotNull"])
        )
        .tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI))
        .targets([_target(q, r) for q, r in zip(queries, _ref_ids(len(queries)), strict=True)])
    )
    if stacked:
        panel = panel.stacking(
            common_builders.StackingConfig().mode(common.StackingMode.NORMAL).group("A")
        )
    if max_value is not None:
        panel = panel.max(max_value)
    if trace_links_enabled:
        links, data_links = trace_links()
        panel = panel.links(links).data_links(data_links)
    return panel


def cpu_panel(width: int = 12) -> timeseries.Panel:
    """Process CPU by instance: the same panel on every Storefront dashboard."""
    return timeseries_panel(
        "CPU",
        "CPU seconds used per second, by instance.",
        [Query(rate_sum("process_cpu_seconds_total", "instance"), "{{instance}}")],
        "percentunit",
        width=width,
    )


def memory_panel(width: int = 12) -> timeseries.Panel:
    """Process resident memory by instance: the same panel on every Storefront dashboard."""
    return timeseries_panel(
        "Memory",
        "Resident memory, by instance.",
        [Query(gauge("process_resident_memory_bytes", "instance"), "{{instance}}")],
        "bytes",
        width=width,
    )


def stat_panel(
    title: str,
    description: str,
    query: Query,
    unit: str,
    *,
    width: int = 4,
    height: int = 4,
    thresholds: Sequence[tuple[float | None, str]] = ((None, "green"),),
) -> stat.Panel:
    """A single-value panel with a sparkline; thresholds as (lower bound, colour) pairs."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS_DS)
        .unit(unit)
        .span(width)
        .height(height)
        .graph_mode(common.BigValueGraphMode.AREA)
        .color_mode(common.BigValueColorMode.VALUE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(
            dashboard_builders.ThresholdsConfig()
            .mode(dashboard.ThresholdsMode.ABSOLUTE)
            .steps([dashboard.Threshold(value=v, color=c) for v, c in thresholds])
        )
        .targets([_target(query, "A")])
    )


def new_dashboard(
    uid: str, title: str, description: str, anchor: str
) -> dashboard_builders.Dashboard:
    """A dashboard with Storefront's defaults: tags, last hour, 30 s refresh, shared crosshair,
    and the standard variables."""
    return (
        dashboard_builders.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(dashboard.DashboardCursorSync.CROSSHAIR)
        .editable()
        .variables(variables(anchor))
        .link(
            dashboard_builders.DashboardLink("Storefront dashboards")
            .type(dashboard.DashboardLinkType.DASHBOARDS)
            .tags(TAGS)
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )


def histogram_quantiles(
    metric: str, by: str, matchers: Sequence[str] = (), exemplar_on: float | None = None
) -> list[Query]:
    """p50, p95 and p99 of a `_seconds` histogram, grouped by `by` (e.g. "route")."""
    group = f"le, {by}" if by else "le"
    out = []
    for q in (0.5, 0.95, 0.99):
        label = f"p{round(q * 100)}"
        expr = f"histogram_quantile({q}, {rate_sum(metric + '_bucket', group, matchers)})"
        legend = f"{label} {{{{{by}}}}}" if by else label
        out.append(Query(expr, legend, exemplar=q == exemplar_on))
    return out

"""Read the PromQL out of rendered dashboards and expand Grafana's template variables the way
Grafana does with "All" selected, so the queries can be checked and run outside Grafana."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

# "All" on namespace/job/instance expands to the variables' allValue.
DEFAULT_VARIABLES: Mapping[str, str] = {
    "namespace": ".*",
    "job": ".*",
    "instance": ".*",
    "__rate_interval": "1m",
    "__range": "1h",
    "__interval": "15s",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel of a dashboard."""

    dashboard: str
    panel: str
    ref_id: str
    expr: str
    legend: str
    exemplar: bool
    unit: str

    @property
    def name(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref_id}"


def panel_queries(dashboard: Mapping[str, Any]) -> Iterator[PanelQuery]:
    """Every Prometheus target of every panel (rows' nested panels included), in order."""
    for panel in _panels(dashboard.get("panels", [])):
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        for target in panel.get("targets", []):
            if "expr" in target:
                yield PanelQuery(
                    dashboard=dashboard.get("uid", ""),
                    panel=panel.get("title", ""),
                    ref_id=target.get("refId", ""),
                    expr=target["expr"],
                    legend=target.get("legendFormat", ""),
                    exemplar=bool(target.get("exemplar", False)),
                    unit=unit,
                )


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        if panel.get("type") == "row":
            yield from _panels(panel.get("panels", []))
        else:
            yield panel


def expand(expr: str, variables: Mapping[str, str] = DEFAULT_VARIABLES) -> str:
    """Replace `$name` and `${name}` by their values; an unknown variable is an error."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise KeyError(f"no value for dashboard variable ${name} in {expr!r}")
        return variables[name]

    return _VARIABLE.sub(value, expr)


def variable_selectors(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """Query variables' `label_values(<selector>, label)` selectors, by variable name."""
    out = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query" and isinstance(query, str):
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
            if match is None:
                raise ValueError(f"variable {variable.get('name')}: unexpected query {query!r}")
            out[variable["name"]] = match.group(1)
    return out


def legend(template: str, labels: Mapping[str, str]) -> str:
    """A Grafana legend format (`{{route}} p95`) filled with a series' labels."""
    if template in ("", "__auto"):
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__") or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)

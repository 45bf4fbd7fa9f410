"""What monitors an instance: its ServiceMonitor and its Grafana dashboard ConfigMaps."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from storefront_operator.render.app import worker_metrics_ports
from storefront_operator.render.common import (
    APP_NAME,
    METRICS_LABEL,
    REPO_ROOT,
    Manifest,
    labels,
)
from storefront_operator.spec import StorefrontSpec


def service_monitor(name: str, namespace: str, spec: StorefrontSpec) -> Manifest:
    sm = spec.observability.service_monitor
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**labels(name, "metrics", spec), **sm.labels},
        },
        "spec": {
            "selector": {
                "matchLabels": {
                    "app.kubernetes.io/name": APP_NAME,
                    "app.kubernetes.io/instance": name,
                    METRICS_LABEL: "true",
                }
            },
            # The API and scheduler Services name their port `metrics`, workers one per process.
            "endpoints": [
                {"port": port_name, "path": "/metrics", "interval": sm.interval}
                for port_name in ["metrics", *(p for p, _ in worker_metrics_ports(spec))]
            ],
        },
    }


def dashboard_config_maps(
    name: str, namespace: str, spec: StorefrontSpec, dashboards: Mapping[str, str]
) -> list[Manifest]:
    dash = spec.observability.dashboards
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": f"{name}-dashboard-{stem}",
                "namespace": namespace,
                "labels": {**labels(name, "dashboard", spec), dash.label: dash.label_value},
                # The folder annotation kube-prometheus-stack's Grafana sidecar reads.
                "annotations": {"grafana_folder": dash.folder},
            },
            "data": {f"{stem}.json": text},
        }
        for stem, text in sorted(dashboards.items())
    ]


def load_dashboards(directory: Path | None = None) -> dict[str, str]:
    """Dashboard JSON files (stem → text) from `dashboards/*.json`; none is fine."""
    folder = directory or REPO_ROOT / "dashboards"
    if not folder.is_dir():
        return {}
    found: dict[str, str] = {}
    for path in sorted(folder.glob("*.json")):
        stem = path.stem.lower().replace("_", "-")
        found[stem] = path.read_text()
    return found

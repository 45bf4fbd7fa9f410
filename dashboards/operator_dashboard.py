"""The Storefront operator dashboard: reconciles and their errors, reconcile duration and
backlog, its requests to the Kubernetes API and watch restarts, instances by phase, worker
scaling decisions, process resources."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dashboard_builders

from dashboards.common import (
    Query,
    cpu_panel,
    gauge,
    histogram_quantiles,
    memory_panel,
    new_dashboard,
    rate_sum,
    ratio,
    stat_panel,
)
from dashboards.common import timeseries_panel as ts

UID = "storefront-operator"
RECONCILES = "storefront_operator_reconciles_total"
SCALING = "storefront_operator_scaling_decisions_total"
API_REQUESTS = "storefront_operator_api_requests_total"
WATCH_RESTARTS = "storefront_operator_watch_restarts_total"
BACKLOG = "storefront_operator_reconcile_backlog"
ERROR_OUTCOME = 'outcome="error"'
ERROR_RATIO = ratio(rate_sum(RECONCILES, matchers=[ERROR_OUTCOME]), rate_sum(RECONCILES))


def build() -> dashboard_builders.Dashboard:
    """The operator dashboard builder."""
    return (
        new_dashboard(
            UID,
            "Storefront / Operator",
            "The Storefront operator: reconcile loop health, instances, worker autoscaling.",
            anchor=RECONCILES,
        )
        .with_row(dashboard_builders.Row("Overview"))
        .with_panel(
            stat_panel(
                "Instances",
                "Storefront objects the operator manages.",
                Query(gauge("storefront_operator_instances")),
                "short",
                width=6,
            )
        )
        .with_panel(
            stat_panel(
                "Reconciles",
                "Reconciles per second, every outcome.",
                Query(rate_sum(RECONCILES)),
                "ops",
                width=6,
            )
        )
        .with_panel(
            stat_panel(
                "Reconcile errors",
                "Share of reconciles that failed.",
                Query(ERROR_RATIO),
                "percentunit",
                width=6,
                thresholds=((None, "green"), (0.01, "orange"), (0.1, "red")),
            )
        )
        .with_panel(
            stat_panel(
                "Scaling decisions",
                "Worker scale-ups and scale-downs in the selected time range.",
                Query(rate_sum(SCALING, fn="increase", window="$__range")),
                "short",
                width=6,
            )
        )
        .with_row(dashboard_builders.Row("Reconcile loop"))
        .with_panel(
            ts(
                "Reconciles by outcome",
                "Reconciles per second, by outcome.",
                [Query(rate_sum(RECONCILES, "outcome"), "{{outcome}}")],
                "ops",
                stacked=True,
            )
        )
        .with_panel(
            ts(
                "Reconcile error ratio",
                "Share of reconciles that failed.",
                [Query(ERROR_RATIO, "errors")],
                "percentunit",
            )
        )
        .with_panel(
            ts(
                "Reconcile duration (p50 / p95 / p99)",
                "Time a reconcile takes, from event to applied children and status.",
                histogram_quantiles("storefront_operator_reconcile_duration_seconds", ""),
                "s",
                width=24,
            )
        )
        .with_row(dashboard_builders.Row("Kubernetes API"))
        .with_panel(
            ts(
                "API requests by verb and outcome",
                "Requests to the API server per second, the operator's and Kopf's (watches, "
                "progress, peering). At rest, next to none: drift is repaired from watch events.",
                [Query(rate_sum(API_REQUESTS, "verb, outcome"), "{{verb}} {{outcome}}")],
                "reqps",
                width=8,
            )
        )
        .with_panel(
            ts(
                "Watch restarts",
                "Watch streams re-opened per interval, by resource: one every few minutes is "
                "the server's timeout; more mean stalled connections or an API server restart.",
                [Query(rate_sum(WATCH_RESTARTS, "resource", fn="increase"), "{{resource}}")],
                "short",
                width=8,
            )
        )
        .with_panel(
            ts(
                "Reconcile backlog",
                "Instances waiting for a reconcile (queued: debounced, due or to be retried) "
                "or in one (running).",
                [Query(gauge(BACKLOG, "state"), "{{state}}")],
                "short",
                width=8,
                stacked=True,
            )
        )
        .with_row(dashboard_builders.Row("Instances and scaling"))
        .with_panel(
            ts(
                "Instances by phase",
                "Storefront objects by status phase.",
                [Query(gauge("storefront_operator_instances", "phase"), "{{phase}}")],
                "short",
                stacked=True,
            )
        )
        .with_panel(
            ts(
                "Scaling decisions",
                "Worker scaling decisions per interval, by direction.",
                [Query(rate_sum(SCALING, "direction", fn="increase"), "{{direction}}")],
                "short",
            )
        )
        .with_row(dashboard_builders.Row("Resources"))
        .with_panel(cpu_panel())
        .with_panel(memory_panel())
    )

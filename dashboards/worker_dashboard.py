"""The Storefront worker dashboard: jobs by outcome and actor, durations, retries, dead letters,
queue depth by state, and the cron scheduler (ticks, leader)."""

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
    stat_panel,
)
from dashboards.common import timeseries_panel as ts

UID = "storefront-worker"
JOBS = "storefront_jobs_total"
DEAD = "storefront_jobs_dead_lettered_total"
TICKS = "storefront_scheduler_ticks_total"


def build() -> dashboard_builders.Dashboard:
    """The worker dashboard builder."""
    return (
        new_dashboard(
            UID,
            "Storefront / Worker",
            "Dramatiq jobs and the cron scheduler: throughput, failures, latency, backlog.",
            anchor='__name__=~"storefront_jobs_total|storefront_scheduler_ticks_total"',
        )
        .with_row(dashboard_builders.Row("Overview"))
        .with_panel(
            stat_panel(
                "Jobs",
                "Jobs finished per second, every outcome.",
                Query(rate_sum(JOBS)),
                "ops",
                width=6,
            )
        )
        .with_panel(
            stat_panel(
                "Queued",
                "Messages waiting in every queue.",
                Query(gauge("storefront_queue_depth")),
                "short",
                width=6,
                thresholds=((None, "green"), (100, "orange"), (1000, "red")),
            )
        )
        .with_panel(
            stat_panel(
                "Dead letters",
                "Messages dead-lettered in the selected time range.",
                Query(rate_sum(DEAD, fn="increase", window="$__range")),
                "short",
                width=6,
                thresholds=((None, "green"), (1, "red")),
            )
        )
        .with_panel(
            stat_panel(
                "Scheduler leaders",
                "Scheduler processes holding the leader lock (should be exactly 1).",
                Query(gauge("storefront_scheduler_leader")),
                "short",
                width=6,
                thresholds=((None, "red"), (1, "green"), (2, "red")),
            )
        )
        .with_row(dashboard_builders.Row("Jobs"))
        .with_panel(
            ts(
                "Jobs by outcome",
                "Jobs finished per second, by outcome.",
                [Query(rate_sum(JOBS, "outcome"), "{{outcome}}")],
                "ops",
                stacked=True,
            )
        )
        .with_panel(
            ts(
                "Jobs by actor",
                "Jobs finished per second, by actor and queue.",
                [Query(rate_sum(JOBS, "actor, queue"), "{{actor}} ({{queue}})")],
                "ops",
            )
        )
        .with_panel(
            ts(
                "Job duration by actor (p50 / p95 / p99)",
                "Time from the start of processing to its end, by actor.",
                histogram_quantiles("storefront_job_duration_seconds", "actor"),
                "s",
            )
        )
        .with_panel(
            ts(
                "Jobs in progress",
                "Messages being processed now, by actor.",
                [Query(gauge("storefront_jobs_in_progress", "actor"), "{{actor}}")],
                "short",
            )
        )
        .with_panel(
            ts(
                "Retries",
                "Retries scheduled per second, by actor.",
                [Query(rate_sum("storefront_job_retries_total", "actor"), "{{actor}}")],
                "ops",
            )
        )
        .with_panel(
            ts(
                "Dead letters",
                "Messages that exhausted their retries, per interval, by actor.",
                [Query(rate_sum(DEAD, "actor", fn="increase"), "{{actor}}")],
                "short",
            )
        )
        .with_row(dashboard_builders.Row("Queues and scheduler"))
        .with_panel(
            ts(
                "Queue depth by state",
                "Messages per queue and state (queued, delayed, in flight, dead).",
                [Query(gauge("storefront_queue_depth", "queue, state"), "{{queue}} {{state}}")],
                "short",
                width=24,
            )
        )
        .with_panel(
            ts(
                "Scheduler ticks",
                "Schedules fired per interval, by schedule and outcome.",
                [
                    Query(
                        rate_sum(TICKS, "schedule, outcome", fn="increase"),
                        "{{schedule}} {{outcome}}",
                    )
                ],
                "short",
            )
        )
        .with_panel(
            ts(
                "Scheduler leader",
                "1 on the scheduler instance that holds the leader lock.",
                [
                    Query(
                        gauge("storefront_scheduler_leader", "instance", agg="max"), "{{instance}}"
                    )
                ],
                "short",
                max_value=1,
            )
        )
        .with_row(dashboard_builders.Row("Resources"))
        .with_panel(cpu_panel())
        .with_panel(memory_panel())
    )

"""The operator process's own settings (`STOREFRONT_OPERATOR_*`), separate from the instances'."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from storefront_operator.render import REPO_ROOT


class OperatorConfig(BaseSettings):
    """How the operator reacts to changes, how often it re-checks and reads queue depths, and
    what it serves."""

    model_config = SettingsConfigDict(
        env_prefix="STOREFRONT_OPERATOR_", extra="ignore", frozen=True
    )

    resync_interval: float = Field(
        600.0,
        gt=0,
        description="Seconds between two safety-net checks of one instance's children against "
        "its last reconcile (spread over the interval, jittered); watch events repair drift at "
        "once in between.",
    )
    resync_jitter: float = Field(
        0.1, ge=0, lt=1, description="Each instance's resync interval varies by this fraction."
    )
    debounce: float = Field(
        1.0, ge=0, description="Seconds a child event waits for others of the same instance."
    )
    debounce_max: float = Field(
        5.0, ge=0, description="Longest a changing instance's reconcile is put off by events."
    )
    reconcile_workers: int = Field(
        4, ge=1, description="Reconciles run at once for events, retries and resyncs."
    )
    scaling_interval: float = Field(
        15.0, gt=0, description="Seconds between queue-depth reads and autoscaling decisions."
    )
    scaling_concurrency: int = Field(
        8, ge=1, description="Queue depths read at once in an autoscaling pass."
    )
    watch_inactivity_timeout: float = Field(
        70.0,
        gt=0,
        description="A watch with no event for this long (the API server bookmarks every "
        "minute) is presumed stalled and re-opened.",
    )
    peering_lifetime: int = Field(
        20,
        ge=5,
        description="With --peering: seconds a replica's keep-alive stays valid, so the longest "
        "a standby waits to take over from a replica that died.",
    )
    metrics_port: int = Field(9090, ge=0, le=65535, description="Prometheus port; 0 disables.")
    metrics_host: str = "0.0.0.0"
    apply_crd: bool = Field(True, description="Apply the bundled CRD at start (when RBAC allows).")
    dashboards_dir: Path = REPO_ROOT / "dashboards"
    redis_timeout: float = Field(2.0, gt=0)
    redis_clients: int = Field(
        1024, ge=1, description="Redis connections kept open for queue-depth reads (one each)."
    )
    pod_namespace: str | None = Field(
        None,
        validation_alias=AliasChoices("POD_NAMESPACE", "STOREFRONT_OPERATOR_POD_NAMESPACE"),
        description="The operator's own namespace (the chart sets POD_NAMESPACE): each managed "
        "Redis's NetworkPolicy lets the operator's pods in to read the queue depth.",
    )
    log_level: str = "INFO"
    log_format: str = "json"

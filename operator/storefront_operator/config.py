"""The operator process's own settings (`STOREFRONT_OPERATOR_*`), separate from the instances'."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from storefront_operator.render import REPO_ROOT


class OperatorConfig(BaseSettings):
    """How often the operator re-applies children and reads queue depths, and what it serves."""

    model_config = SettingsConfigDict(
        env_prefix="STOREFRONT_OPERATOR_", extra="ignore", frozen=True
    )

    reconcile_interval: float = Field(
        30.0, gt=0, description="Seconds between drift-correcting re-applies of every instance."
    )
    scaling_interval: float = Field(
        15.0, gt=0, description="Seconds between queue-depth reads and autoscaling decisions."
    )
    metrics_port: int = Field(9090, ge=0, le=65535, description="Prometheus port; 0 disables.")
    metrics_host: str = "0.0.0.0"
    apply_crd: bool = Field(True, description="Apply the bundled CRD at start (when RBAC allows).")
    dashboards_dir: Path = REPO_ROOT / "dashboards"
    redis_timeout: float = Field(2.0, gt=0)
    pod_namespace: str | None = Field(
        None,
        validation_alias=AliasChoices("POD_NAMESPACE", "STOREFRONT_OPERATOR_POD_NAMESPACE"),
        description="The operator's own namespace (the chart sets POD_NAMESPACE): each managed "
        "Redis's NetworkPolicy lets the operator's pods in to read the queue depth.",
    )
    log_level: str = "INFO"
    log_format: str = "json"

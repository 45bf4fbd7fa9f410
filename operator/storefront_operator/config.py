"""The operator process's own settings (`STOREFRONT_OPERATOR_*`), separate from the instances'."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
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
    log_level: str = "INFO"
    log_format: str = "json"

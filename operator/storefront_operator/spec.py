"""The `Storefront` resource as Pydantic models: the one source of truth for the CRD schema
(storefront_operator.crd) and for the typed spec the renderer and handlers read."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, Self

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from service.services.jobs import ACTOR_QUEUES

GROUP = "storefront.dev"
VERSION = "v1alpha1"
KIND = "Storefront"
PLURAL = "storefronts"
SINGULAR = "storefront"
SHORT_NAMES = ("sf",)
API_VERSION = f"{GROUP}/{VERSION}"
DEFAULT_IMAGE_REPOSITORY = "ghcr.io/storefront/storefront"
DEFAULT_IMAGE_TAG = "0.1.0"

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
# The queues the worker knows (worker/settings.py QUEUES; a test keeps the two equal).
Queue = Literal["default", "images", "reports"]
QUEUES: tuple[Queue, ...] = ("default", "images", "reports")
# A Kubernetes quantity ("500m", "1Gi", "2"); integers are accepted as they are.
QUANTITY = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"

Quantity = Annotated[int | str, Field(json_schema_extra={"pattern": QUANTITY})]


def cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """One `x-kubernetes-validations` entry (a CEL rule the API server enforces on write)."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are dropped as the API server
    prunes them anyway."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )


class ImageSpec(_Model):
    """The Storefront container image, used by every component."""

    repository: str = Field(DEFAULT_IMAGE_REPOSITORY, min_length=1, max_length=255)
    tag: str = Field(DEFAULT_IMAGE_TAG, pattern=r"^[\w][\w.-]{0,127}$|^sha256:[a-f0-9]{64}$")
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"

    @property
    def reference(self) -> str:
        separator = "@" if self.tag.startswith("sha256:") else ":"
        return f"{self.repository}{separator}{self.tag}"


class LocalObjectReference(_Model):
    """A reference to an object (e.g. an image pull Secret) in the same namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)


class SecretKeyRef(_Model):
    """One key of a Secret in the Storefront's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    key: str = Field("url", min_length=1, max_length=253, pattern=SECRET_KEY)


class ResourceRequirements(_Model):
    """Container resource requests and limits (Kubernetes quantities)."""

    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)


def _resources(cpu: str, memory: str, memory_limit: str) -> Any:
    return Field(
        default_factory=lambda: ResourceRequirements(
            requests={"cpu": cpu, "memory": memory}, limits={"memory": memory_limit}
        ),
        description="Requests and limits; the defaults fit a small production instance.",
    )


class ApiAutoscaling(_Model):
    """A HorizontalPodAutoscaler on CPU for the API."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.minReplicas <= self.maxReplicas",
                    "minReplicas must not exceed maxReplicas",
                )
            ]
        }
    )

    enabled: bool = False
    min_replicas: int = Field(2, ge=1, le=1000)
    max_replicas: int = Field(10, ge=1, le=1000)
    target_cpu_utilization_percentage: int = Field(
        70, ge=1, le=100, alias="targetCPUUtilizationPercentage"
    )
    scale_down_stabilization_seconds: int = Field(
        300,
        ge=0,
        le=3600,
        description="How long load must stay low before pods are removed (the HPA's "
        "behavior.scaleDown.stabilizationWindowSeconds; Kubernetes' default is 300).",
    )

    @model_validator(mode="after")
    def _bounds(self) -> ApiAutoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must not exceed maxReplicas")
        return self


class PodDisruptionBudgetSpec(_Model):
    """A PodDisruptionBudget for the API (only rendered when more than one replica can run)."""

    enabled: bool = True
    max_unavailable: int = Field(1, ge=1)


class ApiSpec(_Model):
    """The HTTP API Deployment."""

    replicas: int = Field(2, ge=0, le=1000, description="Ignored while autoscaling is enabled.")
    resources: ResourceRequirements = _resources("100m", "256Mi", "512Mi")
    autoscaling: ApiAutoscaling = Field(default_factory=ApiAutoscaling)
    pod_disruption_budget: PodDisruptionBudgetSpec = Field(default_factory=PodDisruptionBudgetSpec)


class WorkerAutoscaling(_Model):
    """Scale workers on queue depth (queued + in-flight messages) read from Redis."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.minReplicas <= self.maxReplicas",
                    "minReplicas must not exceed maxReplicas",
                )
            ]
        }
    )

    enabled: bool = False
    min_replicas: int = Field(1, ge=0, le=1000)
    max_replicas: int = Field(10, ge=1, le=1000)
    target_messages_per_worker: int = Field(100, ge=1, le=1_000_000)
    scale_down_cooldown_seconds: int = Field(300, ge=0, le=86_400)

    @model_validator(mode="after")
    def _bounds(self) -> WorkerAutoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must not exceed maxReplicas")
        return self


class WorkerSpec(_Model):
    """The Dramatiq worker Deployment."""

    replicas: int = Field(
        1, ge=0, le=1000, description="Set by `kubectl scale` or by queue-depth autoscaling."
    )
    processes: int = Field(2, ge=1, le=64)
    threads: int = Field(8, ge=1, le=256)
    queues: list[Queue] = Field(
        default_factory=lambda: list(QUEUES),
        min_length=1,
        max_length=len(QUEUES),
        description="Queues this instance's workers consume (and autoscaling counts).",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    resources: ResourceRequirements = _resources("100m", "256Mi", "512Mi")
    autoscaling: WorkerAutoscaling = Field(default_factory=WorkerAutoscaling)


class CronEntry(_Model):
    """One line of the cron table: enqueue `job` with keyword arguments `args` at each tick."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")
    cron: str = Field(
        min_length=9, max_length=100, description="Cron expression: five fields, or six (seconds)."
    )
    job: str = Field(
        min_length=1, max_length=100, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Actor."
    )
    args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments.")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if len(value.split()) not in (5, 6) or not croniter.is_valid(value):
            raise ValueError(f"not a cron expression: {value!r}")
        return value

    @field_validator("job")
    @classmethod
    def _known_job(cls, value: str) -> str:
        # Checked here, not in the CRD: the actor list belongs to the image, not the schema.
        if value not in ACTOR_QUEUES:
            raise ValueError(f"unknown job {value!r}; jobs are: {', '.join(sorted(ACTOR_QUEUES))}")
        return value


class SchedulerSpec(_Model):
    """The cron scheduler (one replica; a Redis lease makes extra ones harmless). With no
    entries the image's built-in schedule applies."""

    enabled: bool = True
    entries: list[CronEntry] = Field(
        default_factory=list,
        max_length=100,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )


def _backing_service(what: str, service: str, image: str) -> JsonDict:
    return {
        "x-kubernetes-validations": [
            cel(
                "has(self.secretRef) != self.managed",
                f"{what}: set exactly one of secretRef (a Secret holding the URL) or "
                f"managed: true (a single-replica {service} for development)",
            )
        ],
        "description": f"Where the {service} URL comes from; the managed image is {image}.",
    }


class _BackingServiceSpec(_Model):
    """A Secret holding the service's URL, or a development instance run by the operator."""

    what: ClassVar[str]

    secret_ref: SecretKeyRef | None = None
    managed: bool = False

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.secret_ref is not None) == self.managed:
            raise ValueError(f"{self.what}: set exactly one of secretRef or managed: true")
        return self


class DatabaseSpec(_BackingServiceSpec):
    """PostgreSQL: a Secret holding the URL, or a development instance run by the operator."""

    what = "database"
    model_config = ConfigDict(
        json_schema_extra=_backing_service("database", "PostgreSQL", "postgres:16-alpine")
    )

    managed_image: str = Field("postgres:16-alpine", min_length=1)


class RedisSpec(_BackingServiceSpec):
    """Redis: a Secret holding the URL, or a development instance run by the operator."""

    what = "redis"
    model_config = ConfigDict(
        json_schema_extra=_backing_service("redis", "Redis", "redis:7-alpine")
    )

    managed_image: str = Field("redis:7-alpine", min_length=1)


class ServiceMonitorSpec(_Model):
    """A prometheus-operator ServiceMonitor (rendered only when its CRD is installed)."""

    enabled: bool = True
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Extra labels, e.g. release: kube-prometheus-stack (its default selector).",
    )
    interval: str = Field("30s", pattern=r"^[0-9]+(ms|s|m|h)$")


class DashboardsSpec(_Model):
    """Grafana dashboards as ConfigMaps the Grafana sidecar picks up by label.

    Off by default: the Helm chart ships the same dashboards once for the whole cluster (with
    namespace and instance variables), and both would share dashboard uids in one Grafana.
    """

    enabled: bool = False
    label: str = Field("grafana_dashboard", min_length=1, max_length=63)
    label_value: str = Field("1", max_length=63)
    folder: str = Field("Storefront", max_length=100)


class LabelSelectorRequirement(_Model):
    """One `matchExpressions` term of a Kubernetes label selector."""

    key: str = Field(min_length=1, max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list, max_length=100)


class LabelSelector(_Model):
    """A Kubernetes label selector; empty selects everything."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, max_length=20)

    def manifest(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_defaults=True)


class NetworkPolicySpec(_Model):
    """NetworkPolicies around the instance's pods (enforced where the cluster's network plugin
    enforces NetworkPolicy): the managed PostgreSQL and Redis accept only this instance's pods
    (and the operator, which reads the queue depth); the API accepts its port from anywhere;
    worker and scheduler metrics ports only from the namespaces selected below."""

    enabled: bool = True
    metrics_namespace_selector: LabelSelector = Field(
        default_factory=LabelSelector,
        description="Namespaces whose pods may scrape worker and scheduler /metrics "
        "(e.g. matchLabels: {kubernetes.io/metadata.name: monitoring}); empty: every namespace.",
    )


class ObservabilitySpec(_Model):
    """Traces, logs, metrics scraping and dashboards."""

    otlp_endpoint: str | None = Field(None, pattern=r"^https?://", max_length=2048)
    sampling_ratio: float = Field(0.1, ge=0.0, le=1.0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    service_monitor: ServiceMonitorSpec = Field(default_factory=ServiceMonitorSpec)
    dashboards: DashboardsSpec = Field(default_factory=DashboardsSpec)


class EnvVar(_Model):
    """A container environment variable, passed through as Kubernetes defines it."""

    name: str = Field(min_length=1, max_length=253, pattern=ENV_NAME)
    value: str | None = None
    value_from: dict[str, Any] | None = None

    def manifest(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class AdminSecretRef(_Model):
    """A Secret holding the first administrator's e-mail and password."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    email_key: str = Field("email", pattern=SECRET_KEY)
    password_key: str = Field("password", pattern=SECRET_KEY)


class AdminSpec(_Model):
    """The administrator created at start-up."""

    secret_ref: AdminSecretRef


class StorefrontSpec(_Model):
    """Desired state of one Storefront instance."""

    image: ImageSpec = Field(default_factory=ImageSpec)
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list, max_length=16)
    api: ApiSpec = Field(default_factory=ApiSpec)
    worker: WorkerSpec = Field(default_factory=WorkerSpec)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    database: DatabaseSpec
    redis: RedisSpec
    observability: ObservabilitySpec = Field(default_factory=ObservabilitySpec)
    network_policy: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec)
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=100,
        description="Extra environment variables; they win over the operator's own.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )
    config: dict[str, Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=dict,
        description="STOREFRONT_* settings written to the instance's ConfigMap.",
        json_schema_extra={
            "maxProperties": 200,
            "x-kubernetes-validations": [
                cel(
                    "self.all(k, k.startsWith('STOREFRONT_'))",
                    "config keys must be STOREFRONT_* settings",
                )
            ],
        },
    )
    admin: AdminSpec | None = None
    jwt_secret_ref: SecretKeyRef | None = Field(
        None,
        description="Secret key holding STOREFRONT_JWT_SECRET; a generated one when unset.",
    )

    @field_validator("config")
    @classmethod
    def _storefront_settings(cls, value: dict[str, str]) -> dict[str, str]:
        wrong = sorted(k for k in value if not re.match(r"^STOREFRONT_", k))
        if wrong:
            raise ValueError(f"config keys must be STOREFRONT_* settings, not {', '.join(wrong)}")
        return value


class Condition(_Model):
    """A status condition, following the Kubernetes API conventions."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class StorefrontStatus(_Model):
    """Observed state, written by the operator (declared so the API server keeps it)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})

    observed_generation: int | None = None
    phase: str | None = Field(None, description="Ready, Progressing or Degraded.")
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    api_replicas: int | None = Field(None, description="Ready API replicas.")
    worker_replicas: int | None = Field(None, description="Ready worker replicas.")
    worker_selector: str | None = Field(None, description="Label selector of worker pods.")
    queue_depth: int | None = Field(None, description="Queued + in-flight messages.")
    queue_error: str | None = Field(None, description="Why the queue depth is unknown.")
    last_scale_time: str | None = None
    migration: str | None = Field(None, description="Name of the current migration Job.")
    endpoints: dict[str, str] = Field(default_factory=dict)
    last_reconcile_time: str | None = None


def parse_spec(spec: Any) -> StorefrontSpec:
    """Validate a `spec` as read from the API server (raises pydantic.ValidationError)."""
    return StorefrontSpec.model_validate(dict(spec or {}))

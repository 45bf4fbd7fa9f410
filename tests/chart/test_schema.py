"""values.schema.json turns a wrong value into a clear error at template/install time, naming
the field; template-level checks catch combinations the schema cannot express."""

from __future__ import annotations

import pytest

from tests.chart.conftest import CHART
from tests.components.helm import Helm, HelmError

pytestmark = pytest.mark.helm

SCHEMA_ERROR = "values don't meet the specifications of the schema(s)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "replicaCount=-1"], "at '/replicaCount': minimum: got -1, want 0"),
        (["--set", "peering.lifetime=2"], "at '/peering/lifetime': minimum: got 2, want 5"),
        (["--set", "peering.name=Shop_Operators"], "at '/peering/name': 'Shop_Operators'"),
        (["--set", "peering.enable=true"], "additional properties 'enable' not allowed"),
        (
            ["--set", "watchNamespaces[0]=Shop_A"],
            "at '/watchNamespaces/0': 'Shop_A' does not match",
        ),
        (["--set", "image.pullPolicy=Sometimes"], "at '/image/pullPolicy': value must be one of"),
        (["--set", "image.digest=latest"], "at '/image/digest'"),
        (["--set", "logLevel=verbose"], "at '/logLevel': value must be one of"),
        (["--set", "logFormat=xml"], "at '/logFormat'"),
        (["--set", "metrics.port=70000"], "at '/metrics/port'"),
        (["--set-string", "health.port=8080"], "at '/health/port': got string, want integer"),
        (["--set", "serviceMonitor.interval=30"], "at '/serviceMonitor/interval'"),
        (["--set", "dashboards.labelValue=not valid"], "at '/dashboards/labelValue'"),
        (["--set", "sample.name=Demo"], "at '/sample/name'"),
        (["--set", "sample.spec.database=null"], "at '/sample/spec': missing property 'database'"),
        (["--set", "imagee.tag=1.0"], "additional properties 'imagee' not allowed"),
        (["--set", "serviceMonitor.release=x"], "additional properties 'release' not allowed"),
    ],
)
def test_wrong_value_fails_with_the_schema_message(
    helm_bin: Helm, args: list[str], message: str
) -> None:
    with pytest.raises(HelmError) as failure:
        helm_bin.template(CHART, *args)
    assert SCHEMA_ERROR in str(failure.value)
    assert message in str(failure.value)


def test_service_monitor_without_the_metrics_service_is_refused(helm_bin: Helm) -> None:
    with pytest.raises(HelmError, match=r"serviceMonitor\.enabled needs metrics\.service\.enabled"):
        helm_bin.template(
            CHART, "--set", "serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false"
        )


def test_every_documented_default_is_accepted(helm_bin: Helm) -> None:
    # values.yaml itself must satisfy the schema with every optional feature switched on.
    manifests = helm_bin.template(
        CHART,
        "--set", "serviceMonitor.enabled=true",
        "--set", "sample.enabled=true",
        "--set", "watchNamespaces={a,b}",
        "--set", "image.digest=sha256:" + "0" * 64,
        "--set", "peering.enabled=true",
        "--set", "replicaCount=2",
    )  # fmt: skip
    assert {m["kind"] for m in manifests} >= {
        "ServiceMonitor", "Storefront", "Role", "PodDisruptionBudget",
    }  # fmt: skip

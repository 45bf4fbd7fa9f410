"""The CRD is generated from the spec models, committed, copied into the chart, and structural."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from storefront_operator.cli import CHART_CRD_FILE
from storefront_operator.crd import CRD_FILE, crd_yaml, storefront_crd
from storefront_operator.spec import QUEUES, StorefrontSpec, parse_spec

from worker.settings import QUEUES as WORKER_QUEUES

EXAMPLE = CRD_FILE.parents[2] / "examples" / "storefront.yaml"
MINIMAL = {"database": {"managed": True}, "redis": {"managed": True}}


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for k, v in node.get("properties", {}).items():
            found += _walk(v, f"{path}.{k}")
        if "items" in node:
            found += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            found += _walk(node["additionalProperties"], f"{path}{{}}")
    return found


def _version() -> dict[str, Any]:
    return storefront_crd()["spec"]["versions"][0]


def test_committed_crd_equals_generated() -> None:
    assert CRD_FILE.read_text() == crd_yaml(), "run `storefront crd --write`"


def test_chart_copy_equals_generated() -> None:
    assert CHART_CRD_FILE.read_text() == crd_yaml(), "run `storefront crd --write`"


def test_names_scope_and_short_name() -> None:
    crd = storefront_crd()
    assert crd["metadata"]["name"] == "storefronts.storefront.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["kind"] == "Storefront"
    assert crd["spec"]["names"]["shortNames"] == ["sf"]
    assert _version()["name"] == "v1alpha1"


def test_schema_is_structural() -> None:
    """Every node has a type (or is int-or-string / preserve-unknown), no $ref/anyOf/title."""
    schema = _version()["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert not {"$ref", "anyOf", "allOf", "oneOf", "title", "$defs"} & node.keys(), path
        assert (
            node.get("type")
            or node.get("x-kubernetes-int-or-string")
            or node.get("x-kubernetes-preserve-unknown-fields")
        ), f"{path} has no type"


def test_status_declared_and_kept() -> None:
    status = _version()["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True
    for field in ("observedGeneration", "conditions", "apiReplicas", "workerReplicas",
                  "queueDepth", "endpoints", "lastReconcileTime", "workerSelector"):  # fmt: skip
        assert field in status["properties"], field
    assert not any("default" in node for _, node in _walk(status))


def test_subresources() -> None:
    sub = _version()["subresources"]
    assert sub["status"] == {}
    assert sub["scale"] == {
        "specReplicasPath": ".spec.worker.replicas",
        "statusReplicasPath": ".status.workerReplicas",
        "labelSelectorPath": ".status.workerSelector",
    }


def test_printer_columns() -> None:
    columns = {c["name"]: c["jsonPath"] for c in _version()["additionalPrinterColumns"]}
    assert columns == {
        "Ready": '.status.conditions[?(@.type=="Ready")].status',
        "API": ".status.apiReplicas",
        "Workers": ".status.workerReplicas",
        "Queue": ".status.queueDepth",
        "Age": ".metadata.creationTimestamp",
    }


def test_schema_defaults_match_pydantic_defaults() -> None:
    """What the API server stores for a minimal object parses to the same spec as Pydantic's
    own defaults (the schema and the models cannot drift apart)."""
    spec_schema = _version()["schema"]["openAPIV3Schema"]["properties"]["spec"]

    def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
        if isinstance(value, dict) and "properties" in schema:
            for k, sub in schema["properties"].items():
                if k not in value and "default" in sub:
                    value[k] = yaml.safe_load(yaml.safe_dump(sub["default"]))
                if k in value:
                    value[k] = apply_defaults(sub, value[k])
        if isinstance(value, list) and "items" in schema:
            return [apply_defaults(schema["items"], v) for v in value]
        return value

    defaulted = apply_defaults(spec_schema, yaml.safe_load(yaml.safe_dump(MINIMAL)))
    assert defaulted["api"]["replicas"] == 2
    assert defaulted["worker"]["queues"] == ["default", "images", "reports"]
    assert defaulted["api"]["resources"]["requests"]["cpu"] == "100m"
    assert parse_spec(defaulted) == parse_spec(MINIMAL)
    assert parse_spec(defaulted).model_dump() == StorefrontSpec.model_validate(MINIMAL).model_dump()


def test_cel_rules_present_where_fields_depend_on_each_other() -> None:
    schema = _version()["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    rules = {
        "api.autoscaling": schema["api"]["properties"]["autoscaling"],
        "worker.autoscaling": schema["worker"]["properties"]["autoscaling"],
        "database": schema["database"],
        "redis": schema["redis"],
        "config": schema["config"],
    }
    for where, node in rules.items():
        assert node.get("x-kubernetes-validations"), where
    assert "minReplicas <= self.maxReplicas" in str(rules["worker.autoscaling"])
    assert "has(self.secretRef) != self.managed" in str(rules["database"])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"database": {"managed": True, "secretRef": {"name": "db"}}, "redis": {"managed": True}},
         "exactly one"),
        ({"database": {}, "redis": {"managed": True}}, "exactly one"),
        ({**MINIMAL, "worker": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}},
         "minReplicas must not exceed maxReplicas"),
        ({**MINIMAL, "config": {"LOG_LEVEL": "x"}}, "STOREFRONT_"),
        ({**MINIMAL, "scheduler": {"entries": [{"name": "a", "cron": "61 * * * *", "job": "probe"}]}},  # noqa: E501
         "cron"),
        ({**MINIMAL, "scheduler": {"entries": [{"name": "a", "cron": "* * * * *", "job": "nope"}]}},
         "unknown job 'nope'"),
        ({**MINIMAL, "worker": {"queues": ["emails"]}}, "queues"),
    ],
)  # fmt: skip
def test_models_reject_what_the_schema_rejects(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_spec(spec)


def test_example_parses() -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    assert example["kind"] == "Storefront"
    spec = parse_spec(example["spec"])
    assert spec.worker.autoscaling.enabled
    assert [e.name for e in spec.scheduler.entries] == [
        "nightly-report",
        "stale-pending-orders",
        "expired-idempotency-keys",
    ]


def test_queues_are_the_workers_queues() -> None:
    assert QUEUES == WORKER_QUEUES

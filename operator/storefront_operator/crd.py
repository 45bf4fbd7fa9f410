"""Generate the `storefronts.storefront.dev` CustomResourceDefinition from the Pydantic models in
storefront_operator.spec, as a structural OpenAPI v3 schema with defaults and CEL rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import core_schema

from storefront_operator.spec import (
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    StorefrontSpec,
    StorefrontStatus,
)

CRD_NAME = f"{PLURAL}.{GROUP}"
PACKAGE_DIR = Path(__file__).resolve().parent
CRD_FILE = PACKAGE_DIR.parent / "crds" / f"{CRD_NAME}.yaml"

# Keywords of OpenAPI v3 the API server accepts in a structural schema and that we emit.
_KEPT = (
    "description",
    "type",
    "format",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "maxProperties",
    "default",
)

PRINTER_COLUMNS = [
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "Whether the API and workers are available.",
    },
    {
        "name": "API",
        "type": "integer",
        "jsonPath": ".status.apiReplicas",
        "description": "Ready API replicas.",
    },
    {
        "name": "Workers",
        "type": "integer",
        "jsonPath": ".status.workerReplicas",
        "description": "Ready worker replicas.",
    },
    {
        "name": "Queue",
        "type": "integer",
        "jsonPath": ".status.queueDepth",
        "description": "Queued + in-flight messages.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


class _FactoryDefaults(GenerateJsonSchema):
    """Emit defaults made by `default_factory` too: the API server must default exactly what
    Pydantic defaults, or a stored object and a parsed one would disagree."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            value = factory()  # type: ignore[call-arg]
            if isinstance(value, BaseModel):
                # Complete, not `{}`: the API server checks CEL rules on defaults as written.
                return value.model_dump(by_alias=True, exclude_none=True, mode="json")
            return value
        return schema.get("default", NoDefault)


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Turn one Pydantic JSON-schema node into a structural OpenAPI v3 node."""
    extra = {k: v for k, v in node.items() if k not in ("$ref", "allOf", "anyOf")}
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        return _structural({**target, **extra}, defs)
    if "allOf" in node and len(node["allOf"]) == 1:
        return _structural({**node["allOf"][0], **extra}, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        types = {o.get("type") for o in options}
        if types == {"integer", "string"}:
            pattern = next((o["pattern"] for o in options if "pattern" in o), None)
            merged = {"x-kubernetes-int-or-string": True, **extra}
            if pattern:
                merged["pattern"] = pattern
            return _structural_leaf(merged)
        if len(options) != 1:
            raise ValueError(f"no structural form for anyOf {node['anyOf']!r}")
        if extra.get("default", 0) is None:
            extra.pop("default")
        return _structural({**options[0], **extra}, defs)
    if not node.get("type") and not any(k.startswith("x-kubernetes") for k in node):
        # `Any`: keep whatever the user wrote.
        return {"x-kubernetes-preserve-unknown-fields": True, **_structural_leaf(node)}
    out = _structural_leaf(node)
    if node.get("type") == "object":
        props = node.get("properties")
        if props:
            out["properties"] = {k: _structural(v, defs) for k, v in props.items()}
            if node.get("required"):
                out["required"] = list(node["required"])
        additional = node.get("additionalProperties")
        if isinstance(additional, dict) and additional:
            out["additionalProperties"] = _structural(additional, defs)
        elif not props and additional is not False:
            out["x-kubernetes-preserve-unknown-fields"] = True
    if node.get("type") == "array":
        out["items"] = _structural(node.get("items", {}), defs)
    return out


def _structural_leaf(node: dict[str, Any]) -> dict[str, Any]:
    out = {k: node[k] for k in _KEPT if k in node}
    if "const" in node:
        out["enum"] = [node["const"]]
    if "exclusiveMinimum" in node:
        out["minimum"], out["exclusiveMinimum"] = node["exclusiveMinimum"], True
    out.update({k: v for k, v in node.items() if k.startswith("x-kubernetes")})
    return out


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a spec/status model."""
    schema = model.model_json_schema(by_alias=True, schema_generator=_FactoryDefaults)
    return _structural(schema, schema.get("$defs", {}))


def _without_defaults(node: Any) -> Any:
    """Status is written by the operator only: defaulting it would hide what was observed."""
    if isinstance(node, dict):
        return {k: _without_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_without_defaults(v) for v in node]
    return node


def storefront_crd() -> dict[str, Any]:
    """The CustomResourceDefinition manifest, as a dict."""
    spec_schema = openapi_schema(StorefrontSpec)
    status_schema = _without_defaults(openapi_schema(StorefrontStatus))
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {
                "app.kubernetes.io/name": "storefront",
                "app.kubernetes.io/part-of": "storefront",
            },
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["all", "storefront"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "description": "A Storefront instance: API, worker, scheduler and "
                            "their configuration, run by the Storefront operator.",
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.worker.replicas",
                            "statusReplicasPath": ".status.workerReplicas",
                            "labelSelectorPath": ".status.workerSelector",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }


def crd_yaml() -> str:
    """The CRD as the YAML committed under operator/crds/ and the chart's crds/."""
    header = (
        "# Generated by `storefront crd` from operator/storefront_operator/spec.py.\n"
        "# Do not edit by hand: change the models and run `storefront crd --write`.\n"
    )
    return header + yaml.dump(storefront_crd(), Dumper=_Dumper, sort_keys=False, width=100)


class _Dumper(yaml.SafeDumper):
    """Safe YAML without anchors: equal defaults must be spelled out for the API server."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

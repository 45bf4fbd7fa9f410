"""What the end-to-end test asks of the cluster, checked without one: the Storefront it creates
is one the CRD accepts and the operator renders as intended (a real kube-apiserver, no kind)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from kubernetes import client
from storefront_operator.render import render
from storefront_operator.spec import parse_spec

from tests.components.kind import tool_versions
from tests.components.kube import KubeAPIServer, wait_for
from tests.components.process import REPO_ROOT
from tests.kind.conftest import storefront_manifest

CRD = REPO_ROOT / "operator" / "crds" / "storefronts.storefront.dev.yaml"


@pytest.mark.cluster
@pytest.mark.parametrize("images", ["local", "public"])
def test_the_api_server_accepts_the_e2e_storefront(
    kube_apiserver: KubeAPIServer, kube_namespace: str, images: str
) -> None:
    api = kube_apiserver.api_client()
    crd = yaml.safe_load(CRD.read_text())
    extensions = client.ApiextensionsV1Api(api)
    if not any(
        c.metadata.name == crd["metadata"]["name"]
        for c in extensions.list_custom_resource_definition().items
    ):
        extensions.create_custom_resource_definition(crd)
    manifest = storefront_manifest(images, "e2e")
    objects = client.CustomObjectsApi(api)

    def create() -> dict[str, Any]:
        return objects.create_namespaced_custom_object(  # type: ignore[no-any-return]
            "storefront.dev", "v1alpha1", kube_namespace, "storefronts", manifest
        )

    created = wait_for(create, timeout=30, what="the CRD serving and accepting the e2e spec")
    spec = parse_spec(created["spec"])
    versions = tool_versions()
    assert spec.image.reference == f"{versions['APP_REPOSITORY']}:e2e"
    assert spec.observability.sampling_ratio == 1.0
    assert spec.api.autoscaling.scale_down_stabilization_seconds == 30
    assert not spec.worker.autoscaling.enabled
    backing = {
        m["metadata"]["name"]: m
        for m in render("shop", kube_namespace, spec)
        if m["kind"] == "Deployment"
    }
    postgres = backing["shop-postgres"]["spec"]["template"]["spec"]["containers"][0]["image"]
    redis = backing["shop-redis"]["spec"]["template"]["spec"]["containers"][0]["image"]
    if images == "local":
        assert (postgres, redis) == (versions["POSTGRES_IMAGE"], versions["REDIS_IMAGE"])
    else:
        assert (postgres, redis) == ("postgres:16-alpine", "redis:7-alpine")
    api.close()

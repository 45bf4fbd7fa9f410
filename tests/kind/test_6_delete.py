"""Removal: `kubectl delete sf shop` takes every child with it (owner references, the garbage
collector); `helm uninstall` removes the operator and leaves the CRD, so no user's Storefront
objects are deleted with a chart."""

from __future__ import annotations

import pytest

from tests.components.kube import wait_for
from tests.kind.conftest import OPERATOR_NAMESPACE, Shop

# Generous: the first test also waits for the cluster, images and Storefront to come up.
pytestmark = [pytest.mark.kind, pytest.mark.timeout(1800)]
CHILD_KINDS = "deployments,replicasets,pods,services,jobs,configmaps,secrets,hpa,pdb"


def test_deleting_the_storefront_removes_every_child(shop: Shop) -> None:
    selector = f"app.kubernetes.io/instance={shop.name}"
    assert shop.cluster.get(CHILD_KINDS, namespace=shop.namespace, selector=selector)
    shop.cluster.kubectl("delete", "sf", shop.name, "--namespace", shop.namespace, "--wait=true")

    def gone() -> bool:
        left = shop.cluster.get(CHILD_KINDS, namespace=shop.namespace, selector=selector)
        return not left

    wait_for(gone, timeout=240, interval=3, what="every child of shop deleted")


def test_helm_uninstall_leaves_the_crd(shop: Shop, operator_release: str) -> None:
    shop.cluster.helm("uninstall", operator_release, "--namespace", OPERATOR_NAMESPACE, "--wait")
    assert not shop.cluster.get("deployments", namespace=OPERATOR_NAMESPACE)
    crd = shop.cluster.get("crd", "storefronts.storefront.dev")
    assert crd is not None and crd["spec"]["names"]["shortNames"] == ["sf"]

"""The chart installed into a real kube-apiserver: every object is accepted (server-side
validation, CRD schema included), the RBAC it creates is exactly what the API server enforces
(peering's included), and upgrade and uninstall behave as a user expects."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from tests.chart.conftest import CHART, FIXTURES_DIR, VALUES_DIR
from tests.chart.rbac_spec import (
    APPLY_OWN_CRD,
    APPLY_PEERING_CRD,
    CRDS,
    FORBIDDEN,
    NAMESPACED,
    NAMESPACES,
    OWN_CRD,
    PEERING_ANY,
    PEERING_CRD,
    PEERING_GROUP,
    PEERING_OWN,
    PEERING_PLURAL,
)
from tests.components.helm import Helm, HelmError
from tests.components.kube import KubeAPIServer, wait_for

pytestmark = [pytest.mark.helm, pytest.mark.cluster]

Triple = tuple[str, str, str]


class Release:
    """helm install/upgrade/uninstall of the chart against the test API server."""

    def __init__(self, helm: Helm, cluster: KubeAPIServer, namespace: str) -> None:
        self.helm = helm
        self.cluster = cluster
        self.namespace = namespace
        self.name = f"sf-{namespace.removeprefix('test-')}"
        # The chart prefixes objects with "<release>-storefront".
        self.fullname = f"{self.name}-storefront"

    def run(self, *args: Any) -> str:
        return self.helm.run(
            *args, "--namespace", self.namespace, "--kubeconfig", self.cluster.kubeconfig
        ).stdout

    def install(self, *args: Any) -> str:
        return self.run("install", self.name, CHART, "--wait=false", *args)

    def upgrade(self, *args: Any) -> str:
        return self.run("upgrade", self.name, CHART, "--wait=false", *args)

    def uninstall(self) -> str:
        return self.run("uninstall", self.name, "--wait")

    def manifests(self) -> list[dict[str, Any]]:
        out = self.run("get", "manifest", self.name)
        return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture
def api(kube_apiserver: KubeAPIServer) -> Iterator[client.ApiClient]:
    api_client = kube_apiserver.api_client()
    try:
        yield api_client
    finally:
        api_client.close()


@pytest.fixture
def release(
    helm_bin: Helm, kube_apiserver: KubeAPIServer, kube_namespace: str
) -> Iterator[Release]:
    rel = Release(helm_bin, kube_apiserver, kube_namespace)
    yield rel
    with contextlib.suppress(HelmError):
        rel.uninstall()


@pytest.fixture
def extra_namespace(api: client.ApiClient) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    with contextlib.suppress(ApiException):
        core.delete_namespace(name)


@pytest.fixture(scope="session")
def service_monitor_crd(kube_apiserver: KubeAPIServer) -> str:
    """The monitoring.coreos.com ServiceMonitor CRD (tests/chart/fixtures), established."""
    manifest = yaml.safe_load((FIXTURES_DIR / "servicemonitor-crd.yaml").read_text())
    api_client = kube_apiserver.api_client()
    extensions = client.ApiextensionsV1Api(api_client)
    try:
        extensions.create_custom_resource_definition(manifest)
    except ApiException as exc:
        if exc.status != 409:
            raise

    def established() -> bool:
        crd = extensions.read_custom_resource_definition(manifest["metadata"]["name"])
        conditions = crd.status.conditions if crd.status else None
        return any(c.type == "Established" and c.status == "True" for c in conditions or [])

    wait_for(established, timeout=30, what="ServiceMonitor CRD established")
    api_client.close()
    return str(manifest["metadata"]["name"])


def _live(api: client.ApiClient, manifest: dict[str, Any]) -> Any:
    resource = DynamicClient(api).resources.get(
        api_version=manifest["apiVersion"], kind=manifest["kind"]
    )
    meta = manifest["metadata"]
    if resource.namespaced:
        return resource.get(name=meta["name"], namespace=meta["namespace"])
    return resource.get(name=meta["name"])


def _assert_all_live(api: client.ApiClient, manifests: list[dict[str, Any]]) -> None:
    for manifest in manifests:
        live = _live(api, manifest)
        assert live.metadata.labels["app.kubernetes.io/managed-by"] == "Helm"


def _assert_all_gone(api: client.ApiClient, manifests: list[dict[str, Any]]) -> None:
    for manifest in manifests:
        with pytest.raises(ApiException) as missing:
            _live(api, manifest)
        assert missing.value.status == 404, manifest["metadata"]["name"]


def _allowed(
    api: client.ApiClient, user: str, namespace: str | None, triple: Triple, name: str = ""
) -> bool:
    group, resource, verb = triple
    resource, _, subresource = resource.partition("/")
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            groups=["system:serviceaccounts", "system:authenticated"],
            resource_attributes=client.V1ResourceAttributes(
                group=group,
                resource=resource,
                subresource=subresource or None,
                verb=verb,
                namespace=namespace,
                name=name or None,
            ),
        )
    )
    result = client.AuthorizationV1Api(api).create_subject_access_review(review)
    assert result.status is not None
    return bool(result.status.allowed)


def _service_account_user(release: Release) -> str:
    (account,) = [m for m in release.manifests() if m["kind"] == "ServiceAccount"]
    return f"system:serviceaccount:{release.namespace}:{account['metadata']['name']}"


def test_install_is_accepted_then_upgrade_and_uninstall(
    release: Release, api: client.ApiClient, service_monitor_crd: str
) -> None:
    out = release.install("--values", VALUES_DIR / "default.yaml")
    assert "STATUS: deployed" in out
    notes = out.split("NOTES:", 1)[1]
    assert f"rollout status deployment/{release.fullname}" in notes
    assert "`helm upgrade` never updates CRDs" in notes
    installed = release.manifests()
    assert {m["kind"] for m in installed} == {
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ConfigMap",
    }  # fmt: skip
    _assert_all_live(api, installed)

    out = release.upgrade("--values", VALUES_DIR / "monitoring.yaml", "--set", "logLevel=debug",
                          "--set", "dashboards.namespace=" + release.namespace)  # fmt: skip
    assert "REVISION: 2" in out
    upgraded = release.manifests()
    _assert_all_live(api, upgraded)
    monitor = next(m for m in upgraded if m["kind"] == "ServiceMonitor")
    live_monitor = _live(api, monitor)
    assert live_monitor.metadata.labels["release"] == "monitoring"
    assert live_monitor.spec.endpoints[0].interval == "15s"
    deployment = client.AppsV1Api(api).read_namespaced_deployment(
        release.fullname, release.namespace
    )
    live: dict[str, Any] = api.sanitize_for_serialization(deployment)
    assert "--log-level=DEBUG" in live["spec"]["template"]["spec"]["containers"][0]["args"]
    assert live["metadata"]["generation"] == 2

    release.uninstall()
    _assert_all_gone(api, upgraded)


def test_cluster_wide_service_account_can_do_exactly_its_job(
    release: Release, api: client.ApiClient, extra_namespace: str
) -> None:
    release.install()
    user = _service_account_user(release)
    for namespace in (release.namespace, extra_namespace):
        denied = [t for t in NAMESPACED if not _allowed(api, user, namespace, t)]
        assert not denied, f"missing in {namespace}: {sorted(denied)}"
        granted = [t for t in FORBIDDEN if _allowed(api, user, namespace, t)]
        assert not granted, f"too much in {namespace}: {granted}"
    denied = [t for t in CRDS | NAMESPACES if not _allowed(api, user, None, t)]
    assert not denied, f"missing cluster-wide: {sorted(denied)}"
    assert _allowed(api, user, None, APPLY_OWN_CRD, name=OWN_CRD)
    assert not _allowed(
        api, user, None, APPLY_OWN_CRD, name="servicemonitors.monitoring.coreos.com"
    )
    assert not _allowed(api, user, None, APPLY_OWN_CRD)


def test_namespaced_service_account_is_confined_to_its_namespaces(
    release: Release, api: client.ApiClient, extra_namespace: str
) -> None:
    # The release namespace is watched, extra_namespace is not.
    release.install("--set", f"watchNamespaces={{{release.namespace}}}")
    user = _service_account_user(release)
    denied = [t for t in NAMESPACED if not _allowed(api, user, release.namespace, t)]
    assert not denied, f"missing in the watched namespace: {sorted(denied)}"
    leaked = [t for t in NAMESPACED if _allowed(api, user, extra_namespace, t)]
    assert not leaked, f"allowed outside the watched namespaces: {sorted(leaked)}"
    assert all(_allowed(api, user, None, t) for t in CRDS)
    assert not any(_allowed(api, user, None, t) for t in NAMESPACES)


def _live_strategy(api: client.ApiClient, release: Release) -> dict[str, Any]:
    deployment = client.AppsV1Api(api).read_namespaced_deployment(
        release.fullname, release.namespace
    )
    live: dict[str, Any] = api.sanitize_for_serialization(deployment)
    return dict(live["spec"]["strategy"])


def test_peering_is_switched_on_and_off_by_upgrades_with_its_own_object_only(
    release: Release, api: client.ApiClient, extra_namespace: str
) -> None:
    # The user's path: one standalone replica, then two peered ones, then back. Namespaced
    # mode: the peering rights are cluster-wide all the same, children are not.
    watch = f"watchNamespaces={{{release.namespace}}}"
    release.install("--set", watch)
    assert _live_strategy(api, release) == {"type": "Recreate"}
    name = f"{release.name}-peers"
    out = release.upgrade(
        "--values", VALUES_DIR / "peering.yaml", "--set", f"peering.name={name}", "--set", watch
    )
    assert f'share the ClusterKopfPeering "{name}"' in out
    assert _live_strategy(api, release)["type"] == "RollingUpdate"
    _assert_all_live(api, release.manifests())
    user = _service_account_user(release)
    denied = [t for t in PEERING_ANY if not _allowed(api, user, None, t)]
    denied += [t for t in PEERING_OWN if not _allowed(api, user, None, t, name=name)]
    assert not denied, f"missing for peering: {sorted(denied)}"
    assert not any(_allowed(api, user, None, t, name="someone-elses") for t in PEERING_OWN)
    assert not _allowed(api, user, None, (PEERING_GROUP, PEERING_PLURAL, "delete"), name=name)
    assert all(_allowed(api, user, None, t, name=PEERING_CRD) for t in APPLY_PEERING_CRD)
    assert _allowed(api, user, None, APPLY_OWN_CRD, name=OWN_CRD)
    assert not any(_allowed(api, user, None, t) for t in APPLY_PEERING_CRD)
    # Helm creates the Storefront CRD; the operator may only patch it.
    (create_crd,) = APPLY_PEERING_CRD - {APPLY_OWN_CRD}
    assert not _allowed(api, user, None, create_crd, name=OWN_CRD)
    assert not any(_allowed(api, user, extra_namespace, t) for t in NAMESPACED)

    peered = release.manifests()
    release.upgrade("--set", watch)
    assert _live_strategy(api, release) == {"type": "Recreate"}
    _assert_all_gone(api, [m for m in peered if m["kind"] == "PodDisruptionBudget"
                           or m["metadata"]["name"].endswith("-peering")])  # fmt: skip
    assert not any(_allowed(api, user, None, t) for t in PEERING_ANY)


def test_sample_storefront_is_accepted_by_the_crd(release: Release, api: client.ApiClient) -> None:
    release.install("--values", VALUES_DIR / "sample.yaml")
    sample: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(  # type: ignore[assignment]
        "storefront.dev", "v1alpha1", release.namespace, "storefronts", "demo"
    )
    # The CRD schema defaulted what the sample left out.
    assert sample["spec"]["worker"]["processes"] == 2
    assert sample["spec"]["database"] == {"managed": True, "managedImage": "postgres:16-alpine"}


def test_invalid_sample_spec_is_refused_by_the_api_server(release: Release) -> None:
    with pytest.raises(HelmError) as refused:
        release.install("--values", VALUES_DIR / "sample.yaml",
                        "--set", "sample.spec.worker.processes=0")  # fmt: skip
    assert "spec.worker.processes" in str(refused.value)

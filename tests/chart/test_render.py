"""The chart as `helm lint` and `helm template` see it: what each values file renders, checked
object by object (operator Deployment, RBAC, peering, metrics, ServiceMonitor, dashboards,
sample)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import (
    CHART,
    RELEASE_NAMESPACE,
    VALUES_DIR,
    VALUES_FILES,
    Manifest,
    Render,
    of_kind,
    one,
    rule_triples,
)
from tests.chart.rbac_spec import (
    APPLY_OWN_CRD,
    APPLY_PEERING_CRD,
    CRDS,
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
from tests.components.process import REPO_ROOT

pytestmark = pytest.mark.helm

STANDARD_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
)


def _container(manifests: list[Manifest]) -> dict[str, Any]:
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return container


@pytest.mark.parametrize("values", VALUES_FILES)
def test_lint_strict_passes_with_every_values_file(helm_bin: Helm, values: str) -> None:
    result = helm_bin.run("lint", "--strict", CHART, "--values", VALUES_DIR / f"{values}.yaml")
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == pyproject["project"]["version"]


@pytest.mark.parametrize("values", VALUES_FILES)
def test_every_object_has_standard_labels_and_a_valid_name(render: Render, values: str) -> None:
    for manifest in render(values):
        meta = manifest["metadata"]
        assert len(meta["name"]) <= 63, meta["name"]
        labels = meta.get("labels", {})
        expected: tuple[str, ...] = STANDARD_LABELS
        if manifest["kind"] in ("Storefront", "ConfigMap"):
            expected = tuple(k for k in STANDARD_LABELS if k != "app.kubernetes.io/name")
        missing = [k for k in expected if k not in labels]
        assert not missing, f"{manifest['kind']}/{meta['name']} lacks {missing}"
        assert labels["app.kubernetes.io/version"] == "0.1.0"


def test_default_values_render_a_cluster_wide_operator(render: Render) -> None:
    manifests = render("default")
    kinds = sorted(m["kind"] for m in manifests)
    assert kinds == sorted(
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "Pod"]
        + ["ConfigMap"] * 3
    )
    container = _container(manifests)
    assert "command" not in container  # the image's entrypoint, `storefront`
    assert container["args"][0] == "operator" and "--all-namespaces" in container["args"]
    assert not any(a.startswith("--namespace=") for a in container["args"])


def test_operator_deployment_is_hardened_and_probed(render: Render) -> None:
    manifests = render("default")
    deployment = one(manifests, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = _container(manifests)

    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert container["image"] == "ghcr.io/storefront/storefront-operator:0.1.0"
    assert pod["serviceAccountName"] == one(manifests, "ServiceAccount")["metadata"]["name"]

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    assert "--liveness-port=8080" in container["args"]
    assert "--metrics-port=9090" in container["args"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["requests"] == {"cpu": "50m", "memory": "128Mi"}
    assert container["resources"]["limits"] == {"memory": "256Mi"}


def test_helm_test_checks_health_and_metrics_through_the_service(render: Render) -> None:
    manifests = render("default")
    pod = one(manifests, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    service = one(manifests, "Service")
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert ports == {"metrics": 9090, "health": 8080}
    # Not behind the Service itself: its labels must not match the Service's selector.
    selector = service["spec"]["selector"].items()
    assert not selector <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SERVICE"] == f"http://{service['metadata']['name']}.storefront-system.svc"
    assert (env["HEALTH_PORT"], env["METRICS_PORT"]) == ("8080", "9090")
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["image"] == _container(manifests)["image"]


def test_image_digest_wins_over_the_tag(render: Render) -> None:
    digest = "sha256:" + "a" * 64
    manifests = render(None, "--set", "image.tag=9.9.9", "--set", f"image.digest={digest}")
    assert _container(manifests)["image"] == f"ghcr.io/storefront/storefront-operator@{digest}"


def test_cluster_wide_rbac_grants_exactly_what_the_operator_needs(render: Render) -> None:
    manifests = render("default")
    role = one(manifests, "ClusterRole")
    assert rule_triples(role["rules"]) == NAMESPACED | CRDS | NAMESPACES | {APPLY_OWN_CRD}
    # Every rule spans all objects of its kind, except patching CRDs: the operator's own only.
    for rule in role["rules"]:
        if "patch" in rule["verbs"] and rule["apiGroups"] == ["apiextensions.k8s.io"]:
            assert rule["resourceNames"] == [OWN_CRD]
        else:
            assert "resourceNames" not in rule
    binding = one(manifests, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": one(manifests, "ServiceAccount")["metadata"]["name"],
            "namespace": RELEASE_NAMESPACE,
        }
    ]
    assert not of_kind(manifests, "Role")


def test_watch_namespaces_gives_a_role_per_namespace_and_no_cluster_write(render: Render) -> None:
    manifests = render("namespaced")
    roles = of_kind(manifests, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["shop-a", "shop-b"]
    for role in roles:
        assert rule_triples(role["rules"]) == NAMESPACED
    bindings = of_kind(manifests, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["shop-a", "shop-b"]
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"][0]["namespace"] == RELEASE_NAMESPACE
    # Cluster-wide, only CRDs are left (read, and apply its own); no namespaces, no children.
    assert rule_triples(one(manifests, "ClusterRole")["rules"]) == CRDS | {APPLY_OWN_CRD}
    args = _container(manifests)["args"]
    assert "--namespace=shop-a" in args and "--namespace=shop-b" in args
    assert "--all-namespaces" not in args
    assert "--log-level=DEBUG" in args


def test_operator_applies_its_crd_only_when_allowed(render: Render) -> None:
    assert "--apply-crd" in _container(render("default"))["args"]
    manifests = render(None, "--set", "crds.applyFromOperator=false")
    assert "--no-apply-crd" in _container(manifests)["args"]
    assert APPLY_OWN_CRD not in rule_triples(one(manifests, "ClusterRole")["rules"])


def test_operator_settings_come_from_values(render: Render) -> None:
    manifests = render(
        None,
        "--set",
        "metrics.port=9400",
        "--set",
        "logFormat=console",
        "--set",
        "health.port=8500",
        "--set",
        "extraArgs={--resync-interval=10}",
    )
    args = _container(manifests)["args"]
    assert args == [
        "operator",
        "--all-namespaces",
        "--liveness-port=8500",
        "--metrics-port=9400",
        "--log-level=INFO",
        "--log-format=console",
        "--apply-crd",
        "--resync-interval=10",
    ]
    ports = {p["name"]: p["containerPort"] for p in _container(manifests)["ports"]}
    assert ports == {"health": 8500, "metrics": 9400}


def test_rbac_create_false_renders_no_rbac(render: Render) -> None:
    manifests = render(None, "--set", "rbac.create=false", "--set", "serviceAccount.create=false")
    kinds = {m["kind"] for m in manifests}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    assert "ServiceAccount" not in kinds
    assert one(manifests, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == (
        "default"
    )


def test_service_monitor_selects_the_metrics_service_which_selects_the_pod(
    render: Render,
) -> None:
    manifests = render("monitoring")
    monitor = one(manifests, "ServiceMonitor")
    service = one(manifests, "Service")
    deployment = one(manifests, "Deployment")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "monitoring"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [RELEASE_NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "15s",
                        "scrapeTimeout": "10s"}  # fmt: skip
    # The ServiceMonitor scrapes `metrics` only; `health` is there for `helm test`.
    assert [p["name"] for p in service["spec"]["ports"]] == ["metrics", "health"]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]


def test_dashboards_ship_the_generated_json_for_the_grafana_sidecar(render: Render) -> None:
    manifests = render("monitoring")
    config_maps = of_kind(manifests, "ConfigMap")
    generated = {
        p.name: json.loads(p.read_text()) for p in (REPO_ROOT / "dashboards").glob("*.json")
    }
    assert len(generated) == 3
    shipped: dict[str, Any] = {}
    for config_map in config_maps:
        meta = config_map["metadata"]
        assert meta["namespace"] == "monitoring"
        assert meta["labels"]["grafana_dashboard"] == "storefront"
        assert meta["annotations"]["grafana_folder"] == "Shop"
        for name, text in config_map["data"].items():
            shipped[name] = json.loads(text)
    assert shipped == generated


def test_default_dashboard_label_is_what_kube_prometheus_stack_selects(render: Render) -> None:
    for config_map in of_kind(render("default"), "ConfigMap"):
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["namespace"] == RELEASE_NAMESPACE


def test_dashboards_disabled_renders_no_config_maps(render: Render) -> None:
    assert not of_kind(render(None, "--set", "dashboards.enabled=false"), "ConfigMap")


def test_sample_storefront_is_a_valid_spec(render: Render) -> None:
    from storefront_operator.spec import API_VERSION, KIND, StorefrontSpec

    manifests = render("sample")
    sample = one(manifests, "Storefront")
    assert sample["apiVersion"] == API_VERSION
    assert sample["kind"] == KIND
    assert sample["metadata"] == {
        "name": "demo",
        "namespace": RELEASE_NAMESPACE,
        "labels": sample["metadata"]["labels"],
    }
    spec = StorefrontSpec.model_validate(sample["spec"])
    assert spec.database.managed and spec.redis.managed
    assert not of_kind(render("default"), "Storefront")


def test_chart_crd_is_the_operators_generated_crd() -> None:
    from storefront_operator.crd import CRD_FILE

    chart_crd = CHART / "crds" / "storefronts.storefront.dev.yaml"
    assert chart_crd.is_file(), f"{chart_crd} is missing"
    assert yaml.safe_load(chart_crd.read_text()) == yaml.safe_load(Path(CRD_FILE).read_text())


def test_the_rbac_lets_the_operator_watch_every_child_kind_it_watches() -> None:
    # The operator repairs drift from watches of its children: a kind it watches without the
    # right to would fail its watcher, and with it the operator, in every real cluster.
    from storefront_operator.handlers import CHILD_KINDS
    from storefront_operator.kube import PLURALS

    for api_version, kind in CHILD_KINDS:
        group = api_version.rpartition("/")[0]
        for verb in ("list", "watch"):
            assert (group, PLURALS[api_version, kind], verb) in NAMESPACED, (kind, verb)


def _peering_role(manifests: list[Manifest]) -> Manifest:
    (role,) = [
        m for m in of_kind(manifests, "ClusterRole") if m["metadata"]["name"].endswith("-peering")
    ]
    return role


def test_default_operator_runs_standalone_without_peering_rights(render: Render) -> None:
    manifests = render("default")
    deployment = one(manifests, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = _container(manifests)
    assert not any(a.startswith("--peering") for a in container["args"])
    assert "POD_ID" not in {e["name"] for e in container["env"]}
    assert not of_kind(manifests, "PodDisruptionBudget")
    for role in of_kind(manifests, "ClusterRole"):
        assert all(t[0] != PEERING_GROUP for t in rule_triples(role["rules"]))
        for rule in role["rules"]:
            assert PEERING_CRD not in rule.get("resourceNames", [])


def test_peering_runs_two_replicas_that_roll_one_at_a_time(render: Render) -> None:
    manifests = render("peering")
    deployment = one(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    # A new pod stands by until an old one leaves: never fewer than the declared replicas.
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    container = _container(manifests)
    args = container["args"]
    assert args[args.index("--apply-crd") + 1 :][:3] == [
        "--peering",
        "--peering-name=shop-operators",
        "--peering-lifetime=10",
    ]
    # Kopf names each replica in the peering object by the pod's name.
    (pod_id,) = [e for e in container["env"] if e["name"] == "POD_ID"]
    assert pod_id["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}

    budget = one(manifests, "PodDisruptionBudget")
    assert budget["apiVersion"] == "policy/v1"
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]


def test_rendered_peering_arguments_are_what_the_cli_parses(render: Render) -> None:
    # The chart's flags and defaults against the operator's own command line, parsed by it.
    import typer.main
    from storefront_operator.peering import DEFAULT_LIFETIME

    from service.cli import app

    command = typer.main.get_command(app)
    manifests = render(None, "--set", "peering.enabled=true")
    args = _container(manifests)["args"]
    with command.make_context("storefront", list(args)) as context:
        (name, operator, rest) = command.resolve_command(context, list(args))
        assert name == "operator" and operator is not None
        params = operator.make_context(name, rest, parent=context).params
    assert params["standalone"] is False
    # The release's own peering object unless named: releases never pause each other.
    assert params["peering_name"] == one(manifests, "Deployment")["metadata"]["name"]
    assert _peering_role(manifests)["rules"][1]["resourceNames"] == [params["peering_name"]]
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["peering"]
    assert params["peering_lifetime"] == defaults["lifetime"] == DEFAULT_LIFETIME


def test_peering_rbac_grants_exactly_what_kopf_peering_needs(render: Render) -> None:
    from storefront_operator.peering import PEERING_CRD_NAME
    from storefront_operator.peering import PEERING_GROUP as OPERATOR_GROUP
    from storefront_operator.peering import PEERING_PLURAL as OPERATOR_PLURAL

    # What the spec grants is what the operator calls.
    assert (PEERING_GROUP, PEERING_PLURAL, PEERING_CRD) == (
        OPERATOR_GROUP,
        OPERATOR_PLURAL,
        PEERING_CRD_NAME,
    )
    for values in ("peering", "namespaced-peering"):
        manifests = render(values)
        role = _peering_role(manifests)
        assert rule_triples(role["rules"]) == PEERING_ANY | PEERING_OWN
        for rule in role["rules"]:
            if "patch" in rule["verbs"]:
                assert rule["resourceNames"] == ["shop-operators"], rule
            else:
                assert "resourceNames" not in rule, rule
        (binding,) = [
            m
            for m in of_kind(manifests, "ClusterRoleBinding")
            if m["roleRef"]["name"] == role["metadata"]["name"]
        ]
        assert binding["roleRef"]["kind"] == "ClusterRole"
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": one(manifests, "ServiceAccount")["metadata"]["name"],
                "namespace": RELEASE_NAMESPACE,
            }
        ]
        # Applying Kopf's peering CRD (created by the first apply), by name, next to the
        # operator's own (which Helm creates from crds/).
        applies = {
            (tuple(rule["resourceNames"]), tuple(rule["verbs"]))
            for r in of_kind(manifests, "ClusterRole")
            for rule in r["rules"]
            if rule["apiGroups"] == ["apiextensions.k8s.io"] and "patch" in rule["verbs"]
        }
        assert applies == {((OWN_CRD,), ("patch",)), ((PEERING_CRD,), ("create", "patch"))}


def test_peering_without_applying_crds_patches_no_crd(render: Render) -> None:
    manifests = render("peering", "--set", "crds.applyFromOperator=false")
    assert _peering_role(manifests)
    for role in of_kind(manifests, "ClusterRole"):
        assert not rule_triples(role["rules"]) & ({APPLY_OWN_CRD} | APPLY_PEERING_CRD)


def test_namespaced_peering_keeps_children_in_the_watched_namespaces(render: Render) -> None:
    manifests = render("namespaced-peering")
    for role in of_kind(manifests, "Role"):
        assert rule_triples(role["rules"]) == NAMESPACED
    roles = of_kind(manifests, "ClusterRole")
    cluster_wide = set().union(*(rule_triples(r["rules"]) for r in roles))
    assert cluster_wide == CRDS | {APPLY_OWN_CRD} | APPLY_PEERING_CRD | PEERING_ANY | PEERING_OWN


def test_several_replicas_without_peering_fail_to_render(helm_bin: Helm) -> None:
    with pytest.raises(HelmError, match=r"replicaCount > 1 needs peering\.enabled=true"):
        helm_bin.template(CHART, "--set", "replicaCount=2")


def test_one_peered_replica_has_no_disruption_budget(render: Render) -> None:
    # A budget of one on one pod would only block node drains.
    manifests = render(None, "--set", "peering.enabled=true")
    assert one(manifests, "Deployment")["spec"]["strategy"]["type"] == "RollingUpdate"
    assert not of_kind(manifests, "PodDisruptionBudget")

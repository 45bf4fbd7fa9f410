"""The kind end-to-end script, kept correct without a Docker engine: it parses, shellcheck is
clean, the files it uses exist, the chart accepts the values it sets, and the API server accepts
the Storefront it creates (examples/storefront.yaml with the script's own patch)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.chart.conftest import CHART
from tests.components.helm import Helm
from tests.components.kube import KubeAPIServer
from tests.components.process import REPO_ROOT, require_binary

SCRIPTS = [REPO_ROOT / "scripts" / "kind-e2e.sh", REPO_ROOT / "scripts" / "kind-down.sh"]
E2E = SCRIPTS[0].read_text()
EXAMPLE = REPO_ROOT / "examples" / "storefront.yaml"
# Values the script's variables take in a default run.
SCRIPT_VARIABLES = {
    "TAG": "e2e",
    "OPERATOR_IMAGE%:*": "ghcr.io/storefront/storefront-operator",
    "APP_IMAGE%:*": "ghcr.io/storefront/storefront",
    "MONITORING_NAMESPACE": "monitoring",
    "monitor": "true",
    "otlp": '"http://jaeger.monitoring.svc:4318"',
}


def _substitute(text: str) -> str:
    return re.sub(r"\$\{([^}]+)\}", lambda m: SCRIPT_VARIABLES[m.group(1)], text)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses_and_is_shellcheck_clean(script: Path) -> None:
    assert script.stat().st_mode & 0o111, f"{script} is not executable"
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    result = subprocess.run(
        [require_binary("shellcheck"), "--external-sources", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_script_uses_files_that_exist() -> None:
    for relative in ("Dockerfile", "operator/Dockerfile", "charts/storefront",
                     "examples/storefront.yaml"):  # fmt: skip
        assert f"${{ROOT}}/{relative}" in E2E, relative
        assert (REPO_ROOT / relative).exists(), relative
    # The smoke steps are the dashboard tests' own (dashboards.smoke).
    from dashboards import smoke

    assert "-m dashboards.smoke" in E2E and "from dashboards.smoke import drive" in E2E
    assert callable(smoke.drive) and callable(smoke.main)
    for uid in re.findall(r"--dashboard (\S+)", E2E):
        assert (REPO_ROOT / "dashboards" / f"{uid}.json").is_file(), uid


@pytest.mark.helm
def test_chart_accepts_the_values_the_script_sets(helm_bin: Helm) -> None:
    install = E2E[E2E.index("install_chart() {") : E2E.index("create_storefront() {")]
    sets = [_substitute(s) for s in re.findall(r"--set (\S+)", install)]
    assert len(sets) >= 5
    args = [arg for value in sets for arg in ("--set", shlex.split(value)[0])]
    manifests = helm_bin.template(CHART, *args)
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/storefront/storefront-operator:e2e"
    assert container["imagePullPolicy"] == "Never"
    monitor = next(m for m in manifests if m["kind"] == "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "monitoring"


def _script_patch() -> dict[str, Any]:
    match = re.search(r"<<JSON\n(.*?)\nJSON\n", E2E, re.DOTALL)
    assert match is not None, "the Storefront patch heredoc is missing"
    patch: dict[str, Any] = json.loads(_substitute(match.group(1)))
    return patch


@pytest.mark.helm
@pytest.mark.cluster
def test_api_server_accepts_the_example_as_the_script_patches_it(
    helm_bin: Helm, kube_apiserver: KubeAPIServer, kube_namespace: str
) -> None:
    # The chart's crds/ is what puts the CRD in the cluster, as in the script.
    release = f"e2e-{kube_namespace.removeprefix('test-')}"
    helm_bin.run("install", release, CHART, "--namespace", kube_namespace, "--wait=false",
                 "--kubeconfig", kube_apiserver.kubeconfig)  # fmt: skip
    try:
        api = kube_apiserver.api_client()
        objects = client.CustomObjectsApi(api)
        example = yaml.safe_load(EXAMPLE.read_text())
        created: dict[str, Any] = objects.create_namespaced_custom_object(  # type: ignore[assignment]
            "storefront.dev", "v1alpha1", kube_namespace, "storefronts", example
        )
        patched: dict[str, Any] = objects.patch_namespaced_custom_object(  # type: ignore[assignment]
            "storefront.dev", "v1alpha1", kube_namespace, "storefronts",
            created["metadata"]["name"], _script_patch(),
        )  # fmt: skip
        spec = patched["spec"]
        assert spec["image"] == {"repository": "ghcr.io/storefront/storefront", "tag": "e2e",
                                 "pullPolicy": "Never"}  # fmt: skip
        assert spec["database"]["managed"] is True and "secretRef" not in spec["database"]
        assert spec["redis"]["managed"] is True and "secretRef" not in spec["redis"]
        assert spec["observability"]["samplingRatio"] == 1.0
        assert spec["observability"]["dashboards"]["enabled"] is False
        api.close()
    finally:
        helm_bin.run("uninstall", release, "--namespace", kube_namespace,
                     "--kubeconfig", kube_apiserver.kubeconfig)  # fmt: skip

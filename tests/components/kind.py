"""kind fixture: a real Kubernetes cluster in Docker for the end-to-end tests.

`running_kind_cluster()` builds the Storefront images (scripts/images.sh, tag `e2e`), brings the
cluster up with scripts/kind-up.sh (metrics-server, Prometheus and Jaeger in it, images loaded,
sealed off from the network) and deletes it with scripts/kind-down.sh when done, failed or not;
STOREFRONT_KIND_KEEP=1 keeps it for a look around (`make kind-down` removes it). The `kind_cluster`
fixture (tests/kind/conftest.py) holds it for the kind tests only, so its pods do not load the
machine while the rest of the suite runs.
`KindCluster` runs kubectl and helm against it and opens port-forwards that close with the test.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.components.ports import free_port, port_open
from tests.components.process import REPO_ROOT, TOOLS_BIN, clean_environment, require_binary

CLUSTER = "storefront-e2e"
TAG = "e2e"
STATE = REPO_ROOT / ".storefront" / "kind" / CLUSTER
VERSIONS_FILE = REPO_ROOT / "scripts" / "tool-versions.env"

Manifest = dict[str, Any]


class KubectlError(RuntimeError):
    """A kubectl or helm command exited non-zero."""


def tool_versions() -> dict[str, str]:
    """scripts/tool-versions.env as a dict, `${VAR}` and `${VAR#v}` expanded as bash would."""
    values: dict[str, str] = {}
    for line in VERSIONS_FILE.read_text().splitlines():
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")

        def expand(text: str) -> str:
            out, rest = "", text
            while "${" in rest:
                before, _, after = rest.partition("${")
                expr, _, rest = after.partition("}")
                name, _, strip = expr.partition("#")
                value = values[name]
                out += before + (value.removeprefix(strip) if strip else value)
            return out + rest

        values[key] = expand(raw)
    return values


def run_script(script: str, *args: str, env: Mapping[str, str] | None = None) -> None:
    """Run scripts/SCRIPT; fail the test with its output's tail when it fails."""
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / script), *args],
        env={**clean_environment(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-60:])
        pytest.fail(f"scripts/{script} {' '.join(args)} exited {result.returncode}:\n{tail}")


@dataclass
class KindCluster:
    """The running cluster: kubectl, helm and port-forwards with its kubeconfig."""

    name: str
    kubeconfig: Path
    images: str
    """`local` (made here from Debian packages and Go modules) or `public`."""
    tag: str

    @property
    def env(self) -> dict[str, str]:
        return {
            **clean_environment(),
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{TOOLS_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "HELM_CACHE_HOME": str(STATE / "helm" / "cache"),
            "HELM_CONFIG_HOME": str(STATE / "helm" / "config"),
            "HELM_DATA_HOME": str(STATE / "helm" / "data"),
        }

    def run(
        self, *argv: str, input: str | None = None, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            list(argv),
            input=input,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise KubectlError(
                f"{' '.join(argv)} exited {result.returncode}:\n{result.stderr}{result.stdout}"
            )
        return result

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 300) -> str:
        return self.run(require_binary("kubectl"), *args, input=input, timeout=timeout).stdout

    def helm(self, *args: str, timeout: float = 600) -> str:
        return self.run(require_binary("helm"), *args, timeout=timeout).stdout

    def get(
        self,
        kind: str,
        name: str | None = None,
        namespace: str | None = None,
        selector: str | None = None,
    ) -> Any:
        """`kubectl get -o json`: one object, or the list's items; None for a missing object."""
        args = ["get", kind, *([name] if name else []), "-o", "json"]
        if namespace:
            args += ["--namespace", namespace]
        if selector:
            args += ["--selector", selector]
        result = self.run(require_binary("kubectl"), *args, check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise KubectlError(result.stderr)
        body = json.loads(result.stdout)
        return body if name else body["items"]

    def apply(self, *manifests: Manifest) -> None:
        self.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            "-",
            input=yaml.safe_dump_all(manifests),
        )

    def logs(self, namespace: str, selector: str, container: str | None = None) -> str:
        """Every line the pods matching `selector` logged (all containers unless one is named)."""
        args = [
            "logs",
            "--namespace",
            namespace,
            "--selector",
            selector,
            "--tail=-1",
            "--prefix",
            "--max-log-requests=20",
        ]
        args += ["--container", container] if container else ["--all-containers"]
        return self.kubectl(*args)

    @contextlib.contextmanager
    def port_forward(self, namespace: str, target: str, port: int) -> Iterator[str]:
        """`kubectl port-forward TARGET LOCAL:PORT` on a free loopback port: yields
        http://127.0.0.1:LOCAL, stops the forward on exit."""
        local = free_port()
        log = STATE / f"port-forward-{local}.log"
        process = subprocess.Popen(
            [
                require_binary("kubectl"),
                "port-forward",
                "--namespace",
                namespace,
                "--address",
                "127.0.0.1",
                target,
                f"{local}:{port}",
            ],
            env=self.env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        with (STATE / "port-forwards").open("a") as pids:
            pids.write(f"{process.pid}\n")
        try:
            deadline = time.monotonic() + 30
            while not port_open("127.0.0.1", local):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise KubectlError(f"port-forward to {target}: {log.read_text()}")
                time.sleep(0.2)
            yield f"http://127.0.0.1:{local}"
        finally:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            if process.poll() is None:
                process.kill()


def content_tag() -> str:
    """Tag both images just built with a tag of their content, so that on a cluster kept from
    an earlier run (STOREFRONT_KIND_KEEP=1) a rebuilt image replaces the pods of the old one."""
    versions = tool_versions()
    images = [f"{versions[r]}:{TAG}" for r in ("APP_REPOSITORY", "OPERATOR_REPOSITORY")]
    ids = [
        subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", image],
                       capture_output=True, text=True, check=True, timeout=60).stdout.strip()
        for image in images
    ]  # fmt: skip
    tag = f"{TAG}-{hashlib.sha256(''.join(ids).encode()).hexdigest()[:10]}"
    for image in images:
        subprocess.run(["docker", "tag", image, f"{image.rsplit(':', 1)[0]}:{tag}"],
                       check=True, timeout=60)  # fmt: skip
    return tag


def remove_content_tags() -> None:
    """Untag every `e2e-*` image of both repositories: each change of the code leaves a new
    content tag (and an upgraded image), and a developer's disk should not keep them all. The
    `e2e` images stay, so the next run's build is still a cache hit."""
    versions = tool_versions()
    listed = subprocess.run(
        ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split()  # fmt: skip
    repositories = {versions[r] for r in ("APP_REPOSITORY", "OPERATOR_REPOSITORY")}
    stale = [
        image
        for image in listed
        if image.rsplit(":", 1)[0] in repositories and image.rsplit(":", 1)[1].startswith(f"{TAG}-")
    ]
    if stale:
        subprocess.run(["docker", "image", "rm", *stale], capture_output=True, timeout=300,
                       check=False)  # fmt: skip


def _engine_running() -> bool:
    return (
        subprocess.run(["docker", "info"], capture_output=True, timeout=60, check=False).returncode
        == 0
    )


@contextlib.contextmanager
def running_kind_cluster() -> Iterator[KindCluster]:
    require_binary("kind")
    require_binary("kubectl")
    require_binary("helm")
    if not _engine_running():
        pytest.fail(
            "no running Docker engine: run `make tools` (as root it installs and starts one)"
        )
    run_script("images.sh", "--tag", TAG, "app", "operator")
    tag = content_tag()
    env = {"CLUSTER": CLUSTER, "TAG": tag}
    run_script("kind-up.sh", env=env)
    cluster = KindCluster(
        name=CLUSTER,
        kubeconfig=STATE / "kubeconfig",
        images=(STATE / "images").read_text().strip(),
        tag=tag,
    )
    try:
        yield cluster
    finally:
        if os.environ.get("STOREFRONT_KIND_KEEP") != "1":
            run_script("kind-down.sh", env=env)
            remove_content_tags()

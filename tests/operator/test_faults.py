"""Faults the operator must survive, each on a real etcd + kube-apiserver of its own: the API
server stopped and started again, its connections silently stalled by a proxy, the operator
SIGKILLed while it works, and two replicas with peering when the active one dies (also as the
chart installs them: its flags, its ServiceAccount's RBAC). Deadlines are generous and nothing
is timed: the tests prove convergence, the benchmark measures speed. Marked `fault` (and `slow`,
`cluster`), so the inner loop leaves them out."""

from __future__ import annotations

import contextlib
import random
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from storefront_operator.kube import PRUNABLE, path_for
from storefront_operator.peering import PEERING_CRD_NAME
from storefront_operator.render import migration_job_name
from storefront_operator.spec import parse_spec

from tests.chart.conftest import CHART
from tests.chart.conftest import VALUES_DIR as CHART_VALUES
from tests.components.helm import Helm
from tests.components.kube import KubeAPIServer, start_kube_apiserver, wait_for
from tests.components.ports import free_port
from tests.components.process import ManagedProcess
from tests.operator.conftest import (
    BASIC_SPEC,
    MERGE,
    SF,
    create_storefront,
    deployment_path,
    get,
    make_secret,
    storefront,
    succeed_job,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.fault]
REPO_ROOT = Path(__file__).resolve().parents[2]
# Generous: convergence after a fault includes Kopf's and the operator's retry backoffs.
CONVERGE = 180.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[KubeAPIServer]:
    """etcd + kube-apiserver for this test alone: the fault must not reach other tests."""
    own = start_kube_apiserver(tmp_path / "kube")
    try:
        yield own
    finally:
        own.stop()


class Operator:
    """`storefront operator` as its own process, started again after a kill as its pod would."""

    def __init__(
        self, cluster: KubeAPIServer, workdir: Path, *extra: str, kubeconfig: Path | None = None
    ) -> None:
        self.liveness, self.metrics = free_port(), free_port()
        argv = [
            sys.executable, "-m", "service.cli", "operator", "--all-namespaces",
            "--metrics-port", str(self.metrics), "--liveness-port", str(self.liveness),
            "--scaling-interval", "5", "--log-format", "json", *extra,
        ]  # fmt: skip
        env = {**cluster.env, **({"KUBECONFIG": str(kubeconfig)} if kubeconfig else {})}
        self.process = ManagedProcess(
            "storefront-operator", argv, workdir / "operator.log", env=env, cwd=REPO_ROOT
        )

    def start(self) -> Operator:
        self.process.start().wait_ready(
            lambda: httpx.get(f"http://127.0.0.1:{self.liveness}/healthz", timeout=1).is_success,
            timeout=120,
        )
        return self

    def kill(self) -> None:
        assert self.process.popen is not None
        self.process.popen.send_signal(signal.SIGKILL)
        self.process.popen.wait(timeout=30)

    def stop(self) -> None:
        self.process.stop()


def converge(what: str, check: Any, operator: Operator) -> Any:
    try:
        return wait_for(check, CONVERGE, what=what)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\noperator log:\n{operator.process.log_tail(80)}") from None


def namespace(api: httpx.Client, name: str) -> str:
    assert api.post("/api/v1/namespaces", json={"metadata": {"name": name}}).status_code == 201
    make_secret(api, name, "db", {"url": "postgresql://u:p@db.example:5432/shop"})
    make_secret(api, name, "cache", {"url": "redis://127.0.0.1:1/0"})
    return name


def reconciled(api: httpx.Client, ns: str, name: str) -> bool:
    sf = storefront(api, ns, name)
    return (sf.get("status") or {}).get("observedGeneration") == sf["metadata"]["generation"]


def test_api_server_restart(cluster: KubeAPIServer, tmp_path: Path) -> None:
    operator = Operator(cluster, tmp_path).start()
    try:
        with cluster.http() as api:
            wait_for(lambda: api.get(SF.format(ns="default")).status_code == 200, 60, what="CRD")
            ns = namespace(api, "restart")
            assert create_storefront(api, ns, "shop", BASIC_SPEC).status_code == 201
            job = migration_job_name("shop", parse_spec(BASIC_SPEC))
            jobs = f"/apis/batch/v1/namespaces/{ns}/jobs/{job}"
            converge("migration Job", lambda: get(api, jobs), operator)
            succeed_job(api, ns, job)
            converge("API Deployment", lambda: get(api, deployment_path(ns, "shop-api")), operator)

        # Down for longer than Kopf's retry backoffs together (54 s), so that its requests give
        # up: the watches must be opened again, not left closed.
        apiserver = cluster.processes[-1]
        apiserver.stop()
        time.sleep(65)
        apiserver.start()
        with cluster.http() as api:
            apiserver.wait_ready(lambda: api.get("/readyz").status_code == 200, timeout=120)
            patch = {"spec": {"worker": {"replicas": 2}}}
            response = api.patch(f"{SF.format(ns=ns)}/shop", json=patch, headers=MERGE)
            assert response.status_code == 200, response.text
            service = f"/api/v1/namespaces/{ns}/services/shop-worker-metrics"
            assert api.delete(service).status_code == 200
            worker = deployment_path(ns, "shop-worker")
            converge(
                "spec change after the restart",
                lambda: (get(api, worker) or {}).get("spec", {}).get("replicas") == 2,
                operator,
            )
            converge("deleted child restored", lambda: get(api, service), operator)
            converge("status observed", lambda: reconciled(api, ns, "shop"), operator)
        assert operator.process.running(), operator.process.log_tail()
    finally:
        operator.stop()


def children(api: httpx.Client, ns: str, kinds: Any = PRUNABLE) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for api_version, kind in kinds:
        query = {"labelSelector": "app.kubernetes.io/managed-by=storefront-operator"}
        response = api.get(path_for(api_version, kind, ns), params=query)
        response.raise_for_status()
        found.extend({**o, "kind": kind} for o in response.json()["items"])
    return found


def test_sigkill_while_creating_and_updating(cluster: KubeAPIServer, tmp_path: Path) -> None:
    rng = random.Random()
    names = [f"shop-{i}" for i in range(8)]
    operator = Operator(cluster, tmp_path).start()
    try:
        with cluster.http() as api:
            wait_for(lambda: api.get(SF.format(ns="default")).status_code == 200, 60, what="CRD")
            ns = namespace(api, "kill")
            for name in names:
                assert create_storefront(api, ns, name, BASIC_SPEC).status_code == 201
                time.sleep(rng.uniform(0, 0.3))
            time.sleep(rng.uniform(0.2, 2.0))
            operator.kill()  # mid-creation, at a random point

            operator.start()
            for name in names[::2]:
                patch = {"spec": {"config": {"STOREFRONT_PRODUCT_CACHE_TTL_SECONDS": "9"}}}
                response = api.patch(f"{SF.format(ns=ns)}/{name}", json=patch, headers=MERGE)
                assert response.status_code == 200, response.text
                time.sleep(rng.uniform(0, 0.3))
            time.sleep(rng.uniform(0.2, 1.5))
            operator.kill()  # mid-update

            operator.start()
            for name in names:
                converge(f"{name} reconciled", lambda n=name: reconciled(api, ns, n), operator)
            for name in names[::2]:
                config = f"/api/v1/namespaces/{ns}/configmaps/{name}-config"
                converge(
                    f"{name} config updated",
                    lambda c=config: (
                        (get(api, c) or {})
                        .get("data", {})
                        .get("STOREFRONT_PRODUCT_CACHE_TTL_SECONDS")
                        == "9"
                    ),
                    operator,
                )

            uids = {name: storefront(api, ns, name)["metadata"]["uid"] for name in names}
            found = children(api, ns)
            by_instance: dict[str, list[str]] = {}
            for child in found:
                meta = child["metadata"]
                owners = [r["uid"] for r in meta.get("ownerReferences") or []]
                instance = meta["labels"]["app.kubernetes.io/instance"]
                # No orphan: every child is owned by its live instance, and by it alone.
                assert owners == [uids[instance]], (child["kind"], meta["name"], owners)
                by_instance.setdefault(instance, []).append(f"{child['kind']}/{meta['name']}")
            for name in names:
                listed = by_instance.get(name, [])
                # No duplicate: one migration Job (one image), each child once.
                assert len(listed) == len(set(listed)), listed
                assert sum(k.startswith("Job/") for k in listed) == 1, listed
                assert f"ConfigMap/{name}-config" in listed, listed
        assert operator.process.running(), operator.process.log_tail()
    finally:
        operator.stop()


def reconciles(metrics_port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("storefront_operator_reconciles_total{")
    )


def first_acts_then_second_takes_over(api: httpx.Client, replicas: list[Operator]) -> None:
    """Only the replica in charge reconciles; SIGKILLed, the other reconciles in its place."""
    ns = namespace(api, "peers")
    assert create_storefront(api, ns, "first", BASIC_SPEC).status_code == 201
    converge("first reconciled", lambda: reconciled(api, ns, "first"), replicas[0])
    time.sleep(5)
    counts = [reconciles(r.metrics) for r in replicas]
    assert counts[0] >= 1 and counts[1] == 0, counts

    replicas[0].kill()
    assert create_storefront(api, ns, "second", BASIC_SPEC).status_code == 201
    converge("taken over", lambda: reconciled(api, ns, "second"), replicas[1])
    assert reconciles(replicas[1].metrics) >= 1


def test_two_replicas_with_peering_one_acts_and_the_other_takes_over(
    cluster: KubeAPIServer, tmp_path: Path
) -> None:
    replicas = [
        Operator(cluster, tmp_path / f"replica-{i}", "--peering", "--peering-lifetime", "10")
        for i in range(2)
    ]
    try:
        replicas[0].start()
        time.sleep(2)  # the first started is the one in charge
        replicas[1].start()
        with cluster.http() as api:
            wait_for(lambda: api.get(SF.format(ns="default")).status_code == 200, 60, what="CRD")
            first_acts_then_second_takes_over(api, replicas)
    finally:
        for replica in replicas:
            replica.stop()


def service_account_kubeconfig(
    cluster: KubeAPIServer, api: httpx.Client, namespace: str, account: str, path: Path
) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount, with a token from the API server's
    TokenRequest API, as a pod's projected token would: what the account may do is what its
    RBAC grants, nothing more."""
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"expirationSeconds": 3600}}  # fmt: skip
    response = api.post(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token", json=request
    )
    assert response.status_code == 201, response.text
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["users"] = [{"name": account, "user": {"token": response.json()["status"]["token"]}}]
    config["contexts"][0]["context"]["user"] = account
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@pytest.mark.helm
def test_two_replicas_installed_by_the_chart_take_over_under_its_rbac(
    cluster: KubeAPIServer, helm_bin: Helm, tmp_path: Path
) -> None:
    # The chart's RBAC and flags, not an admin's: each replica runs as the release's
    # ServiceAccount with the arguments the chart gives its pods (but their ports), applies the
    # peering CRD, creates the peering object, keeps alive in it and takes over.
    release_ns = "storefront-system"
    helm_bin.run(
        "install", "sf", CHART, "--namespace", release_ns, "--create-namespace", "--wait=false",
        "--kubeconfig", cluster.kubeconfig, "--values", CHART_VALUES / "peering.yaml",
    )  # fmt: skip
    manifests = yaml.safe_load_all(
        helm_bin.run("get", "manifest", "sf", "--namespace", release_ns,
                     "--kubeconfig", cluster.kubeconfig).stdout
    )  # fmt: skip
    (deployment,) = [m for m in manifests if m and m["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    chart_args = [
        a
        for a in pod["containers"][0]["args"][1:]  # after `operator`
        if not a.startswith(("--liveness-port=", "--metrics-port="))
    ]
    assert "--peering" in chart_args and "--peering-name=shop-operators" in chart_args
    with cluster.http() as api:
        # Nobody but the replicas, with the chart's rights, applies Kopf's peering CRD.
        crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        assert get(api, f"{crds}/{PEERING_CRD_NAME}") is None
        kubeconfig = service_account_kubeconfig(
            cluster, api, release_ns, pod["serviceAccountName"], tmp_path / "sa-kubeconfig"
        )
        replicas = [
            Operator(cluster, tmp_path / f"replica-{i}", *chart_args, kubeconfig=kubeconfig)
            for i in range(2)
        ]
        try:
            replicas[0].start()
            time.sleep(2)  # the first started is the one in charge
            replicas[1].start()
            peers = "/apis/kopf.dev/v1/clusterkopfpeerings/shop-operators"
            converge(
                "both replicas keep alive in the peering object",
                lambda: len((get(api, peers) or {}).get("status") or {}) == 2,
                replicas[1],
            )
            first_acts_then_second_takes_over(api, replicas)
            # The survivor cleaned the dead replica's record out under the same rights.
            converge(
                "dead replica forgotten",
                lambda: len((get(api, peers) or {}).get("status") or {}) == 1,
                replicas[1],
            )
            for replica in replicas[1:]:
                assert replica.process.running(), replica.process.log_tail()
        finally:
            for replica in replicas:
                replica.stop()


class StallingProxy:
    """A TCP proxy to the API server that, once told to stall, stops forwarding on every
    connection open at that moment without closing it (a NAT or proxy that lost its state);
    connections opened later are forwarded as usual."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            stalled = threading.Event()
            self.connections.append((client, upstream, stalled))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst, stalled), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, stalled: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while not self.closed.is_set():
                if stalled.is_set():
                    time.sleep(0.2)  # neither read nor close: the peer waits forever
                    continue
                readable, _, _ = select.select([src], [], [], 0.2)
                if not readable:
                    continue
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        if not stalled.is_set():
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()

    def stall(self) -> int:
        """Stall every connection open now; returns how many."""
        for _, _, stalled in self.connections:
            stalled.set()
        return len(self.connections)

    def close(self) -> None:
        self.closed.set()
        self.server.close()
        for client, upstream, _ in self.connections:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()


def test_stalled_connections_are_given_up(cluster: KubeAPIServer, tmp_path: Path) -> None:
    host, port = cluster.url.removeprefix("https://").rsplit(":", 1)
    proxy = StallingProxy((host, int(port)))
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    kubeconfig = tmp_path / "proxied-kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    operator = Operator(cluster, tmp_path, kubeconfig=kubeconfig)
    try:
        operator.start()
        with cluster.http() as api:
            wait_for(lambda: api.get(SF.format(ns="default")).status_code == 200, 60, what="CRD")
            ns = namespace(api, "stall")
            assert create_storefront(api, ns, "shop", BASIC_SPEC).status_code == 201
            converge("reconciled", lambda: reconciled(api, ns, "shop"), operator)
            time.sleep(2)

            assert proxy.stall() > 0  # the watches and the kept-alive connections hang
            patch = {"spec": {"config": {"STOREFRONT_PRODUCT_CACHE_TTL_SECONDS": "9"}}}
            response = api.patch(f"{SF.format(ns=ns)}/shop", json=patch, headers=MERGE)
            assert response.status_code == 200, response.text
            config_map = f"/api/v1/namespaces/{ns}/configmaps/shop-config"
            converge(
                "spec change through stalled connections",
                lambda: (
                    (get(api, config_map) or {})
                    .get("data", {})
                    .get("STOREFRONT_PRODUCT_CACHE_TTL_SECONDS")
                    == "9"
                ),
                operator,
            )
            converge("status observed", lambda: reconciled(api, ns, "shop"), operator)
        assert operator.process.running(), operator.process.log_tail()
    finally:
        operator.stop()
        proxy.close()

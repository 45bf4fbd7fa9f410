"""Kubernetes fixtures: etcd + kube-apiserver started the way controller-runtime's envtest does
(generated CA, serving/admin certs, service-account keys, RBAC) with a kubeconfig for tests,
a fresh namespace per test, and optionally controller-manager + scheduler (+ kwok fake node)."""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import os
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.components.ports import free_port
from tests.components.process import (
    TOOLS_BIN,
    ManagedProcess,
    find_binary,
    require_binary,
    start_process,
)

HOST = "127.0.0.1"
# Room for the Services of thousands of instances (the operator benchmark creates 1,000, each
# with several Services, and nothing garbage-collects without a controller manager).
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/16"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"


# --------------------------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------------------------
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _pem_key(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class CertificateAuthority:
    """A self-signed CA that issues serving and client certificates."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, common_name: str = "storefront-test-ca") -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def issue(
        self,
        common_name: str,
        organizations: Sequence[str] = (),
        dns_names: Sequence[str] = (),
        ips: Sequence[str] = (),
        server: bool = False,
    ) -> tuple[bytes, bytes]:
        """(cert PEM, key PEM) for a server (with SANs) or a client (CN = user, O = groups)."""
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        attributes += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return _pem_cert(cert), _pem_key(key)

    @property
    def cert_pem(self) -> bytes:
        return _pem_cert(self.cert)


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_kubeconfig(
    path: Path, server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, user: str
) -> Path:
    """A self-contained kubeconfig (certificates embedded) with one context, `storefront-test`."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "storefront-test",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(cert_pem),
                    "client-key-data": _b64(key_pem),
                },
            }
        ],
        "contexts": [
            {"name": "storefront-test", "context": {"cluster": "storefront-test", "user": user}}
        ],
        "current-context": "storefront-test",
        "preferences": {},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


# --------------------------------------------------------------------------------------------
# Control plane
# --------------------------------------------------------------------------------------------
@dataclass
class KubeAPIServer:
    """etcd + kube-apiserver; `kubeconfig` authenticates as an admin (group system:masters)."""

    url: str
    kubeconfig: Path
    workdir: Path
    ca_file: Path
    admin_cert_file: Path
    admin_key_file: Path
    sa_private_key_file: Path
    etcd_url: str
    processes: list[ManagedProcess] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        """Environment for subprocesses (operator, kubectl) that should use this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def ssl_context(self, admin: bool = True) -> ssl.SSLContext:
        """TLS context trusting the cluster CA (presenting the admin client cert if `admin`)."""
        return _ssl_context(
            self.ca_file, (self.admin_cert_file, self.admin_key_file) if admin else None
        )

    def http(self, admin: bool = True) -> httpx.Client:
        """An httpx client for the API server (authenticated as admin unless admin=False)."""
        return httpx.Client(base_url=self.url, verify=self.ssl_context(admin), timeout=30)

    def api_client(self) -> Any:
        """A kubernetes.client.ApiClient configured from the kubeconfig."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run kubectl (from .tools/bin or PATH) against this cluster."""
        binary = require_binary("kubectl")
        result = subprocess.run(
            [binary, "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def _ssl_context(ca_file: Path, client: tuple[Path, Path] | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    if client is not None:
        context.load_cert_chain(str(client[0]), str(client[1]))
    return context


def _http_ok(url: str, **kwargs: Any) -> bool:
    return httpx.get(url, timeout=2, **kwargs).status_code == 200


def start_etcd(workdir: Path) -> tuple[ManagedProcess, str]:
    binary = require_binary("etcd")
    client_port, peer_port = free_port(), free_port()
    client_url, peer_url = f"http://{HOST}:{client_port}", f"http://{HOST}:{peer_port}"
    argv = [
        binary,
        "--name=default",
        f"--data-dir={workdir / 'etcd-data'}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=default={peer_url}",
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]
    process = start_process(
        "etcd", argv, workdir / "etcd.log", lambda: _http_ok(f"{client_url}/health"), timeout=60
    )
    return process, client_url


def start_kube_apiserver(workdir: Path) -> KubeAPIServer:
    """Start etcd and kube-apiserver (flags as envtest) in `workdir`; wait for /readyz."""
    apiserver = require_binary("kube-apiserver")
    certs = workdir / "pki"
    certs.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority.create()
    ca_file = _write(certs / "ca.crt", ca.cert_pem, 0o644)
    serving_cert, serving_key = ca.issue(
        "kube-apiserver",
        dns_names=[
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
        ips=[HOST, "10.0.0.1"],
        server=True,
    )
    admin_cert, admin_key = ca.issue("storefront-admin", organizations=["system:masters"])
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_pub = sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    paths = {
        "serving.crt": _write(certs / "serving.crt", serving_cert, 0o644),
        "serving.key": _write(certs / "serving.key", serving_key),
        "admin.crt": _write(certs / "admin.crt", admin_cert, 0o644),
        "admin.key": _write(certs / "admin.key", admin_key),
        "sa.key": _write(certs / "sa.key", _pem_key(sa_key)),
        "sa.pub": _write(certs / "sa.pub", sa_pub, 0o644),
    }

    etcd, etcd_url = start_etcd(workdir)
    port = free_port()
    url = f"https://{HOST}:{port}"
    argv = [
        apiserver,
        f"--etcd-servers={etcd_url}",
        f"--advertise-address={HOST}",
        f"--bind-address={HOST}",
        f"--secure-port={port}",
        f"--cert-dir={workdir / 'apiserver-certs'}",
        f"--tls-cert-file={paths['serving.crt']}",
        f"--tls-private-key-file={paths['serving.key']}",
        f"--client-ca-file={ca_file}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--allow-privileged=true",
        "--authorization-mode=RBAC",
        "--disable-admission-plugins=ServiceAccount",
        f"--service-account-issuer={url}/",
        f"--service-account-key-file={paths['sa.pub']}",
        f"--service-account-signing-key-file={paths['sa.key']}",
        "--v=1",
    ]
    cluster = KubeAPIServer(
        url=url,
        kubeconfig=write_kubeconfig(
            workdir / "kubeconfig", url, ca.cert_pem, admin_cert, admin_key, "storefront-admin"
        ),
        workdir=workdir,
        ca_file=ca_file,
        admin_cert_file=paths["admin.crt"],
        admin_key_file=paths["admin.key"],
        sa_private_key_file=paths["sa.key"],
        etcd_url=etcd_url,
        processes=[etcd],
    )
    tls = _ssl_context(ca_file, (paths["admin.crt"], paths["admin.key"]))
    try:
        cluster.processes.append(
            start_process(
                "kube-apiserver",
                argv,
                workdir / "kube-apiserver.log",
                lambda: _http_ok(f"{url}/readyz", verify=tls),
                timeout=120,
            )
        )
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="session")
def kube_apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPIServer]:
    """A real etcd + kube-apiserver for the session (no controllers, no nodes)."""
    cluster = start_kube_apiserver(tmp_path_factory.mktemp("kube"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def kube_namespace(kube_apiserver: KubeAPIServer) -> Iterator[str]:
    """A fresh namespace (test-<hex>) for this test, deleted afterwards. Pod Security Admission
    enforces the `restricted` profile in it, as a hardened cluster would: every pod the chart
    or the operator makes there must pass it."""
    from kubernetes import client

    name = f"test-{uuid.uuid4().hex[:10]}"
    api_client = kube_apiserver.api_client()
    core = client.CoreV1Api(api_client)
    labels = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    try:
        core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
        )
        yield name
    finally:
        with contextlib.suppress(Exception):
            core.delete_namespace(name)
        api_client.close()


# --------------------------------------------------------------------------------------------
# Optional: a fuller cluster (controllers, scheduler, a kwok fake node)
# --------------------------------------------------------------------------------------------
@dataclass
class KubeCluster:
    """kube_apiserver plus kube-controller-manager, kube-scheduler and (if built) kwok."""

    apiserver: KubeAPIServer
    node_name: str | None
    processes: list[ManagedProcess] = field(default_factory=list)

    @property
    def kubeconfig(self) -> Path:
        return self.apiserver.kubeconfig

    @property
    def url(self) -> str:
        return self.apiserver.url

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def _healthz(port: int) -> bool:
    return _http_ok(f"https://{HOST}:{port}/healthz", verify=False)


def _create_fake_node(apiserver: KubeAPIServer, name: str) -> None:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake"},
            "labels": {"kubernetes.io/hostname": name, "type": "kwok"},
        },
        "spec": {},
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
        },
    }
    with apiserver.http() as http:
        response = http.post("/api/v1/nodes", json=node)
        if response.status_code not in (200, 201, 409):
            raise RuntimeError(f"creating node {name}: {response.status_code} {response.text}")


def _node_schedulable(apiserver: KubeAPIServer, name: str) -> bool:
    """Node Ready and free of taints (the node-lifecycle controller lifts not-ready)."""
    with apiserver.http() as http:
        node = http.get(f"/api/v1/nodes/{name}").json()
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in node.get("status", {}).get("conditions", [])
    )
    return ready and not node.get("spec", {}).get("taints")


@pytest.fixture(scope="session")
def kube_cluster(
    kube_apiserver: KubeAPIServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KubeCluster]:
    """Controllers (garbage collection, deployments → replicasets → pods, node lifecycle) and the
    scheduler on top of the session kube_apiserver; with kwok built, one fake Ready node
    (`kube_cluster.node_name`) on which pods are scheduled and reported Running."""
    workdir = tmp_path_factory.mktemp("kube-cluster")
    kubeconfig = str(kube_apiserver.kubeconfig)
    cluster = KubeCluster(kube_apiserver, node_name=None)
    try:
        kcm_port = free_port()
        cluster.processes.append(
            start_process(
                "kube-controller-manager",
                [
                    require_binary("kube-controller-manager"),
                    f"--kubeconfig={kubeconfig}",
                    f"--authentication-kubeconfig={kubeconfig}",
                    f"--authorization-kubeconfig={kubeconfig}",
                    f"--bind-address={HOST}",
                    f"--secure-port={kcm_port}",
                    f"--cert-dir={workdir / 'kcm-certs'}",
                    "--leader-elect=false",
                    "--controllers=*,-node-ipam-controller",
                    f"--service-account-private-key-file={kube_apiserver.sa_private_key_file}",
                    f"--root-ca-file={kube_apiserver.ca_file}",
                    "--use-service-account-credentials=false",
                    "--v=1",
                ],
                workdir / "kube-controller-manager.log",
                lambda: _healthz(kcm_port),
                timeout=120,
            )
        )
        scheduler_port = free_port()
        cluster.processes.append(
            start_process(
                "kube-scheduler",
                [
                    require_binary("kube-scheduler"),
                    f"--kubeconfig={kubeconfig}",
                    f"--authentication-kubeconfig={kubeconfig}",
                    f"--authorization-kubeconfig={kubeconfig}",
                    f"--bind-address={HOST}",
                    f"--secure-port={scheduler_port}",
                    f"--cert-dir={workdir / 'scheduler-certs'}",
                    "--leader-elect=false",
                    "--v=1",
                ],
                workdir / "kube-scheduler.log",
                lambda: _healthz(scheduler_port),
                timeout=120,
            )
        )
        kwok = find_binary("kwok")
        stages = TOOLS_BIN.parent / "share" / "kwok" / "stages.yaml"
        if kwok is not None and stages.is_file():
            node = "kwok-node-0"
            _create_fake_node(kube_apiserver, node)
            kwok_port = free_port()
            cluster.processes.append(
                start_process(
                    "kwok",
                    [
                        kwok,
                        f"--kubeconfig={kubeconfig}",
                        f"--config={stages}",
                        "--manage-all-nodes=false",
                        f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                        f"--server-address={HOST}:{kwok_port}",
                        "--node-lease-duration-seconds=40",
                    ],
                    workdir / "kwok.log",
                    lambda: _http_ok(f"http://{HOST}:{kwok_port}/healthz"),
                    timeout=60,
                )
            )
            cluster.node_name = node
            wait_for(
                lambda: _node_schedulable(kube_apiserver, node),
                timeout=60,
                what=f"node {node} Ready and untainted",
            )
        yield cluster
    finally:
        cluster.stop()


def wait_for(
    predicate: Any, timeout: float = 60.0, interval: float = 0.5, what: str = "condition"
) -> Any:
    """Poll `predicate()` until it returns a truthy value (returned); TimeoutError otherwise,
    naming the last value or error seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:
            last = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met after {timeout}s (last: {last!r})"[:4000])
        time.sleep(interval)

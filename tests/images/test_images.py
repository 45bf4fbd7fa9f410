"""The images as a user runs them, on a real Docker engine: Storefront's and the operator's
answer `--help` as the chart's non-root user on a read-only root file system, the API's health
check passes, and the service images made here keep the interface of the official ones the
Storefront CRD defaults to (environment, user, port, readiness command)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.components.kind import TAG, run_script, tool_versions
from tests.components.kube import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1800)]
VERSIONS = tool_versions()
APP = f"{VERSIONS['APP_REPOSITORY']}:{TAG}"
OPERATOR = f"{VERSIONS['OPERATOR_REPOSITORY']}:{TAG}"
# What the chart and the operator set on every Storefront pod.
RESTRICTED = [
    "--read-only",
    "--user",
    "10001:10001",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
]


def docker(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {result.stderr}{result.stdout}")
    return result


@pytest.fixture(scope="module")
def images() -> None:
    run_script("images.sh", "--tag", TAG, "app", "operator")
    run_script("images.sh", "services")


@contextlib.contextmanager
def container(*args: str) -> Iterator[str]:
    name = f"storefront-test-{uuid.uuid4().hex[:8]}"
    docker("run", "--detach", "--name", name, *args)
    try:
        yield name
    finally:
        docker("rm", "--force", "--volumes", name, check=False)


def address(name: str) -> str:
    return docker("inspect", "--format", "{{.NetworkSettings.IPAddress}}", name).stdout.strip()


@pytest.mark.parametrize("image", [APP, OPERATOR])
def test_help_runs_as_the_non_root_user_on_a_read_only_root(images: None, image: str) -> None:
    result = docker("run", "--rm", *RESTRICTED, image, "--help")
    assert "Usage: storefront" in result.stdout
    config = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    whoami = docker("run", "--rm", *RESTRICTED, "--entrypoint", "id", image, "-u").stdout
    assert whoami.strip() == "10001"


def test_the_operator_image_prints_its_crd(images: None) -> None:
    crd = docker("run", "--rm", *RESTRICTED, OPERATOR, "crd").stdout
    assert "name: storefronts.storefront.dev" in crd


def test_the_api_image_health_check_passes(images: None) -> None:
    """The image's own HEALTHCHECK command, run every 2 s instead of 30 s."""
    with container(
        *RESTRICTED,
        "--tmpfs",
        "/tmp",
        "--health-interval",
        "2s",
        "--health-start-period",
        "60s",
        "-e",
        "STOREFRONT_ENVIRONMENT=dev",
        "-e",
        "STOREFRONT_DATA_DIR=/tmp/storefront",
        APP,
        "api",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--migrate",
    ) as name:

        def healthy() -> bool:
            state = json.loads(docker("inspect", "--format", "{{json .State}}", name).stdout)
            assert state["Status"] == "running", docker("logs", name, check=False).stderr
            return bool(state["Health"]["Status"] == "healthy")

        wait_for(healthy, timeout=120, interval=1, what="the API container healthy")
        response = httpx.get(f"http://{address(name)}:8000/readyz", timeout=10)
        assert response.status_code == 200, response.text


def test_postgres_image_keeps_the_official_interface(images: None) -> None:
    with container(
        "--read-only",
        "--user",
        "70:70",
        "--tmpfs",
        "/var/lib/postgresql/data:uid=70,gid=70",
        "--tmpfs",
        "/var/run/postgresql:uid=70,gid=70",
        "--tmpfs",
        "/tmp",
        "-e",
        "POSTGRES_USER=storefront",
        "-e",
        "POSTGRES_DB=shop",
        "-e",
        "POSTGRES_PASSWORD=pw",
        "-e",
        "PGDATA=/var/lib/postgresql/data/pgdata",
        VERSIONS["POSTGRES_IMAGE"],
    ) as name:
        wait_for(
            lambda: (
                docker(
                    "exec", name, "pg_isready", "-U", "storefront", "-d", "shop", check=False
                ).returncode
                == 0
            ),
            timeout=60,
            what="pg_isready",
        )
        # Over TCP with the password (scram-sha-256), as the Storefront pods connect.
        query = docker(
            "exec",
            "-e",
            "PGPASSWORD=pw",
            name,
            "psql",
            "-h",
            address(name),
            "-U",
            "storefront",
            "-d",
            "shop",
            "-Atc",
            "select current_database()",
        ).stdout
        assert query.strip() == "shop"
        wrong = docker(
            "exec",
            "-e",
            "PGPASSWORD=nope",
            name,
            "psql",
            "-h",
            address(name),
            "-U",
            "storefront",
            "-d",
            "shop",
            "-c",
            "select 1",
            check=False,
        )
        assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr


def test_redis_image_keeps_the_official_interface(images: None) -> None:
    with container(
        "--read-only",
        "--user",
        "999:999",
        "--tmpfs",
        "/data:uid=999",
        VERSIONS["REDIS_IMAGE"],
        "--save",
        "",
        "--appendonly",
        "no",
    ) as name:
        wait_for(
            lambda: docker("exec", name, "redis-cli", "ping", check=False).stdout.strip() == "PONG",
            timeout=30,
            what="redis PONG",
        )
        saves = docker("exec", name, "redis-cli", "config", "get", "save").stdout.split()
        assert saves == ["save"]  # the argument reached redis-server: no snapshots


def test_prometheus_and_jaeger_images_serve(images: None) -> None:
    with (
        container(
            "--read-only",
            "--tmpfs",
            "/prometheus:uid=65534",
            VERSIONS["PROMETHEUS_IMAGE"],
            "--config.file=/dev/null",
            "--storage.tsdb.path=/prometheus",
        ) as prometheus,
        container("--read-only", VERSIONS["JAEGER_IMAGE"]) as jaeger,
    ):
        wait_for(
            lambda: httpx.get(f"http://{address(prometheus)}:9090/-/ready", timeout=2).is_success,
            timeout=60,
            what="Prometheus ready",
        )
        wait_for(
            lambda: httpx.get(f"http://{address(jaeger)}:13133/status", timeout=2).is_success,
            timeout=60,
            what="Jaeger healthy",
        )
        services = httpx.get(f"http://{address(jaeger)}:16686/api/services", timeout=5)
        assert services.status_code == 200

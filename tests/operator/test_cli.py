"""`storefront operator` and `storefront crd`: help, CRD output, and a real operator process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from storefront_operator.crd import crd_yaml

from tests.components.kube import KubeAPIServer, wait_for
from tests.components.ports import free_port
from tests.operator.conftest import BASIC_SPEC, WAIT, create_storefront, make_secret

STOREFRONT = [sys.executable, "-m", "service.cli"]


@pytest.mark.parametrize("command", ["operator", "crd"])
def test_help(command: str) -> None:
    result = subprocess.run([*STOREFRONT, command, "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_crd_prints_the_generated_yaml() -> None:
    result = subprocess.run([*STOREFRONT, "crd"], capture_output=True, text=True, check=True)
    assert result.stdout == crd_yaml()
    assert yaml.safe_load(result.stdout)["metadata"]["name"] == "storefronts.storefront.dev"


def test_crd_output_file(tmp_path: Path) -> None:
    target = tmp_path / "crd.yaml"
    subprocess.run([*STOREFRONT, "crd", "-o", str(target)], check=True, capture_output=True)
    assert target.read_text() == crd_yaml()


def test_operator_needs_a_scope() -> None:
    result = subprocess.run([*STOREFRONT, "operator"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "--all-namespaces" in result.stderr


@pytest.mark.cluster
def test_operator_process_reconciles_its_namespace(
    kube_apiserver: KubeAPIServer, kube_namespace: str, tmp_path: Path
) -> None:
    ns = kube_namespace
    liveness, metrics = free_port(), free_port()
    log = tmp_path / "operator.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                *STOREFRONT,
                "operator",
                "--namespace",
                ns,
                "--liveness-port",
                str(liveness),
                "--metrics-port",
                str(metrics),
                "--resync-interval",
                "2",
            ],
            env=kube_apiserver.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{liveness}/healthz").is_success, 60, what="live"
        )
        with kube_apiserver.http() as api:
            make_secret(api, ns, "db", {"url": "postgresql://u:p@db.example/shop"})
            make_secret(api, ns, "cache", {"url": "redis://127.0.0.1:1/0"})
            assert create_storefront(api, ns, "cli", BASIC_SPEC).status_code == 201

        def reconciled_by_this_process() -> bool:
            for line in log.read_text().splitlines():
                with_context = line.startswith("{") and json.loads(line)
                if (
                    with_context
                    and with_context.get("namespace") == ns
                    and with_context.get("name") == "cli"
                    and with_context.get("component") == "operator"
                ):
                    return True
            return False

        try:
            wait_for(reconciled_by_this_process, WAIT, what="a JSON log line for the instance")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; operator log:\n{log.read_text()[-4000:]}") from None
        text = httpx.get(f"http://127.0.0.1:{metrics}/metrics").text
        series = 'storefront_operator_reconciles_total{outcome="success"} '
        count = next(
            float(line.split()[-1]) for line in text.splitlines() if line.startswith(series)
        )
        assert count >= 1

        # The resync (every 2 s here) finds the children as the reconcile left them: skipped.
        def resync_skipped() -> bool:
            text = httpx.get(f"http://127.0.0.1:{metrics}/metrics").text
            series = 'storefront_operator_resync_checks_total{result="matched"} '
            line = next((ln for ln in text.splitlines() if ln.startswith(series)), "x 0")
            return float(line.split()[-1]) >= 1

        wait_for(resync_skipped, WAIT, what="a resync that found nothing to do")
    finally:
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, log.read_text()[-3000:]

"""The shell scripts that build and run Storefront's tools, images and cluster: every one parses
and is shellcheck-clean, and the version pins they source read the same from Python."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.components.kind import tool_versions
from tests.components.process import REPO_ROOT, require_binary

SCRIPTS = sorted(
    path
    for folder in ("scripts", "kind", "images")
    for path in (REPO_ROOT / folder).rglob("*")
    if path.is_file()
    and path.read_bytes().startswith(
        (b"#!/usr/bin/env bash", b"#!/bin/bash", b"#!/bin/sh", b"# shellcheck shell=")
    )
)


def test_the_scripts_are_found() -> None:
    names = {p.name for p in SCRIPTS}
    assert {
        "tools.sh",
        "images.sh",
        "kind-node.sh",
        "kind-up.sh",
        "kind-down.sh",
        "engine.sh",
        "runc-bounded",
        "docker-entrypoint.sh",
    } <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_script_parses_and_is_shellcheck_clean(script: Path) -> None:
    if not script.name.endswith((".env",)) and script.read_bytes().startswith(b"#!"):
        assert script.stat().st_mode & 0o111, f"{script} is not executable"
    shell = "sh" if script.read_bytes().startswith(b"#!/bin/sh") else "bash"
    subprocess.run([shell, "-n", str(script)], check=True, timeout=30)
    result = subprocess.run(
        [require_binary("shellcheck"), "--external-sources", str(script)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_tool_versions_read_from_python_as_bash_reads_them() -> None:
    ours = tool_versions()
    names = " ".join(f"${{{k}}}" for k in ours)
    script = f'source scripts/tool-versions.env; printf "%s\\n" {names}'
    bash = subprocess.run(
        ["bash", "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.splitlines()
    assert bash == list(ours.values())
    assert ours["JAEGER_IMAGE"] == "storefront.local/jaeger:" + ours["JAEGER_VERSION"][1:]

"""Describe the machine and software a run measured, for the JSON report."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata

PACKAGES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "sqlalchemy",
    "redis",
    "opentelemetry-sdk",
    "prometheus-client",
    "prometheus-fastapi-instrumentator",
    "dramatiq",
    "kopf",
)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _wrk_version() -> str | None:
    try:
        done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = (done.stdout or done.stderr).splitlines()
    return first[0].strip() if first else None


def describe() -> dict[str, object]:
    load = os.getloadavg()
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "load_average_at_start": [round(x, 2) for x in load],
        "wrk": _wrk_version(),
        "packages": {name: _version(name) for name in PACKAGES},
    }

"""Start a component as a subprocess with its log in a file, wait until a probe says it is ready,
stop it (terminate, then kill) on teardown; find component binaries (.tools/bin, then PATH)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"
LOG_TAIL_LINES = 40


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: have the kernel SIGKILL the component if the test process dies without teardown."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class ComponentError(RuntimeError):
    """A component could not be started (the message carries the tail of its log)."""


# Settings a developer's shell may carry that would change what a started process does.
SETTING_PREFIXES = ("STOREFRONT_", "OTEL_", "POD_", "FASTAPI_")


def clean_environment() -> dict[str, str]:
    """This process's environment without Storefront, OpenTelemetry, pod or FastAPI settings:
    a process a test starts reads only the settings the test gives it."""
    return {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}


def find_binary(name: str, extra_dirs: Sequence[Path] = ()) -> str | None:
    """Path of executable `name` in .tools/bin, then `extra_dirs`, then PATH (None if absent)."""
    for directory in (TOOLS_BIN, *extra_dirs):
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


def require_binary(name: str, extra_dirs: Sequence[Path] = ()) -> str:
    """Like find_binary, but fail the test (never skip) when the binary is missing."""
    path = find_binary(name, extra_dirs)
    if path is None:
        pytest.fail(
            f"{name} not found in {TOOLS_BIN} or on PATH: run `make tools` "
            "(bash scripts/tools.sh) to install and build the real components",
            pytrace=False,
        )
    return path


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a text file ('' if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """A subprocess whose stdout+stderr go to `log_path`; stop() ends it (terminate → kill)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: int | None = None,
        group: int | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.user = user
        self.group = group
        self.stop_signal = stop_signal
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                user=self.user,
                group=self.group,
                extra_groups=[] if self.group is not None else None,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was not started"
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail(self.log_path, lines)

    def error(self, message: str) -> ComponentError:
        return ComponentError(
            f"{self.name}: {message}\ncommand: {' '.join(self.argv)}\n"
            f"log: {self.log_path} (last {LOG_TAIL_LINES} lines):\n{self.log_tail()}"
        )

    def wait_ready(
        self, probe: Callable[[], bool], timeout: float = 60.0, interval: float = 0.1
    ) -> ManagedProcess:
        """Poll `probe` (exceptions count as not ready) until it returns True; raise on timeout
        or when the process exits first (stopping it)."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                code = self.popen.returncode if self.popen else None
                raise self.error(f"exited with code {code} before becoming ready")
            with contextlib.suppress(Exception):
                if probe():
                    return self
            if time.monotonic() > deadline:
                self.stop()
                raise self.error(f"not ready after {timeout:.0f}s")
            time.sleep(interval)
            interval = min(interval * 1.5, 1.0)

    def stop(self, timeout: float = 15.0) -> None:
        """Send the stop signal, wait, then SIGKILL the process (and its process group)."""
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(self.stop_signal)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=timeout)


def start_process(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    probe: Callable[[], bool],
    *,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: int | None = None,
    group: int | None = None,
    stop_signal: int = signal.SIGTERM,
) -> ManagedProcess:
    """Start `argv` (logging to `log_path`) and return once `probe()` is True; on failure raise
    ComponentError with the last log lines (the process is stopped)."""
    process = ManagedProcess(
        name, argv, log_path, env=env, cwd=cwd, user=user, group=group, stop_signal=stop_signal
    )
    process.start()
    try:
        return process.wait_ready(probe, timeout=timeout)
    except BaseException:
        process.stop()
        raise

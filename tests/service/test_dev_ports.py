"""A port or data dir already taken: `storefront dev` (and `api`, `worker`, `scheduler`) end with
one line naming it and how to change it, and `dev` moves its children's /metrics ports."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.core.ports import free_port_block, listen_error, port_in_use
from service.devstack import (
    DevStackError,
    MetricsPort,
    choose_metrics_ports,
    data_dir_lock,
    metrics_port_note,
)
from tests.components.ports import free_port
from tests.components.process import clean_environment


@contextlib.contextmanager
def listening(port: int, host: str = "127.0.0.1") -> Iterator[socket.socket]:
    """Something else listening on ``port``, as another server would."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen()
        yield sock


def storefront(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = clean_environment() | {
        "STOREFRONT_DATA_DIR": str(tmp_path / "data"),
        "STOREFRONT_ENVIRONMENT": "dev",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The command's whole say: one line on stderr, no traceback."""
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


# ---------------------------------------------------------------------------------------------
# The commands.
# ---------------------------------------------------------------------------------------------


def test_dev_on_a_taken_api_port_names_it_and_the_option(tmp_path: Path) -> None:
    port = free_port()
    with listening(port):
        result = storefront("dev", "--port", str(port), tmp_path=tmp_path)
    assert result.returncode == 1
    line = one_line(result)
    assert f"port {port} on 127.0.0.1 is in use" in line
    assert "choose another with --port" in line


def test_api_on_a_taken_port_names_it_and_the_option(tmp_path: Path) -> None:
    port = free_port()
    with listening(port):
        result = storefront("api", "--port", str(port), tmp_path=tmp_path)
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use; choose another with --port" in one_line(result)


def test_dev_on_an_address_it_cannot_use_says_so(tmp_path: Path) -> None:
    result = storefront("dev", "--host", "192.0.2.1", "--port", "8000", tmp_path=tmp_path)
    assert result.returncode == 1
    assert "cannot listen on 192.0.2.1:8000" in one_line(result)


def test_a_second_dev_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    with data_dir_lock(tmp_path / "data", "pid 4242, http://127.0.0.1:8000"):
        result = storefront("dev", "--port", str(free_port()), tmp_path=tmp_path)
    assert result.returncode == 1
    line = one_line(result)
    assert "(pid 4242, http://127.0.0.1:8000) is using the data dir" in line
    assert "STOREFRONT_DATA_DIR=" in line


def test_dev_refuses_a_metrics_port_the_user_set_when_it_is_taken(tmp_path: Path) -> None:
    metrics = free_port()
    with listening(metrics, "0.0.0.0"):
        result = storefront(
            "dev",
            "--port",
            str(free_port()),
            tmp_path=tmp_path,
            STOREFRONT_WORKER_METRICS_PORT=str(metrics),
        )
    assert result.returncode == 1
    line = one_line(result)
    assert f"port {metrics} for the worker's /metrics (STOREFRONT_WORKER_METRICS_PORT)" in line
    assert "0 to turn it off" in line


@pytest.mark.parametrize(
    ("command", "setting"),
    [
        ("worker", "STOREFRONT_WORKER_METRICS_PORT"),
        ("scheduler", "STOREFRONT_WORKER_SCHEDULER_METRICS_PORT"),
    ],
)
def test_worker_and_scheduler_on_a_taken_metrics_port_name_it(
    tmp_path: Path, command: str, setting: str
) -> None:
    metrics = free_port()
    with listening(metrics, "0.0.0.0"):
        result = storefront(
            command,
            tmp_path=tmp_path,
            STOREFRONT_REDIS_URL="redis://127.0.0.1:1/0",  # never reached
            **{setting: str(metrics)},
        )
    assert result.returncode == 1
    line = one_line(result)
    assert f"port {metrics} for the {command}'s /metrics is in use" in line
    assert f"--metrics-port or {setting}" in line


# ---------------------------------------------------------------------------------------------
# Choosing ports (pure, with the machine's ports given as a function).
# ---------------------------------------------------------------------------------------------

WORKER = MetricsPort("worker", "STOREFRONT_WORKER_METRICS_PORT", 9100)
SCHEDULER = MetricsPort("scheduler", "STOREFRONT_WORKER_SCHEDULER_METRICS_PORT", 9101)


def test_free_default_ports_are_kept() -> None:
    chosen = choose_metrics_ports([WORKER, SCHEDULER], lambda p: True, avoid={8000})
    assert [(c.port, c.moved) for c in chosen] == [(9100, False), (9101, False)]


def test_taken_default_ports_move_up_to_the_next_free_ones() -> None:
    busy = {9100, 9101}
    chosen = choose_metrics_ports([WORKER, SCHEDULER], lambda p: p not in busy, avoid={8000})
    assert [c.port for c in chosen] == [9102, 9103]
    assert metrics_port_note(chosen[0]) == "Worker /metrics on port 9102 (9100 in use)"


def test_a_worker_block_needs_every_port_free_and_never_overlaps_the_scheduler() -> None:
    two = MetricsPort("worker", "STOREFRONT_WORKER_METRICS_PORT", 9100, count=2)
    chosen = choose_metrics_ports([two, SCHEDULER], lambda p: p != 9101, avoid=set())
    assert [c.port for c in chosen] == [9102, 9104]
    assert metrics_port_note(chosen[0]) == "Worker /metrics on port 9102 (9100-9101 in use)"


def test_the_api_port_is_never_given_to_a_child() -> None:
    chosen = choose_metrics_ports([WORKER], lambda p: True, avoid={9100})
    assert chosen[0].port == 9101


def test_a_port_the_user_set_is_not_moved() -> None:
    mine = MetricsPort("worker", "STOREFRONT_WORKER_METRICS_PORT", 9100, explicit=True)
    with pytest.raises(DevStackError, match=r"port 9100 for the worker's /metrics .* is in use"):
        choose_metrics_ports([mine], lambda p: p != 9100, avoid=set())


def test_metrics_turned_off_stay_off() -> None:
    off = MetricsPort("worker", "STOREFRONT_WORKER_METRICS_PORT", 0)
    assert choose_metrics_ports([off], lambda p: False, avoid=set())[0].port == 0


def test_no_free_block_left_is_one_line() -> None:
    with pytest.raises(DevStackError, match="no free ports for the worker's /metrics"):
        choose_metrics_ports([WORKER], lambda p: False, avoid=set(), highest=9105)


# ---------------------------------------------------------------------------------------------
# The port probe against real sockets.
# ---------------------------------------------------------------------------------------------


def test_the_probe_sees_a_listening_port_and_finds_the_next_free_one() -> None:
    port = free_port()
    assert not port_in_use("127.0.0.1", port)
    with listening(port):
        problem = listen_error("127.0.0.1", port)
        assert problem is not None and "in use" in str(problem)
        assert port_in_use("0.0.0.0", port)  # a wildcard bind collides with it too
        found = free_port_block("127.0.0.1", port)
        assert found is not None and found > port

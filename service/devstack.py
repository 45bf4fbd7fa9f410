"""The house-keeping of ``storefront dev``: one stack per data directory, ports for its
children, and what it tells whoever started it."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from service.services.devshop import DevAdmin, SeedResult

LOCK_FILE = "dev.lock"


class DevStackError(RuntimeError):
    """``storefront dev`` cannot start; the message is one line saying what to do."""


# ---------------------------------------------------------------------------------------------
# One stack per data directory.
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def data_dir_lock(data_dir: Path, holder: str) -> Iterator[None]:
    """Hold the data directory for this stack, or raise :class:`DevStackError` naming the stack
    that holds it. Two stacks on one directory would share its embedded Redis, and the first to
    stop would shut it down under the other. The lock goes with the process, however it ends."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = (data_dir / LOCK_FILE).open("a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            other = handle.read().strip() or "another process"
            raise DevStackError(
                f"another `storefront dev` ({other}) is using the data dir {data_dir}; stop it, "
                "or run this one with a data dir of its own, e.g. "
                f"STOREFRONT_DATA_DIR={data_dir}-2 storefront dev --port 8001"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(holder + "\n")
        handle.flush()
        yield
    finally:
        handle.close()


# ---------------------------------------------------------------------------------------------
# Metrics ports of the worker and the scheduler.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricsPort:
    """A child's /metrics port (or block of ports, one per worker process)."""

    who: str
    setting: str
    port: int
    count: int = 1
    # Set by the user: taken means an error, not another port.
    explicit: bool = False


@dataclass(frozen=True)
class ChosenPort:
    wanted: MetricsPort
    port: int

    @property
    def moved(self) -> bool:
        return self.port != self.wanted.port


def choose_metrics_ports(
    wanted: list[MetricsPort],
    is_free: Callable[[int], bool],
    avoid: set[int],
    highest: int = 65535,
) -> list[ChosenPort]:
    """A port (block) for each child: the wanted one when free, otherwise, unless the user set
    it, the next free block above it. Blocks never overlap each other or ``avoid`` (the API's
    port): the defaults themselves overlap once the worker runs two processes (9100-9101 and
    the scheduler's 9101)."""
    taken = set(avoid)
    chosen: list[ChosenPort] = []
    for request in wanted:
        if request.port == 0:  # /metrics off
            chosen.append(ChosenPort(request, 0))
            continue
        base = request.port
        while True:
            block = range(base, base + request.count)
            if block.stop - 1 > highest:
                raise DevStackError(f"no free ports for the {request.who}'s /metrics above {base}")
            busy = next((p for p in block if p in taken or not is_free(p)), None)
            if busy is None:
                break
            if request.explicit:
                raise DevStackError(
                    f"port {busy} for the {request.who}'s /metrics ({request.setting}) is in use; "
                    "set another port, or 0 to turn it off"
                )
            base = busy + 1
        taken.update(range(base, base + request.count))
        chosen.append(ChosenPort(request, base))
    return chosen


def metrics_port_note(choice: ChosenPort) -> str:
    first = choice.wanted.port
    span = f"{first}-{first + choice.wanted.count - 1}" if choice.wanted.count > 1 else str(first)
    return f"{choice.wanted.who.capitalize()} /metrics on port {choice.port} ({span} in use)"


# ---------------------------------------------------------------------------------------------
# The banner.
# ---------------------------------------------------------------------------------------------


def admin_lines(admin: DevAdmin | None, environment: str) -> list[str]:
    """What to tell about the administrator (markup for the console, never for a log)."""
    if admin is None:
        return [
            f"No administrator generated (STOREFRONT_ENVIRONMENT={environment}); set "
            "STOREFRONT_ADMIN_EMAIL and STOREFRONT_ADMIN_PASSWORD for one."
        ]
    if admin.state == "configured":
        return [f"Administrator [bold]{admin.email}[/] (password: STOREFRONT_ADMIN_PASSWORD)"]
    if admin.state == "password_unknown":
        return [
            f"Administrator [bold]{admin.email}[/] exists, but its password is not in "
            f"{admin.password_file}: [bold]storefront dev --reset-admin[/] gives it a new one."
        ]
    what = {"created": "created", "existing": "", "reset": "new password"}[admin.state]
    return [
        f"Administrator [bold]{admin.email}[/]  password [bold]{admin.password}[/]"
        + (f"  ({what})" if what else ""),
        f"  kept in {admin.password_file} (mode 0600); --reset-admin makes a new one",
    ]


def seed_line(seeded: SeedResult) -> str:
    total = len(seeded.added) + len(seeded.present)
    if not seeded.added:
        return f"Sample products: all {total} already in the catalogue"
    return f"Sample products: {len(seeded.added)} added ({total} in all)"


def holder_text(url: str) -> str:
    return f"pid {os.getpid()}, {url}"

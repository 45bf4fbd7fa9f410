"""Where log lines go: standard output, one writer at a time, access lines in batches.

An access line is written for every request. Gathered and written a batch at a time, they cost
the API less than written one by one between the rest of each request's work (bench/: about 4 %
of the cached read's throughput). A gathered line waits at most ``FLUSH_INTERVAL_SECONDS``, or
until ``MAX_GATHERED`` lines wait; any other line, and the exit of the process, writes the
waiting ones first, so the stream keeps its order. A batch that cannot be written (a full or
closed pipe) is dropped rather than failing the request that filled it.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import os
import sys
import threading
import time
from typing import Any

import orjson

FLUSH_INTERVAL_SECONDS = 0.1
MAX_GATHERED = 256

_lock = threading.Lock()
_gathered: collections.deque[dict[str, Any]] = collections.deque()
_flusher: threading.Thread | None = None


def render_json(obj: Any, default: Any = None) -> str:
    """One JSON line's text (orjson; datetimes in RFC 3339 UTC with ``Z``)."""
    return orjson.dumps(obj, default=default or str, option=orjson.OPT_UTC_Z).decode()


def write_line(line: str | None) -> None:
    """Write the gathered lines, then ``line``, to whatever ``sys.stdout`` is now."""
    with _lock:
        lines = [render_json(event) for event in _drain()]
        if line is not None:
            lines.append(line)
        if lines:
            stream = sys.stdout
            stream.write("\n".join(lines) + "\n")
            stream.flush()


def gather(event: dict[str, Any]) -> None:
    """Queue a complete event to be rendered as JSON and written with the next batch."""
    _gathered.append(event)  # deque.append: atomic, no lock on the request path
    if len(_gathered) >= MAX_GATHERED:
        # A batch that cannot be written (a full or closed pipe) is dropped: it must not fail
        # the request that happened to fill it, and reporting it would be one more line.
        with contextlib.suppress(OSError):
            write_line(None)
    elif _flusher is None:
        _start_flusher()


def flush() -> None:
    """Write the gathered lines now."""
    if _gathered:
        write_line(None)


def _drain() -> list[dict[str, Any]]:
    events = []
    take = _gathered.popleft
    while _gathered:
        events.append(take())
    return events


def _start_flusher() -> None:
    global _flusher
    with _lock:
        if _flusher is None:
            _flusher = threading.Thread(
                target=_flush_periodically, name="storefront-log-flush", daemon=True
            )
            _flusher.start()


def _flush_periodically() -> None:
    while True:
        time.sleep(FLUSH_INTERVAL_SECONDS)
        with contextlib.suppress(OSError):  # see gather()
            flush()


def _start_afresh_in_child() -> None:
    # A forked child inherits neither the thread nor a usable lock (another thread may hold it),
    # and the lines still gathered are its parent's to write, not its own.
    global _flusher, _lock
    _flusher = None
    _lock = threading.Lock()
    _gathered.clear()


os.register_at_fork(after_in_child=_start_afresh_in_child)
atexit.register(flush)

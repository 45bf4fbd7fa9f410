"""Password hashing off the event loop: argon2 in worker threads, a bounded number at a time."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from service.core import security
from service.core.errors import ServiceUnavailableError

T = TypeVar("T")

# How much lower than the event loop's the hashing threads' CPU priority is, in Linux nice
# levels (each about 1.25x less CPU under contention). Where CPU is short, as under a pod's
# limit, a request waiting for the loop then comes before a hash: with 20 logins in flight on
# one CPU, /livez answered in 3 ms (p50) instead of 9-10 ms, against 2 ms at rest (bench/).
NICENESS = 10


def _lower_priority() -> None:
    """Lower this thread's CPU priority. On Linux a nice level belongs to a thread, and the
    threads argon2 starts for its lanes inherit it; elsewhere this does nothing."""
    with contextlib.suppress(AttributeError, OSError):
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + NICENESS))


class PasswordHashingBusyError(ServiceUnavailableError):
    default_message = "Too many sign-ins at once, try again shortly"


class PasswordHashing:
    """Hashes and verifies passwords in worker threads, at most ``concurrency`` at a time.

    An argon2id hash takes tens of milliseconds of CPU and 64 MiB of memory. On the event loop
    it stalls every other request, the liveness probe included; unbounded, a burst of logins
    would take a pod past its memory limit. argon2-cffi releases the GIL, so the loop keeps
    serving while the threads hash, and they hash at a lower CPU priority. A caller waits at
    most ``wait_seconds`` for a slot and then gets a 503 with ``Retry-After``: a flood is shed,
    never queued without end.
    """

    def __init__(self, concurrency: int, wait_seconds: float) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        # Threads of their own: the loop's default executor also resizes images, and a hash
        # must neither wait behind that work nor take its threads.
        self._threads = ThreadPoolExecutor(
            concurrency, thread_name_prefix="password-hash", initializer=_lower_priority
        )
        self._wait_seconds = wait_seconds
        self._retry_after = str(max(1, math.ceil(wait_seconds)))
        self._running = 0
        self._waiting = 0

    @property
    def in_progress(self) -> int:
        """Hashes running in a thread now (never more than the concurrency)."""
        return self._running

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot."""
        return self._waiting

    async def hash(self, password: str) -> str:
        return await self._run(security.hash_password, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        return await self._run(security.verify_password, password_hash, password)

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def _run(self, work: Callable[..., T], *args: str) -> T:
        self._waiting += 1
        try:
            async with asyncio.timeout(self._wait_seconds):
                await self._slots.acquire()
        except TimeoutError:
            raise PasswordHashingBusyError(headers={"Retry-After": self._retry_after}) from None
        finally:
            self._waiting -= 1
        try:
            done = asyncio.get_running_loop().run_in_executor(self._threads, work, *args)
        except BaseException:  # the threads are shut down: the app is stopping
            self._slots.release()
            raise
        self._running += 1
        # The slot is given back when the thread is done, not when the caller stops waiting: a
        # cancelled request must not let another hash (and its 64 MiB) start beside its own.
        done.add_done_callback(self._release)
        return await asyncio.shield(done)

    def _release(self, _: object) -> None:
        self._running -= 1
        self._slots.release()

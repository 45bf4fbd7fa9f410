"""Password hashing runs in worker threads, a bounded number at a time: a burst of logins neither
stalls the event loop (and with it the liveness probe) nor queues without end (503, Retry-After).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from service.core import security
from service.core.passwords import NICENESS, PasswordHashing, PasswordHashingBusyError
from service.core.settings import Settings
from service.services.users import _DUMMY_HASH
from tests.components.redis import RedisServer
from tests.components.storefront import ADMIN_EMAIL as PROCESS_ADMIN_EMAIL
from tests.components.storefront import ADMIN_PASSWORD as PROCESS_ADMIN_PASSWORD
from tests.components.storefront import start_storefront
from tests.service.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, asgi_client, running_app

# Long enough for any machine, however loaded; a test waits this long only if it is broken.
PATIENCE_S = 30


class Gate:
    """Stands in for a hash function: each call blocks in its thread until opened, so a test
    decides when the hashes in flight finish."""

    def __init__(self, real: Callable[..., object]) -> None:
        self.real = real
        self.opened = threading.Event()
        self.lock = threading.Lock()
        self.entered = 0
        self.inside = 0
        self.most_inside = 0
        self.threads: set[str] = set()

    def __call__(self, *args: str) -> object:
        with self.lock:
            self.entered += 1
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            self.threads.add(threading.current_thread().name)
        try:
            if not self.opened.wait(PATIENCE_S):
                raise AssertionError("the test never opened the gate")
            return self.real(*args)
        finally:
            with self.lock:
                self.inside -= 1

    async def until_entered(self, count: int) -> None:
        deadline = time.monotonic() + PATIENCE_S
        while self.entered < count:
            assert time.monotonic() < deadline, f"{self.entered} of {count} hashes started"
            await asyncio.sleep(0.01)


@pytest.fixture
def gated_hash(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    gate = Gate(security.hash_password)
    monkeypatch.setattr(security, "hash_password", gate)
    yield gate
    gate.opened.set()


@pytest.fixture
def gated_verify(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    gate = Gate(security.verify_password)
    monkeypatch.setattr(security, "verify_password", gate)
    yield gate
    gate.opened.set()


async def test_hashes_and_verifies_with_argon2id_in_a_worker_thread() -> None:
    passwords = PasswordHashing(concurrency=2, wait_seconds=PATIENCE_S)
    try:
        hashed = await passwords.hash("correct-horse-battery")
        assert hashed.startswith("$argon2id$")
        assert await passwords.verify(hashed, "correct-horse-battery") is True
        assert await passwords.verify(hashed, "wrong") is False
        assert await passwords.verify("not-a-hash", "wrong") is False
    finally:
        passwords.close()


async def test_the_event_loop_thread_never_hashes(gated_hash: Gate) -> None:
    passwords = PasswordHashing(concurrency=1, wait_seconds=PATIENCE_S)
    try:
        gated_hash.opened.set()
        await passwords.hash("pw")
    finally:
        passwords.close()
    assert gated_hash.threads and threading.current_thread().name not in gated_hash.threads
    assert all(name.startswith("password-hash") for name in gated_hash.threads)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="nice levels per thread")
async def test_hashing_threads_yield_the_cpu_to_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    niceness: list[int] = []
    real = security.hash_password

    def recording(password: str) -> str:
        niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return real(password)

    monkeypatch.setattr(security, "hash_password", recording)
    passwords = PasswordHashing(concurrency=1, wait_seconds=PATIENCE_S)
    try:
        await passwords.hash("pw")
    finally:
        passwords.close()
    loop_niceness = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert niceness == [min(19, loop_niceness + NICENESS)]


async def test_no_more_hashes_run_at_once_than_the_concurrency(gated_hash: Gate) -> None:
    passwords = PasswordHashing(concurrency=2, wait_seconds=PATIENCE_S)
    try:
        calls = [asyncio.create_task(passwords.hash(f"pw-{i}")) for i in range(6)]
        await gated_hash.until_entered(2)
        # Every caller has run up to its slot by now: two hold one, four wait.
        assert (passwords.in_progress, passwords.waiting) == (2, 4)
        assert gated_hash.entered == 2
        gated_hash.opened.set()
        hashes = await asyncio.gather(*calls)
    finally:
        passwords.close()
    assert len(set(hashes)) == 6
    assert gated_hash.most_inside == 2
    assert (passwords.in_progress, passwords.waiting) == (0, 0)


async def test_a_caller_that_finds_no_free_slot_in_time_is_turned_away(gated_hash: Gate) -> None:
    passwords = PasswordHashing(concurrency=1, wait_seconds=0.05)
    try:
        holder = asyncio.create_task(passwords.hash("first"))
        await gated_hash.until_entered(1)
        with pytest.raises(PasswordHashingBusyError) as refused:
            await passwords.hash("second")
        assert refused.value.status_code == 503
        assert refused.value.code == "SERVICE_UNAVAILABLE"
        assert refused.value.headers == {"Retry-After": "1"}
        gated_hash.opened.set()
        await holder
        assert (await passwords.hash("third")).startswith("$argon2id$")  # the slot came back
    finally:
        passwords.close()


async def test_a_cancelled_caller_keeps_its_slot_until_its_hash_is_done(gated_hash: Gate) -> None:
    passwords = PasswordHashing(concurrency=1, wait_seconds=PATIENCE_S)
    try:
        cancelled = asyncio.create_task(passwords.hash("first"))
        await gated_hash.until_entered(1)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        # Its thread still hashes (and holds its memory): nobody else may start yet.
        following = asyncio.create_task(passwords.hash("second"))
        await asyncio.sleep(0)
        assert (passwords.in_progress, passwords.waiting, gated_hash.entered) == (1, 1, 1)
        gated_hash.opened.set()
        assert (await following).startswith("$argon2id$")
    finally:
        passwords.close()


async def test_login_beyond_the_bound_is_a_503_in_the_error_format(
    settings: Settings, gated_verify: Gate
) -> None:
    one_slot = settings.model_copy(
        update={"password_hash_concurrency": 1, "password_hash_wait_seconds": 0.2}
    )
    async with running_app(one_slot) as app, asgi_client(app) as client:
        first = asyncio.create_task(
            client.post(
                "/api/v1/auth/token", data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
            )
        )
        await gated_verify.until_entered(1)
        # An unknown e-mail waits for a slot like any login, so it is turned away the same way.
        turned_away = await client.post(
            "/api/v1/auth/token",
            data={"username": "nobody@example.com", "password": "whatever-it-is"},
        )
        gated_verify.opened.set()
        accepted = await first
    assert turned_away.status_code == 503
    assert turned_away.headers["retry-after"] == "1"
    error = turned_away.json()["error"]
    assert error["code"] == "SERVICE_UNAVAILABLE"
    assert error["request_id"] == turned_away.headers["x-request-id"]
    assert "try again" in error["message"]
    assert accepted.status_code == 200 and accepted.json()["access_token"]


async def test_an_unknown_email_costs_the_same_verification_as_a_wrong_password(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    verified: list[tuple[str, str]] = []
    real = security.verify_password

    def recording(password_hash: str, password: str) -> bool:
        verified.append((password_hash, threading.current_thread().name))
        return real(password_hash, password)

    monkeypatch.setattr(security, "verify_password", recording)
    for email in ("nobody@example.com", ADMIN_EMAIL):
        response = await client.post(
            "/api/v1/auth/token", data={"username": email, "password": "not-the-password"}
        )
        assert response.status_code == 401
    (unknown_hash, unknown_thread), (known_hash, known_thread) = verified
    assert unknown_hash == _DUMMY_HASH and known_hash != _DUMMY_HASH
    # The same argon2 parameters, in the same pool of threads: the same cost.
    assert unknown_hash.rsplit("$", 2)[0] == known_hash.rsplit("$", 2)[0]
    assert unknown_thread.startswith("password-hash") and known_thread.startswith("password-hash")


LOGINS = 20
# The liveness probe gives up after 2 s; hashing on the event loop made it wait longer than
# this for 20 logins. Off the loop, it answers in milliseconds.
PROBE_BOUND_S = 1.0


@pytest.mark.slow
@pytest.mark.redis
async def test_livez_stays_fast_on_a_real_server_while_logins_run(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with redis_server.client(6) as redis_client:
        redis_client.flushdb()
    service = await asyncio.to_thread(
        start_storefront,
        tmp_path,
        redis_server.url_for(6),
        # Every login is answered (none shed), however slow this machine hashes.
        extra_env={"STOREFRONT_PASSWORD_HASH_WAIT_SECONDS": "60"},
    )
    try:
        limits = httpx.Limits(max_connections=LOGINS)
        async with (
            httpx.AsyncClient(base_url=service.url, timeout=120, limits=limits) as logins,
            httpx.AsyncClient(base_url=service.url, timeout=120) as prober,
        ):
            # Connections opened first, so the burst is one of logins, not of TCP handshakes.
            await asyncio.gather(*(logins.get("/livez") for _ in range(LOGINS)))
            await prober.get("/livez")

            finished: list[float] = []

            async def login(number: int) -> int:
                known = number % 2 == 0
                response = await logins.post(
                    "/api/v1/auth/token",
                    data={
                        "username": PROCESS_ADMIN_EMAIL if known else f"x{number}@example.com",
                        "password": PROCESS_ADMIN_PASSWORD if known else "not-a-password",
                    },
                )
                finished.append(time.monotonic())
                return response.status_code

            burst = [asyncio.create_task(login(n)) for n in range(LOGINS)]
            probes: list[tuple[float, float]] = []  # (answered at, seconds taken)
            while not all(task.done() for task in burst):
                sent = time.monotonic()
                assert (await prober.get("/livez")).status_code == 200
                answered = time.monotonic()
                probes.append((answered, answered - sent))
                await asyncio.sleep(0.02)
            statuses = await asyncio.gather(*burst)
    finally:
        await asyncio.to_thread(service.stop)

    assert sorted(statuses) == [200] * (LOGINS // 2) + [401] * (LOGINS // 2)
    during = [took for answered, took in probes if answered < max(finished)]
    assert during, "no probe was answered while logins were in flight"
    assert max(during) < PROBE_BOUND_S, f"slowest /livez during the burst: {max(during):.3f} s"

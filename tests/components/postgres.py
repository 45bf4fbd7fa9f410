"""PostgreSQL fixtures: a session-scoped server (initdb in a temp dir, run as a non-root user when
we are root) on a free loopback port, and a fresh database per test (`postgres_url`)."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.components.ports import free_port
from tests.components.process import ManagedProcess, find_binary, start_process

TEST_USER = "storefront-test"  # system user that owns the data directory when we run as root
SUPERUSER = "postgres"  # database superuser created by initdb (trust authentication)


def postgres_bindir() -> Path | None:
    """Directory holding initdb/postgres: the newest /usr/lib/postgresql/*/bin, else PATH."""
    versions = []
    for candidate in Path("/usr/lib/postgresql").glob("*/bin"):
        if (candidate / "postgres").is_file() and candidate.parent.name.isdigit():
            versions.append((int(candidate.parent.name), candidate))
    if versions:
        return max(versions)[1]
    initdb = find_binary("initdb")
    return Path(initdb).parent if initdb else None


def _server_account() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as (it refuses root), or None to run as ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
            check=False,
            capture_output=True,
        )
        try:
            entry = pwd.getpwnam(TEST_USER)
        except KeyError:
            entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


@dataclass(frozen=True)
class PostgresServer:
    """A running PostgreSQL server; trust authentication for the `postgres` superuser."""

    host: str
    port: int
    bindir: Path
    socket_dir: Path
    process: ManagedProcess
    user: str = SUPERUSER

    def dsn_for(self, dbname: str) -> str:
        """libpq/asyncpg DSN: postgresql://postgres@127.0.0.1:PORT/dbname."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def url_for(self, dbname: str) -> str:
        """SQLAlchemy async URL: postgresql+asyncpg://postgres@127.0.0.1:PORT/dbname."""
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{dbname}"

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL with psql (ON_ERROR_STOP); return its unaligned, tuples-only output."""
        argv = [
            str(self.bindir / "psql"),
            "-X", "-q", "-A", "-t",
            "-v", "ON_ERROR_STOP=1",
            "-h", self.host,
            "-p", str(self.port),
            "-U", self.user,
            "-d", dbname,
            "-c", sql,
        ]  # fmt: skip
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"psql failed ({result.returncode}): {sql}\n{result.stderr}")
        return result.stdout

    def create_database(self, name: str | None = None) -> str:
        name = name or f"test_{uuid.uuid4().hex[:16]}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"unsafe database name: {name!r}")
        self.psql(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(frozen=True)
class PostgresDatabase:
    """A database created for one test."""

    name: str
    url: str
    dsn: str


MISSING_BINARIES = (
    "PostgreSQL server binaries (initdb, postgres) not found in /usr/lib/postgresql/*/bin "
    "or on PATH: run `make tools`"
)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    bindir = postgres_bindir()
    if bindir is None or not (bindir / "initdb").is_file():
        pytest.fail(MISSING_BINARIES, pytrace=False)
    with running_postgres(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@contextlib.contextmanager
def running_postgres(
    logdir: Path, wrap: Callable[[list[str]], list[str]] | None = None
) -> Iterator[PostgresServer]:
    """Start a throwaway PostgreSQL server (logs in ``logdir``); ``wrap`` may prefix its
    command line (the benchmarks pin it to a CPU)."""
    bindir = postgres_bindir()
    if bindir is None or not (bindir / "initdb").is_file():
        raise RuntimeError(MISSING_BINARIES)
    logdir.mkdir(parents=True, exist_ok=True)
    account = _server_account()
    # pytest's temp dirs are private to root; the server user needs its own directory.
    base = Path(tempfile.mkdtemp(prefix="storefront-pg-"))
    datadir, socket_dir = base / "data", base / "sock"
    datadir.mkdir()
    socket_dir.mkdir()
    uid, gid = account if account else (None, None)
    if account:
        for path in (base, datadir, socket_dir):
            os.chown(path, *account)
    try:
        init_argv = [
            str(bindir / "initdb"),
            "-D", str(datadir),
            "-U", SUPERUSER,
            "-A", "trust",
            "-E", "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ]  # fmt: skip
        init = subprocess.run(
            init_argv,
            capture_output=True,
            text=True,
            user=uid,
            group=gid,
            extra_groups=[] if gid is not None else None,
            cwd=base,
            timeout=120,
            check=False,
        )
        (logdir / "initdb.log").write_text(init.stdout + init.stderr)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout}{init.stderr}")
        host, port = "127.0.0.1", free_port()
        argv = [
            str(bindir / "postgres"),
            "-D", str(datadir),
            "-k", str(socket_dir),
            "-c", f"listen_addresses={host}",
            "-c", f"port={port}",
            "-c", "fsync=off",
            "-c", "full_page_writes=off",
            "-c", "synchronous_commit=off",
            "-c", "max_connections=200",
        ]  # fmt: skip

        def ready() -> bool:
            probe = subprocess.run(
                [str(bindir / "pg_isready"), "-q", "-h", host, "-p", str(port), "-U", SUPERUSER],
                capture_output=True,
                timeout=5,
                check=False,
            )
            return probe.returncode == 0

        process = start_process(
            "postgres",
            wrap(argv) if wrap else argv,
            logdir / "postgres.log",
            ready,
            timeout=60,
            cwd=base,
            user=uid,
            group=gid,
            stop_signal=signal.SIGINT,  # "fast" shutdown: do not wait for clients
        )
        try:
            yield PostgresServer(host, port, bindir, socket_dir, process)
        finally:
            process.stop()
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(base)


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> Iterator[PostgresDatabase]:
    """A fresh database (test_<uuid>) for this test, dropped afterwards."""
    name = postgres_server.create_database()
    try:
        yield PostgresDatabase(name, postgres_server.url_for(name), postgres_server.dsn_for(name))
    finally:
        postgres_server.drop_database(name)


@pytest.fixture
def postgres_url(postgres_database: PostgresDatabase) -> str:
    """SQLAlchemy async URL (postgresql+asyncpg://...) of a fresh database for this test."""
    return postgres_database.url

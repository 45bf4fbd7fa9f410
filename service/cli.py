"""The ``storefront`` command line: run the API, the dev stack, migrations and the other parts."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console

from service import __version__
from service.core.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from service.services.devshop import DevAdmin, SeedResult

app = typer.Typer(
    name="storefront",
    help="Storefront: a commerce API platform (API, worker, scheduler, operator).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Markdown joins a paragraph's wrapped lines; Typer's default keeps each docstring line break.
    rich_markup_mode="markdown",
)
err = Console(stderr=True, soft_wrap=True)

LogFormat = Annotated[
    str | None,
    typer.Option(
        "--log-format",
        help="json, console or auto (console only on a terminal). Overrides STOREFRONT_LOG_FORMAT.",
    ),
]


def settings_or_exit(**overrides: object) -> Settings:
    """Load settings; a wrong one ends the command with one line naming it."""
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        err.print(f"[red]storefront: invalid setting:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None


@app.command()
def version() -> None:
    """Print the Storefront version."""
    typer.echo(__version__)


@app.command()
def migrate(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
    wait: Annotated[
        float,
        typer.Option(help="Seconds to wait for the database to accept connections.", min=0),
    ] = 60,
) -> None:
    """Apply database migrations to STOREFRONT_DATABASE_URL (or the embedded SQLite file)."""
    from service.migrations import DatabaseUnreachable, upgrade, wait_for_database

    settings = settings_or_exit()
    where = settings.resolved_database_url.split("@")[-1]
    try:
        with err.status(f"Waiting for the database at {where}"):
            wait_for_database(settings, timeout=wait)
    except DatabaseUnreachable as exc:
        err.print(f"[red]storefront: no database at {where} after {wait:g} s:[/] {exc}",
                  highlight=False)  # fmt: skip
        raise typer.Exit(1) from None
    with err.status(f"Migrating {where} to {revision}"):
        upgrade(settings, revision)
    err.print(f"[green]Database at {revision}.[/]")


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = 8000,
    migrate_first: Annotated[
        bool, typer.Option("--migrate/--no-migrate", help="Apply migrations before serving.")
    ] = False,
    log_format: LogFormat = None,
    graceful_timeout: Annotated[
        int, typer.Option(help="Seconds in-flight requests get to finish on shutdown.")
    ] = 20,
    proxy_headers: Annotated[
        bool, typer.Option(help="Trust X-Forwarded-* from a proxy in front (costs throughput).")
    ] = False,
) -> None:
    """Run the HTTP API (one uvicorn process; scale with replicas)."""
    import uvicorn

    from service.main import create_app

    settings = settings_or_exit(log_format=log_format)
    _require_free_api_port(host, port)
    if migrate_first:
        from service.migrations import upgrade

        upgrade(settings)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        access_log=False,
        proxy_headers=proxy_headers,
        server_header=False,
        log_config=None,
        timeout_graceful_shutdown=graceful_timeout,
        lifespan="on",
    )


@app.command()
def dev(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = 8000,
    migrate_first: Annotated[
        bool, typer.Option("--migrate/--no-migrate", help="Apply migrations before serving.")
    ] = True,
    worker: Annotated[bool, typer.Option(help="Also run the worker and the scheduler.")] = True,
    seed: Annotated[
        bool,
        typer.Option(
            "--seed",
            help="Add a few sample products, each once by SKU (a product with its SKU is left "
            "as it is).",
        ),
    ] = False,
    reset_admin: Annotated[
        bool,
        typer.Option(
            "--reset-admin",
            help="Give the generated administrator (admin@example.com) a new password.",
        ),
    ] = False,
    log_format: LogFormat = None,
) -> None:
    """Run everything on one machine: API, worker and scheduler on SQLite and embedded Redis.

    Data lives under STOREFRONT_DATA_DIR (default ./.storefront). Ctrl-C or SIGTERM stops
    every process this command started.

    In the dev environment the shop gets an administrator: STOREFRONT_ADMIN_EMAIL if set,
    otherwise admin@example.com with a generated password, printed here and kept in the data
    dir (mode 0600).
    """
    from service.devstack import DevStackError, data_dir_lock, holder_text

    os.environ.setdefault("STOREFRONT_ENVIRONMENT", "dev")
    settings = settings_or_exit(log_format=log_format)
    if seed and settings.environment == "production":
        _fail("--seed adds sample products, so it does not run in production", 2)
    if reset_admin and (settings.environment != "dev" or settings.admin_email is not None):
        _fail(
            "--reset-admin applies to the generated administrator: only with "
            "STOREFRONT_ENVIRONMENT=dev and no STOREFRONT_ADMIN_EMAIL",
            2,
        )
    url = f"http://{host}:{port}"
    try:
        with data_dir_lock(Path(settings.data_dir), holder_text(url)):
            _require_free_api_port(host, port)
            metrics_env = _metrics_ports(port) if worker else {}
            if log_format:
                metrics_env["STOREFRONT_LOG_FORMAT"] = log_format
            code = _run_dev_stack(
                settings, host, port, migrate_first, worker, seed, reset_admin, metrics_env
            )
    except DevStackError as exc:
        _fail(str(exc), 1)
    if code:
        raise typer.Exit(code)


def _fail(message: str, code: int) -> NoReturn:
    """End the command with one line."""
    err.print(f"[red]storefront:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _require_free_api_port(host: str, port: int) -> None:
    from service.core.ports import free_port_block, listen_error

    if port == 0:  # any free port, picked by the server itself
        return
    problem = listen_error(host, port)
    if problem is None:
        return
    if getattr(problem, "errno", None) == errno.EADDRINUSE:
        free = free_port_block(host, port + 1)
        hint = f" ({free} is free)" if free else ""
        _fail(f"port {port} on {host} is in use; choose another with --port{hint}", 1)
    _fail(f"cannot listen on {host}:{port} ({problem}); choose another --host or --port", 1)


def _metrics_ports(api_port: int) -> dict[str, str]:
    """The worker's and scheduler's /metrics ports, moved up when taken (unless set by the
    user), as environment for the children; each move is reported."""
    from service.core.ports import ANY_INTERFACE, port_in_use
    from service.devstack import MetricsPort, choose_metrics_ports, metrics_port_note
    from worker.settings import load_worker_settings

    try:
        ws = load_worker_settings()
    except SettingsError as exc:
        _fail(f"invalid setting: {exc}", 2)
    worker_port, scheduler_port = (
        "STOREFRONT_WORKER_METRICS_PORT",
        "STOREFRONT_WORKER_SCHEDULER_METRICS_PORT",
    )
    wanted = [
        MetricsPort(
            "worker", worker_port, ws.metrics_port, ws.processes, explicit=worker_port in os.environ
        ),
        MetricsPort(
            "scheduler",
            scheduler_port,
            ws.scheduler_metrics_port,
            explicit=scheduler_port in os.environ,
        ),
    ]
    chosen = choose_metrics_ports(
        wanted, lambda p: not port_in_use(ANY_INTERFACE, p), avoid={api_port}
    )
    for choice in chosen:
        if choice.moved:
            err.print(metrics_port_note(choice), highlight=False)
    return {choice.wanted.setting: str(choice.port) for choice in chosen}


def _run_dev_stack(
    settings: Settings,
    host: str,
    port: int,
    migrate_first: bool,
    worker: bool,
    seed: bool,
    reset_admin: bool,
    child_env: dict[str, str],
) -> int:
    """Prepare the shop, run the children until a signal or until one of them stops; returns
    the exit code."""
    from sqlalchemy.exc import SQLAlchemyError

    from service.core.redis import EmbeddedRedis
    from service.migrations import upgrade
    from service.services import devshop

    data_dir = Path(settings.data_dir)
    embedded: EmbeddedRedis | None = None
    env = {**os.environ, **child_env}
    if settings.redis_url is None:
        embedded = EmbeddedRedis(data_dir)
        env["STOREFRONT_REDIS_URL"] = embedded.start()
        err.print(f"Embedded Redis at {env['STOREFRONT_REDIS_URL']}")
    children: list[subprocess.Popen[bytes]] = []
    stopping = False
    try:
        if migrate_first:
            with err.status("Applying database migrations"):
                upgrade(settings)
        try:
            admin, seeded = asyncio.run(
                devshop.prepare(settings, seed=seed, reset_admin=reset_admin)
            )
        except SQLAlchemyError as exc:
            reason = str(exc.__cause__ or exc).splitlines()[0]
            err.print(
                f"[red]storefront: cannot prepare the shop's database:[/] {reason} "
                "(without --no-migrate, migrations are applied first)",
                highlight=False,
            )
            return 1
        names = ["api"] + (["worker", "scheduler"] if worker else [])
        commands = {"api": ["api", "--host", host, "--port", str(port)]}
        for name in names:
            argv = [sys.executable, "-m", "service.cli", *commands.get(name, [name])]
            children.append(subprocess.Popen(argv, env=env))

        def stop(signum: int, _: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        announced = False
        while not stopping and all(child.poll() is None for child in children):
            # Once the API answers, so the banner is not lost among the children's start-up lines.
            if not announced and (port == 0 or _api_is_up(host, port)):
                announced = True
                where = f"http://{host}:{port}" if port else f"http://{host} (a port of its choice)"
                _print_banner(where, settings, admin, seeded)
            time.sleep(0.2)
    finally:
        _stop_children(children)
        if embedded is not None:
            embedded.stop()
    if stopping:
        return 0
    for name, child in zip(names, children, strict=True):
        if child.returncode not in (0, -signal.SIGTERM, -signal.SIGINT):
            err.print(
                f"[red]storefront: the {name} stopped (exit code {child.returncode});[/] "
                "everything else was stopped too.",
                highlight=False,
            )
            return 1
    return 0


def _api_is_up(host: str, port: int) -> bool:
    import httpx

    # A wildcard address is reached on loopback.
    target = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)
    if ":" in target and not target.startswith("["):
        target = f"[{target}]"
    try:
        return httpx.get(f"http://{target}:{port}/livez", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _print_banner(
    url: str, settings: Settings, admin: DevAdmin | None, seeded: SeedResult | None
) -> None:
    """Printed on this command's terminal (stderr), never to the logs the children write: the
    administrator's password is meant for whoever started the shop, not for log collectors."""
    from service.devstack import admin_lines, seed_line

    lines = [f"[green]Storefront running[/] on {url} (docs at {url}/docs)"]
    lines += admin_lines(admin, settings.environment)
    if seeded is not None:
        lines.append(seed_line(seeded))
    err.print("\n".join(lines), highlight=False)


def _stop_children(children: list[subprocess.Popen[bytes]], timeout: float = 25) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@app.command()
def trace(
    request_id: Annotated[str, typer.Argument(help="The request's X-Request-ID.")],
    backend_url: Annotated[
        str | None,
        typer.Option(help="Jaeger query URL. Default: STOREFRONT_TRACE_BACKEND_URL."),
    ] = None,
    service: Annotated[
        str | None,
        typer.Option(
            help="Service name in the traces. Default: OTEL_SERVICE_NAME or storefront-api."
        ),
    ] = None,
    lookback: Annotated[
        float, typer.Option(help="How far back to search, in hours.", min=0.01)
    ] = 24,
) -> None:
    """Show the trace of one request as a span tree, found in Jaeger by its request ID."""
    from service.observability.trace_query import (
        TraceQueryError,
        fetch_traces,
        render_trace,
        span_trees,
    )
    from service.observability.tracing import DEFAULT_SERVICE_NAME

    # Only this one setting is read, so a machine without the service's secrets can still ask.
    url = (
        backend_url
        or os.environ.get("STOREFRONT_TRACE_BACKEND_URL")
        or str(Settings.model_fields["trace_backend_url"].default)
    )
    name = service or os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
    try:
        traces = fetch_traces(url, name, request_id, lookback_seconds=lookback * 3600)
    except TraceQueryError as exc:
        err.print(f"[red]storefront: {exc}[/]", highlight=False)
        raise typer.Exit(2) from None
    if not traces:
        err.print(
            f"No trace of service {name!r} has request.id={request_id} in {url} "
            "(unsampled requests are not exported; see STOREFRONT_TRACE_SAMPLE_RATIO).",
            highlight=False,
        )
        raise typer.Exit(1)
    out = Console(soft_wrap=False)
    for tree in span_trees(traces):
        out.print(render_trace(tree, request_id))


def _register_components() -> None:
    from storefront_operator.cli import register as register_operator

    from worker.cli import register as register_worker

    register_worker(app)
    register_operator(app)


_register_components()

if __name__ == "__main__":
    app()

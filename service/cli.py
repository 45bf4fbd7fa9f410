"""The ``storefront`` command line: run the API, the dev stack, migrations and the other parts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from service import __version__
from service.core.settings import Settings, SettingsError, load_settings

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
    log_format: LogFormat = None,
) -> None:
    """Run everything on one machine: API, worker and scheduler on SQLite and embedded Redis.

    Data lives under STOREFRONT_DATA_DIR (default ./.storefront). Ctrl-C or SIGTERM stops
    every process this command started.
    """
    from service.core.redis import EmbeddedRedis
    from service.migrations import upgrade

    os.environ.setdefault("STOREFRONT_ENVIRONMENT", "dev")
    settings = settings_or_exit(log_format=log_format)
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    embedded: EmbeddedRedis | None = None
    env = dict(os.environ)
    if log_format:
        env["STOREFRONT_LOG_FORMAT"] = log_format
    if settings.redis_url is None:
        embedded = EmbeddedRedis(data_dir)
        env["STOREFRONT_REDIS_URL"] = embedded.start()
        err.print(f"Embedded Redis at {env['STOREFRONT_REDIS_URL']}")
    if migrate_first:
        upgrade(settings)
    commands = [["api", "--host", host, "--port", str(port)]]
    if worker:
        commands += [["worker"], ["scheduler"]]
    children = [
        subprocess.Popen([sys.executable, "-m", "service.cli", *cmd], env=env) for cmd in commands
    ]
    err.print(f"[green]Storefront running[/] on http://{host}:{port} (docs at /docs)")

    stopping = False

    def stop(signum: int, _: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
    finally:
        _stop_children(children)
        if embedded is not None:
            embedded.stop()
    failed = [c for c in children if c.returncode not in (0, -signal.SIGTERM, -signal.SIGINT)]
    if failed and not stopping:
        raise typer.Exit(1)


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

"""``storefront worker`` and ``storefront scheduler``."""

from __future__ import annotations

from typing import Annotated

import typer

from service.core.settings import Settings, SettingsError
from worker.settings import WorkerSettings


def _load(
    log_format: str | None, **worker_overrides: object
) -> tuple[Settings, WorkerSettings, str]:
    from rich.console import Console

    from service.cli import settings_or_exit
    from worker.settings import load_worker_settings

    err = Console(stderr=True, soft_wrap=True)
    settings = settings_or_exit(log_format=log_format)
    try:
        worker_settings = load_worker_settings(
            **{k: v for k, v in worker_overrides.items() if v is not None}
        )
    except SettingsError as exc:
        err.print(f"[red]storefront: invalid setting:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    if settings.redis_url is None:
        err.print(
            "[red]storefront: STOREFRONT_REDIS_URL is not set.[/] The worker and the scheduler "
            "share the API's Redis; `storefront dev` sets it to its embedded Redis.",
            highlight=False,
        )
        raise typer.Exit(2)
    return settings, worker_settings, settings.redis_url


def _require_free_metrics_ports(port: int, count: int, who: str, how: str) -> None:
    """End the command with one line when a /metrics port is taken, before anything starts."""
    from rich.console import Console

    from service.core.ports import ANY_INTERFACE, port_in_use

    taken = next(
        (p for p in range(port, port + count) if port and port_in_use(ANY_INTERFACE, p)), None
    )
    if taken is not None:
        Console(stderr=True, soft_wrap=True).print(
            f"[red]storefront: port {taken} for the {who}'s /metrics is in use;[/] choose another "
            f"with {how} (0 turns /metrics off).",
            highlight=False,
        )
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the worker's commands to the ``storefront`` CLI."""

    @app.command()
    def worker(
        processes: Annotated[
            int | None,
            typer.Option(help="Worker processes (default STOREFRONT_WORKER_PROCESSES, 1).", min=1),
        ] = None,
        threads: Annotated[
            int | None,
            typer.Option(help="Threads per process (default STOREFRONT_WORKER_THREADS, 4).", min=1),
        ] = None,
        queues: Annotated[
            str | None,
            typer.Option(help="Comma-separated queues to consume (default: all of them)."),
        ] = None,
        metrics_port: Annotated[
            int | None,
            typer.Option(help="Port of /metrics (process i uses port+i); 0 disables.", min=0),
        ] = None,
        log_format: Annotated[
            str | None, typer.Option("--log-format", help="json, console or auto.")
        ] = None,
    ) -> None:
        """Run the job worker: consume the Redis queues until SIGTERM.

        On SIGTERM, running jobs get STOREFRONT_WORKER_SHUTDOWN_TIMEOUT_SECONDS to finish.
        """
        from worker.process import run_worker

        settings, worker_settings, redis_url = _load(
            log_format,
            processes=processes,
            threads=threads,
            queues=queues,
            metrics_port=metrics_port,
        )
        _require_free_metrics_ports(
            worker_settings.metrics_port,
            worker_settings.processes,
            "worker",
            "--metrics-port or STOREFRONT_WORKER_METRICS_PORT",
        )
        raise typer.Exit(run_worker(settings, worker_settings, redis_url))

    @app.command()
    def scheduler(
        metrics_port: Annotated[
            int | None,
            typer.Option(
                help="Port of /metrics (default 9101); 0 disables.",
                min=0,
            ),
        ] = None,
        log_format: Annotated[
            str | None, typer.Option("--log-format", help="json, console or auto.")
        ] = None,
    ) -> None:
        """Run the cron scheduler (STOREFRONT_WORKER_CRON).

        Run several for availability: one leads through a Redis lease and each tick fires once.
        """
        from worker.scheduler import run_scheduler

        settings, worker_settings, redis_url = _load(
            log_format, scheduler_metrics_port=metrics_port
        )
        _require_free_metrics_ports(
            worker_settings.scheduler_metrics_port,
            1,
            "scheduler",
            "--metrics-port or STOREFRONT_WORKER_SCHEDULER_METRICS_PORT",
        )
        raise typer.Exit(run_scheduler(settings, worker_settings, redis_url))

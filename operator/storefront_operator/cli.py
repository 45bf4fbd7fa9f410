"""``storefront operator`` (run the Kopf operator) and ``storefront crd`` (print/write the CRD)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from storefront_operator.crd import CRD_FILE

CHART_CRD_FILE = CRD_FILE.parents[2] / "charts" / "storefront" / "crds" / CRD_FILE.name


def register(app: typer.Typer) -> None:
    """Add the operator's commands to the ``storefront`` CLI."""
    app.command("operator")(operator)
    app.command("crd")(crd)


def operator(
    namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace", "-n", help="Watch only this namespace (repeatable; globs allowed)."
        ),
    ] = None,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Watch every namespace.")
    ] = False,
    standalone: Annotated[
        bool,
        typer.Option(
            "--standalone/--peering",
            help="Standalone (default): one replica, no peering objects. --peering: several "
            "replicas share a ClusterKopfPeering object and only the longest-running one acts; "
            "a standby takes over within --peering-lifetime seconds when it stops.",
        ),
    ] = True,
    peering_name: Annotated[
        str, typer.Option(help="Name of the ClusterKopfPeering object with --peering.")
    ] = "storefront-operator",
    peering_lifetime: Annotated[
        int,
        typer.Option(help="Seconds a replica's keep-alive is valid with --peering.", min=5),
    ] = 20,
    metrics_port: Annotated[
        int, typer.Option(help="Port serving /metrics for Prometheus; 0 disables.", min=0)
    ] = 9090,
    liveness_port: Annotated[
        int, typer.Option(help="Port serving /healthz for the liveness probe; 0 disables.", min=0)
    ] = 8080,
    resync_interval: Annotated[
        float,
        typer.Option(
            help="Seconds between safety-net checks of each instance's children (watch events "
            "repair drift at once in between).",
            min=1,
        ),
    ] = 600.0,
    scaling_interval: Annotated[
        float, typer.Option(help="Seconds between queue-depth reads for autoscaling.", min=1)
    ] = 15.0,
    apply_crd: Annotated[
        bool,
        typer.Option(
            "--apply-crd/--no-apply-crd",
            help="Apply the bundled CRD at start (needs RBAC on customresourcedefinitions).",
        ),
    ] = True,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
    log_format: Annotated[str, typer.Option(help="json, console or auto.")] = "json",
) -> None:
    """Run the Storefront operator: watch Storefront objects and reconcile their children."""
    if not namespace and not all_namespaces:
        raise typer.BadParameter("give --namespace NAME (repeatable) or --all-namespaces")
    if namespace and all_namespaces:
        raise typer.BadParameter("--namespace and --all-namespaces exclude each other")

    import random
    import time

    import kopf

    from service.observability.logging import configure_logging
    from storefront_operator import handlers
    from storefront_operator.config import OperatorConfig
    from storefront_operator.peering import priority

    config = OperatorConfig(
        resync_interval=resync_interval,
        peering_lifetime=peering_lifetime,
        scaling_interval=scaling_interval,
        metrics_port=metrics_port,
        apply_crd=apply_crd,
        log_level=log_level.upper(),
        log_format=log_format,
    )
    configure_logging(level=config.log_level, fmt=config.log_format, component="operator")
    handlers.configure(config)
    kopf.run(
        clusterwide=all_namespaces,
        namespaces=namespace or (),
        standalone=standalone,
        peering_name=None if standalone else peering_name,
        priority=None
        if standalone
        else priority(time.time_ns() // 1_000_000, random.randrange(1024)),
        liveness_endpoint=f"http://0.0.0.0:{liveness_port}/healthz" if liveness_port else None,
    )


def crd(
    write: Annotated[
        bool,
        typer.Option(
            "--write", help="Write operator/crds/ and the chart's crds/ copy instead of printing."
        ),
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead.")
    ] = None,
) -> None:
    """Print the Storefront CustomResourceDefinition generated from the spec models."""
    from storefront_operator.crd import crd_yaml

    text = crd_yaml()
    targets = [output] if output else [CRD_FILE, CHART_CRD_FILE] if write else []
    if not targets:
        typer.echo(text, nl=False)
        return
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        typer.echo(f"wrote {target}", err=True)

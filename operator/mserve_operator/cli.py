"""`mserve operator run`: the operator process (kopf) with peering, liveness and metrics."""

from __future__ import annotations

import logging
import random
import socket
import uuid

import click


@click.group()
def operator() -> None:
    """Run the Kubernetes operator that reconciles ModelServices."""


@operator.command()
@click.option(
    "--namespace", "-n", "namespaces", multiple=True, help="Serve only this namespace (repeatable)."
)
@click.option("--all-namespaces", "-A", "all_namespaces", is_flag=True, help="Serve the whole cluster.")
@click.option(
    "--standalone", is_flag=True, help="No peering: act even if other replicas run (development only)."
)
@click.option(
    "--priority", type=int, default=None, help="Peering priority; the highest-priority replica acts."
)
@click.option("--verbose", "-v", is_flag=True, help="Log kopf's debug messages.")
def run(
    namespaces: tuple[str, ...], all_namespaces: bool, standalone: bool, priority: int | None, verbose: bool
) -> None:
    """Reconcile ModelServices into optimization Jobs, Deployments, Services and HPAs."""
    if bool(namespaces) == all_namespaces:
        raise click.UsageError("give either --namespace NS (one or more) or --all-namespaces")
    import kopf

    from mserve_operator import handlers, pool_handlers  # noqa: F401 - registers the handlers
    from mserve_operator.settings import OperatorSettings

    settings = OperatorSettings()
    if priority is None:
        priority = settings.peering_priority
    if priority is None:
        # Replicas of one Deployment must not tie: kopf freezes all replicas sharing the top priority.
        priority = random.randint(1, 2**30)
    # kopf's default peering identity asks the passwd database for the user name, which a
    # container running under an arbitrary uid does not have.
    identity = f"mserve-operator@{socket.gethostname()}/{uuid.uuid4().hex[:8]}"
    kopf.configure(verbose=verbose)
    if not verbose:
        # kopf logs every routed child event at INFO; transitions are Events and status instead.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf.run(
        clusterwide=all_namespaces,
        namespaces=list(namespaces),
        standalone=standalone or None,
        priority=priority,
        identity=identity,
        # Naming the peering makes it mandatory: without kopf's peering CRDs the operator waits.
        peering_name=None if standalone else settings.peering_name,
        liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz"
        if settings.liveness_port
        else None,
    )

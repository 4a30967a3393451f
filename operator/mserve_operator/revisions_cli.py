"""`mserve revisions NAME` and `mserve rollback NAME [--to N]` (also `kubectl mserve ...`).

They act through `kubectl` with the caller's own kubeconfig, context and rights (exec
credential plugins included), as kubectl plugins do: listing needs `get` on modelservices, a
rollback `patch`. Going through kubectl also keeps the kubernetes client library (over a
second to import on a busy machine) off a rollback's clock. Decisions live in `rollback.py`;
this module reads, patches and waits.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import click
import yaml

from mserve_operator.revisions import serving_number
from mserve_operator.rollback import RevisionError, history_of, previous_number, rollback_patch, table

RESOURCE = "modelservices.mserve.io"
# The field manager a rollback's changes are recorded under (managedFields), like kubectl's.
ROLLBACK_MANAGER = "kubectl-mserve-rollback"


class Kubectl:
    """kubectl with the caller's --kubeconfig/--context, in one namespace."""

    def __init__(self, namespace: str | None, kubeconfig: str | None, context: str | None) -> None:
        self.binary = os.environ.get("MSERVE_KUBECTL", "kubectl")
        self.kubeconfig = kubeconfig or os.environ.get("KUBECONFIG", "~/.kube/config")
        self.flags = [f"--kubeconfig={kubeconfig}"] if kubeconfig else []
        self.flags += [f"--context={context}"] if context else []
        self.namespace = namespace or self._context_namespace()

    def run(self, *args: str) -> subprocess.CompletedProcess:
        command = [self.binary, *self.flags, *args]
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        except FileNotFoundError as exc:
            raise click.ClickException(
                f"{self.binary} not found: put kubectl on PATH or name it in MSERVE_KUBECTL"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise click.ClickException(f"{' '.join(command)} did not answer within 60 s") from exc

    def _context_namespace(self) -> str:
        done = self.run("config", "view", "--minify", "-o", "jsonpath={..namespace}")
        if done.returncode != 0:
            raise click.ClickException(f"cannot read the kubeconfig {self.kubeconfig}: {done.stderr.strip()}")
        return done.stdout.strip() or "default"

    def read(self, name: str) -> dict:
        done = self.run("get", RESOURCE, name, "-n", self.namespace, "-o", "json", "--ignore-not-found")
        if done.returncode != 0:
            raise click.ClickException(
                f"cannot read ModelService {self.namespace}/{name}: {done.stderr.strip()}"
            )
        if not done.stdout.strip():
            where = f"{self.namespace}/{name}"
            raise click.ClickException(
                f"ModelService {where} not found (kubectl get msvc -n {self.namespace})"
            )
        return json.loads(done.stdout)

    def patch(self, name: str, ops: list[dict], generation: int) -> None:
        """Apply `ops` (led by a test of `generation`); a concurrent spec change is named as such."""
        done = self.run(
            "patch", RESOURCE, name, "-n", self.namespace,
            "--type=json", f"--field-manager={ROLLBACK_MANAGER}", "-p", json.dumps(ops),
        )  # fmt: skip
        if done.returncode == 0:
            return
        words = done.stderr.strip()
        # The API server answers a failed `test` with a bare "invalid request": look again.
        now = self.run("get", RESOURCE, name, "-n", self.namespace, "-o", "jsonpath={.metadata.generation}")
        if now.returncode == 0 and now.stdout.strip() != str(generation):
            raise click.ClickException(
                f"ModelService {self.namespace}/{name} changed while rolling back (generation "
                f"{generation} -> {now.stdout.strip() or 'deleted'}); run the command again"
            )
        raise click.ClickException(f"cannot patch ModelService {self.namespace}/{name}: {words}")


_COMMON = [
    click.argument("name"),
    click.option(
        "--namespace", "-n", default=None, help="The ModelService's namespace (default: the context's)."
    ),
    click.option("--kubeconfig", default=None, help="Path to the kubeconfig file (default: kubectl's)."),
    click.option("--context", default=None, help="The kubeconfig context to use."),
]


def _common(command):
    for decorator in reversed(_COMMON):
        command = decorator(command)
    return command


@click.command()
@_common
@click.option(
    "--output", "-o", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True
)
def revisions(
    name: str, namespace: str | None, kubeconfig: str | None, context: str | None, output: str
) -> None:
    """List the revisions of ModelService NAME (the last ten), oldest first."""
    kubectl = Kubectl(namespace, kubeconfig, context)
    history = history_of(kubectl.read(name))
    if output == "json":
        click.echo(json.dumps(history, indent=2))
    elif output == "yaml":
        click.echo(yaml.safe_dump(history, sort_keys=False), nl=False)
    elif not history:
        click.echo(f"ModelService {kubectl.namespace}/{name} has no revisions yet")
    else:
        rows = table(history)
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            click.echo(
                "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            )


@click.command()
@_common
@click.option(
    "--to",
    "number",
    type=click.IntRange(min=1),
    default=None,
    help="The revision number to go back to (default: the one served before the serving one).",
)
@click.option("--wait/--no-wait", default=False, help="Wait until the revision serves on every replica.")
@click.option(
    "--timeout", type=click.FloatRange(min=1), default=300, show_default=True, help="Seconds --wait waits."
)
def rollback(
    name: str,
    namespace: str | None,
    kubeconfig: str | None,
    context: str | None,
    number: int | None,
    wait: bool,
    timeout: float,
) -> None:
    """Serve an earlier revision of ModelService NAME again.

    Like `kubectl rollout undo`, it writes the revision's spec.model and spec.optimization back
    into the ModelService (field manager kubectl-mserve-rollback); the operator serves it again
    with its cached artifact, without an optimization Job. Under GitOps, commit the same
    change, or the next sync undoes the rollback.
    """
    kubectl = Kubectl(namespace, kubeconfig, context)
    msvc = kubectl.read(name)
    try:
        number = previous_number(msvc) if number is None else number
        ops = rollback_patch(msvc, number)
    except RevisionError as exc:
        raise click.ClickException(str(exc)) from exc
    if not ops:
        click.echo(f"modelservice/{name}: the spec already asks for revision {number}; nothing to change")
    else:
        kubectl.patch(name, ops, msvc["metadata"]["generation"])
        click.echo(f"modelservice/{name} rolled back to revision {number}")
    if wait:
        _wait_served(kubectl, name, number, timeout)


def _wait_served(kubectl: Kubectl, name: str, number: int, timeout: float) -> None:
    """Until the operator reports the revision served and the rollout complete on every replica."""
    deadline = time.monotonic() + timeout
    while True:
        msvc = kubectl.read(name)
        status = msvc.get("status") or {}
        current = status.get("observedGeneration") == msvc["metadata"].get("generation")
        if current and serving_number(history_of(msvc)) == number and status.get("phase") == "Ready":
            click.echo(f"modelservice/{name} serves revision {number} on {status.get('ready')} replicas")
            return
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"ModelService {kubectl.namespace}/{name} does not serve revision {number} "
                f"after {timeout:g}s: phase {status.get('phase')}, {status.get('message')}"
            )
        time.sleep(0.25)
